//! The PostgreSQL ledger on a real server: the whole shared suite (`flotilla::ledger::testing`, which the SQLite
//! ledger passes in its unit tests), then what only the PostgreSQL ledger has: its schema and migrations, the
//! server's clock, and its url's password.

use std::sync::Barrier;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla::config::DbUrl;
use flotilla::ledger::testing::Store;
use flotilla::ledger::{
    ClaimState, Ledger, LedgerError, LedgerLocation, NewRun, NewTenant, OpenRun, PgLedger, Placement, RunnerInfo,
    TenantStatus, TenantUpdate, PG_SCHEMA_VERSION,
};

use crate::harness::{block_on, connect, parse_ledger_backend, LedgerBackend, TestDb, TestLedger};

/// A fresh database per store; each connection is another [`PgLedger`] (another runner) on it.
struct PgStore {
    db: TestDb,
    url: DbUrl,
}

impl PgStore {
    fn new() -> PgStore {
        let db = TestDb::new("ledger");
        let url = DbUrl::parse(db.url()).unwrap();
        PgStore { db, url }
    }
}

impl Store for PgStore {
    type L = PgLedger;
    fn connect(&self) -> PgLedger {
        PgLedger::open(&self.url).unwrap_or_else(|e| panic!("open the ledger: {}", chain(&e)))
    }
    fn location(&self) -> String {
        self.url.redacted().to_string()
    }
}

mod suite {
    flotilla::ledger_suite!(super::PgStore::new());
}

/// An error and all its sources, as `main` prints them.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// One row of SQL's answer as text, from a fresh connection.
fn query_strings(db: &TestDb, sql: &str) -> Vec<String> {
    let (url, sql) = (db.url().to_string(), sql.to_string());
    block_on(async move {
        let client = connect(&url).await?;
        let rows = client.query(&sql, &[]).await?;
        anyhow::Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    })
    .unwrap()
}

fn open_run(name: &str, lease: Duration) -> OpenRun {
    OpenRun {
        run: NewRun {
            command: "upgrade".to_string(),
            target: "head".to_string(),
            options: serde_json::json!({}),
            user: "ops".to_string(),
            host: "host-a".to_string(),
        },
        name: Some(name.to_string()),
        runner: RunnerInfo::this_process("host-a", Placement::default(), lease),
    }
}

fn tenants(ids: &[String]) -> Vec<NewTenant<'_>> {
    ids.iter()
        .map(|id| NewTenant {
            tenant_id: id,
            server: "a",
            kind: "schema",
            target: None,
            canary: false,
            tags: None,
            at_target: None,
        })
        .collect()
}

/// The first connection to an empty database creates the schema with its version row, tables and indexes.
#[test]
fn ledger_pg_schema_is_created_from_empty() {
    let store = PgStore::new();
    assert!(query_strings(
        &store.db,
        "SELECT nspname::text FROM pg_namespace WHERE nspname = 'flotilla_ledger'"
    )
    .is_empty());
    drop(store.connect());
    let versions = query_strings(
        &store.db,
        "SELECT version::text FROM flotilla_ledger.schema_version ORDER BY 1",
    );
    let expected: Vec<String> = (1..=PG_SCHEMA_VERSION).map(|v| v.to_string()).collect();
    assert_eq!(versions, expected);
    let tables = query_strings(
        &store.db,
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'flotilla_ledger' ORDER BY 1",
    );
    assert_eq!(
        tables,
        ["connection_shares", "runners", "runs", "schema_version", "tenants"]
    );
    let indexes = query_strings(
        &store.db,
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'flotilla_ledger' AND tablename = 'tenants'
         ORDER BY 1",
    );
    assert_eq!(
        indexes,
        ["tenants_canary", "tenants_claim", "tenants_pkey", "tenants_status"]
    );
    // A second connection finds the schema current and changes nothing.
    drop(store.connect());
    assert_eq!(
        query_strings(&store.db, "SELECT count(*)::text FROM flotilla_ledger.schema_version"),
        [PG_SCHEMA_VERSION.to_string()]
    );
}

