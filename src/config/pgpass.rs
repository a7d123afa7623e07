//! libpq's password file (`.pgpass`): where it is, when it is ignored, and which line matches a connection.
//!
//! Only the tenants file's servers read it, after every explicit password source (see `Server::pg_config`).
//! The environment (`PGPASSFILE`, `HOME`) comes through the caller's lookup function; the warning for a file
//! others can read goes to the log, as libpq prints it on stderr.

use std::fmt;
use std::path::{Path, PathBuf};

use super::doc::EnvLookup;
use super::secret::Secret;

/// The host name a Unix-socket connection matches, as in libpq.
pub const LOCALHOST: &str = "localhost";

/// The Unix-socket directories libpq builds in by default (upstream `/tmp`, Debian `/var/run/postgresql`):
/// a connection through one of them matches `localhost` lines.
const DEFAULT_SOCKET_DIRS: [&str; 3] = ["/tmp", "/var/run/postgresql", "/run/postgresql"];

/// The password file libpq would read: `PGPASSFILE`, else `$HOME/.pgpass`; `None` when neither is set.
pub fn pgpass_path(env: EnvLookup<'_>) -> Option<PathBuf> {
    match env("PGPASSFILE").filter(|p| !p.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None => env("HOME")
            .filter(|h| !h.is_empty())
            .map(|home| PathBuf::from(home).join(".pgpass")),
    }
}

/// What a line must match: the connection's host, port, database and user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgPassKey {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
}

impl PgPassKey {
    /// The key of a driver configuration: its first host (a default socket directory reads as `localhost`), its
    /// first port (default 5432), its database (default: the user, as the server does) and its user.
    pub fn of(cfg: &tokio_postgres::Config) -> PgPassKey {
        let host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) if !h.is_empty() => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(dir)) => {
                let dir = dir.to_string_lossy();
                let trimmed = dir.trim_end_matches('/');
                if DEFAULT_SOCKET_DIRS.contains(&trimmed) {
                    LOCALHOST.to_string()
                } else {
                    dir.into_owned()
                }
            }
            _ => LOCALHOST.to_string(),
        };
        let user = cfg.get_user().unwrap_or_default().to_string();
        PgPassKey {
            host,
            port: cfg.get_ports().first().copied().unwrap_or(5432),
            database: cfg.get_dbname().map_or_else(|| user.clone(), str::to_string),
            user,
        }
    }
}

impl fmt::Display for PgPassKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}:{}", self.host, self.port, self.database, self.user)
    }
}

/// Why a password file was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// Group or others may read or write it (libpq's rule on Unix); holds the mode bits.
    Permissions(u32),
    NotAFile,
    Unreadable(String),
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ignored::Permissions(mode) => write!(
                f,
                "it has group or world access (mode {mode:04o}); permissions should be u=rw (0600) or less"
            ),
            Ignored::NotAFile => f.write_str("it is not a plain file"),
            Ignored::Unreadable(err) => write!(f, "it cannot be read: {err}"),
        }
    }
}

/// The outcome of looking a connection up in a password file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgPassLookup {
    /// The first matching line (1-based) and its password.
    Found {
        line: usize,
        password: Secret,
    },
    /// The file was read and no line matches.
    NoMatch,
    /// There is no such file (libpq says nothing then either).
    Missing,
    Ignored(Ignored),
}

/// Looks `key` up in the password file at `path`, as libpq does: a file group or others can access, or that is
/// not a plain file, is ignored with a warning.
pub fn lookup(path: &Path, key: &PgPassKey) -> PgPassLookup {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return PgPassLookup::Missing,
        Err(e) => return ignored(path, Ignored::Unreadable(e.to_string())),
    };
    if !meta.is_file() {
        return ignored(path, Ignored::NotAFile);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return ignored(path, Ignored::Permissions(mode));
        }
    }
    match std::fs::read(path) {
        Ok(bytes) => match find(&String::from_utf8_lossy(&bytes), key) {
            Some((line, password)) => PgPassLookup::Found { line, password },
            None => PgPassLookup::NoMatch,
        },
        Err(e) => ignored(path, Ignored::Unreadable(e.to_string())),
    }
}

fn ignored(path: &Path, why: Ignored) -> PgPassLookup {
    tracing::warn!(path = %path.display(), "password file ignored: {why}");
    PgPassLookup::Ignored(why)
}

/// The first line of `text` (libpq's `hostname:port:database:username:password` format) that matches `key`,
/// with its 1-based number and password. `*` matches any value; `\:` and `\\` stand for `:` and `\`; lines
/// starting with `#` are comments. The password ends at the first unescaped `:`, as in libpq.
pub fn find(text: &str, key: &PgPassKey) -> Option<(usize, Secret)> {
    let port = key.port.to_string();
    let wanted = [
        key.host.as_str(),
        port.as_str(),
        key.database.as_str(),
        key.user.as_str(),
    ];
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut rest = line;
        let matched = wanted.iter().all(|value| match match_field(rest, value) {
            Some(after) => {
                rest = after;
                true
            }
            None => false,
        });
        if matched {
            return Some((i + 1, Secret::new(unescape_password(rest))));
        }
    }
    None
}

