//! Health throttling: a server whose `pause_query` number is over `pause_query_above` holds its tenants before
//! they start, and lets them go when the number is back under the resume fraction; the pause is reported as
//! events and counted in `flotilla_server_paused_seconds_total`. The replay-lag signal is driven by a real
//! streaming standby of the test cluster (`harness::Standby`) whose replay is paused, read through a listed
//! replica url and through the primary's `pg_stat_replication`. The lock-waiter signal is driven by sessions of
//! a scratch database queued behind one holding a lock, and the connection headroom by connections the test
//! opens to a small cluster of its own (the shared one serves every test at once). The signals' connection
//! counts in `max_connections`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::fleet_support::{finish, read_events_so_far as events_so_far, wait_for, Fleet, Revisions, REPO_HEAD};
use crate::harness::{
    child_env, cluster, connect, own_cluster_dir, pg_cluster, start_own_cluster, url_of_db, version_rows, Standby,
    TempProject, TestDb, VERSION_TABLE,
};

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
    let paused = wait_for_pause(&events);
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

/// Waits (up to 30 s) for the run writing `events` to pause a server, and returns the `server_paused` event.
fn wait_for_pause(events: &Path) -> serde_json::Value {
    wait_for("the server to pause", Duration::from_secs(30), || {
        events_so_far(events)
            .into_iter()
            .find(|e| e["event"] == "server_paused")
    })
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
    // Two connections: one held by the tenant's backfill while it waits, and one the first sample reserved for
    // the signals, or the wait would never end.
    fleet.write_tenants(2, HEALTH);
    let events = fleet.project.path().join("events.ndjson");
    let child = fleet.spawn_upgrade(&["--events", &Fleet::path_arg(&events)]);
    wait_for("the backfill to start", Duration::from_secs(30), || {
        (rows_done(&events_so_far(&events)) >= 30).then_some(())
    });
    fleet.db.execute("UPDATE public.health_signal SET v = 100;");
    wait_for_pause(&events);
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
    wait_for_pause(events);
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
    let paused = wait_for_pause(&events);
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

/// `flotilla_server_paused_seconds_total{server}` in a metrics textfile.
fn paused_seconds(textfile: &Path, server: &str) -> f64 {
    let metrics = std::fs::read_to_string(textfile).unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("flotilla_server_paused_seconds_total{{server=\"{server}\"}} ")))
        .unwrap_or_else(|| panic!("no paused-time counter for {server}:\n{metrics}"))
        .parse()
        .unwrap()
}

/// Sessions of a database of the test cluster that wait on a lock: one session holds an ACCESS EXCLUSIVE lock on
/// a table, the others queue behind it until [`LockQueue::release`].
struct LockQueue {
    db: TestDb,
    holder: tokio_postgres::Client,
    waiters: Vec<tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>>,
}

impl LockQueue {
    /// `n` waiting sessions, once the server shows them waiting. Needs a multi-threaded test runtime: the waiters'
    /// connections are driven while the test thread blocks.
    async fn start(n: usize) -> LockQueue {
        let db = TestDb::new("fleet_health_lock_scratch");
        db.execute("CREATE TABLE public.hot (n int);");
        let holder = connect(db.url()).await.unwrap();
        holder
            .batch_execute("BEGIN; LOCK TABLE public.hot IN ACCESS EXCLUSIVE MODE;")
            .await
            .unwrap();
        let mut waiters = Vec::new();
        for _ in 0..n {
            let client = connect(db.url()).await.unwrap();
            waiters.push(tokio::spawn(async move {
                client.simple_query("SELECT count(*) FROM public.hot").await.map(drop)
            }));
        }
        let expected = n.to_string();
        wait_for("sessions to wait on the lock", Duration::from_secs(30), || {
            let waiting = query_text(
                db.url(),
                "SELECT count(*) FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_database d ON d.oid = l.database \
                 WHERE NOT l.granted AND d.datname = current_database()",
            );
            (waiting.as_deref() == Some(expected.as_str())).then_some(())
        });
        LockQueue { db, holder, waiters }
    }

