//! The shared test harness of the integration binary: one PostgreSQL cluster per process, a fresh database per
//! test, template databases, a runner for the real `flotilla` binary and `psql`, temporary projects, and catalog
//! queries to assert on.
//!
//! It deliberately knows nothing about revisions or fleets: tests drive the product through the binary or the
//! library and assert on what the harness can read back. See `docs/testing.md`.

mod catalog;
mod cli;
mod cluster;
mod db;
mod ledger;
mod project;
mod runtime;
mod standby;

pub use catalog::{catalog_snapshot, schemas, tables, version_rows, VERSION_TABLE};
pub use cli::{child_env, flotilla, psql, Cmd, CmdOutput};
pub use cluster::{cluster, own_cluster_dir, pg_cluster, start_own_cluster, url_of_db, Cluster};
pub use db::{
    db_name, parse_db_name, should_keep, sweep_leftovers, template, DbName, TestClient, TestDb, DB_PREFIX, KEEP_DB_ENV,
    MAX_CLIENTS_PER_DB,
};
pub use ledger::{ledger_backend, parse_ledger_backend, LedgerBackend, TestLedger, TEST_LEDGER_ENV};
pub use project::{fixtures_dir, repo_dir, TempProject};
pub use runtime::{block_on, connect};
pub use standby::Standby;
