//! Backfills on a real server: exactly-once across a SIGKILL, key types (sparse bigint, uuid, text, composite),
//! a concurrent writer, the irreversible-downgrade guard, offline SQL through psql, and a fleet under the
//! fleet-wide rows/s budget.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::path::{Path, PathBuf};

use crate::harness::{connect, own_cluster_dir, pg_cluster, start_own_cluster, url_of_db, TempProject, TestDb};

const CONFIG: &str = "script_location = \"migrations\"\n";

fn project(revisions: &[(&str, &str)]) -> TempProject {
    TempProject::with_revisions(CONFIG, revisions)
}

/// A revision whose upgrade is `pre`, then a backfill marker with `attrs` and `statement`, then `post`.
fn revision(id: &str, pre: &str, attrs: &str, statement: &str, post: &str, downgrade: &str) -> String {
    format!(
        "-- revision: {id}\n-- message: backfill test\n\n-- flotilla:upgrade\n{pre}\n\n\
         -- flotilla:backfill {attrs}\n{statement};\n\n{post}\n\n-- flotilla:downgrade\n{downgrade}\n"
    )
}

async fn one_i64(db: &TestDb, sql: &str) -> i64 {
    db.client().await.query_one(sql, &[]).await.unwrap().get::<_, i64>(0)
}

/// What [`kill_part_way`] kills once the backfill got far enough.
enum Kill<'a> {
    /// The flotilla process, with SIGKILL: no chance to roll back or release anything; the server keeps every
    /// batch that committed.
    Flotilla,
    /// The server, with an immediate stop: it loses whatever its write-ahead log had not written yet, such as
    /// the last batches that committed with `commit=async`; flotilla then fails on the lost connection.
    Server(&'a mut CrashCluster),
}