    /// End the holder's transaction: every waiter gets the lock and finishes.
    async fn release(self) {
        self.holder.batch_execute("COMMIT").await.unwrap();
        for waiter in self.waiters {
            waiter.await.unwrap().expect("a waiter's query");
        }
        drop(self.db);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_waiting_on_locks_hold_their_servers_tenants_while_other_servers_go_on() {
    let fleet = Fleet::new("fleet_health_locks", 3, 0, Revisions::Repo, 4);
    // A second server with tenants of its own and no health limits: its tenants run while `local` is paused.
    let other = TestDb::new("fleet_health_locks_other");
    other.execute("CREATE SCHEMA other_0001; CREATE SCHEMA other_0002;");
    fleet.write_tenants(4, "pause_lock_waiters = 2\n");
    let mut tenants = std::fs::read_to_string(&fleet.tenants_file).unwrap();
    tenants.push_str(&format!(
        "[[servers]]\nname = \"other\"\nurl = \"{}\"\nmax_connections = 2\n\n",
        other.url()
    ));
    for schema in ["other_0001", "other_0002"] {
        tenants.push_str(&format!(
            "[[tenants]]\nid = \"{schema}\"\nserver = \"other\"\nschema = \"{schema}\"\n\n"
        ));
    }
    std::fs::write(&fleet.tenants_file, tenants).unwrap();
    let queue = LockQueue::start(2).await;
    let dir = fleet.project.path();
    let (events, textfile) = (dir.join("events.ndjson"), dir.join("flotilla.prom"));
    let child = fleet.spawn_upgrade(&[
        "--concurrency",
        "8",
        "--events",
        &Fleet::path_arg(&events),
        "--metrics-textfile",
        &Fleet::path_arg(&textfile),
    ]);
    let paused = wait_for_pause(&events);
    assert_eq!(paused["server"], "local");
    let reason = paused["reason"].as_str().unwrap();
    assert!(reason.contains("sessions wait on locks (pause at 2)"), "{paused}");
    // The other server's tenants finish while `local` is held.
    wait_for("the other server's tenants", Duration::from_secs(60), || {
        let n = events_so_far(&events)
            .iter()
            .filter(|e| e["event"] == "tenant_succeeded" && e["tenant"].as_str().unwrap().starts_with("other_"))
            .count();
        (n == 2).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1000));
    let so_far = events_so_far(&events);
    assert!(
        !so_far
            .iter()
            .any(|e| e["event"] == "tenant_started" && e["tenant"].as_str().unwrap().starts_with("tenant_")),
        "no tenant of the paused server starts while sessions wait on locks"
    );
    assert!(!so_far.iter().any(|e| e["event"] == "server_resumed"));
    queue.release().await;
    let (code, stdout, stderr) = finish(child, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let events = events_so_far(&events);
    let resumed_at = events
        .iter()
        .position(|e| e["event"] == "server_resumed")
        .expect("a resume");
    assert_eq!(events[resumed_at]["server"], "local");
    assert!(
        events[resumed_at]["paused_ms"].as_u64().unwrap() >= 1000,
        "{}",
        events[resumed_at]
    );
    let first_local_start = events
        .iter()
        .position(|e| e["event"] == "tenant_started" && e["tenant"].as_str().unwrap().starts_with("tenant_"))
        .expect("local tenants started");
    assert!(resumed_at < first_local_start);
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "server_paused" && e["server"] == "other"),
        "the other server never paused"
    );
    assert!(paused_seconds(&textfile, "local") >= 1.0);
    // Nothing lost: every tenant of both servers at head.
    let versions = fleet.versions().await;
    assert!(versions.values().all(|rows| rows == &[REPO_HEAD]), "{versions:?}");
    let client = connect(other.url()).await.unwrap();
    for schema in ["other_0001", "other_0002"] {
        let rows = version_rows(&client, &format!("{schema}.{VERSION_TABLE}")).await;
        assert_eq!(rows, [REPO_HEAD], "{schema}");
    }
}

/// A cluster of the test's own with few connections (`max_connections = 40`), so the test can take most of them
/// without starving the other tests; destroyed when dropped.
struct SmallCluster {
    dir: PathBuf,
    /// The maintenance database's url.
    url: String,
}

impl SmallCluster {
    const MAX_CONNECTIONS: u32 = 40;

    async fn start() -> SmallCluster {
        let mut server = SmallCluster {
            dir: own_cluster_dir("flotilla-health-pg"),
            url: String::new(),
        };
        server.restart();
        let client = connect(&server.url).await.unwrap();
        client
            .batch_execute(&format!("ALTER SYSTEM SET max_connections = {}", Self::MAX_CONNECTIONS))
            .await
            .unwrap();
        drop(client);
        server.restart();
        let shown = query_text(&server.url, "SHOW max_connections");
        assert_eq!(shown, Some(Self::MAX_CONNECTIONS.to_string()));
        server
    }

    fn db_url(&self, db: &str) -> String {
        url_of_db(&self.url, db)
    }

