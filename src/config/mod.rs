//! Configuration: `flotilla.toml` (the project), the tenants file (servers, tenants, discovery sources),
//! database url and ledger location resolution, TLS, and the [`Secret`] type.
//!
//! Everything here is synchronous and reads the environment only through an explicit lookup function, so the
//! engine never sees environment variables. Connecting is left to `executor` and `fleet`.

mod doc;
mod duration;
mod error;
mod health;
mod ledger;
mod pgpass;
mod project;
mod secret;
mod split;
mod tenants;
mod tls;
mod url;

pub use doc::{process_env, EnvLookup};
pub use duration::{parse_duration, DurationError};
pub use error::{same_name, ConfigError, Location, Problem, ProblemKind, UrlOrigin};
pub use health::{HealthLimits, Replica};
pub use ledger::{is_postgres_url, resolve_ledger, LedgerLocation, LedgerPassword};
pub use pgpass::{pgpass_path, Ignored as PgPassIgnored, PgPassKey};
pub use project::{
    find_project_file, HookCommand, Hooks, ProjectConfig, ProjectFile, TransactionPer, DEFAULT_CONFIG_FILE,
    DEFAULT_FILE_TEMPLATE,
};
pub use secret::{redact_message, redact_url, Secret, MASK};
pub use tenants::{
    clashes, truncate_identifier, BackoffSettings, FleetDefaults, PasswordOrigin, PasswordSource, PgPassMiss, Server,
    Source, SourceKind, TenantId, TenantSpec, TenantTarget, TenantsFile, DEFAULT_CONCURRENCY, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_RATE, DEFAULT_RETRIES, MAX_IDENTIFIER_BYTES,
};
pub use tls::{tls_mode, ClientCert, SslMode, TlsMode};
pub use url::{resolve_db_url, DbUrl, Located, ResolvedUrl, APPLICATION_NAME, CONNECT_TIMEOUT};