/// Runners starting at once on an empty database migrate it once, one after another (the advisory lock).
#[test]
fn ledger_pg_concurrent_first_connections_migrate_once() {
    let store = PgStore::new();
    let barrier = Barrier::new(6);
    std::thread::scope(|scope| {
        for _ in 0..6 {
            scope.spawn(|| {
                barrier.wait();
                drop(store.connect());
            });
        }
    });
    assert_eq!(
        query_strings(&store.db, "SELECT count(*)::text FROM flotilla_ledger.schema_version"),
        [PG_SCHEMA_VERSION.to_string()]
    );
}

/// A ledger a newer flotilla migrated is refused, naming the location and both versions.
#[test]
fn ledger_pg_newer_schema_is_refused() {
    let store = PgStore::new();
    drop(store.connect());
    let newer = PG_SCHEMA_VERSION + 1;
    store.db.execute(&format!(
        "INSERT INTO flotilla_ledger.schema_version (version) VALUES ({newer})"
    ));
    let err = PgLedger::open(&store.url).unwrap_err();
    assert!(
        matches!(err, LedgerError::SchemaTooNew { found, known, .. } if found == newer && known == PG_SCHEMA_VERSION),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "ledger {} has schema version {newer}, newer than the version {PG_SCHEMA_VERSION} this flotilla \
             knows: upgrade flotilla to read it",
            store.location()
        )
    );
}

/// Leases run on the server's clock: a lease is judged by `now()` in the control database, so the
/// `lease_until` stored is the server's time plus the lease.
#[test]
fn ledger_pg_leases_use_the_servers_clock() {
    let store = PgStore::new();
    let mut ledger = store.connect();
    let ids: Vec<String> = vec!["t1".to_string()];
    let joined = ledger
        .open_run(&open_run("clock", Duration::from_secs(600)), &tenants(&ids))
        .unwrap();
    ledger.claim(&joined.run, 1).unwrap();
    let lease = query_strings(
        &store.db,
        "SELECT round(extract(epoch FROM lease_until - now()))::text FROM flotilla_ledger.runners",
    );
    let left: f64 = lease[0].parse().unwrap();
    assert!(
        (590.0..=600.0).contains(&left),
        "lease left by the server's clock: {left}"
    );
}

/// The plan of a claim's ordered scan (the same statement as `PgLedger::claim`'s first step).
fn claim_plan(db: &TestDb) -> String {
    query_strings(
        db,
        "EXPLAIN SELECT tenant_id FROM flotilla_ledger.tenants
         WHERE run_seq = 1 AND status IN ('pending', 'running', 'interrupted')
           AND (cardinality('{}'::text[]) = 0 OR server = ANY ('{}')) AND tags @> '{}'::jsonb
           AND (status = 'interrupted' OR runner IS NULL
                OR runner IN (SELECT id FROM flotilla_ledger.runners
                              WHERE run_seq = 1 AND (finished_at IS NOT NULL OR lease_until < now())))
           AND (canary OR NOT EXISTS (SELECT 1 FROM flotilla_ledger.tenants
                                      WHERE run_seq = 1 AND canary
                                        AND status IN ('pending', 'running', 'interrupted')))
         ORDER BY position LIMIT 5 FOR UPDATE SKIP LOCKED",
    )
    .join("\n")
}

/// A claim in a run of 100,000 tenants reads only unfinished rows: at the start it walks the partial index in
/// dispatch order and stops after its batch (no sort of the whole run), at the end it skips every finished row.
/// (The time per claim is measured in load-tests, not here.)
#[test]
fn ledger_pg_claims_stay_on_unfinished_rows_in_a_large_run() {
    let store = PgStore::new();
    let mut ledger = store.connect();
    let ids: Vec<String> = (0..100_000).map(|i| format!("t{i:06}")).collect();
    let joined = ledger
        .open_run(&open_run("large", Duration::from_secs(600)), &tenants(&ids))
        .unwrap();
    store.db.execute("ANALYZE flotilla_ledger.tenants");
    let plan = claim_plan(&store.db);
    assert!(
        plan.contains("tenants_claim") && !plan.contains("Sort"),
        "at the start, an ordered walk of the unfinished tenants:\n{plan}"
    );
    let first = ledger.claim(&joined.run, 3).unwrap();
    let got: Vec<&str> = first.tenants.iter().map(|t| t.tenant_id.as_str()).collect();
    assert_eq!(got, ["t000000", "t000001", "t000002"]);
    store.db.execute(
        "UPDATE flotilla_ledger.tenants SET status = 'succeeded' WHERE position < 99990;
         ANALYZE flotilla_ledger.tenants;",
    );
    let plan = claim_plan(&store.db);
    assert!(
        !plan.contains("Seq Scan")
            && (plan.contains("tenants_claim") || plan.contains("Index Cond: ((run_seq = 1) AND (status = ANY")),
        "at the end, only the unfinished tenants are read:\n{plan}"
    );
    let claim = ledger.claim(&joined.run, 5).unwrap();
    let got: Vec<&str> = claim.tenants.iter().map(|t| t.tenant_id.as_str()).collect();
    // t000000..2 are this runner's (claimed, not started): not handed out again.
    assert_eq!(got, ["t099990", "t099991", "t099992", "t099993", "t099994"]);
    assert_eq!(claim.state, ClaimState::More);
    let rest = ledger.claim(&joined.run, 100).unwrap();
    assert_eq!(rest.tenants.len(), 5);
    assert_eq!(rest.state, ClaimState::Done);
}

