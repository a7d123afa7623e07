//! Database urls: [`DbUrl`] (a parsed connection target whose `Display` and `Debug` are redacted) and the
//! resolution order for single-database commands ([`resolve_db_url`]).
//!
//! Reading the process environment is left to the caller, which passes a lookup function.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::doc::EnvLookup;
use super::error::{ConfigError, Location, ProblemKind, UrlOrigin};
use super::secret::{redact_message, redact_url, skip_conninfo_value};
use super::tls::{tls_mode, ClientCert, SslMode, TlsMode, SSLMODE_CHOICES};
use crate::error::error_chain;

/// The `application_name` Flotilla sets unless the url sets one.
pub const APPLICATION_NAME: &str = "flotilla";

/// The connect timeout Flotilla sets unless the url sets one.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A value read from a file, with where it was read.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub value: T,
    pub at: Location,
}

/// A parsed connection target: a `postgres://` url or a key=value conninfo string.
///
/// `sslmode` (all five libpq values), `sslrootcert`, `sslcert` and `sslkey` are taken out of the string before
/// tokio-postgres, which knows only three modes and no certificate files, parses the rest. The password, if any, stays inside the `tokio_postgres::Config`, whose
/// `Debug` masks it; `Display` and `Debug` of this type print the redacted url.
#[derive(Clone)]
pub struct DbUrl {
    config: tokio_postgres::Config,
    redacted: String,
    is_url: bool,
    sslmode: Option<SslMode>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

impl DbUrl {
    /// Parses `s`. The error is a [`ProblemKind::BadUrl`] (or `BadChoice` for sslmode) holding the redacted url.
    pub fn parse(s: &str) -> Result<DbUrl, ProblemKind> {
        let redacted = redact_url(s);
        let bad = |reason: String| ProblemKind::BadUrl {
            url: redacted.clone(),
            reason,
        };
        let is_url = s.starts_with("postgres://") || s.starts_with("postgresql://");
        if !is_url && s.contains("://") {
            return Err(ProblemKind::UrlScheme { url: redacted });
        }
        let (rest, params) = if is_url {
            take_url_params(s)
        } else {
            take_conninfo_params(s)
        };
        let mut sslmode = None;
        let (mut ca_file, mut cert_file, mut key_file) = (None, None, None);
        for (key, value) in params {
            match key.as_str() {
                "sslmode" => {
                    sslmode = Some(SslMode::parse(&value).ok_or_else(|| ProblemKind::BadChoice {
                        key: "sslmode",
                        value: value.clone(),
                        expected: SSLMODE_CHOICES,
                    })?)
                }
                "sslcert" => cert_file = Some(PathBuf::from(value)),
                "sslkey" => key_file = Some(PathBuf::from(value)),
                _ => ca_file = Some(PathBuf::from(value)),
            }
        }
        // The driver's message may quote part of the string (an unknown key, a character it did not expect).
        let config = tokio_postgres::Config::from_str(&rest).map_err(|e| bad(redact_message(&error_chain(&e), s)))?;
        if config.get_hosts().is_empty() && is_url {
            return Err(bad("no host".to_string()));
        }
        Ok(DbUrl {
            config,
            redacted,
            is_url,
            sslmode,
            ca_file,
            cert_file,
            key_file,
        })
    }

    /// The url with any password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// Whether the string was a `postgres://` url (else a key=value conninfo string).
    pub fn is_url(&self) -> bool {
        self.is_url
    }

    pub fn has_password(&self) -> bool {
        self.config.get_password().is_some()
    }

    /// Sets the password sent on connecting (from a separate setting, such as `ledger_password_env`).
    pub(crate) fn set_password(&mut self, password: &str) {
        self.config.password(password);
    }

    /// The `sslmode` the url set, if any.
    pub fn sslmode(&self) -> Option<SslMode> {
        self.sslmode
    }

    /// The `sslrootcert` the url set, if any.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca_file.as_deref()
    }

    /// The `sslcert` and `sslkey` the url set, if any.
    pub fn client_files(&self) -> (Option<&std::path::Path>, Option<&std::path::Path>) {
        (self.cert_file.as_deref(), self.key_file.as_deref())
    }

    /// The database the url names, if any.
    pub fn dbname(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    /// The driver configuration, with `application_name = flotilla` and a 10s connect timeout unless the url set
    /// them, and the negotiation implied by [`DbUrl::sslmode`] (default `prefer`).
    pub fn pg_config(&self) -> tokio_postgres::Config {
        let mut cfg = self.config.clone();
        if cfg.get_application_name().is_none() {
            cfg.application_name(APPLICATION_NAME);
        }
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(CONNECT_TIMEOUT);
        }
        cfg.ssl_mode(self.sslmode.unwrap_or_default().driver_mode());
        cfg
    }