    fn restart(&mut self) {
        self.url = start_own_cluster(&self.dir, &[]);
    }
}

impl Drop for SmallCluster {
    fn drop(&mut self) {
        pg_cluster("destroy", &self.dir);
    }
}

/// What `fleet::health::sample_sql` reads as the free connection slots.
const FREE_SLOTS: &str = "SELECT current_setting('max_connections')::int - \
     current_setting('superuser_reserved_connections')::int - (SELECT count(*) FROM pg_catalog.pg_stat_activity)";

/// `flotilla ARGS` in `project` as a child we control.
fn spawn_in(project: &TempProject, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .env_clear()
        .envs(child_env(std::env::vars_os(), &[]))
        .current_dir(project.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start flotilla")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_short_of_free_connections_holds_its_tenants_until_they_are_given_back() {
    let server = SmallCluster::start().await;
    let admin = connect(&server.url).await.unwrap();
    admin.batch_execute("CREATE DATABASE fleet").await.unwrap();
    let url = server.db_url("fleet");
    let schemas = ["tenant_0001", "tenant_0002", "tenant_0003"];
    let fleet_db = connect(&url).await.unwrap();
    for schema in schemas {
        fleet_db
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
    }
    let project = TempProject::new("");
    project.copy_repo_migrations();
    let mut toml = format!(
        "[defaults]\nrate = 0\n\n[[servers]]\nname = \"small\"\nurl = \"{url}\"\nmax_connections = 3\n\
         pause_free_connections = 10\n\n"
    );
    for schema in schemas {
        toml.push_str(&format!(
            "[[tenants]]\nid = \"{schema}\"\nserver = \"small\"\nschema = \"{schema}\"\n\n"
        ));
    }
    let tenants = project.write("tenants.toml", &toml);
    // Take all but four free slots: with the run's own signals connection, three are left, under ten.
    let free: i64 = query_text(&server.url, FREE_SLOTS).unwrap().parse().unwrap();
    assert!(free > 20, "the small cluster has {free} free slots");
    let mut taken = Vec::new();
    for _ in 0..free - 4 {
        taken.push(connect(&url).await.unwrap());
    }
    let (events, textfile) = (
        project.path().join("events.ndjson"),
        project.path().join("flotilla.prom"),
    );
    let child = spawn_in(
        &project,
        &[
            "fleet",
            "upgrade",
            "head",
            "--progress",
            "none",
            "--tenants",
            &tenants.display().to_string(),
            "--ledger",
            &project.path().join("state/ledger.db").display().to_string(),
            "--events",
            &events.display().to_string(),
            "--metrics-textfile",
            &textfile.display().to_string(),
        ],
    );
    let paused = wait_for_pause(&events);
    let reason = paused["reason"].as_str().unwrap();
    assert!(reason.contains("free connection slots (pause under 10)"), "{paused}");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !events_so_far(&events).iter().any(|e| e["event"] == "tenant_started"),
        "no tenant starts while the server is short of connections"
    );
    // Give the connections back: the headroom clears, and the run resumes by itself.
    drop(taken);
    let (code, stdout, stderr) = finish(child, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let events = events_so_far(&events);
    let resumed_at = events
        .iter()
        .position(|e| e["event"] == "server_resumed")
        .expect("a resume");
    let first_start = events
        .iter()
        .position(|e| e["event"] == "tenant_started")
        .expect("tenants started");
    assert!(resumed_at < first_start);
    assert!(paused_seconds(&textfile, "small") >= 1.5);
    for schema in schemas {
        let rows = version_rows(&fleet_db, &format!("{schema}.{VERSION_TABLE}")).await;
        assert_eq!(rows, [REPO_HEAD], "{schema}");
    }
}

/// The signals' connection is one of `max_connections`: a run with health throttling on never has more than the
/// cap open to the server, counting the connection the signals are read on.
#[tokio::test]
async fn the_health_signals_connection_counts_in_the_servers_connection_cap() {
    const CAP: i64 = 4;
    let fleet = Fleet::new("fleet_health_cap", 8, 4, Revisions::Fixture("fleet_slow"), CAP as usize);
    // Signals that never pause: only the connections are under test.
    fleet.write_tenants(CAP as usize, "pause_lock_waiters = 100000\n");
    let mut databases: Vec<String> = fleet.dbs.iter().map(|d| d.name().to_string()).collect();
    databases.push(fleet.db.name().to_string());
    let mut child = fleet.spawn_upgrade(&["--concurrency", "16"]);
    let admin = connect(cluster().url()).await.unwrap();
    let mut samples = Vec::new();
    let mut has_seen_signals = false;
    while child.try_wait().unwrap().is_none() {
        let row = admin
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE query LIKE '%pg_catalog.pg_locks WHERE NOT granted%') \
                 FROM pg_stat_activity WHERE application_name = 'flotilla' AND datname = ANY($1) \
                 AND pid <> pg_backend_pid()",
                &[&databases],
            )
            .await
            .unwrap();
        samples.push(row.get::<_, i64>(0));
        has_seen_signals |= row.get::<_, i64>(1) > 0;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, stdout, stderr) = finish(child, Duration::from_secs(10));
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let max = samples.iter().copied().max().unwrap_or(0);
    assert!(
        max <= CAP,
        "{max} connections open at once (cap {CAP}, the signals' one included); samples: {samples:?}"
    );
    assert!(has_seen_signals, "the signals' connection was never seen");
    assert!(max > 2, "the cap was not exercised: {samples:?}");
    let versions = fleet.versions().await;
    assert!(
        versions.values().all(|v| *v == [crate::fleet_support::SLOW_HEAD]),
        "{versions:?}"
    );
}

