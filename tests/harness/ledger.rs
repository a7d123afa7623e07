//! The ledger a fleet test gives the binary: a SQLite file in its project (the default), or, with
//! `FLOTILLA_TEST_LEDGER=postgres`, a fresh control database on the test cluster, so the fleet tests can run
//! on both ledger backends.

use std::path::{Path, PathBuf};

use super::db::TestDb;

/// `sqlite` (the default) or `postgres`: the ledger backend fleet tests use.
pub const TEST_LEDGER_ENV: &str = "FLOTILLA_TEST_LEDGER";

/// The ledger backends a test run can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerBackend {
    Sqlite,
    Postgres,
}

/// The backend `FLOTILLA_TEST_LEDGER` asks for. Panics on a value it does not know, so a typo cannot quietly
/// test the default.
pub fn ledger_backend() -> LedgerBackend {
    parse_ledger_backend(std::env::var(TEST_LEDGER_ENV).ok().as_deref())
        .unwrap_or_else(|value| panic!("{TEST_LEDGER_ENV}={value:?}: expected `sqlite` or `postgres`"))
}

/// Reads the knob's value; `Err` holds a value it does not know.
pub fn parse_ledger_backend(value: Option<&str>) -> Result<LedgerBackend, String> {
    match value.map(str::trim) {
        None | Some("" | "sqlite") => Ok(LedgerBackend::Sqlite),
        Some("postgres" | "postgresql") => Ok(LedgerBackend::Postgres),
        Some(other) => Err(other.to_string()),
    }
}

/// One test's ledger: the SQLite file, or a control database that lives (and is dropped) with this value.
#[derive(Debug)]
pub enum TestLedger {
    File(PathBuf),
    Postgres(TestDb),
}

impl TestLedger {
    /// The ledger of [`ledger_backend`]: `file` for SQLite, else a fresh control database.
    pub fn new(file: &Path) -> TestLedger {
        match ledger_backend() {
            LedgerBackend::Sqlite => TestLedger::File(file.to_path_buf()),
            LedgerBackend::Postgres => TestLedger::Postgres(TestDb::new("ledger")),
        }
    }

    /// The value for `--ledger` (or `FLOTILLA_LEDGER`): the file's path, or the control database's url.
    pub fn arg(&self) -> PathBuf {
        match self {
            TestLedger::File(path) => path.clone(),
            TestLedger::Postgres(db) => PathBuf::from(db.url()),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, TestLedger::Postgres(_))
    }
}