    /// The TLS connector for this url's sslmode, root certificate and client certificate files (read now).
    /// Without TLS (`sslmode=disable`) the client certificate settings are not looked at.
    pub fn tls(&self) -> Result<TlsMode, ConfigError> {
        let sslmode = self.sslmode.unwrap_or_default();
        let client = if sslmode == SslMode::Disable {
            Ok(None)
        } else {
            ClientCert::pair(self.cert_file.clone(), self.key_file.clone(), ("sslcert", "sslkey"))
        };
        client
            .and_then(|client| tls_mode(sslmode, self.ca_file.as_deref(), client.as_ref()))
            .map_err(|kind| ConfigError::Connection {
                target: self.redacted.clone(),
                kind,
            })
    }

    /// Sets what libpq would take from the environment when the url leaves it out.
    fn fill_defaults(&mut self, env: EnvLookup<'_>) {
        if self.config.get_password().is_none() {
            if let Some(pw) = env("PGPASSWORD") {
                self.config.password(pw);
            }
        }
        if self.config.get_user().is_none() {
            if let Some(user) = env("PGUSER").or_else(|| env("USER")) {
                self.config.user(user);
            }
        }
        if self.sslmode.is_none() {
            self.sslmode = env("PGSSLMODE").as_deref().and_then(SslMode::parse);
        }
        if self.ca_file.is_none() {
            self.ca_file = env("PGSSLROOTCERT").map(PathBuf::from);
        }
        if self.cert_file.is_none() {
            self.cert_file = env("PGSSLCERT").map(PathBuf::from);
        }
        // As libpq: a certificate's key defaults to ~/.postgresql/postgresql.key; a key alone is not used.
        if self.cert_file.is_some() && self.key_file.is_none() {
            self.key_file = env("PGSSLKEY")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|home| PathBuf::from(home).join(".postgresql/postgresql.key")));
        }
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DbUrl").field(&self.redacted).finish()
    }
}

/// A resolved single-database target and where it came from.
#[derive(Debug, Clone)]
pub struct ResolvedUrl {
    pub url: DbUrl,
    pub origin: UrlOrigin,
}