/// Matches the field at the start of `line` against `value`; returns the text after its `:` separator.
fn match_field<'a>(line: &'a str, value: &str) -> Option<&'a str> {
    if let Some(after) = line.strip_prefix("*:") {
        return Some(after);
    }
    let mut field = String::new();
    let mut chars = line.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped)) => field.push(escaped),
                None => return None,
            },
            ':' => return (field == value).then(|| &line[i + 1..]),
            _ => field.push(c),
        }
    }
    None
}

fn unescape_password(rest: &str) -> String {
    let mut out = String::with_capacity(rest.len());
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ':' => break,
            '\\' if chars.peek().is_some() => out.extend(chars.next()),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(host: &str, port: u16, database: &str, user: &str) -> PgPassKey {
        PgPassKey {
            host: host.into(),
            port,
            database: database.into(),
            user: user.into(),
        }
    }

    /// The line number and password `text` gives `k`, as `line:password`, else `-`.
    fn check(text: &str, k: &PgPassKey, expected: &str) {
        let got = find(text, k).map_or("-".to_string(), |(line, pw)| format!("{line}:{}", pw.expose()));
        assert_eq!(got, expected, "{text:?} for {k}");
    }

    #[test]
    fn first_matching_line_wins() {
        let k = key("db.internal", 5432, "app", "migrator");
        let text = "# comment\n\nother:5432:app:migrator:no\ndb.internal:5432:app:migrator:first\n*:*:*:*:second\n";
        check(text, &k, "4:first");
        check("*:*:*:*:any\ndb.internal:5432:app:migrator:later\n", &k, "1:any");
        check("db.internal:5433:app:migrator:x\n", &k, "-");
        check("db.internal:5432:*:migrator:x\r\n", &k, "1:x");
        check("db.internal:5432:app:other:x\ndb.internal:*:app:*:y", &k, "2:y");
        check("", &k, "-");
        // A field must be whole: a prefix or a longer value does not match, and a short line matches nothing.
        check("db:5432:app:migrator:x\ndb.internal:5432:app\n", &k, "-");
        check("db.internal.x:5432:app:migrator:x\n", &k, "-");
    }

    #[test]
    fn escapes_and_password_end() {
        let k = key("h", 5432, "a:b", "u\\v");
        check("h:5432:a\\:b:u\\\\v:p\\:w\\\\d\n", &k, "1:p:w\\d");
        // The password ends at the first unescaped colon; extra fields are ignored.
        check("h:5432:*:*:pw:extra\n", &k, "1:pw");
        check("h:5432:*:*:\n", &k, "1:");
        // A `*` only stands for any value as a whole field.
        check("h*:5432:*:*:x\n", &k, "-");
        check("\\*:5432:*:*:x\n", &key("*", 5432, "d", "u"), "1:x");
    }

    #[test]
    fn key_of_a_config() {
        let cfg: tokio_postgres::Config = "postgres://migrator@db.internal:6000/app".parse().expect("url");
        assert_eq!(PgPassKey::of(&cfg).to_string(), "db.internal:6000:app:migrator");
        // A default socket directory reads as localhost, and the database defaults to the user.
        let cfg: tokio_postgres::Config = "host=/var/run/postgresql user=u".parse().expect("conninfo");
        assert_eq!(PgPassKey::of(&cfg).to_string(), "localhost:5432:u:u");
        let cfg: tokio_postgres::Config = "host=/srv/sock user=u dbname=d".parse().expect("conninfo");
        assert_eq!(PgPassKey::of(&cfg).to_string(), "/srv/sock:5432:d:u");
    }

    #[test]
    fn path_from_pgpassfile_then_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let path = |e: &dyn Fn(&str) -> Option<String>| pgpass_path(e).map(|p| p.display().to_string());
        assert_eq!(
            path(&env(&[("PGPASSFILE", "/s/pw"), ("HOME", "/h")])).as_deref(),
            Some("/s/pw")
        );
        assert_eq!(path(&env(&[("HOME", "/h")])).as_deref(), Some("/h/.pgpass"));
        assert_eq!(path(&env(&[])), None);
    }

    #[cfg(unix)]
    #[test]
    fn lookup_ignores_files_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pgpass");
        let k = key("h", 5432, "d", "u");
        assert_eq!(lookup(&path, &k), PgPassLookup::Missing);
        std::fs::write(&path, "h:5432:d:u:secret\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(lookup(&path, &k), PgPassLookup::Ignored(Ignored::Permissions(0o644)));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            lookup(&path, &k),
            PgPassLookup::Found {
                line: 1,
                password: Secret::new("secret")
            }
        );
        assert_eq!(lookup(&path, &key("h", 1, "d", "u")), PgPassLookup::NoMatch);
        assert_eq!(lookup(dir.path(), &k), PgPassLookup::Ignored(Ignored::NotAFile));
    }
}
