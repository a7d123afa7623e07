//! Errors of the ledger, each naming the ledger (a file path, or a PostgreSQL url with any password masked) and
//! what failed.

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot create the directory of ledger {location}")]
    CreateDir {
        location: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ledger {location}: cannot {action}")]
    Sqlite {
        location: String,
        action: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// A PostgreSQL ledger's connection, query or transaction failed. `location` is the redacted url; the
    /// driver's error never holds the password (it is not part of any query).
    #[error("ledger {location}: cannot {action}")]
    Postgres {
        location: String,
        action: &'static str,
        #[source]
        source: postgres::Error,
    },
    /// A PostgreSQL ledger's TLS settings cannot be prepared (an unreadable CA or client certificate file).
    #[error("ledger {location}: cannot prepare TLS")]
    Tls {
        location: String,
        #[source]
        source: crate::config::ConfigError,
    },
    /// A stored value this flotilla cannot read (a row written by something else).
    #[error("ledger {location}: unexpected stored value: {reason}")]
    BadRow { location: String, reason: String },
    /// The thread that holds a PostgreSQL ledger's connection is gone (it panicked).
    #[error("ledger {location}: the ledger's connection thread stopped")]
    ThreadGone { location: String },
    #[error(
        "ledger {location} has schema version {found}, newer than the version {known} this flotilla knows: \
         upgrade flotilla to read it"
    )]
    SchemaTooNew { location: String, found: i64, known: i64 },
    #[error("ledger {location} has no run {run}")]
    UnknownRun { location: String, run: String },
    #[error("ledger {location}: run {run} has no tenant {tenant}")]
    UnknownTenant {
        location: String,
        run: String,
        tenant: String,
    },
    #[error("ledger {location}: run {run} is already finished")]
    RunFinished { location: String, run: String },
    #[error("ledger {location}: tenant {tenant} is listed twice in the new run")]
    DuplicateTenant { location: String, tenant: String },
    #[error(
        "ledger {location}: run {name} is `{found}`, not `{wanted}`: a runner joins a named run only with the same \
         command and target"
    )]
    RunMismatch {
        location: String,
        name: String,
        found: String,
        wanted: String,
    },
    #[error("ledger {location}: this process has not opened run {run} as a runner")]
    NotRunner { location: String, run: String },
    #[error(
        "ledger {location}: the lease of runner {runner} on run {run} lapsed (no heartbeat in time); other runners \
         may hold its tenants now"
    )]
    LeaseLost {
        location: String,
        run: String,
        runner: String,
    },
    #[error("ledger {location}: tenant {tenant} of run {run} is held by runner {holder} now, not by this one")]
    LostClaim {
        location: String,
        run: String,
        tenant: String,
        holder: String,
    },
}
