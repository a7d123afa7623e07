//! The one PostgreSQL server all tests of this process share, found or started on first use.
//!
//! With `FLOTILLA_TEST_DATABASE_URL` set (as `scripts/test` does), that server is used as is. Otherwise the harness
//! runs `scripts/pg-cluster start` on a directory under `CARGO_TARGET_TMPDIR`, so a plain `cargo test` works too.
//! Statics never run `Drop`, so that server outlives the process; the next start stops and restarts it.
//! Per-database work (create, drop, sweep) lives in `db`.

use std::fs::{self, File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::db::{sweep, Sweep};

/// The env var naming an existing server for the tests (a `postgres://` URL with a superuser).
pub const DATABASE_URL_ENV: &str = "FLOTILLA_TEST_DATABASE_URL";

/// The server the tests of this process use.
#[derive(Debug)]
pub struct Cluster {
    /// URL of a superuser connection to the maintenance database.
    url: String,
    /// Where `psql` and friends come from; `None` means "from `PATH`".
    bin_dir: Option<PathBuf>,
    /// True when this process (re)started the server because no other process used it.
    is_exclusive: bool,
    /// True when the server runs on this machine, so the pids encoded in database names can be checked.
    is_local: bool,
    /// Held (shared) until the process exits, telling later test processes that the server is in use.
    _users_lock: Option<File>,
}

impl Cluster {
    /// URL of a superuser connection to the maintenance database (`postgres`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL of `db_name` on this server.
    pub fn db_url(&self, db_name: &str) -> String {
        with_database(&self.url, db_name)
    }

    /// The directory of the PostgreSQL client binaries matching the server, when known.
    pub fn bin_dir(&self) -> Option<&Path> {
        self.bin_dir.as_deref()
    }

    /// The path of a PostgreSQL client program such as `psql`, falling back to a `PATH` lookup.
    pub fn bin(&self, program: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(program),
            None => PathBuf::from(program),
        }
    }

    pub fn is_exclusive(&self) -> bool {
        self.is_exclusive
    }

    pub fn is_local(&self) -> bool {
        self.is_local
    }
}

/// The shared cluster, found or started (and swept of leftover test databases) on first use.
///
/// Panics with the reason when no server can be had; every later call panics with the same message.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    let cluster = CLUSTER.get_or_init(|| {
        let cluster = match std::env::var(DATABASE_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => Ok(external(url.trim())),
            _ => start_own(),
        }?;
        if !cluster.is_exclusive && cluster.is_local {
            sweep(&cluster.url, Sweep::DeadProcesses)?;
        }
        Ok(cluster)
    });
    match cluster {
        Ok(cluster) => cluster,
        Err(msg) => panic!("no PostgreSQL for the tests: {msg}"),
    }
}

fn external(url: &str) -> Cluster {
    Cluster {
        url: url.to_string(),
        bin_dir: client_bin_dir(),
        is_exclusive: false,
        is_local: is_local_url(url),
        _users_lock: None,
    }
}

/// Starts (or joins) the harness's own cluster under `CARGO_TARGET_TMPDIR`.
fn start_own() -> Result<Cluster, String> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("flotilla-harness-pg");
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;

    // Test processes of this checkout take turns here. A process that finds no other user (exclusive lock
    // granted) owns a clean (re)start; otherwise it joins the running server. The users lock is shared by every
    // live process and released by the kernel when a process dies, even by SIGKILL.
    let start_lock = open_lock(&dir.join("harness-start.lock"))?;
    flock(&start_lock, libc::LOCK_EX, "harness-start.lock")?;
    let users_lock = open_lock(&dir.join("harness-users.lock"))?;
    let is_exclusive = flock(&users_lock, libc::LOCK_EX | libc::LOCK_NB, "harness-users.lock").is_ok();

    let url = if is_exclusive {
        let url = run_pg_cluster_start(&dir)?;
        // Nobody else can have databases on the server yet: later processes wait for the start lock.
        sweep(&url, Sweep::Everything)?;
        url
    } else {
        let url = fs::read_to_string(dir.join("url")).map_err(|e| {
            format!(
                "another test process uses {} but its url file is unreadable: {e}",
                dir.display()
            )
        })?;
        url.trim().to_string()
    };
    // Downgrading can briefly drop the lock, which is harmless while we hold the start lock.
    flock(&users_lock, libc::LOCK_SH, "harness-users.lock")?;
    drop(start_lock);

    let bin_dir = fs::read_to_string(dir.join("bin"))
        .ok()
        .map(|s| PathBuf::from(s.trim()))
        .filter(|p| p.join("psql").exists())
        .or_else(client_bin_dir);
    Ok(Cluster {
        url,
        bin_dir,
        is_exclusive,
        is_local: true,
        _users_lock: Some(users_lock),
    })
}

