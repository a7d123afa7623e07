//! Errors of one database's run, with the facts the fleet needs to classify them (SQLSTATE, transient or not).

use std::path::PathBuf;
use std::time::Duration;

use super::session::Report;
use super::store::Blocked;
use crate::graph::Direction;
use crate::revision::RevisionId;

/// What to do about a database blocked by a no-transaction revision left part way (online error and offline
/// script alike).
pub(crate) const RESOLVE_HINT: &str =
    "inspect the database, then run `flotilla resolve` (or `flotilla stamp REV` to record where it really is)";

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("another run holds the migration lock on this database; gave up after waiting {} (lock_wait)", crate::observe::human::duration(*.waited))]
    Locked { waited: Duration },
    #[error(
        "revision {} (no-transaction, {}) {} part way at {}{}: {RESOLVE_HINT}",
        .0.revision, .0.direction, .0.status, .0.at,
        .0.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
    )]
    Blocked(Blocked),
    #[error("revision {revision} failed ({}){}: {message}", super::session::direction_word(*.direction), location(.path, .line))]
    Step {
        revision: RevisionId,
        direction: Direction,
        path: Option<PathBuf>,
        line: Option<usize>,
        sqlstate: Option<String>,
        message: String,
        /// Kept for classification (SQLSTATE, transient or not); its text is already in `message`.
        pg: tokio_postgres::Error,
    },
    #[error("{context}: {}", db_message(.pg))]
    Db { context: String, pg: tokio_postgres::Error },
    #[error("revision {0} runs outside a transaction and cannot be part of a single-transaction run (transaction_per = \"run\")")]
    NoTransactionInRunMode(RevisionId),
    #[error("revision {0} holds a backfill, which commits per batch, so it cannot be part of a single-transaction run (transaction_per = \"run\")")]
    BackfillInRunMode(RevisionId),
    #[error(
        "revision {revision} ({}) backfills data without a reverse, so a downgrade past it cannot restore that data; \
         nothing was changed (declare a `-- flotilla:backfill` in its downgrade section or `reverse=none`, or pass --force)",
        .path.display()
    )]
    IrreversibleBackfill { revision: RevisionId, path: PathBuf },
    #[error(
        "revision {revision} ({}) changed while its backfill was part way; restore the file as it was, or finish \
         by hand and `flotilla stamp`",
        .path.display()
    )]
    BackfillScriptChanged { revision: RevisionId, path: PathBuf },
    #[error(
        "schema \"{schema}\" does not exist; nothing was changed (create the schema, or remove the tenant from \
         the tenants file)"
    )]
    SchemaMissing { schema: String },
    #[error("interrupted before the next revision")]
    Interrupted,
    #[error("revision {0} is in the plan but has no script")]
    MissingScript(RevisionId),
}

fn location(path: &Option<PathBuf>, line: &Option<usize>) -> String {
    match (path, line) {
        (Some(p), Some(l)) => format!(" at {}:{l}", p.display()),
        (Some(p), None) => format!(" in {}", p.display()),
        _ => String::new(),
    }
}

/// The server's message when there is one, else the driver's.
pub fn db_message(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        // The driver's own text names only the kind ("error performing TLS handshake", "error connecting to
        // server"); the reason (a certificate not valid for the host, a refused connection) is in the chain.
        None => crate::error::error_chain(err),
    }
}

/// Whether a connection failed because the other end does not speak PostgreSQL's protocol (another service on
/// that port): the driver then reports a protocol error instead of a server error.
pub fn is_not_postgres(err: &tokio_postgres::Error) -> bool {
    if err.as_db_error().is_some() {
        return false;
    }
    let chain = crate::error::error_chain(err);
    [
        "bytes remaining on stream",
        "unexpected message from server",
        "invalid message length",
        "received corrupt message",
        "invalid message type",
    ]
    .iter()
    .any(|needle| chain.contains(needle))
}

/// "the server at host:port", from the first host and port of `config`.
pub fn server_at(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("the server at {host}:{port}")
}

/// SQLSTATEs worth retrying besides outages and 53300: the same work can succeed a moment later.
const TRANSIENT_SQLSTATES: &[&str] = &[
    "40001", // serialization_failure
    "40P01", // deadlock_detected
    "55P03", // lock_not_available, also lock_timeout cancellations
];

