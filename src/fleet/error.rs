//! Errors that stop a fleet command before or outside any one tenant's work.

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("server {server}: could not build its connection pool: {message}")]
    Pool { server: String, message: String },
    #[error("server {server}: tenant discovery ({source_desc}) failed: {message}")]
    Discovery {
        server: String,
        source_desc: String,
        message: String,
    },
    #[error("tenant {id} is listed twice: by {first} and by {second}")]
    DuplicateTenant { id: String, first: String, second: String },
    #[error("no tenant matches the selection")]
    NothingSelected,
    #[error("unknown tenant id(s) given with --tenant: {}", .0.join(", "))]
    UnknownTenants(Vec<String>),
    #[error("ledger: {0}")]
    Ledger(String),
}
