//! Errors for `flotilla.toml`, the tenants file and database url resolution.
//!
//! A file problem always carries the file, a 1-based line and a 1-based column (counted in characters).
//! Loading collects every problem it finds and returns them together in [`ConfigError::Invalid`], so one edit
//! cycle fixes them all.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::duration::DurationError;

/// A position in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// Shared by every location in one file, so a location kept per tenant costs no copy of the path.
    pub path: Arc<Path>,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// One thing wrong in a configuration file, and where.
#[derive(Debug, thiserror::Error)]
#[error("{at}: {kind}")]
pub struct Problem {
    pub at: Location,
    pub kind: ProblemKind,
}

/// What is wrong. Urls inside variants are always redacted.
#[derive(Debug, thiserror::Error)]
pub enum ProblemKind {
    #[error("{message}")]
    Syntax { message: String },
    #[error("unknown key `{key}` in {section} (expected one of: {})", expected.join(", "))]
    UnknownKey {
        key: String,
        section: String,
        expected: &'static [&'static str],
    },
    #[error("missing required key `{key}` in {section}")]
    MissingKey { key: &'static str, section: String },
    #[error("`{key}` must be {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("invalid duration `{value}` for `{key}`: {reason}")]
    Duration {
        key: String,
        value: String,
        reason: DurationError,
    },
    #[error("environment variable `{name}` is not set (write `$${{` for a literal `${{`)")]
    UnsetVar { name: String },
    #[error("invalid `${{...}}` reference: {reason} (write `$${{` for a literal `${{`)")]
    BadVar { reason: &'static str },
    #[error("`{key}` must be one of {expected}, found `{value}`")]
    BadChoice {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("`{key}` must be at least 1")]
    Zero { key: &'static str },
    #[error("`{key}` must be 0 (no limit) or more, found {value}")]
    Negative { key: &'static str, value: f64 },
    #[error("`{key}` value {value} is out of range")]
    OutOfRange { key: String, value: String },
    #[error("`{key}` must not be empty")]
    Empty { key: String },
    #[error("`{key}` is not a valid PostgreSQL identifier: {reason}")]
    BadIdentifier { key: &'static str, reason: &'static str },
    #[error("duplicate tenant id `{id}` (first defined at {first})")]
    DuplicateTenant { id: String, first: Location },
    #[error(
        "tenant `{id}` uses the same {kind} as tenant `{first_id}` (defined at {first}) on server `{server}`: {}",
        same_name(names)
    )]
    DuplicatePlace {
        id: String,
        first_id: String,
        first: Location,
        server: String,
        kind: &'static str,
        /// The first tenant's name, then this one's.
        names: [String; 2],
    },
    #[error("duplicate server name `{name}` (first defined at {first})")]
    DuplicateServer { name: String, first: Location },
    #[error("unknown server `{name}` (known: {})", list_or_none(known))]
    UnknownServer { name: String, known: Vec<String> },
    #[error("tenant `{id}` sets both `schema` and `database`; set exactly one")]
    TenantBothTargets { id: String },
    #[error("tenant `{id}` needs `schema` (schema-per-tenant) or `database` (database-per-tenant)")]
    TenantNoTarget { id: String },
    #[error(
        "a source needs exactly one of `schemas_like`, `databases_like`, `query`, found {}",
        list_or_none(found)
    )]
    SourceKind { found: Vec<&'static str> },
    #[error("invalid database url `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("url `{url}` must start with postgres:// or postgresql://")]
    UrlScheme { url: String },
    #[error("the url of server `{server}` contains a password; put the password in password_env or password_file")]
    PasswordInUrl { server: String },
    #[error(
        "a replica url of server `{server}` contains a password; replicas are reached with the server's password \
         (password_env, password_file or the password file)"
    )]
    ReplicaPasswordInUrl { server: String },
    #[error(
        "replica url `{url}` of server `{server}` sets TLS parameters; replicas are reached with the server's TLS \
         settings (sslmode, ca_file, cert_file, key_file)"
    )]
    ReplicaTls { server: String, url: String },
    #[error(
        "server `{server}` has health throttling on and `max_connections = 1`: the health signals are read on one of \
         the server's connections, which would leave none for its tenants; set `max_connections` to at least 2"
    )]
    HealthNeedsTwoConnections { server: String },
    #[error("server `{server}` sets both `password_env` and `password_file`; set only one")]
    PasswordEnvAndFile { server: String },
    #[error("password environment variable `{var}` for server `{server}` is not set")]
    PasswordEnvUnset { server: String, var: String },
    #[error("cannot read password file `{}` for server `{server}`: {err}", path.display())]
    PasswordFile {
        server: String,
        path: PathBuf,
        err: io::Error,
    },
    #[error("`ledger_url` contains a password; put the password in ledger_password_env or ledger_password_file")]
    LedgerPasswordInUrl,
    #[error("set only one of `ledger` (a SQLite file) and `ledger_url` (a PostgreSQL control database)")]
    LedgerFileAndUrl,
    #[error("set only one of `ledger_password_env` and `ledger_password_file`")]
    LedgerPasswordEnvAndFile,
    #[error("the ledger's password environment variable `{var}` is not set")]
    LedgerPasswordEnvUnset { var: String },
    #[error("cannot read the ledger's password file `{}`: {err}", path.display())]
    LedgerPasswordFile { path: PathBuf, err: io::Error },
    #[error("cannot read CA file `{}`: {err}", path.display())]
    CaFile { path: PathBuf, err: io::Error },
    #[error("CA file `{}` holds no usable PEM certificate", path.display())]
    CaFileEmpty { path: PathBuf },
    #[error("cannot build the TLS configuration: {reason}")]
    Tls { reason: String },
    #[error("cannot read client {what} file `{}`: {err}", path.display())]
    ClientFile {
        what: &'static str,
        path: PathBuf,
        err: io::Error,
    },
    #[error("client {what} file `{}` holds no usable PEM {what}", path.display())]
    ClientFileEmpty { what: &'static str, path: PathBuf },
    #[error("a client certificate needs its key and a key its certificate: set both {cert} and {key}")]
    ClientCertPair { cert: &'static str, key: &'static str },
}

