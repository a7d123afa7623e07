//! What can go wrong while building, introspecting or comparing schemas.

use std::path::PathBuf;

/// Errors of the autogenerate pipeline. Database messages are rendered with `executor::db_message`.
#[derive(Debug, thiserror::Error)]
pub enum AutogenError {
    #[error("could not connect to the dev server {target}: {message}")]
    Connect { target: String, message: String },
    #[error("could not {action} scratch database {name}: {message}")]
    Scratch {
        action: &'static str,
        name: String,
        message: String,
    },
    #[error("could not read the desired schema {}: {source}", path.display())]
    ReadDesired {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the desired schema {} holds no *.sql file", path.display())]
    NoDesired { path: PathBuf },
    #[error("loading the desired schema file {} failed: {message}", path.display())]
    LoadDesired { path: PathBuf, message: String },
    #[error("applying the revisions to a scratch database failed")]
    Apply(#[source] crate::executor::ExecFailure),
    #[error("applying the revisions to a scratch database failed")]
    Exec(#[source] crate::executor::ExecError),
    #[error("applying the shared revisions to a scratch database failed: {0}")]
    Shared(String),
    #[error("planning the revisions up to {target} failed")]
    Plan {
        target: String,
        #[source]
        source: crate::graph::GraphError,
    },
    #[error("bad --rename {hint}: {reason}")]
    BadRename { hint: String, reason: String },
    #[error("--rename {hint} does not apply to the schema at the head: {message}")]
    RenameFailed { hint: String, message: String },
    #[error("introspection query ({what}) failed: {message}")]
    Introspect { what: &'static str, message: String },
}