#[test]
fn health_with_one_connection_is_refused_naming_max_connections() {
    let fleet = Fleet::new("fleet_health_one_conn", 1, 0, Revisions::Repo, 1);
    fleet.write_tenants(1, "health = true\n");
    let out = fleet.upgrade(&[]).assert_code(2);
    assert!(out.stderr.contains("tenants.toml:"), "{}", out.stderr);
    assert!(
        out.stderr.contains("set `max_connections` to at least 2"),
        "{}",
        out.stderr
    );
}

/// A process stopped with SIGSTOP until this is dropped (SIGCONT), so a failing test never leaves a standby
/// backend frozen under the standby's shutdown.
struct Frozen(i32);

impl Frozen {
    fn stop(pid: i32) -> Frozen {
        // SAFETY: kill only sends a signal to a backend pid the standby reported.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "stop the backend");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as in `stop`.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// The listed replica answers at first, then its session stops answering part way through a backfill (its
/// backend frozen with SIGSTOP): the sample gives up after the replica timeout and the server pauses, holding the
/// backfill's batches, instead of hanging; once the replica answers again the run resumes and loses nothing.
#[test]
fn a_replica_that_stops_answering_mid_run_pauses_its_server_until_it_answers_again() {
    let standby = Standby::start();
    let fleet = Fleet::new(
        "fleet_health_replica_hang",
        1,
        0,
        Revisions::Fixture("fleet_backfill_slow"),
        2,
    );
    let db = fleet.db.name();
    wait_for("the standby to have the database", Duration::from_secs(30), || {
        standby.query_in(db, "SELECT 1").map(drop)
    });
    let replica = standby.db_url(db);
    fleet.write_tenants(
        2,
        &format!("pause_replay_lag = \"10min\"\nreplica_urls = [\"{replica}\"]\n"),
    );
    let events = fleet.project.path().join("events.ndjson");
    let child = fleet.spawn_upgrade(&["--events", &Fleet::path_arg(&events)]);
    wait_for("the backfill to start", Duration::from_secs(30), || {
        (rows_done(&events_so_far(&events)) >= 30).then_some(())
    });
    assert!(
        !events_so_far(&events).iter().any(|e| e["event"] == "server_paused"),
        "the replica answered until now"
    );
    let pid: i32 = standby
        .query("SELECT pid FROM pg_stat_activity WHERE application_name = 'flotilla'")
        .expect("flotilla's session on the replica")
        .parse()
        .unwrap();
    let frozen = Frozen::stop(pid);
    let paused = wait_for_pause(&events);
    let reason = paused["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("replica `{replica}` cannot be read: no answer within 5.0s")),
        "{paused}"
    );
    let held_at = rows_done(&events_so_far(&events));
    std::thread::sleep(Duration::from_millis(2000));
    let later = rows_done(&events_so_far(&events));
    assert!(later <= held_at + 10, "held at {held_at}, then {later}");
    assert!(later < 300, "the backfill did not finish while the replica was silent");
    drop(frozen);
    let (code, stdout, stderr) = finish(child, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(events_so_far(&events).iter().any(|e| e["event"] == "server_resumed"));
    let wrong = query_text(fleet.db.url(), "SELECT count(*) FROM tenant_0001.counters WHERE n <> 1");
    assert_eq!(
        wrong.as_deref(),
        Some("0"),
        "every row backfilled exactly once across the pause"
    );
}
