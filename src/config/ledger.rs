//! Where the ledger is: a SQLite file, or a PostgreSQL control database with its password, resolved from
//! `--ledger` (or `FLOTILLA_LEDGER`) and `flotilla.toml` (`ledger`, `ledger_url`, `ledger_password_env`,
//! `ledger_password_file`).
//!
//! Reading the process environment is left to the caller, which passes a lookup function; opening the ledger is
//! left to `ledger::open`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::doc::EnvLookup;
use super::error::{ConfigError, ProblemKind, UrlOrigin};
use super::project::ProjectConfig;
use super::url::{DbUrl, Located};

/// Where a ledger lives. `Display` and `Debug` never show a password.
#[derive(Debug, Clone)]
pub enum LedgerLocation {
    /// A SQLite file (created with its directories when missing).
    File(PathBuf),
    /// A PostgreSQL control database; the url holds the password when one was resolved.
    Postgres(Box<DbUrl>),
}

impl LedgerLocation {
    /// Reads a `--ledger` value: a `postgres://` or `postgresql://` url is a PostgreSQL ledger, anything else the
    /// path of a SQLite file. A password in the url is kept (and masked wherever the location is shown).
    ///
    /// Errors: [`ProblemKind::BadUrl`] (holding the redacted url) when the url does not parse.
    pub fn parse(value: &Path) -> Result<LedgerLocation, ProblemKind> {
        match value.to_str() {
            Some(s) if is_postgres_url(s) => DbUrl::parse(s).map(|url| LedgerLocation::Postgres(Box::new(url))),
            _ => Ok(LedgerLocation::File(value.to_path_buf())),
        }
    }

    /// Whether the runners of a run can share this ledger across machines.
    pub fn is_postgres(&self) -> bool {
        matches!(self, LedgerLocation::Postgres(_))
    }
}

impl fmt::Display for LedgerLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerLocation::File(path) => write!(f, "{}", path.display()),
            LedgerLocation::Postgres(url) => f.write_str(url.redacted()),
        }
    }
}

/// Whether `s` names a PostgreSQL ledger rather than a file.
pub fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// Where a PostgreSQL ledger's password comes from: `ledger_password_env` or `ledger_password_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerPassword {
    /// An environment variable, read when the location is resolved.
    Env(String),
    /// A file whose content (less a trailing newline) is the password; relative to `flotilla.toml`.
    File(PathBuf),
}

/// The ledger for a command: `--ledger` (which clap also fills from `FLOTILLA_LEDGER`), else `flotilla.toml`'s
/// `ledger_url`, else its `ledger` file (default `.flotilla/ledger.db`).
///
/// A PostgreSQL url without a password takes it from `ledger_password_env` (through `env`) or
/// `ledger_password_file`, whether the url came from the flag or from the file; without either, as libpq does,
/// from `PGPASSWORD`, then from the password file (`PGPASSFILE`, else `~/.pgpass`) line matching the url's host,
/// port, database and user. Without any, no password is sent (trust, peer or certificate authentication).
///
/// Errors: [`ConfigError::Url`] for a `--ledger` url that does not parse; [`ConfigError::Invalid`] naming the
/// password setting's line when its variable is unset or its file unreadable (never the password).
pub fn resolve_ledger(
    flag: Option<&Path>,
    project: &ProjectConfig,
    env: EnvLookup<'_>,
) -> Result<LedgerLocation, ConfigError> {
    let location = match flag {
        Some(value) => LedgerLocation::parse(value).map_err(|kind| ConfigError::Url {
            origin: UrlOrigin::LedgerFlag,
            kind,
        })?,
        None => match &project.ledger_url {
            Some(url) => LedgerLocation::Postgres(Box::new(url.value.clone())),
            None => LedgerLocation::File(project.ledger.clone()),
        },
    };
    match (location, &project.ledger_password) {
        (LedgerLocation::Postgres(mut url), Some(password)) if !url.has_password() => {
            url.set_password(&read_password(password, env)?);
            Ok(LedgerLocation::Postgres(url))
        }
        (LedgerLocation::Postgres(mut url), None) if !url.has_password() => {
            if let Some(password) = libpq_password(&url, env) {
                url.set_password(&password);
            }
            Ok(LedgerLocation::Postgres(url))
        }
        (location, _) => Ok(location),
    }
}

