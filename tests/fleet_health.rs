//! Health throttling: a server whose `pause_query` number is over `pause_query_above` holds its tenants before
//! they start, and lets them go when the number is back under the resume fraction; the pause is reported as
//! events and counted in `flotilla_server_paused_seconds_total`. The replay-lag signal is driven by a real
//! streaming standby of the test cluster (`harness::Standby`) whose replay is paused, read through a listed
//! replica url and through the primary's `pg_stat_replication`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::fleet_support::{finish, read_events_so_far as events_so_far, wait_for, Fleet, Revisions, REPO_HEAD};
use crate::harness::{connect, version_rows, Standby, VERSION_TABLE};

const HEALTH: &str = "pause_query = \"SELECT v FROM public.health_signal\"\npause_query_above = 10\n";

#[tokio::test]
async fn a_server_over_its_health_limit_holds_its_tenants_until_it_recovers() {
    let fleet = Fleet::new("fleet_health", 3, 0, Revisions::Repo, 4);
    fleet
        .db
        .execute("CREATE TABLE public.health_signal (v int); INSERT INTO public.health_signal VALUES (100);");
    fleet.write_tenants(4, HEALTH);
    let dir = fleet.project.path();
    let events = dir.join("events.ndjson");
    let textfile = dir.join("flotilla.prom");
    let child = fleet.spawn_upgrade(&[
        "--events",
        &Fleet::path_arg(&events),
        "--metrics-textfile",
        &Fleet::path_arg(&textfile),
    ]);
    let paused = wait_for("the server to pause", Duration::from_secs(30), || {
        events_so_far(&events)
            .into_iter()
            .find(|e| e["event"] == "server_paused")
    });
    assert_eq!(paused["server"], "local");
    assert!(
        paused["reason"].as_str().unwrap().contains("the health query gave 100"),
        "{paused}"
    );
    // Held: a second later still no tenant has started.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !events_so_far(&events).iter().any(|e| e["event"] == "tenant_started"),
        "no tenant starts while the server is over its limit"
    );
    // 9 is under the threshold but over 80% of it: still held (hysteresis).
    fleet.db.execute("UPDATE public.health_signal SET v = 9;");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!events_so_far(&events).iter().any(|e| e["event"] == "tenant_started"));
    fleet.db.execute("UPDATE public.health_signal SET v = 0;");
    let (code, stdout, stderr) = finish(child, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let events = events_so_far(&events);
    let resumed = events
        .iter()
        .find(|e| e["event"] == "server_resumed")
        .expect("a resume");
    assert!(resumed["paused_ms"].as_u64().unwrap() >= 3000, "{resumed}");
    let resumed_at = events.iter().position(|e| e["event"] == "server_resumed").unwrap();
    let first_start = events.iter().position(|e| e["event"] == "tenant_started").unwrap();
    assert!(resumed_at < first_start);
    let metrics = std::fs::read_to_string(&textfile).unwrap();
    let paused_total: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("flotilla_server_paused_seconds_total{server=\"local\"} "))
        .expect("the paused-time counter")
        .parse()
        .unwrap();
    assert!(paused_total >= 3.0, "{metrics}");
    let versions = fleet.versions().await;
    assert!(versions.values().all(|rows| rows == &[REPO_HEAD]), "{versions:?}");
}

#[test]
fn a_health_query_without_its_threshold_is_refused_with_its_line() {
    let fleet = Fleet::new("fleet_health_bad", 1, 0, Revisions::Repo, 4);
    fleet.write_tenants(4, "pause_query = \"SELECT 1\"\n");
    let out = fleet.upgrade(&[]).assert_code(2);
    assert!(out.stderr.contains("pause_query_above"), "{}", out.stderr);
    assert!(out.stderr.contains("tenants.toml:"), "{}", out.stderr);
}

