//! Errors of the ledger, each naming the ledger file and what failed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot create the directory of ledger {}", .path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ledger {}: cannot {action}", .path.display())]
    Sqlite {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "ledger {} has schema version {found}, newer than the version {known} this flotilla knows: \
         upgrade flotilla to read it",
        .path.display()
    )]
    SchemaTooNew { path: PathBuf, found: i64, known: i64 },
    #[error("ledger {} has no run {run}", .path.display())]
    UnknownRun { path: PathBuf, run: String },
    #[error("ledger {}: run {run} has no tenant {tenant}", .path.display())]
    UnknownTenant { path: PathBuf, run: String, tenant: String },
    #[error("ledger {}: run {run} is already finished", .path.display())]
    RunFinished { path: PathBuf, run: String },
    #[error("ledger {}: tenant {tenant} is listed twice in the new run", .path.display())]
    DuplicateTenant { path: PathBuf, tenant: String },
    #[error(
        "ledger {}: run {name} is `{found}`, not `{wanted}`: a runner joins a named run only with the same \
         command and target",
        .path.display()
    )]
    RunMismatch {
        path: PathBuf,
        name: String,
        found: String,
        wanted: String,
    },
    #[error("ledger {}: this process has not opened run {run} as a runner", .path.display())]
    NotRunner { path: PathBuf, run: String },
    #[error(
        "ledger {}: the lease of runner {runner} on run {run} lapsed (no heartbeat in time); other runners may \
         hold its tenants now",
        .path.display()
    )]
    LeaseLost { path: PathBuf, run: String, runner: String },
    #[error("ledger {}: tenant {tenant} of run {run} is held by runner {holder} now, not by this one", .path.display())]
    LostClaim {
        path: PathBuf,
        run: String,
        tenant: String,
        holder: String,
    },
}