/// The password libpq would send for `url` when nothing names one: `PGPASSWORD`, else the password file's line
/// for the url (a file others may read is ignored with a warning, as libpq does).
fn libpq_password(url: &DbUrl, env: EnvLookup<'_>) -> Option<String> {
    if let Some(password) = env("PGPASSWORD").filter(|p| !p.is_empty()) {
        return Some(password);
    }
    let path = super::pgpass::pgpass_path(env)?;
    match super::pgpass::lookup(&path, &super::pgpass::PgPassKey::of(&url.pg_config())) {
        super::pgpass::PgPassLookup::Found { password, .. } => Some(password.expose().to_string()),
        _ => None,
    }
}

fn read_password(password: &Located<LedgerPassword>, env: EnvLookup<'_>) -> Result<String, ConfigError> {
    let fail = |kind| ConfigError::one(password.at.clone(), kind);
    match &password.value {
        LedgerPassword::Env(var) => {
            env(var).ok_or_else(|| fail(ProblemKind::LedgerPasswordEnvUnset { var: var.clone() }))
        }
        LedgerPassword::File(path) => match std::fs::read_to_string(path) {
            Ok(text) => Ok(text
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text)
                .to_string()),
            Err(err) => Err(fail(ProblemKind::LedgerPasswordFile {
                path: path.clone(),
                err,
            })),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProjectFile;

    fn env(name: &str) -> Option<String> {
        match name {
            "LEDGER_PW" => Some("s3cret-env".to_string()),
            _ => None,
        }
    }

    fn project(text: &str) -> ProjectConfig {
        ProjectFile::parse(Path::new("/p/flotilla.toml"), text, &env)
            .unwrap()
            .resolve(None)
            .unwrap()
    }

    fn resolve(flag: Option<&str>, text: &str) -> Result<LedgerLocation, ConfigError> {
        resolve_ledger(flag.map(Path::new), &project(text), &env)
    }

    fn password_of(location: &LedgerLocation) -> Option<String> {
        match location {
            LedgerLocation::Postgres(url) => url
                .pg_config()
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into()),
            LedgerLocation::File(_) => None,
        }
    }

    #[test]
    fn flag_url_or_path() {
        let pg = resolve(Some("postgresql://ops:pw@ctl:5433/flotilla?sslmode=require"), "").unwrap();
        assert!(pg.is_postgres());
        assert_eq!(pg.to_string(), "postgresql://ops:***@ctl:5433/flotilla?sslmode=require");
        assert_eq!(
            format!("{pg:?}"),
            "Postgres(DbUrl(\"postgresql://ops:***@ctl:5433/flotilla?sslmode=require\"))"
        );
        assert_eq!(password_of(&pg).as_deref(), Some("pw"));
        let file = resolve(Some("state/ledger.db"), "ledger_url = \"postgres://ops@ctl/flotilla\"").unwrap();
        assert!(matches!(&file, LedgerLocation::File(p) if p == Path::new("state/ledger.db")));
        // The flag wins over the file, and anything but a postgres url is a path.
        assert!(!resolve(Some("mysql://x"), "").unwrap().is_postgres());
    }

    #[test]
    fn bad_flag_url_is_a_redacted_error() {
        let err = resolve(Some("postgres://ops:hunter2@ctl:notaport/db"), "").unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("--ledger (or FLOTILLA_LEDGER): invalid database url"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn config_file_ledger_and_password_sources() {
        let default = resolve(None, "").unwrap();
        assert!(matches!(&default, LedgerLocation::File(p) if p == Path::new("/p/.flotilla/ledger.db")));
        let pg = resolve(
            None,
            "ledger_url = \"postgres://ops@ctl/flotilla\"\nledger_password_env = \"LEDGER_PW\"",
        )
        .unwrap();
        assert_eq!(pg.to_string(), "postgres://ops@ctl/flotilla");
        assert_eq!(password_of(&pg).as_deref(), Some("s3cret-env"));
        // The file's password source serves a url from the flag too, unless that url has its own.
        let text = "ledger_password_env = \"LEDGER_PW\"";
        let flagged = resolve(Some("postgres://ops@ctl/flotilla"), text).unwrap();
        assert_eq!(password_of(&flagged).as_deref(), Some("s3cret-env"));
        let own = resolve(Some("postgres://ops:mine@ctl/flotilla"), text).unwrap();
        assert_eq!(password_of(&own).as_deref(), Some("mine"));
        // A SQLite ledger has no password.
        assert!(!resolve(None, text).unwrap().is_postgres());
    }

    #[test]
    fn without_a_named_source_the_password_comes_from_pgpassword_then_the_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let pgpass = dir.path().join("pgpass");
        std::fs::write(&pgpass, "other:5432:*:ops:wrong\nctl:5432:flotilla:ops:from-pgpass\n").unwrap();
        std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let pgpass_text = pgpass.display().to_string();
        let with = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        };
        let cfg = project("ledger_url = \"postgres://ops@ctl/flotilla\"");
        let file_env = with(&[("PGPASSFILE", &pgpass_text)]);
        let from_file = resolve_ledger(None, &cfg, &file_env).unwrap();
        assert_eq!(password_of(&from_file).as_deref(), Some("from-pgpass"));
        assert_eq!(from_file.to_string(), "postgres://ops@ctl/flotilla", "never shown");
        let both_env = with(&[("PGPASSFILE", &pgpass_text), ("PGPASSWORD", "from-env")]);
        let from_env = resolve_ledger(None, &cfg, &both_env).unwrap();
        assert_eq!(password_of(&from_env).as_deref(), Some("from-env"));
        // A url with its own password, or no matching line, keeps what it has.
        let own = resolve_ledger(Some(Path::new("postgres://ops:mine@ctl/flotilla")), &cfg, &both_env).unwrap();
        assert_eq!(password_of(&own).as_deref(), Some("mine"));
        let other_db = resolve_ledger(Some(Path::new("postgres://ops@ctl/elsewhere")), &cfg, &file_env).unwrap();
        assert_eq!(password_of(&other_db), None);
    }

    #[test]
    fn password_file_is_read_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "from-file\n").unwrap();
        let path = dir.path().join("flotilla.toml");
        let text = "ledger_url = \"postgres://ops@ctl/flotilla\"\nledger_password_file = \"pw\"";
        let cfg = ProjectFile::parse(&path, text, &env).unwrap().resolve(None).unwrap();
        let location = resolve_ledger(None, &cfg, &env).unwrap();
        assert_eq!(password_of(&location).as_deref(), Some("from-file"));
    }

    #[test]
    fn missing_password_sources_name_the_setting() {
        let err = resolve(
            None,
            "ledger_url = \"postgres://ops@ctl/flotilla\"\nledger_password_env = \"NOT_SET\"",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/p/flotilla.toml:2:23: the ledger's password environment variable `NOT_SET` is not set"
        );
        let err = resolve(
            None,
            "ledger_url = \"postgres://ops@ctl/flotilla\"\nledger_password_file = \"nope\"",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/p/flotilla.toml:2:24: cannot read the ledger's password file `/p/nope`"),
            "{err}"
        );
    }

    fn problems(text: &str) -> Vec<String> {
        let err = ProjectFile::parse(Path::new("/p/flotilla.toml"), text, &env).unwrap_err();
        err.problems()
            .iter()
            .map(|p| format!("{}:{}: {}", p.at.line, p.at.column, p.kind))
            .collect()
    }

    #[test]
    fn bad_ledger_settings_are_reported_where_written() {
        assert_eq!(
            problems(
                "ledger = \"l.db\"\nledger_url = \"postgres://ops@ctl/f\"\n\
                 ledger_password_env = \"A\"\nledger_password_file = \"b\"\n\
                 [env.prod]\nledger_url = \"postgres://ops:${LEDGER_PW}@ctl/f\"\n\
                 [env.dev]\nledger_url = \"host=ctl dbname=f\""
            ),
            [
                "2:14: set only one of `ledger` (a SQLite file) and `ledger_url` (a PostgreSQL control database)",
                "4:24: set only one of `ledger_password_env` and `ledger_password_file`",
                "6:14: `ledger_url` contains a password; put the password in ledger_password_env or ledger_password_file",
                "8:14: url `host=ctl dbname=f` must start with postgres:// or postgresql://",
            ]
        );
    }

    #[test]
    fn an_environment_section_replaces_the_ledger_choice() {
        let text = "ledger_url = \"postgres://ops@ctl/f\"\nledger_password_env = \"LEDGER_PW\"\n\
                    [env.local]\nledger = \"local.db\"\n[env.stage]\nledger_url = \"postgres://ops@stage/f\"";
        let file = ProjectFile::parse(Path::new("/p/flotilla.toml"), text, &env).unwrap();
        let at = |name| resolve_ledger(None, &file.resolve(Some(name)).unwrap(), &env).unwrap();
        assert!(matches!(at("local"), LedgerLocation::File(p) if p == Path::new("/p/local.db")));
        let stage = at("stage");
        assert_eq!(stage.to_string(), "postgres://ops@stage/f");
        assert_eq!(
            password_of(&stage).as_deref(),
            Some("s3cret-env"),
            "the password setting is inherited"
        );
    }
}