/// Resolves the database for a single-database command, in order: the `--url` flag, the config file's `url`
/// (already merged with the selected `[env.*]`), `DATABASE_URL`, then libpq's `PGHOST`, `PGPORT`, `PGUSER`,
/// `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`.
///
/// Whatever the source, a url that leaves out the password, user, sslmode, root certificate or client
/// certificate gets them from `PGPASSWORD`, `PGUSER` (else `USER`), `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT` and
/// `PGSSLKEY` (else `~/.postgresql/postgresql.key` for a certificate's key), as libpq does. With only PG*
/// variables, the host defaults to `localhost` (libpq would use its Unix socket).
///
/// Errors: [`ConfigError::NoDatabaseUrl`] when nothing is set; [`ConfigError::Url`] naming the source.
pub fn resolve_db_url(
    flag: Option<&str>,
    config_url: Option<&Located<DbUrl>>,
    env: EnvLookup<'_>,
) -> Result<ResolvedUrl, ConfigError> {
    let parse = |s: &str, origin: UrlOrigin| DbUrl::parse(s).map_err(|kind| ConfigError::Url { origin, kind });
    let (mut url, origin) = if let Some(s) = flag {
        (parse(s, UrlOrigin::Flag)?, UrlOrigin::Flag)
    } else if let Some(located) = config_url {
        (located.value.clone(), UrlOrigin::Config(located.at.clone()))
    } else if let Some(s) = env("DATABASE_URL").filter(|s| !s.is_empty()) {
        (parse(&s, UrlOrigin::DatabaseUrlEnv)?, UrlOrigin::DatabaseUrlEnv)
    } else {
        let vars = ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE"];
        if vars.iter().all(|v| env(v).is_none()) {
            return Err(ConfigError::NoDatabaseUrl);
        }
        let mut conninfo = format!(
            "host={}",
            quote(&env("PGHOST").unwrap_or_else(|| "localhost".to_string()))
        );
        for (var, key) in [("PGPORT", "port"), ("PGUSER", "user"), ("PGDATABASE", "dbname")] {
            if let Some(v) = env(var) {
                conninfo.push_str(&format!(" {key}={}", quote(&v)));
            }
        }
        (parse(&conninfo, UrlOrigin::PgEnv)?, UrlOrigin::PgEnv)
    };
    url.fill_defaults(env);
    Ok(ResolvedUrl { url, origin })
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

const TAKEN_PARAMS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Splits the [`TAKEN_PARAMS`] out of a url's query string.
fn take_url_params(s: &str) -> (String, Vec<(String, String)>) {
    // The query starts at the first `?` after the credentials, which end at the first `@` (as in tokio-postgres).
    let after_creds = s.find('@').map_or(0, |i| i + 1);
    let Some(q) = s[after_creds..].find('?').map(|i| i + after_creds) else {
        return (s.to_string(), Vec::new());
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for param in s[q + 1..].split('&') {
        match param.split_once('=') {
            Some((k, v)) if TAKEN_PARAMS.contains(&k) => taken.push((k.to_string(), percent_decode(v))),
            _ => kept.push(param),
        }
    }
    let mut rest = s[..q].to_string();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    (rest, taken)
}

/// Splits the [`TAKEN_PARAMS`] out of a key=value conninfo string.
fn take_conninfo_params(s: &str) -> (String, Vec<(String, String)>) {
    let bytes = s.as_bytes();
    let mut rest = String::with_capacity(s.len());
    let mut taken = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let start = i;
        let key_len = s[i..]
            .find(|c: char| c == '=' || c.is_ascii_whitespace())
            .unwrap_or(s.len() - i);
        let key = &s[i..i + key_len];
        let mut j = i + key_len;
        while j < s.len() && bytes[j] == b' ' {
            j += 1;
        }
        if key.is_empty() || j >= s.len() || bytes[j] != b'=' {
            // Not a key=value pair: copy one character and let tokio-postgres report it.
            let ch = s[i..].chars().next().unwrap_or(' ');
            rest.push(ch);
            i += ch.len_utf8();
            continue;
        }
        j += 1;
        while j < s.len() && bytes[j] == b' ' {
            j += 1;
        }
        let end = skip_conninfo_value(s, j);
        if TAKEN_PARAMS.contains(&key) {
            taken.push((key.to_string(), unquote(&s[j..end])));
        } else {
            rest.push_str(&s[start..end]);
        }
        i = end;
    }
    (rest, taken)
}

pub(super) fn unquote(v: &str) -> String {
    let inner = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).unwrap_or(v);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

pub(super) fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            if let Some(b) = v.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use tokio_postgres::config::Host;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    /// Renders a resolved target as `origin | redacted | host:port/db user sslmode pw?`.
    fn check(flag: Option<&str>, config: Option<&str>, env: &[(&str, &str)], expected: &str) {
        let env = env_of(env);
        let config = config.map(|s| Located {
            value: DbUrl::parse(s).expect("config url"),
            at: Location {
                path: std::path::Path::new("flotilla.toml").into(),
                line: 3,
                column: 7,
            },
        });
        let got = match resolve_db_url(flag, config.as_ref(), &env) {
            Ok(r) => {
                let cfg = r.url.pg_config();
                let host = match cfg.get_hosts().first() {
                    Some(Host::Tcp(h)) => h.clone(),
                    other => format!("{other:?}"),
                };
                format!(
                    "{} | {} | {}:{}/{} {} {} {}",
                    r.origin,
                    r.url,
                    host,
                    cfg.get_ports().first().copied().unwrap_or(5432),
                    cfg.get_dbname().unwrap_or("-"),
                    cfg.get_user().unwrap_or("-"),
                    r.url.sslmode().unwrap_or_default(),
                    cfg.get_password()
                        .map_or("nopw".to_string(), |p| String::from_utf8_lossy(p).into_owned()),
                )
            }
            Err(e) => e.to_string(),
        };
        assert_eq!(got, expected);
    }

    #[test]
    fn precedence() {
        let all = [
            ("DATABASE_URL", "postgres://envu@envhost/envdb"),
            ("PGHOST", "pghost"),
            ("PGDATABASE", "pgdb"),
        ];
        check(
            Some("postgres://flag:pw@flaghost/flagdb"),
            Some("postgres://cfg@cfghost/cfgdb"),
            &all,
            "--url | postgres://flag:***@flaghost/flagdb | flaghost:5432/flagdb flag prefer pw",
        );
        check(
            None,
            Some("postgres://cfg@cfghost/cfgdb"),
            &all,
            "flotilla.toml:3:7 | postgres://cfg@cfghost/cfgdb | cfghost:5432/cfgdb cfg prefer nopw",
        );
        check(
            None,
            None,
            &all,
            "DATABASE_URL | postgres://envu@envhost/envdb | envhost:5432/envdb envu prefer nopw",
        );
        check(
            None,
            None,
            &[
                ("PGHOST", "pghost"),
                ("PGPORT", "6543"),
                ("PGUSER", "me"),
                ("PGPASSWORD", "hunter2"),
                ("PGDATABASE", "my db"),
                ("PGSSLMODE", "verify-full"),
            ],
            "the PG* environment variables | host='pghost' port='6543' user='me' dbname='my db' \
             | pghost:6543/my db me verify-full hunter2",
        );
        check(
            None,
            None,
            &[("PGDATABASE", "d"), ("USER", "osuser")],
            "the PG* environment variables | host='localhost' dbname='d' | localhost:5432/d osuser prefer nopw",
        );
        check(
            None,
            None,
            &[("PGPASSWORD", "x")],
            &ConfigError::NoDatabaseUrl.to_string(),
        );
        check(
            None,
            None,
            &[("DATABASE_URL", "")],
            &ConfigError::NoDatabaseUrl.to_string(),
        );
    }

    #[test]
    fn pg_defaults_fill_gaps_only() {
        check(
            Some("postgres://u:own@h/d?sslmode=disable"),
            None,
            &[("PGPASSWORD", "envpw"), ("PGSSLMODE", "require"), ("PGUSER", "x")],
            "--url | postgres://u:***@h/d?sslmode=disable | h:5432/d u disable own",
        );
        check(
            Some("postgres://h/d"),
            None,
            &[("PGPASSWORD", "envpw"), ("PGUSER", "x")],
            "--url | postgres://h/d | h:5432/d x prefer envpw",
        );
    }

    #[test]
    fn bad_urls_are_redacted() {
        check(
            Some("postgres://u:hunter2@h:notaport/d"),
            None,
            &[],
            "--url: invalid database url `postgres://u:***@h:notaport/d`: \
             invalid connection string: invalid value for option `port`",
        );
        check(
            None,
            None,
            &[("DATABASE_URL", "mysql://u:hunter2@h/d")],
            "DATABASE_URL: url `mysql://u:***@h/d` must start with postgres:// or postgresql://",
        );
        check(
            Some("postgres://h/d?sslmode=verify-none"),
            None,
            &[],
            "--url: `sslmode` must be one of disable, prefer, require, verify-ca, verify-full, found `verify-none`",
        );
    }

    #[test]
    fn client_certificate_from_url_or_environment() {
        let files = |flag: &str, env: &[(&str, &str)]| {
            let resolved = resolve_db_url(Some(flag), None, &env_of(env)).expect("resolve");
            let (cert, key) = resolved.url.client_files();
            let show = |p: Option<&std::path::Path>| p.map_or("-".to_string(), |p| p.display().to_string());
            (
                show(cert),
                show(key),
                resolved.url.tls().map(|_| ()).map_err(|e| e.to_string()),
            )
        };
        let home = [("HOME", "/home/u")];
        assert_eq!(
            files(
                "postgres://h/d?sslcert=/c.pem&sslkey=/c.key",
                &[("PGSSLCERT", "/e.pem")]
            )
            .0,
            "/c.pem"
        );
        // A certificate's key defaults to libpq's ~/.postgresql/postgresql.key; a key alone is not taken.
        let (cert, key, _) = files("postgres://h/d", &[("PGSSLCERT", "/e.pem"), home[0]]);
        assert_eq!(
            (cert.as_str(), key.as_str()),
            ("/e.pem", "/home/u/.postgresql/postgresql.key")
        );
        let (cert, key, tls) = files("postgres://h/d", &[("PGSSLKEY", "/e.key"), home[0]]);
        assert_eq!((cert.as_str(), key.as_str()), ("-", "-"));
        assert_eq!(tls, Ok(()));
        // Without TLS the client certificate is not looked at; with TLS a half pair is refused.
        assert_eq!(files("postgres://h/d?sslmode=disable&sslkey=/k", &[]).2, Ok(()));
        let (_, _, tls) = files("postgres://h/d?sslmode=require&sslkey=/k", &[]);
        assert!(tls.unwrap_err().contains("set both sslcert and sslkey"));
    }

    #[test]
    fn takes_ssl_params() {
        let u = DbUrl::parse("postgres://u@h/d?sslmode=verify-ca&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3")
            .expect("parse");
        assert_eq!(u.sslmode(), Some(SslMode::VerifyCa));
        assert_eq!(u.ca_file(), Some(std::path::Path::new("/etc/ca.pem")));
        assert_eq!(u.pg_config().get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(u.pg_config().get_application_name(), Some(APPLICATION_NAME));
        let u = DbUrl::parse("host=h sslmode = verify-full sslrootcert='/a b.pem' dbname=d").expect("parse");
        assert_eq!(u.sslmode(), Some(SslMode::VerifyFull));
        assert_eq!(u.ca_file(), Some(std::path::Path::new("/a b.pem")));
        assert_eq!(u.dbname(), Some("d"));
        assert_eq!(u.pg_config().get_connect_timeout(), Some(&CONNECT_TIMEOUT));
    }

    #[test]
    fn no_password_in_display_or_debug() {
        for s in [
            "postgres://u:hunter2@h/d",
            "postgres://u@h/d?password=hunter2",
            "host=h password=hunter2",
        ] {
            let u = DbUrl::parse(s).expect("parse");
            assert!(u.has_password());
            let shown = format!("{u} {u:?} {:?}", u.pg_config());
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }
}