impl ExecError {
    /// The SQLSTATE of the server error behind this one, if any.
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            ExecError::Step { sqlstate, .. } => sqlstate.clone(),
            ExecError::Db { pg, .. } => pg.code().map(|c| c.code().to_string()),
            _ => None,
        }
    }

    /// Whether retrying the same work may succeed: lost connections, lock waits, deadlocks, server restarts.
    pub fn is_transient(&self) -> bool {
        self.class().is_transient()
    }

    /// What this error says about the server (see [`ErrorClass`]).
    pub fn class(&self) -> ErrorClass {
        match self {
            ExecError::Locked { .. } => ErrorClass::Transient,
            ExecError::Step { pg, .. } | ExecError::Db { pg, .. } => classify_pg(pg),
            _ => ErrorClass::Permanent,
        }
    }

    /// What kind of failure this is, for metrics labels, the ledger and retry logs (a bounded set).
    pub fn reason(&self) -> FailureKind {
        match self {
            ExecError::Locked { .. } => FailureKind::Locked,
            ExecError::Blocked(_) => FailureKind::Blocked,
            ExecError::Step { pg, .. } | ExecError::Db { pg, .. } => match pg.code().map(|c| c.code()) {
                Some("53300") => FailureKind::TooManyConnections,
                Some("40001") => FailureKind::SerializationFailure,
                Some("40P01") => FailureKind::Deadlock,
                Some("55P03") => FailureKind::LockTimeout,
                Some("57P01" | "57P02" | "57P03") => FailureKind::ServerShutdown,
                Some(_) => FailureKind::SqlError,
                None => FailureKind::Connection,
            },
            ExecError::NoTransactionInRunMode(_)
            | ExecError::MissingScript(_)
            | ExecError::BackfillInRunMode(_)
            | ExecError::IrreversibleBackfill { .. }
            | ExecError::BackfillScriptChanged { .. } => FailureKind::Plan,
            ExecError::SchemaMissing { .. } => FailureKind::SchemaMissing,
            ExecError::Interrupted => FailureKind::Interrupted,
        }
    }
}

/// Why a tenant's attempt failed or is retried: a short fixed word where it leaves the process (the ledger's
/// `error_kind`, NDJSON `error_kind`/`reason`, the `reason` label of metrics), a value everywhere inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Another run holds the tenant's migration lock.
    Locked,
    /// A no-transaction revision was left part way by an earlier run (`resolve` first).
    Blocked,
    TooManyConnections,
    SerializationFailure,
    Deadlock,
    LockTimeout,
    ServerShutdown,
    /// Any other SQL error.
    SqlError,
    /// The connection failed or was lost.
    Connection,
    /// The server refused the login.
    Auth,
    /// Something other than PostgreSQL answered.
    NotPostgres,
    /// The server stayed away longer than the run waits for it.
    ServerUnavailable,
    /// The plan cannot run (a missing script, a no-transaction or backfill revision in a mode that forbids it).
    Plan,
    SchemaMissing,
    /// The run was stopped while this tenant ran.
    Interrupted,
    TenantTimeout,
    /// The database's shared revisions failed.
    SharedFailed,
    /// The plan needs a shared revision the database lacks.
    SharedMissing,
    /// `fleet stamp --from` could not adopt the other tool's history.
    StampFrom,
    /// The worker panicked or ended without an outcome.
    Panic,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Locked => "locked",
            FailureKind::Blocked => "blocked",
            FailureKind::TooManyConnections => "too_many_connections",
            FailureKind::SerializationFailure => "serialization_failure",
            FailureKind::Deadlock => "deadlock",
            FailureKind::LockTimeout => "lock_timeout",
            FailureKind::ServerShutdown => "server_shutdown",
            FailureKind::SqlError => "sql_error",
            FailureKind::Connection => "connection",
            FailureKind::Auth => "auth",
            FailureKind::NotPostgres => "not_postgres",
            FailureKind::ServerUnavailable => "server_unavailable",
            FailureKind::Plan => "plan",
            FailureKind::SchemaMissing => "schema_missing",
            FailureKind::Interrupted => "interrupted",
            FailureKind::TenantTimeout => "tenant_timeout",
            FailureKind::SharedFailed => "shared_failed",
            FailureKind::SharedMissing => "shared_missing",
            FailureKind::StampFrom => "stamp_from",
            FailureKind::Panic => "panic",
        }
    }
}