/// `upgrade head` (plus `extra`) on the database at `url` as a child, killed as `kill` says once a backfill
/// checkpoint shows at least `rows` rows done; returns the checkpoint's count seen just before the kill
/// (panics when the backfill never got that far).
async fn kill_part_way(url: &str, project: &TempProject, extra: &[&str], rows: i64, kill: Kill<'_>) -> i64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .current_dir(project.path())
        .args(["--url", url, "upgrade", "head"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start flotilla");
    let client = connect(url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done_at_kill = loop {
        if Instant::now() >= deadline {
            break None;
        }
        // Fails until the run creates the table; then it shows the last committed checkpoint's count.
        let row = client
            .query_opt("SELECT rows_done FROM flotilla_backfill_progress", &[])
            .await;
        if let Ok(Some(row)) = row {
            let done: i64 = row.get(0);
            if done >= rows {
                break Some(done);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    match kill {
        Kill::Flotilla => {
            // Kill is SIGKILL on unix.
            let _ = child.kill();
            let _ = child.wait();
        }
        Kill::Server(cluster) => {
            cluster.stop_immediately();
            let deadline = Instant::now() + Duration::from_secs(30);
            let status = loop {
                match child.try_wait().expect("wait for flotilla") {
                    Some(status) => break Some(status),
                    None if Instant::now() >= deadline => break None,
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                status.is_some_and(|s| !s.success()),
                "flotilla should fail when its server goes away: {status:?}"
            );
        }
    }
    done_at_kill.expect("backfill never made progress")
}

#[tokio::test]
async fn backfill_resumes_after_sigkill_exactly_once() {
    let db = TestDb::new("backfill sigkill");
    db.execute(
        "CREATE TABLE counters (id bigint PRIMARY KEY, n integer NOT NULL DEFAULT 0);
         INSERT INTO counters (id) SELECT i * 7 FROM generate_series(1, 20000) i;",
    );
    // The pre phase would fail if it ran twice, so the rerun also proves it is not repeated.
    let text = revision(
        "aa01",
        "ALTER TABLE counters ADD COLUMN note text;",
        "table=counters key=id batch_size=200",
        "UPDATE counters SET n = n + 1, note = 'x' WHERE {{batch}}",
        "ALTER TABLE counters ALTER COLUMN note SET NOT NULL;",
        "ALTER TABLE counters DROP COLUMN note;",
    );
    let project = project(&[("aa01_backfill.sql", &text)]);
    let done_at_kill = kill_part_way(db.url(), &project, &["--backfill-rate", "8000"], 2000, Kill::Flotilla).await;
    assert!(
        done_at_kill < 20000,
        "killed after the backfill had finished: nothing was resumed"
    );
    let versions = one_i64(&db, "SELECT count(*) FROM flotilla_version").await;
    assert_eq!(versions, 0, "the revision is not applied until its backfill completes");
    project
        .flotilla()
        .args(["--url", db.url(), "upgrade", "head"])
        .assert_success();
    assert_eq!(one_i64(&db, "SELECT count(*) FROM counters WHERE n <> 1").await, 0);
    assert_eq!(one_i64(&db, "SELECT count(*) FROM counters WHERE n = 1").await, 20000);
    assert_eq!(one_i64(&db, "SELECT count(*) FROM flotilla_backfill_progress").await, 0);
    assert_eq!(
        one_i64(&db, "SELECT count(*) FROM flotilla_version WHERE version_num = 'aa01'").await,
        1
    );
    assert_eq!(
        one_i64(
            &db,
            "SELECT count(*) FROM flotilla_history WHERE revision = 'aa01' AND status = 'applied'"
        )
        .await,
        1
    );
    let not_null = one_i64(
        &db,
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'counters' AND column_name = 'note' \
         AND is_nullable = 'NO'",
    )
    .await;
    assert_eq!(not_null, 1, "the phase after the backfill ran");
}

#[tokio::test]
async fn backfill_key_types_sparse_uuid_text_composite() {
    let db = TestDb::new("backfill keys");
    db.execute(
        "CREATE TABLE sparse (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0);
         INSERT INTO sparse (id) SELECT (i * i * 13) - 5000 FROM generate_series(1, 500) i;
         CREATE TABLE uuids (id uuid PRIMARY KEY, n int NOT NULL DEFAULT 0);
         INSERT INTO uuids (id) SELECT gen_random_uuid() FROM generate_series(1, 500);
         CREATE TABLE texts (k text PRIMARY KEY, n int NOT NULL DEFAULT 0);
         INSERT INTO texts (k) SELECT 'k' || i FROM generate_series(1, 500) i;
         INSERT INTO texts (k) VALUES (''), ('it''s'), ('a b'), ('%s'), ('Ω'), ('\\'), ('{1,2}'), ('\"q\"');
         CREATE TABLE pairs (tenant int, name text, n int NOT NULL DEFAULT 0, PRIMARY KEY (tenant, name));
         INSERT INTO pairs (tenant, name) SELECT i % 7, 'n' || i FROM generate_series(1, 500) i;",
    );
    let text = "-- revision: bb01\n-- message: keys\n\n-- flotilla:upgrade\n\n\
        -- flotilla:backfill table=sparse key=id batch_size=7\n\
        UPDATE sparse SET n = n + 1 WHERE {{batch}};\n\n\
        -- flotilla:backfill table=uuids key=id batch_size=9\n\
        UPDATE uuids SET n = n + 1 WHERE {{batch}};\n\n\
        -- flotilla:backfill table=texts key=k batch_size=3\n\
        UPDATE texts SET n = n + 1 WHERE {{batch}};\n\n\
        -- flotilla:backfill table=pairs key=tenant,name batch_size=11 target=5ms\n\
        UPDATE pairs SET n = n + 1 WHERE {{batch}};\n\n\
        -- flotilla:downgrade\n\
        -- flotilla:backfill table=pairs key=tenant,name batch_size=50\n\
        UPDATE pairs SET n = n - 1 WHERE {{batch}};\n";
    let project = project(&[("bb01_keys.sql", text)]);
    project
        .flotilla()
        .args(["--url", db.url(), "upgrade", "head"])
        .assert_success();
    for table in ["sparse", "uuids", "texts", "pairs"] {
        let wrong = one_i64(&db, &format!("SELECT count(*) FROM {table} WHERE n <> 1")).await;
        assert_eq!(wrong, 0, "{table}: every row exactly once");
    }
    // The downgrade declares a reverse, so it is allowed and runs it.
    project
        .flotilla()
        .args(["--url", db.url(), "downgrade", "base"])
        .assert_success();
    assert_eq!(one_i64(&db, "SELECT count(*) FROM pairs WHERE n <> 0").await, 0);
}

#[tokio::test]
async fn backfill_concurrent_writer_neither_lost_nor_doubled() {
    let db = TestDb::new("backfill writer");
    db.execute(
        "CREATE TABLE events (id bigserial PRIMARY KEY, n int NOT NULL DEFAULT 0, touched int NOT NULL DEFAULT 0);
         INSERT INTO events (n) SELECT 0 FROM generate_series(1, 6000);",
    );
    let text = revision(
        "cc01",
        "",
        "table=events key=id batch_size=50",
        "UPDATE events SET n = n + 1 WHERE {{batch}}",
        "",
        "",
    )
    .replace("-- flotilla:downgrade\n", "");
    let project = project(&[("cc01_writer.sql", &text)]);
    let mut cmd = project.flotilla();
    cmd.args(["--url", db.url(), "upgrade", "head", "--backfill-rate", "4000"]);
    let runner = tokio::task::spawn_blocking(move || cmd.assert_success());
    let writer = db.client().await;
    let (mut n_inserts, mut n_updates) = (0i64, 0i64);
    while !runner.is_finished() {
        writer.batch_execute("INSERT INTO events DEFAULT VALUES").await.unwrap();
        n_inserts += 1;
        let updated = writer
            .execute(
                "UPDATE events SET touched = touched + 1 WHERE id = (SELECT 1 + floor(random() * 6000))::bigint",
                &[],
            )
            .await
            .unwrap();
        n_updates += updated as i64;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    runner.await.unwrap();
    assert!(n_inserts > 0);
    assert_eq!(
        one_i64(&db, "SELECT count(*) FROM events WHERE n NOT IN (0, 1)").await,
        0
    );
    assert_eq!(
        one_i64(&db, "SELECT count(*) FROM events WHERE id <= 6000 AND n <> 1").await,
        0
    );
    // Rows done form a prefix in key order: no row inserted below the frontier was skipped.
    let gap = one_i64(
        &db,
        "SELECT count(*) FROM events WHERE n = 0 AND id < (SELECT max(id) FROM events WHERE n = 1)",
    )
    .await;
    assert_eq!(gap, 0);
    assert_eq!(one_i64(&db, "SELECT sum(touched)::bigint FROM events").await, n_updates);
    assert_eq!(one_i64(&db, "SELECT count(*) FROM events").await, 6000 + n_inserts);
}

#[tokio::test]
async fn backfill_downgrade_without_reverse_stops_before_changing_anything() {
    let db = TestDb::new("backfill irreversible");
    db.execute(
        "CREATE TABLE emails (id int PRIMARY KEY, email text); INSERT INTO emails VALUES (1, 'A@X'), (2, 'B@Y');",
    );
    let text = revision(
        "dd01",
        "",
        "table=emails key=id",
        "UPDATE emails SET email = lower(email) WHERE {{batch}}",
        "",
        "",
    );
    let project = project(&[("dd01_lower.sql", &text)]);
    project
        .flotilla()
        .args(["--url", db.url(), "upgrade", "head"])
        .assert_success();
    let out = project
        .flotilla()
        .args(["--url", db.url(), "downgrade", "base"])
        .assert_code(2);
    assert!(
        out.stderr.contains("without a reverse") && out.stderr.contains("--force"),
        "{}",
        out.report()
    );
    assert_eq!(one_i64(&db, "SELECT count(*) FROM flotilla_version").await, 1);
    project
        .flotilla()
        .args(["--url", db.url(), "downgrade", "base", "--force"])
        .assert_success();
    assert_eq!(one_i64(&db, "SELECT count(*) FROM flotilla_version").await, 0);
}

#[tokio::test]
async fn backfill_offline_sql_runs_as_batched_loop_in_psql() {
    let db = TestDb::new("backfill offline");
    db.execute(
        "CREATE TABLE docs (id bigint PRIMARY KEY, body text NOT NULL, n int NOT NULL DEFAULT 0);
         INSERT INTO docs (id, body) SELECT i * 3, '50% off' FROM generate_series(1, 1000) i;",
    );
    let text = revision(
        "ee01",
        "ALTER TABLE docs ADD COLUMN len int;",
        "table=docs key=id batch_size=64",
        "UPDATE docs SET len = length(body), n = n + 1 WHERE {{batch}} AND body LIKE '%\\%%'",
        "ALTER TABLE docs ALTER COLUMN len SET NOT NULL;",
        "ALTER TABLE docs DROP COLUMN len;",
    );
    let project = project(&[("ee01_offline.sql", &text)]);
    let sql = project
        .flotilla()
        .args(["upgrade", "head", "--sql"])
        .assert_success()
        .stdout;
    assert!(sql.contains("DO $flotilla_backfill$"), "{sql}");
    db.psql().stdin(sql.clone()).assert_success();
    assert_eq!(
        one_i64(&db, "SELECT count(*) FROM docs WHERE n = 1 AND len = 7").await,
        1000
    );
    assert_eq!(
        one_i64(&db, "SELECT count(*) FROM flotilla_version WHERE version_num = 'ee01'").await,
        1
    );
    assert_eq!(one_i64(&db, "SELECT count(*) FROM flotilla_backfill_progress").await, 0);
}

/// A batch fails half way through the offline script; after the cause is fixed, the same script run again
/// skips the committed schema phase (whose `ADD COLUMN` would fail if repeated), resumes the backfill at its
/// checkpoint, and finishes: every row updated exactly once.
#[tokio::test]
async fn backfill_offline_script_rerun_resumes_after_a_failed_batch() {
    let db = TestDb::new("backfill offline rerun");
    db.execute(
        "CREATE TABLE docs (id bigint PRIMARY KEY, body text NOT NULL, n int NOT NULL DEFAULT 0);
         INSERT INTO docs (id, body) SELECT i, 'abc' FROM generate_series(1, 1000) i;
         CREATE TABLE gate (divisor int NOT NULL);
         INSERT INTO gate VALUES (0);",
    );
    let text = revision(
        "ee02",
        "ALTER TABLE docs ADD COLUMN len int;",
        "table=docs key=id batch_size=100",
        "UPDATE docs SET n = n + 1, len = CASE WHEN id > 600 THEN length(body) / (SELECT divisor FROM gate) \
         ELSE length(body) END WHERE {{batch}}",
        "ALTER TABLE docs ALTER COLUMN len SET NOT NULL;",
        "ALTER TABLE docs DROP COLUMN len;",
    );
    let project = project(&[("ee02_offline.sql", &text)]);
    let sql = project
        .flotilla()
        .args(["upgrade", "head", "--sql"])
        .assert_success()
        .stdout;
    let out = db.psql().stdin(sql.clone()).output();
    assert_ne!(
        out.code(),
        Some(0),
        "the batch over id 601.. divides by zero\n{}",
        out.report()
    );
    assert!(out.stderr.contains("division by zero"), "{}", out.report());
    assert_eq!(one_i64(&db, "SELECT count(*) FROM docs WHERE n = 1").await, 600);
    assert_eq!(one_i64(&db, "SELECT count(*) FROM flotilla_version").await, 0);
    assert_eq!(
        one_i64(&db, "SELECT phase::bigint FROM flotilla_backfill_progress").await,
        1
    );

    db.execute("UPDATE gate SET divisor = 1");
    db.psql().stdin(sql.clone()).assert_success();
    assert_eq!(
        one_i64(&db, "SELECT count(*) FROM docs WHERE n = 1 AND len = 3").await,
        1000
    );
    assert_eq!(
        one_i64(&db, "SELECT count(*) FROM flotilla_version WHERE version_num = 'ee02'").await,
        1
    );
    assert_eq!(one_i64(&db, "SELECT count(*) FROM flotilla_backfill_progress").await, 0);
    let not_null = one_i64(
        &db,
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'docs' AND column_name = 'len' \
         AND is_nullable = 'NO'",
    )
    .await;
    assert_eq!(not_null, 1, "the phase after the backfill ran");

    // Run once more, the script skips the applied revision.
    let out = db.psql().stdin(sql.clone()).output();
    assert_eq!(out.code(), Some(0), "{}", out.report());
    assert_eq!(one_i64(&db, "SELECT count(*) FROM docs WHERE n = 1").await, 1000);

    // A progress row left by another version of the script stops the offline run before it changes anything.
    db.execute(
        "DELETE FROM flotilla_version;
         INSERT INTO flotilla_backfill_progress (revision, direction, phase, checksum) VALUES ('ee02', 'up', 1, 'v1:old')",
    );
    let out = db
        .psql()
        .stdin(
            project
                .flotilla()
                .args(["upgrade", "head", "--sql"])
                .assert_success()
                .stdout,
        )
        .output();
    assert_ne!(out.code(), Some(0));
    assert!(
        out.stderr.contains("different version of its script"),
        "{}",
        out.report()
    );
}

#[tokio::test]
async fn backfill_fleet_all_rows_done_under_fleet_rate() {
    let db = TestDb::new("backfill fleet");
    let tenants = ["t1", "t2", "t3", "t4"];
    for t in tenants {
        db.execute(&format!(
            "CREATE SCHEMA tenant_{t};
             CREATE TABLE tenant_{t}.items (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0);
             INSERT INTO tenant_{t}.items (id) SELECT i FROM generate_series(1, 1500) i;"
        ));
    }
    let text = revision(
        "ff01",
        "",
        "table=items key=id batch_size=100",
        "UPDATE items SET n = n + 1 WHERE {{batch}}",
        "",
        "",
    );
    let mut tenants_toml = format!("[[servers]]\nname = \"local\"\nurl = \"{}\"\n", db.url());
    for t in tenants {
        tenants_toml.push_str(&format!(
            "\n[[tenants]]\nid = \"{t}\"\nserver = \"local\"\nschema = \"tenant_{t}\"\n"
        ));
    }
    let project = TempProject::with_revisions(
        "script_location = \"migrations\"\ntenants = \"tenants.toml\"\nledger = \"ledger.db\"\n",
        &[("ff01_fleet.sql", &text)],
    );
    project.write("tenants.toml", &tenants_toml);
    let rate = 6000.0;
    let started = Instant::now();
    project
        .flotilla()
        .args(["fleet", "upgrade", "head", "--concurrency", "4", "--progress", "none"])
        .args(["--backfill-fleet-rate", &rate.to_string(), "--events", "events.ndjson"])
        .assert_success();
    let elapsed = started.elapsed();
    for t in tenants {
        let wrong = one_i64(&db, &format!("SELECT count(*) FROM tenant_{t}.items WHERE n <> 1")).await;
        assert_eq!(wrong, 0, "{t}");
    }
    let events = std::fs::read_to_string(project.path().join("events.ndjson")).unwrap();
    let mut last_done = std::collections::BTreeMap::new();
    for line in events.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        if event["event"] == "backfill_progress" {
            let tenant = event["tenant"].as_str().unwrap().to_string();
            last_done.insert(tenant, event["rows_done"].as_u64().unwrap());
        }
    }
    assert_eq!(last_done.len(), 4, "{events}");
    assert!(last_done.values().all(|&d| d == 1500), "{last_done:?}");
    // A lower bound only (a throttle can only slow things down): 6000 rows at 6000 rows/s fleet-wide cannot
    // finish much faster than a second, whatever the machine. Upper bounds would flake, so there are none.
    let total: u64 = last_done.values().sum();
    let floor = Duration::from_secs_f64((total as f64 - 4.0 * 100.0) / rate * 0.9);
    assert!(
        elapsed >= floor,
        "{total} rows in {elapsed:?}: the fleet-wide budget was not respected"
    );
}

/// The keyset query once ordered its last key by the `id::text` output column (named `id`), so batches ended at
/// the textually largest key (`99` of 1..100) instead of the largest.
#[tokio::test]
async fn backfill_batch_bounds_follow_key_order_not_text_order() {
    let db = TestDb::new("backfill bounds");
    db.execute(
        "CREATE TABLE t (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0, tx bigint);
         INSERT INTO t (id) SELECT i FROM generate_series(1, 250) i;",
    );
    let text = revision(
        "gg01",
        "",
        "table=t key=id batch_size=100",
        "UPDATE t SET n = n + 1, tx = txid_current() WHERE {{batch}}",
        "",
        "",
    );
    let project = project(&[("gg01_bounds.sql", &text)]);
    project
        .flotilla()
        .args(["--url", db.url(), "upgrade", "head", "--force"])
        .assert_success();
    let client = db.client().await;
    let sizes: Vec<i64> = client
        .query("SELECT count(*) FROM t GROUP BY tx ORDER BY min(id)", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        sizes,
        [100, 100, 50],
        "one transaction per batch, each covering exactly batch_size keys"
    );
}

#[tokio::test]
async fn backfill_ctrl_c_stops_between_batches_and_resumes() {
    let db = TestDb::new("backfill sigint");
    db.execute(
        "CREATE TABLE c (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0);
         INSERT INTO c (id) SELECT i FROM generate_series(1, 20000) i;",
    );
    let text = revision(
        "hh01",
        "",
        "table=c key=id batch_size=250",
        "UPDATE c SET n = n + 1 WHERE {{batch}}",
        "",
        "",
    );
    let project = project(&[("hh01_sigint.sql", &text)]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .current_dir(project.path())
        .args(["--url", db.url(), "upgrade", "head", "--backfill-rate", "8000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start flotilla");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut is_progressing = false;
    while Instant::now() < deadline {
        let row = db
            .client()
            .await
            .query_opt("SELECT rows_done FROM flotilla_backfill_progress", &[])
            .await;
        if let Ok(Some(row)) = row {
            if row.get::<_, i64>(0) >= 1000 {
                is_progressing = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = child.wait().expect("reap flotilla");
    assert!(is_progressing, "backfill never made progress");
    assert_eq!(status.code(), Some(130), "Ctrl-C exits as interrupted");
    let done = one_i64(&db, "SELECT rows_done FROM flotilla_backfill_progress").await;
    assert!(done < 20000, "stopped part way");
    assert_eq!(one_i64(&db, "SELECT count(*) FROM c WHERE n = 1").await, done);
    project
        .flotilla()
        .args(["--url", db.url(), "upgrade", "head"])
        .assert_success();
    assert_eq!(one_i64(&db, "SELECT count(*) FROM c WHERE n <> 1").await, 0);
}

/// A batch's message ends with the next batch's keyset query after its `COMMIT`. A batch whose `COMMIT` fails
/// (here a deferred foreign key) must stop the run there: no later batch may commit, or the checkpoint would
/// move past the failed batch's rows and the rerun would skip them.
#[tokio::test]
async fn backfill_failed_commit_stops_before_any_later_batch() {
    let db = TestDb::new("backfill commit fails");
    db.execute(
        "CREATE TABLE parent (id int PRIMARY KEY);
         INSERT INTO parent VALUES (1);
         CREATE TABLE t (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0,
                         p int NOT NULL DEFAULT 1 REFERENCES parent DEFERRABLE INITIALLY DEFERRED);
         INSERT INTO t (id) SELECT i FROM generate_series(1, 200) i;",
    );
    // Row 57 points at a parent that does not exist yet: its batch, (50, 60], fails at COMMIT.
    let text = revision(
        "ii01",
        "",
        "table=t key=id batch_size=10",
        "UPDATE t SET n = n + 1, p = CASE WHEN id = 57 THEN 999 ELSE p END WHERE {{batch}}",
        "",
        "",
    );
    let project = project(&[("ii01_deferred.sql", &text)]);
    let out = project.flotilla().args(["--url", db.url(), "upgrade", "head"]).output();
    assert_ne!(out.code(), Some(0), "{}", out.report());
    assert!(
        out.stderr.contains("foreign key"),
        "the first error is reported:\n{}",
        out.report()
    );
    assert_eq!(
        one_i64(&db, "SELECT count(*) FROM t WHERE id <= 50 AND n = 1").await,
        50
    );
    assert_eq!(
        one_i64(&db, "SELECT count(*) FROM t WHERE id > 50 AND n <> 0").await,
        0,
        "no batch after the failed one committed"
    );
    assert_eq!(
        one_i64(&db, "SELECT rows_done FROM flotilla_backfill_progress").await,
        50
    );
    db.execute("INSERT INTO parent VALUES (999);");
    project
        .flotilla()
        .args(["--url", db.url(), "upgrade", "head"])
        .assert_success();
    assert_eq!(one_i64(&db, "SELECT count(*) FROM t WHERE n = 1").await, 200);
}

/// The same exactly-once guarantee as `backfill_resumes_after_sigkill_exactly_once`, without a throttle, so
/// the process dies while a batch's message (its transaction, then the next keyset query) is on the server.
#[tokio::test]
async fn backfill_unthrottled_resumes_after_sigkill_exactly_once() {
    let db = TestDb::new("backfill unthrottled sigkill");
    db.execute(
        "CREATE TABLE counters (id bigint PRIMARY KEY, n integer NOT NULL DEFAULT 0);
         INSERT INTO counters (id) SELECT i * 3 FROM generate_series(1, 6000) i;",
    );
    // The sleep makes each batch take about 20 ms, so the kill lands part way.
    let text = revision(
        "jj01",
        "",
        "table=counters key=id batch_size=50",
        "UPDATE counters SET n = n + 1 WHERE {{batch}} AND (SELECT pg_sleep(0.02)) IS NOT NULL",
        "",
        "",
    );
    let project = project(&[("jj01_backfill.sql", &text)]);
    kill_part_way(db.url(), &project, &[], 1000, Kill::Flotilla).await;
    // The server may still be running the batch already sent; wait until the killed session is gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while one_i64(
        &db,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND state <> 'idle'",
    )
    .await
        > 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = one_i64(&db, "SELECT rows_done FROM flotilla_backfill_progress").await;
    assert!(
        done < 6000,
        "killed after the backfill had finished: nothing was resumed"
    );
    assert_eq!(one_i64(&db, "SELECT count(*) FROM counters WHERE n = 1").await, done);
    assert_eq!(one_i64(&db, "SELECT count(*) FROM counters WHERE n > 1").await, 0);
    project
        .flotilla()
        .args(["--url", db.url(), "upgrade", "head"])
        .assert_success();
    assert_eq!(one_i64(&db, "SELECT count(*) FROM counters WHERE n <> 1").await, 0);
}

/// A throwaway cluster of one test's own (`scripts/pg-cluster`), which the test may crash: an immediate stop
/// (SIGQUIT to the postmaster, which is what `pg_ctl stop -m immediate` sends) loses the write-ahead log the
/// server had not written yet, and the next start runs crash recovery. Destroyed when dropped.
struct CrashCluster {
    dir: PathBuf,
    /// The maintenance database's url; the port may change at a restart.
    url: String,
}

impl CrashCluster {
    async fn start() -> CrashCluster {
        let dir = own_cluster_dir("flotilla-crash-pg");
        let mut server = CrashCluster {
            dir,
            url: String::new(),
        };
        server.restart();
        let client = connect(&server.url).await.unwrap();
        // The test clusters run with synchronous_commit off; this one waits for the WAL at every commit that
        // asks for it (fsync stays off: an immediate stop loses what was never written, not what the kernel
        // holds). Its WAL writer writes only every 10 s and never for a volume of WAL, so the partly filled
        // last WAL page, which holds the last async commit record, stays unwritten until the crash (full pages
        // are written as they fill).
        for setting in [
            "ALTER SYSTEM SET synchronous_commit = on",
            "ALTER SYSTEM SET wal_writer_delay = '10s'",
            "ALTER SYSTEM SET wal_writer_flush_after = '1GB'",
        ] {
            client.batch_execute(setting).await.unwrap();
        }
        drop(client);
        // A restart rather than a reload, so every process has the settings before the test starts.
        server.restart();
        let client = connect(&server.url).await.unwrap();
        let delay: String = client.query_one("SHOW wal_writer_delay", &[]).await.unwrap().get(0);
        assert_eq!(delay, "10s");
        server
    }

    fn db_url(&self, db: &str) -> String {
        url_of_db(&self.url, db)
    }

    /// Starts the server (again) and takes its url.
    fn restart(&mut self) {
        self.url = start_own_cluster(&self.dir, &[]);
    }

    /// SIGQUIT to the postmaster, and wait until it is gone.
    fn stop_immediately(&mut self) {
        let run = self.dir.join("run");
        let data = if run.exists() {
            run.join("data")
        } else {
            self.dir.join("data")
        };
        let pidfile = std::fs::read_to_string(data.join("postmaster.pid")).expect("the server's pidfile");
        let pid: i32 = pidfile
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("a pid");
        // SAFETY: kill only sends a signal to the pid the server wrote into its own pidfile.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGQUIT) }, 0, "signal the postmaster");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the postmaster did not stop"
        );
    }
}

impl Drop for CrashCluster {
    fn drop(&mut self) {
        pg_cluster("destroy", &self.dir);
    }
}

/// A backfill with `commit` (`async` or `sync`) on database `db` of `server`, the server crashed part way and
/// started again; returns the rows done that a reader saw committed just before the crash and the rows done
/// after recovery, having checked that the data and the checkpoint agree after recovery and after the rerun.
async fn crash_server_part_way(server: &mut CrashCluster, db: &str, commit: &str) -> (i64, i64) {
    connect(&server.url)
        .await
        .unwrap()
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    connect(&server.db_url(db))
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE counters (id bigint PRIMARY KEY, n integer NOT NULL DEFAULT 0);
             INSERT INTO counters (id) SELECT i * 3 FROM generate_series(1, 1000) i;",
        )
        .await
        .unwrap();
    let text = revision(
        "kk01",
        "ALTER TABLE counters ADD COLUMN note text;",
        // The pause keeps the last committed batch's commit record in the last, partly filled WAL page until
        // the crash: no later batch writes WAL meanwhile, even when the test is slow to see the batch.
        &format!("table=counters key=id batch_size=100 pause=500ms commit={commit}"),
        "UPDATE counters SET n = n + 1, note = 'x' WHERE {{batch}}",
        "ALTER TABLE counters ALTER COLUMN note SET NOT NULL;",
        "ALTER TABLE counters DROP COLUMN note;",
    );
    let project = project(&[("kk01_backfill.sql", &text)]);
    let seen = kill_part_way(&server.db_url(db), &project, &[], 500, Kill::Server(server)).await;
    server.restart();
    let url = server.db_url(db);
    let client = connect(&url).await.unwrap();
    let one = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let after = one("SELECT rows_done FROM flotilla_backfill_progress").await;
    assert!(after < 1000, "{commit}: the backfill had finished before the crash");
    assert_eq!(
        one("SELECT count(*) FROM counters WHERE n = 1").await,
        after,
        "{commit}: recovery kept the batches that kept their checkpoint, and only those"
    );
    assert_eq!(one("SELECT count(*) FROM counters WHERE n > 1").await, 0);
    project
        .flotilla()
        .args(["--url", &url, "upgrade", "head"])
        .assert_success();
    assert_eq!(one("SELECT count(*) FROM counters WHERE n <> 1").await, 0, "{commit}");
    assert_eq!(one("SELECT count(*) FROM counters WHERE note IS NULL").await, 0);
    assert_eq!(one("SELECT count(*) FROM flotilla_backfill_progress").await, 0);
    assert_eq!(
        one("SELECT count(*) FROM flotilla_version WHERE version_num = 'kk01'").await,
        1
    );
    (seen, after)
}

/// `commit=async` (the default) against a server crash, not just a flotilla crash: the crash loses the last
/// batches that had committed (a reader saw them) together with their checkpoints, never a batch without its
/// checkpoint, and the rerun redoes exactly those, so every row is updated once. With `commit=sync` the same
/// crash loses no committed batch.
#[tokio::test]
async fn backfill_async_commit_server_crash_loses_whole_batches_and_rerun_redoes_them() {
    let mut server = CrashCluster::start().await;
    // The WAL writer's 10 s round may write the last page just before the crash; a second or third crash
    // makes that unlikelihood vanishingly small. Every attempt checks exactly-once all the same.
    let mut attempts = Vec::new();
    for attempt in 1..=3 {
        let (seen, after) = crash_server_part_way(&mut server, &format!("crash_async_{attempt}"), "async").await;
        eprintln!("commit=async: {seen} rows seen committed before the crash, {after} after recovery");
        attempts.push((seen, after));
        if after < seen {
            break;
        }
    }
    assert!(
        attempts.iter().any(|(seen, after)| after < seen),
        "the crash should lose batches committed without a flush (rows seen committed, recovered): {attempts:?}"
    );
    let (seen, after) = crash_server_part_way(&mut server, "crash_sync", "sync").await;
    eprintln!("commit=sync: {seen} rows seen committed before the crash, {after} after recovery");
    assert!(
        after >= seen,
        "commit=sync lost committed batches: {seen} rows seen committed, {after} recovered"
    );
}

/// A table of `n` rows whose update trigger counts every row it sees in a sequence (which no rollback undoes)
/// and sleeps `sleep_ms` on the rows in `slow` (a SQL condition on `NEW.id`), so batches that take in enough
/// slow rows run past a `max_hold` ceiling.
fn slow_rows_table(db: &TestDb, n: u32, slow: &str, sleep_ms: u32) {
    db.execute(&format!(
        "CREATE TABLE s (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0);
         INSERT INTO s (id) SELECT i FROM generate_series(1, {n}) i;
         CREATE SEQUENCE seen;
         CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             PERFORM nextval('seen');
             IF {slow} THEN PERFORM pg_sleep({sleep_ms} / 1000.0); END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER slow_row BEFORE UPDATE ON s FOR EACH ROW EXECUTE FUNCTION slow_row();"
    ));
}

/// Batches over the ceiling are cancelled by their `statement_timeout`, rolled back and split, and the
/// backfill still ends with every row updated exactly once and the revision applied, with every marker
/// setting the ceiling composes with (fixed and adaptive sizing, both commit modes).
async fn max_hold_splits_slow_batches(hint: &str, attrs: &str) {
    let db = TestDb::new(hint);
    // Ten slow rows in a row: a batch holding all of them needs 10 x 30 ms, over the statement's 150 ms share
    // of max_hold=200ms, so it is split until a batch holds at most four of them.
    slow_rows_table(&db, 400, "NEW.id BETWEEN 201 AND 210", 30);
    let text = revision(
        "mh01",
        "",
        attrs,
        "UPDATE s SET n = n + 1 WHERE {{batch}}",
        "ALTER TABLE s ADD CONSTRAINT all_done CHECK (n = 1);",
        "",
    );
    let project = project(&[("mh01_max_hold.sql", &text)]);
    project
        .flotilla()
        .args(["--url", db.url(), "upgrade", "head"])
        .assert_success();
    assert_eq!(one_i64(&db, "SELECT count(*) FROM s WHERE n = 1").await, 400);
    assert_eq!(one_i64(&db, "SELECT count(*) FROM s WHERE n <> 1").await, 0);
    let seen = one_i64(&db, "SELECT last_value FROM seen").await;
    assert!(
        seen > 400,
        "some batch was cancelled and done again ({seen} row updates seen for 400 rows)"
    );
    assert_eq!(
        one_i64(&db, "SELECT count(*) FROM flotilla_version WHERE version_num = 'mh01'").await,
        1
    );
    assert_eq!(
        one_i64(
            &db,
            "SELECT count(*) FROM flotilla_history WHERE revision = 'mh01' AND status = 'applied'"
        )
        .await,
        1
    );
    assert_eq!(one_i64(&db, "SELECT count(*) FROM flotilla_backfill_progress").await, 0);
}

#[tokio::test]
async fn backfill_max_hold_splits_batches_over_the_ceiling() {
    max_hold_splits_slow_batches(
        "backfill max hold fixed",
        "table=s key=id batch_size=100 max_hold=200ms",
    )
    .await;
}

#[tokio::test]
async fn backfill_max_hold_composes_with_target_and_sync_commit() {
    max_hold_splits_slow_batches(
        "backfill max hold adaptive",
        "table=s key=id batch_size=100 target=50ms max_hold=200ms commit=sync",
    )
    .await;
}

/// A single key whose statement alone runs past the ceiling cannot be split: the run fails with an error
/// naming the key and the ceiling, the batches before it stay committed, and nothing after it runs.
#[tokio::test]
async fn backfill_max_hold_single_key_over_the_ceiling_fails_clearly() {
    let db = TestDb::new("backfill max hold one key");
    slow_rows_table(&db, 100, "NEW.id = 42", 300);
    let text = revision(
        "mh02",
        "",
        "table=s key=id batch_size=10 max_hold=200ms",
        "UPDATE s SET n = n + 1 WHERE {{batch}}",
        "",
        "",
    );
    let project = project(&[("mh02_one_key.sql", &text)]);
    let out = project.flotilla().args(["--url", db.url(), "upgrade", "head"]).output();
    assert_eq!(out.code(), Some(1), "{}", out.report());
    assert!(
        out.stderr.contains("single key (id) = ('42')")
            && out.stderr.contains("max_hold=200ms")
            && out.stderr.contains("57014")
            && out.stderr.contains("mh02_one_key.sql"),
        "the error names the key, the ceiling and the file:\n{}",
        out.report()
    );
    assert_eq!(
        one_i64(&db, "SELECT rows_done FROM flotilla_backfill_progress").await,
        41,
        "split down to the one key; everything before it committed"
    );
    assert_eq!(
        one_i64(&db, "SELECT count(*) FROM s WHERE id <= 41 AND n = 1").await,
        41
    );
    assert_eq!(one_i64(&db, "SELECT count(*) FROM s WHERE id > 41 AND n <> 0").await, 0);
    assert_eq!(one_i64(&db, "SELECT count(*) FROM flotilla_version").await, 0);
    // Once the key is fast again, a rerun finishes from the checkpoint, every row exactly once.
    db.execute(
        "CREATE OR REPLACE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;",
    );
    project
        .flotilla()
        .args(["--url", db.url(), "upgrade", "head"])
        .assert_success();
    assert_eq!(one_i64(&db, "SELECT count(*) FROM s WHERE n = 1").await, 100);
}

/// A session `statement_timeout` stricter than the ceiling's share is the user's own limit: its cancel fails
/// the step as it always did, and the batch is not split and retried.
#[tokio::test]
async fn backfill_max_hold_leaves_a_stricter_session_timeout_failing() {
    let db = TestDb::new("backfill max hold session timeout");
    // The first batch, keys 1 to 50, reaches the slow rows after 40 fast ones; a retry of half of it would
    // commit 25 rows.
    slow_rows_table(&db, 100, "NEW.id BETWEEN 41 AND 50", 30);
    let text = revision(
        "mh03",
        "",
        "table=s key=id batch_size=50 max_hold=1s",
        "UPDATE s SET n = n + 1 WHERE {{batch}}",
        "",
        "",
    );
    let project = TempProject::with_revisions(
        &format!("{CONFIG}statement_timeout = \"100ms\"\n"),
        &[("mh03_session.sql", &text)],
    );
    let out = project.flotilla().args(["--url", db.url(), "upgrade", "head"]).output();
    assert_eq!(out.code(), Some(1), "{}", out.report());
    assert!(
        out.stderr.contains("57014") && !out.stderr.contains("single key"),
        "{}",
        out.report()
    );
    let seen = one_i64(&db, "SELECT last_value FROM seen").await;
    assert!(
        seen <= 50,
        "the first batch ran once and was not retried: {seen} row updates seen"
    );
    assert_eq!(one_i64(&db, "SELECT count(*) FROM s WHERE n <> 0").await, 0);
}

/// A row lock held by another session stalls its batch past the ceiling (a `statement_timeout` counts lock
/// waits): the batch is split down to the locked key, and the run fails with the lock named (SQLSTATE 55P03,
/// which a fleet retries) instead of blaming the statement; once the lock is gone a rerun finishes.
#[tokio::test]
async fn backfill_max_hold_names_a_row_lock_held_elsewhere() {
    let db = TestDb::new("backfill max hold locked");
    slow_rows_table(&db, 100, "false", 0);
    let text = revision(
        "mh04",
        "",
        "table=s key=id batch_size=10 max_hold=200ms",
        "UPDATE s SET n = n + 1 WHERE {{batch}}",
        "",
        "",
    );
    let project = project(&[("mh04_locked.sql", &text)]);
    let holder = db.client().await;
    holder
        .batch_execute("BEGIN; SELECT 1 FROM s WHERE id = 42 FOR UPDATE")
        .await
        .unwrap();
    let out = project.flotilla().args(["--url", db.url(), "upgrade", "head"]).output();
    assert_eq!(out.code(), Some(1), "{}", out.report());
    assert!(
        out.stderr.contains("single key (id) = ('42')")
            && out.stderr.contains("another session holds")
            && out.stderr.contains("55P03"),
        "{}",
        out.report()
    );
    assert_eq!(
        one_i64(&db, "SELECT rows_done FROM flotilla_backfill_progress").await,
        41
    );
    assert_eq!(one_i64(&db, "SELECT count(*) FROM s WHERE id > 41 AND n <> 0").await, 0);
    holder.batch_execute("COMMIT").await.unwrap();
    project
        .flotilla()
        .args(["--url", db.url(), "upgrade", "head"])
        .assert_success();
    assert_eq!(one_i64(&db, "SELECT count(*) FROM s WHERE n = 1").await, 100);
}