fn run_pg_cluster_start(dir: &Path) -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-cluster");
    let output = Command::new(&script)
        .arg("start")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("run {}: {e}", script.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "`{} start {}` failed ({}):\n{stderr}",
            script.display(),
            dir.display(),
            output.status
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().last() {
        Some(url) if url.starts_with("postgres://") => Ok(url.to_string()),
        _ => Err(format!("`pg-cluster start` printed no URL:\n{stdout}\n{stderr}")),
    }
}

fn open_lock(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))
}

fn flock(file: &File, op: libc::c_int, what: &str) -> Result<(), String> {
    loop {
        // SAFETY: flock only reads the descriptor, which `file` keeps open for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("flock {what}: {err}"));
        }
    }
}

/// The client binaries to use with an external server: `PG_BIN`, else the newest Debian install, else `PATH`.
fn client_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let mut dirs: Vec<(Vec<u64>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse::<u64>().ok())
                .collect::<Option<Vec<u64>>>()?;
            let bin = entry.path().join("bin");
            bin.join("psql").exists().then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin)
}

/// Replaces the database (the path) of a `postgres://` URL, keeping user, host and query parameters.
/// `scripts/pg-cluster ACTION DIR`, its outcome ignored (used to stop or destroy a test's own cluster).
pub fn pg_cluster(action: &str, dir: &std::path::Path) {
    let _ = std::process::Command::new(super::repo_dir().join("scripts/pg-cluster"))
        .arg(action)
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .output();
}

/// Starts (or restarts) a test's own cluster in `dir` with `scripts/pg-cluster start` and the harness's server
/// binaries, with `envs` added, and returns the url of its maintenance database.
pub fn start_own_cluster(dir: &std::path::Path, envs: &[(&str, &std::path::Path)]) -> String {
    let mut command = std::process::Command::new(super::repo_dir().join("scripts/pg-cluster"));
    command.arg("start").arg(dir).stdin(std::process::Stdio::null());
    if let Some(bin) = cluster().bin_dir() {
        command.env("PG_BIN", bin);
    }
    command.envs(envs.iter().copied());
    let out = command.output().expect("run scripts/pg-cluster");
    assert!(
        out.status.success(),
        "pg-cluster start failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let url = stdout.lines().last().unwrap_or_default().to_string();
    assert!(url.starts_with("postgres://"), "no url from pg-cluster: {stdout}");
    url
}

/// `url` with its database replaced by `db`.
pub fn url_of_db(url: &str, db: &str) -> String {
    let (server, _) = url.rsplit_once('/').expect("a url with a database");
    format!("{server}/{db}")
}

/// A fresh directory for a test's own cluster, `PREFIX-PID` under the test binary's temporary directory (per
/// process, so two test runs of this checkout never stop each other's server), after destroying the clusters
/// runs that died before their drop (Ctrl-C, SIGKILL) left behind.
pub fn own_cluster_dir(prefix: &str) -> std::path::PathBuf {
    let tmp = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(&format!("{prefix}-"))
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            pg_cluster("destroy", &entry.path());
        }
    }
    let dir = tmp.join(format!("{prefix}-{}", std::process::id()));
    pg_cluster("destroy", &dir);
    dir
}

pub fn with_database(url: &str, db_name: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        panic!("{DATABASE_URL_ENV} must be a postgres:// URL, got {url:?}");
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let after_authority = &rest[authority_end..];
    let query = after_authority.find('?').map_or("", |i| &after_authority[i..]);
    format!("{}{}/{db_name}{query}", &url[..scheme_end], &rest[..authority_end])
}

fn is_local_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let host = if let Some(inner) = host_port.strip_prefix('[') {
        inner.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    // An empty host means a unix socket (possibly given as ?host=/path), which is local too.
    matches!(host, "" | "127.0.0.1" | "localhost" | "::1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_path() {
        let check = |url: &str, expected: &str| assert_eq!(with_database(url, "x"), expected, "{url}");
        check(
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://postgres@127.0.0.1:5432/x",
        );
        check(
            "postgres://u:p@h:1/db?sslmode=disable",
            "postgres://u:p@h:1/x?sslmode=disable",
        );
        check("postgresql://h", "postgresql://h/x");
        check("postgres://h?application_name=a", "postgres://h/x?application_name=a");
    }

    #[test]
    fn local_hosts() {
        assert!(is_local_url("postgres://postgres@127.0.0.1:5/postgres"));
        assert!(is_local_url("postgres://localhost/postgres"));
        assert!(is_local_url("postgres://u@[::1]:5/postgres"));
        assert!(is_local_url("postgres:///postgres?host=/tmp"));
        assert!(!is_local_url("postgres://u:p@db.example.com:5432/postgres"));
    }
}
