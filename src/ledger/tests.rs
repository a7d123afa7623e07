//! The SQLite ledger: the shared suite (`testing`) on a fresh file per test, and what only SQLite has (the file,
//! WAL readers, `user_version`).

use std::path::Path;

use serde_json::json;

use super::testing::Store;
use super::*;

/// A fresh ledger file in a temporary directory; each connection opens the file again.
struct SqliteStore(tempfile::TempDir);

impl SqliteStore {
    fn new() -> SqliteStore {
        SqliteStore(tempfile::tempdir().unwrap())
    }

    fn path(&self) -> std::path::PathBuf {
        self.0.path().join("ledger.sqlite")
    }
}

impl Store for SqliteStore {
    type L = SqliteLedger;
    fn connect(&self) -> SqliteLedger {
        SqliteLedger::open(self.path()).unwrap()
    }
    fn location(&self) -> String {
        self.path().display().to_string()
    }
}

mod suite {
    crate::ledger_suite!(super::SqliteStore::new());
}

/// The in-memory ledger passes the single-connection part of the suite too.
struct MemoryStore;

impl Store for MemoryStore {
    type L = SqliteLedger;
    fn connect(&self) -> SqliteLedger {
        SqliteLedger::open_in_memory().unwrap()
    }
    fn location(&self) -> String {
        ":memory:".to_string()
    }
}

#[test]
fn in_memory_ledger_records_a_run() {
    testing::check_lifecycle_from_begin_to_finish(&MemoryStore);
    testing::check_batch_with_an_unknown_tenant_is_rolled_back_whole(&MemoryStore);
}

fn new_run(target: &str) -> NewRun {
    NewRun {
        command: "upgrade".to_string(),
        target: target.to_string(),
        options: json!({"concurrency": 8, "servers": ["a", "b"]}),
        user: "ops".to_string(),
        host: "build-1".to_string(),
    }
}

fn new_tenants<'a>(ids: &[&'a str]) -> Vec<NewTenant<'a>> {
    ids.iter()
        .map(|id| NewTenant {
            tenant_id: id,
            server: "pg-1",
            kind: "schema",
            target: None,
            canary: false,
            tags: None,
            at_target: None,
        })
        .collect()
}

fn update(id: &str, status: TenantStatus) -> TenantUpdate {
    TenantUpdate {
        attempts: 1,
        ..TenantUpdate::new(id, status)
    }
}

fn check_statuses(ledger: &SqliteLedger, run: &RunId, expected: &[(&str, TenantStatus)]) {
    let got: Vec<(String, TenantStatus)> = ledger
        .tenants(run, None)
        .unwrap()
        .into_iter()
        .map(|t| (t.tenant_id, t.status))
        .collect();
    let expected: Vec<(String, TenantStatus)> = expected.iter().map(|(id, s)| (id.to_string(), *s)).collect();
    assert_eq!(got, expected);
}

fn latest(ledger: &SqliteLedger) -> RunRecord {
    ledger.run(&RunSelector::Latest).unwrap().unwrap()
}

use TenantStatus::{Failed, Pending, Succeeded};

#[test]
fn ledger_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<SqliteLedger>();
    assert_send::<Box<dyn Ledger>>();
}

#[test]
fn open_creates_directories_and_reopens_with_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("nested").join("ledger.db");
    let run = {
        let mut ledger = SqliteLedger::open(&path).unwrap();
        assert_eq!(ledger.path(), path.as_path());
        let run = ledger.begin_run(&new_run("head"), &new_tenants(&["t1"])).unwrap();
        ledger.finish_run(&run, 0).unwrap();
        run
    };
    let ledger = SqliteLedger::open(&path).unwrap();
    assert_eq!(latest(&ledger).id, run);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    drop(SqliteLedger::open(&path).unwrap());
    set_user_version(&path, SCHEMA_VERSION + 1);

    let err = SqliteLedger::open(&path).unwrap_err();
    assert!(
        matches!(err, LedgerError::SchemaTooNew { found, known, .. } if found == SCHEMA_VERSION + 1 && known == SCHEMA_VERSION),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
        "{message}"
    );
    assert!(
        message.contains(&format!("version {} this flotilla knows", SCHEMA_VERSION)),
        "{message}"
    );
}

fn set_user_version(path: &Path, version: i64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "user_version", version).unwrap();
}

#[test]
fn reader_sees_committed_state_while_a_writer_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let mut writer = SqliteLedger::open(&path).unwrap();
    let run = writer.begin_run(&new_run("head"), &new_tenants(&["t1", "t2"])).unwrap();
    writer.record(&run, &[update("t1", Succeeded)]).unwrap();

    // Another process's write transaction, left open while we read.
    let mut other = rusqlite::Connection::open(&path).unwrap();
    let tx = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    tx.execute(
        "UPDATE flotilla_run_tenants SET status = 'failed' WHERE tenant_id = 't2'",
        [],
    )
    .unwrap();

    let reader = SqliteLedger::open(&path).unwrap();
    let record = latest(&reader);
    assert_eq!(
        (record.counts.succeeded, record.counts.pending, record.counts.failed),
        (1, 1, 0)
    );
    check_statuses(&reader, &run, &[("t1", Succeeded), ("t2", Pending)]);

    tx.commit().unwrap();
    check_statuses(&reader, &run, &[("t1", Succeeded), ("t2", Failed)]);
}

#[test]
fn runners_opening_a_new_ledger_file_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new/ledger.db");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let opened: Vec<_> = (0..8)
        .map(|_| {
            let (path, barrier) = (path.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                SqliteLedger::open(&path).map(|_| ())
            })
        })
        .collect();
    for handle in opened {
        handle.join().unwrap().expect("every runner opens the new ledger");
    }
}