/// A runner that dies holding a claim (its process gone, no finish) loses its tenants to another runner once
/// its lease lapses; the connection closing does not give them back early.
#[test]
fn ledger_pg_dropped_runner_keeps_its_claim_until_the_lease_lapses() {
    let store = PgStore::new();
    let ids: Vec<String> = (0..4).map(|i| format!("t{i}")).collect();
    let mut a = store.connect();
    let joined = a
        .open_run(&open_run("dies", Duration::from_millis(1_500)), &tenants(&ids))
        .unwrap();
    assert_eq!(a.claim(&joined.run, 2).unwrap().tenants.len(), 2);
    a.record(&joined.run, &[TenantUpdate::new("t0", TenantStatus::Running)])
        .unwrap();
    drop(a);
    let mut b = store.connect();
    b.open_run(&open_run("dies", Duration::from_secs(600)), &[]).unwrap();
    let first = b.claim(&joined.run, 10).unwrap();
    let got: Vec<&str> = first.tenants.iter().map(|t| t.tenant_id.as_str()).collect();
    assert_eq!(got, ["t2", "t3"]);
    assert_eq!(first.state, ClaimState::Wait, "a's lease still holds");
    std::thread::sleep(Duration::from_millis(2_000));
    let second = b.claim(&joined.run, 10).unwrap();
    let got: Vec<&str> = second.tenants.iter().map(|t| t.tenant_id.as_str()).collect();
    assert_eq!(got, ["t0", "t1"]);
}

/// The password of the control database's url never shows: not in the location, not in any error (a refused
/// login, a refused schema), not in `Debug`.
#[test]
fn ledger_pg_password_is_never_shown() {
    let store = PgStore::new();
    drop(store.connect());
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let role = format!("flotilla_ledger_pw_{}_{}", std::process::id(), nanos % 1_000_000_000);
    let secret = format!("Ledger-{nanos}-pw");
    // The test cluster asks members of this group for a scram password on TCP (see docs/testing.md).
    store.db.execute(&format!(
        "DO $$ BEGIN CREATE ROLE flotilla_password_login NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{secret}' IN ROLE flotilla_password_login;"
    ));
    let with_password = |password: &str| store.db.url().replacen("postgres@", &format!("{role}:{password}@"), 1);
    let mut texts = Vec::new();

    let right = LedgerLocation::parse(std::path::Path::new(&with_password(&secret))).unwrap();
    texts.push(right.to_string());
    texts.push(format!("{right:?}"));
    let LedgerLocation::Postgres(url) = &right else {
        panic!("a postgres url is a PostgreSQL ledger: {right}");
    };
    drop(flotilla::ledger::open(&right).unwrap_or_else(|e| panic!("{}", chain(&e))));
    let ledger = PgLedger::open(url).unwrap_or_else(|e| panic!("{}", chain(&e)));
    texts.push(format!("{ledger:?}"));
    texts.push(ledger.location().to_string());
    drop(ledger);

    let wrong = format!("{secret}-wrong");
    let refused = PgLedger::open(&DbUrl::parse(&with_password(&wrong)).unwrap()).unwrap_err();
    assert!(
        matches!(refused, LedgerError::Postgres { action: "connect", .. }),
        "{refused:?}"
    );
    texts.push(chain(&refused));
    texts.push(format!("{refused:?}"));

    store
        .db
        .execute("INSERT INTO flotilla_ledger.schema_version (version) VALUES (1000)");
    let too_new = PgLedger::open(url).unwrap_err();
    assert!(matches!(too_new, LedgerError::SchemaTooNew { .. }), "{too_new:?}");
    texts.push(chain(&too_new));
    texts.push(format!("{too_new:?}"));

    store.db.execute(&format!("DROP ROLE {role}"));
    for text in &texts {
        assert!(!text.contains(&secret), "the password shows in: {text}");
        assert!(
            text.contains(&format!("{role}:***@")) || text.contains("PgLedger"),
            "{text}"
        );
    }
}

