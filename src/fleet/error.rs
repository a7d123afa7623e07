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
    /// Discovered tenants that cannot be run as they are; never empty. Display prints one problem per line.
    #[error("{}", lines(.0))]
    Tenants(Vec<TenantProblem>),
    #[error("no tenant matches the selection")]
    NothingSelected,
    #[error("unknown tenant id(s) given with {flag}: {}", .ids.join(", "))]
    UnknownTenants { flag: &'static str, ids: Vec<String> },
    #[error("ledger: {0}")]
    Ledger(String),
}

/// A discovered tenant with a bad name, or one defined twice. Origins read `the [[tenants]] entry at FILE:L:C` or
/// `the source at FILE:L:C (KIND on server NAME)`.
#[derive(Debug, thiserror::Error)]
pub enum TenantProblem {
    #[error("{origin} found a tenant with an empty id")]
    EmptyId { origin: String },
    #[error("{origin} found tenant `{id}` whose {kind} `{name}` is not a valid PostgreSQL identifier: {reason}")]
    BadName {
        origin: String,
        id: String,
        kind: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("tenant `{id}` is defined twice: by {first} and by {second}")]
    DuplicateId { id: String, first: String, second: String },
    #[error(
        "tenant `{id}` ({origin}) uses the same {kind} as tenant `{first_id}` ({first}) on server `{server}`: {}",
        crate::config::same_name(names)
    )]
    SamePlace {
        id: String,
        origin: String,
        first_id: String,
        first: String,
        server: String,
        kind: &'static str,
        /// The first tenant's name, then this one's.
        names: [String; 2],
    },
}

fn lines(problems: &[TenantProblem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}