/// The last `rows_done` a tenant's backfill reported.
fn rows_done(events: &[serde_json::Value]) -> u64 {
    events
        .iter()
        .filter(|e| e["event"] == "backfill_progress")
        .filter_map(|e| e["rows_done"].as_u64())
        .next_back()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_backfill_holds_its_batches_while_its_server_is_over_its_limit() {
    let fleet = Fleet::new(
        "fleet_health_backfill",
        1,
        0,
        Revisions::Fixture("fleet_backfill_slow"),
        1,
    );
    fleet
        .db
        .execute("CREATE TABLE public.health_signal (v int); INSERT INTO public.health_signal VALUES (0);");
    // One connection, held by the tenant's backfill while it waits: the signals are read on a connection of
    // their own, or the wait would never end.
    fleet.write_tenants(1, HEALTH);
    let events = fleet.project.path().join("events.ndjson");
    let child = fleet.spawn_upgrade(&["--events", &Fleet::path_arg(&events)]);
    wait_for("the backfill to start", Duration::from_secs(30), || {
        (rows_done(&events_so_far(&events)) >= 30).then_some(())
    });
    fleet.db.execute("UPDATE public.health_signal SET v = 100;");
    wait_for("the server to pause", Duration::from_secs(30), || {
        events_so_far(&events)
            .iter()
            .any(|e| e["event"] == "server_paused")
            .then_some(())
    });
    let held_at = rows_done(&events_so_far(&events));
    std::thread::sleep(Duration::from_millis(2000));
    // At most the batch already under way when the pause was decided commits meanwhile.
    let later = rows_done(&events_so_far(&events));
    assert!(later <= held_at + 10, "held at {held_at}, then {later}");
    assert!(later < 300, "the backfill did not finish while held");
    fleet.db.execute("UPDATE public.health_signal SET v = 0;");
    let (code, stdout, stderr) = finish(child, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let client = fleet.db.client().await;
    let wrong: i64 = client
        .query_one("SELECT count(*) FROM tenant_0001.counters WHERE n <> 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0, "every row backfilled exactly once across the pause");
    assert!(events_so_far(&events).iter().any(|e| e["event"] == "server_resumed"));
}

const TENANT_TABLES: &str = "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'tenant_0001'";

/// The first column of the first row `sql` returns on `url`, as text.
fn query_text(url: &str, sql: &str) -> Option<String> {
    let (url, sql) = (url.to_string(), sql.to_string());
    crate::harness::block_on(async move {
        let client = connect(&url).await.expect("connect");
        let rows = client.simple_query(&sql).await.expect("query");
        rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
    })
}

/// The standby, paused, has received WAL it has not replayed and last replayed a transaction over two seconds
/// ago, so its lag (`now() - pg_last_xact_replay_timestamp()`) is already over a one-second threshold. Before
/// pausing, it has replayed everything `fleet` wrote so far (a commit reaches it only once the primary flushed
/// it, so being caught up alone proves nothing).
fn pause_replay_behind(standby: &Standby, fleet: &Fleet) {
    fleet
        .db
        .execute("CREATE TABLE IF NOT EXISTS public.replay_probe (n int); INSERT INTO public.replay_probe VALUES (0);");
    let db = fleet.db.name();
    wait_for("the standby to replay", Duration::from_secs(30), || {
        let seen = standby.query_in(db, "SELECT to_regclass('public.replay_probe') IS NOT NULL");
        let has_row = seen.as_deref() == Some("t")
            && standby
                .query_in(db, "SELECT count(*) > 0 FROM public.replay_probe")
                .as_deref()
                == Some("t");
        (has_row && standby.is_caught_up()).then_some(())
    });
    standby.query("SELECT pg_wal_replay_pause()");
    fleet.db.execute("INSERT INTO public.replay_probe VALUES (1);");
    wait_for("the standby to fall behind", Duration::from_secs(30), || {
        let age = standby.query("SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp()) > 2");
        (standby.is_behind() && age.as_deref() == Some("t")).then_some(())
    });
}

/// After the run, the standby replays it too: every tenant's version rows on it become the primary's.
async fn standby_has_the_run(standby: &Standby, fleet: &Fleet) {
    let url = standby.db_url(fleet.db.name());
    let client = connect(&url).await.expect("connect to the standby");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for t in &fleet.tenants {
        let schema = t.schema.as_ref().expect("schema tenants");
        loop {
            let rows = version_rows(&client, &format!("{schema}.{VERSION_TABLE}")).await;
            if rows == [REPO_HEAD] {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} on the standby: {rows:?}",
                t.id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Asserts the run held its tenants while the server was paused with a replay-lag reason that `says`, and
/// finished every tenant at head once it resumed.
async fn held_until_replayed(fleet: &Fleet, events: &std::path::Path, says: &str, code: Option<i32>, out: &str) {
    assert_eq!(code, Some(0), "{out}");
    let events = events_so_far(events);
    let paused = events.iter().find(|e| e["event"] == "server_paused").expect("a pause");
    let reason = paused["reason"].as_str().unwrap();
    assert!(reason.contains(says) && reason.contains("replay lag"), "{paused}");
    let resumed_at = events
        .iter()
        .position(|e| e["event"] == "server_resumed")
        .expect("a resume");
    let first_start = events
        .iter()
        .position(|e| e["event"] == "tenant_started")
        .expect("tenants started");
    assert!(resumed_at < first_start, "no tenant starts before the resume");
    let versions = fleet.versions().await;
    assert!(versions.values().all(|rows| rows == &[REPO_HEAD]), "{versions:?}");
}

/// The test cluster's pg_hba.conf (scripts/pg-cluster) asks members of this role for a scram password on TCP.
const PASSWORD_GROUP: &str = "flotilla_password_login";

/// An upgrade of `fleet` writing events to `events`, once the server paused it (a replica lagging) and, a moment
/// later, still no tenant has started.
fn spawn_held_by_lag(fleet: &Fleet, events: &std::path::Path) -> std::process::Child {
    let child = fleet.spawn_upgrade(&["--events", &Fleet::path_arg(events)]);
    wait_for("the server to pause", Duration::from_secs(30), || {
        events_so_far(events)
            .iter()
            .any(|e| e["event"] == "server_paused")
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !events_so_far(events).iter().any(|e| e["event"] == "tenant_started"),
        "no tenant starts while the replica lags"
    );
    child
}

/// The replica is read as a role that must send a password, which only the server's `password_file` holds: the
/// replica connection takes the server's password, and it never shows.
#[tokio::test]
async fn a_listed_replica_behind_its_primary_holds_the_servers_tenants_until_it_replays() {
    let standby = Standby::start();
    let fleet = Fleet::new("fleet_health_replica", 3, 0, Revisions::Repo, 4);
    let role = format!("flotilla_replica_reader_{}", std::process::id());
    let secret = format!("Rp-{}-x", std::process::id());
    fleet.db.execute(&format!(
        "DO $$ BEGIN CREATE ROLE {PASSWORD_GROUP} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;\n\
         DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD '{secret}' IN ROLE {PASSWORD_GROUP};"
    ));
    let password_file = fleet.project.path().join("server.password");
    std::fs::write(&password_file, format!("{secret}\n")).unwrap();
    pause_replay_behind(&standby, &fleet);
    let replica = standby
        .db_url(fleet.db.name())
        .replacen("postgres@", &format!("{role}@"), 1);
    fleet.write_tenants(
        4,
        &format!(
            "password_file = \"{}\"\npause_replay_lag = \"1s\"\nreplica_urls = [\"{replica}\"]\n",
            password_file.display()
        ),
    );
    let events = fleet.project.path().join("events.ndjson");
    let child = spawn_held_by_lag(&fleet, &events);
    standby.query("SELECT pg_wal_replay_resume()");
    let (code, stdout, stderr) = finish(child, Duration::from_secs(60));
    let says = format!("replica `{replica}` replay lag");
    held_until_replayed(&fleet, &events, &says, code, &format!("{stdout}\n{stderr}")).await;
    let all_output = format!("{stdout}{stderr}{}", std::fs::read_to_string(&events).unwrap());
    assert!(!all_output.contains(&secret), "{all_output}");
    standby_has_the_run(&standby, &fleet).await;
    fleet.db.execute(&format!("DROP ROLE {role}"));
}

#[tokio::test]
async fn the_primarys_replication_view_of_a_paused_standby_holds_the_servers_tenants() {
    let standby = Standby::start();
    let fleet = Fleet::new("fleet_health_replication", 3, 0, Revisions::Repo, 4);
    pause_replay_behind(&standby, &fleet);
    // The primary measures replay lag when the standby reports, which it does as WAL arrives: keep writing.
    let is_done = AtomicBool::new(false);
    let events = fleet.project.path().join("events.ndjson");
    let (code, out) = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !is_done.load(Ordering::Relaxed) {
                fleet.db.execute("INSERT INTO public.replay_probe VALUES (2);");
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        wait_for("the primary to see the lag", Duration::from_secs(30), || {
            let lag = query_text(
                fleet.db.url(),
                "SELECT coalesce(extract(epoch FROM max(replay_lag)), 0) > 2 FROM pg_stat_replication",
            );
            (lag.as_deref() == Some("t")).then_some(())
        });
        fleet.write_tenants(4, "pause_replay_lag = \"1s\"\n");
        let child = spawn_held_by_lag(&fleet, &events);
        standby.query("SELECT pg_wal_replay_resume()");
        let (code, stdout, stderr) = finish(child, Duration::from_secs(60));
        is_done.store(true, Ordering::Relaxed);
        (code, format!("{stdout}\n{stderr}"))
    });
    held_until_replayed(&fleet, &events, "replica replay lag", code, &out).await;
    standby_has_the_run(&standby, &fleet).await;
}

/// Runs an upgrade whose server lists `replica` (with `fleet`'s tenants file) and asserts the server pauses with a
/// reason that says `says`, holding its tenant untouched.
fn held_by_a_replica(fleet: &Fleet, replica: &str, says: &str) {
    fleet.write_tenants(2, &format!("replica_urls = \"{replica}\"\n"));
    let events = fleet.project.path().join("events.ndjson");
    assert_eq!(query_text(fleet.db.url(), TENANT_TABLES).as_deref(), Some("0"));
    let mut child = fleet.spawn_upgrade(&["--events", &Fleet::path_arg(&events)]);
    let paused = wait_for("the server to pause", Duration::from_secs(30), || {
        events_so_far(&events)
            .into_iter()
            .find(|e| e["event"] == "server_paused")
    });
    let reason = paused["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("replica `{replica}` {says}")), "{paused}");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!events_so_far(&events).iter().any(|e| e["event"] == "tenant_started"));
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(
        query_text(fleet.db.url(), TENANT_TABLES).as_deref(),
        Some("0"),
        "the held tenant was never touched"
    );
}

#[test]
fn an_unreachable_replica_pauses_its_server_and_says_why() {
    let fleet = Fleet::new("fleet_health_replica_down", 1, 0, Revisions::Repo, 2);
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let replica = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    held_by_a_replica(&fleet, &replica, "cannot be read");
}

#[test]
fn a_listed_replica_that_is_not_a_standby_pauses_its_server() {
    let fleet = Fleet::new("fleet_health_replica_primary", 1, 0, Revisions::Repo, 2);
    // The primary itself, listed by mistake (or a promoted replica).
    let replica = fleet.db.url().to_string();
    held_by_a_replica(&fleet, &replica, "is not in recovery");
}

#[test]
fn a_replica_url_with_a_password_is_refused_without_showing_it() {
    let fleet = Fleet::new("fleet_health_replica_pw", 1, 0, Revisions::Repo, 2);
    fleet.write_tenants(
        2,
        "replica_urls = [\"postgres://reader:hunter2@127.0.0.1:1/postgres\"]\n",
    );
    let out = fleet.upgrade(&[]).assert_code(2);
    assert!(out.stderr.contains("tenants.toml:"), "{}", out.stderr);
    assert!(out.stderr.contains("replica url"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("hunter2") && !out.stdout.contains("hunter2"),
        "{}",
        out.stderr
    );
}