/// The name two tenants share: once, or both names when they differ before PostgreSQL truncates them.
pub fn same_name(names: &[String; 2]) -> String {
    if names[0] == names[1] {
        format!("`{}`", names[0])
    } else {
        format!(
            "`{}` and `{}` (one name once PostgreSQL truncates names to 63 bytes)",
            names[0], names[1]
        )
    }
}

fn list_or_none(items: &[impl AsRef<str>]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items
            .iter()
            .map(|s| format!("`{}`", s.as_ref()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Where a database url for a single-database command came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlOrigin {
    Flag,
    /// `--ledger`, which clap also fills from `FLOTILLA_LEDGER`.
    LedgerFlag,
    Config(Location),
    DatabaseUrlEnv,
    PgEnv,
}

impl fmt::Display for UrlOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlOrigin::Flag => f.write_str("--url"),
            UrlOrigin::LedgerFlag => f.write_str("--ledger (or FLOTILLA_LEDGER)"),
            UrlOrigin::Config(at) => write!(f, "{at}"),
            UrlOrigin::DatabaseUrlEnv => f.write_str("DATABASE_URL"),
            UrlOrigin::PgEnv => f.write_str("the PG* environment variables"),
        }
    }
}

/// The error type of the `config` module.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// One or more problems in a file; never empty. Display prints one problem per line.
    #[error("{}", Problems(problems))]
    Invalid { problems: Vec<Problem> },
    #[error("unknown environment `{name}` (known: {})", list_or_none(known))]
    UnknownEnv { name: String, known: Vec<String> },
    #[error(
        "no database url: pass --url, set `url` in flotilla.toml, or set DATABASE_URL or the PG* variables \
         (PGHOST, PGDATABASE, ...)"
    )]
    NoDatabaseUrl,
    /// A connection target whose TLS or credentials cannot be prepared; `target` is redacted.
    #[error("{target}: {kind}")]
    Connection { target: String, kind: ProblemKind },
    /// A database url from a flag or the environment is unusable; `kind` names the (redacted) url.
    #[error("{origin}: {kind}")]
    Url { origin: UrlOrigin, kind: ProblemKind },
}

impl ConfigError {
    /// The problems of an [`ConfigError::Invalid`] error, else empty.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems } => problems,
            _ => &[],
        }
    }

    pub(crate) fn one(at: Location, kind: ProblemKind) -> ConfigError {
        ConfigError::Invalid {
            problems: vec![Problem { at, kind }],
        }
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}