/// `FLOTILLA_TEST_LEDGER` picks the fleet tests' ledger: a file by default, a control database for `postgres`.
#[test]
fn ledger_pg_test_ledger_knob() {
    assert_eq!(parse_ledger_backend(None), Ok(LedgerBackend::Sqlite));
    assert_eq!(parse_ledger_backend(Some("sqlite")), Ok(LedgerBackend::Sqlite));
    assert_eq!(parse_ledger_backend(Some(" postgres ")), Ok(LedgerBackend::Postgres));
    assert_eq!(parse_ledger_backend(Some("mysql")), Err("mysql".to_string()));
    let db = TestLedger::Postgres(TestDb::new("ledger_knob"));
    let arg = db.arg();
    let location = LedgerLocation::parse(&arg).unwrap();
    assert!(location.is_postgres(), "{location}");
    drop(flotilla::ledger::open(&location).unwrap_or_else(|e| panic!("{}", chain(&e))));
    let file = TestLedger::File("state/ledger.db".into());
    assert!(!LedgerLocation::parse(&file.arg()).unwrap().is_postgres());
}

/// The ledger's methods are blocking calls that `fleet status` and `fleet retry` make from async code: they
/// must work inside a tokio runtime of either flavour, where the `postgres` client would panic on its own.
#[tokio::test(flavor = "current_thread")]
async fn ledger_pg_works_inside_a_current_thread_runtime() {
    inside_a_runtime();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_pg_works_inside_a_multi_thread_runtime() {
    inside_a_runtime();
}

fn inside_a_runtime() {
    let store = PgStore::new();
    let location = LedgerLocation::parse(std::path::Path::new(store.db.url())).unwrap();
    let mut ledger = flotilla::ledger::open(&location).unwrap_or_else(|e| panic!("{}", chain(&e)));
    let ids: Vec<String> = vec!["t1".to_string(), "t2".to_string()];
    let joined = ledger
        .open_run(&open_run("async", Duration::from_secs(60)), &tenants(&ids))
        .unwrap();
    assert_eq!(ledger.claim(&joined.run, 5).unwrap().tenants.len(), 2);
    ledger.finish_run(&joined.run, 0).unwrap();
    let run = ledger.run(&flotilla::ledger::RunSelector::Latest).unwrap().unwrap();
    assert!(run.is_finished());
    assert_eq!(ledger.retry_set(&joined.run).unwrap(), ["t1", "t2"]);
}

/// A ledger whose connection the server closed (a restart, a failover, an administrator) fails at most the call
/// that found it closed, with a PostgreSQL error naming the ledger, and connects again for the next one.
#[test]
fn ledger_pg_reconnects_after_losing_its_connection() {
    let store = PgStore::new();
    let mut ledger = store.connect();
    let run = ledger
        .begin_run(&open_run("lost", Duration::from_secs(60)).run, &[])
        .unwrap();
    store.db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
    let mut errors = Vec::new();
    let mut found = None;
    for _ in 0..2 {
        match ledger.run(&flotilla::ledger::RunSelector::Latest) {
            Ok(record) => {
                found = record;
                break;
            }
            Err(e) => errors.push(e),
        }
    }
    assert!(errors.len() <= 1, "{errors:?}");
    for e in &errors {
        assert!(matches!(e, LedgerError::Postgres { .. }), "{e:?}");
        assert!(
            e.to_string().starts_with(&format!("ledger {}: ", store.location())),
            "{e}"
        );
    }
    assert_eq!(found.map(|r| r.id), Some(run));
}