impl serde::Serialize for FailureKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a driver error says about the server, which decides how the fleet reacts to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The server went away or is not accepting connections (refused, reset, closed, 08xxx, 57P01-57P03):
    /// the fleet waits for it to come back.
    Outage,
    /// SQLSTATE 53300: the server (or the role) has no connection slot left.
    TooManyConnections,
    /// Authentication or TLS refused (28P01, 28000, no password to send, a failed handshake or certificate):
    /// waiting never heals it.
    Fatal,
    /// Worth retrying the same work: deadlocks, serialization failures, lock timeouts.
    Transient,
    /// Anything else: retrying would fail the same way.
    Permanent,
}

impl ErrorClass {
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorClass::Outage | ErrorClass::TooManyConnections | ErrorClass::Transient
        )
    }
}

/// Whether a driver error is worth a retry.
pub fn is_transient_pg(err: &tokio_postgres::Error) -> bool {
    classify_pg(err).is_transient()
}

/// What a driver error says about the server (see [`ErrorClass`]).
pub fn classify_pg(err: &tokio_postgres::Error) -> ErrorClass {
    if let Some(code) = err.code() {
        return classify_sqlstate(code.code());
    }
    if err.is_closed() {
        return ErrorClass::Outage;
    }
    // Without a SQLSTATE the driver names only the kind in its own text ("error performing TLS handshake",
    // "invalid configuration: password missing", "authentication error"); the rest is an IO error, a closed
    // socket or a timeout talking to the server.
    let text = err.to_string();
    if is_fatal_text(&text) {
        ErrorClass::Fatal
    } else {
        ErrorClass::Outage
    }
}

/// The class of a SQLSTATE (see [`ErrorClass`]).
pub fn classify_sqlstate(code: &str) -> ErrorClass {
    match code {
        "53300" => ErrorClass::TooManyConnections,
        "28P01" | "28000" => ErrorClass::Fatal,
        "57P01" | "57P02" | "57P03" => ErrorClass::Outage,
        _ if code.starts_with("08") => ErrorClass::Outage,
        _ if TRANSIENT_SQLSTATES.contains(&code) => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// Whether a driver error without a SQLSTATE (by its text) is one that waiting never heals.
fn is_fatal_text(text: &str) -> bool {
    [
        "error performing TLS handshake",
        "password missing",
        "authentication error",
        "invalid configuration",
    ]
    .iter()
    .any(|kind| text.contains(kind))
}

/// A run that stopped on an error, with what it completed before (those steps are committed).
#[derive(Debug)]
pub struct ExecFailure {
    pub report: Report,
    pub error: ExecError,
}

impl std::fmt::Display for ExecFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

// The failure reads as its error: the chain continues with the error's own cause, so nothing prints twice.
impl std::error::Error for ExecFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::{classify_sqlstate, is_fatal_text, ErrorClass};

    #[test]
    fn sqlstates_are_classified_by_what_they_say_about_the_server() {
        let check = |code: &str, expected: ErrorClass| assert_eq!(classify_sqlstate(code), expected, "{code}");
        check("57P01", ErrorClass::Outage);
        check("57P02", ErrorClass::Outage);
        check("57P03", ErrorClass::Outage);
        check("08006", ErrorClass::Outage);
        check("53300", ErrorClass::TooManyConnections);
        check("28P01", ErrorClass::Fatal);
        check("28000", ErrorClass::Fatal);
        check("40001", ErrorClass::Transient);
        check("55P03", ErrorClass::Transient);
        check("42P01", ErrorClass::Permanent);
        assert!(!ErrorClass::Fatal.is_transient());
        assert!(ErrorClass::Outage.is_transient());
    }

    #[test]
    fn driver_errors_without_sqlstate_are_fatal_only_for_credentials_and_tls() {
        assert!(is_fatal_text("invalid configuration: password missing"));
        assert!(is_fatal_text(
            "error performing TLS handshake: invalid peer certificate: NotValidForName"
        ));
        assert!(!is_fatal_text(
            "error connecting to server: Connection refused (os error 111)"
        ));
        assert!(!is_fatal_text("connection closed"));
    }
}
