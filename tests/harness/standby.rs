//! A streaming standby of the shared cluster, for the tests that need a real replica (replay lag).
//!
//! [`Standby::start`] copies the cluster with `pg_basebackup -R` into a directory under `/tmp` (short enough for
//! the unix socket), starts it on a free port of its own as the OS user that runs the cluster (`postgres` when
//! the tests run as root), and waits until it streams; dropping the value stops it and deletes the directory.
//! One standby runs at a time per test process: every standby shows in the cluster's `pg_stat_replication`, so
//! a test watching the primary's replay lag must not see another test's paused replica. A standby left by a
//! killed test process is stopped and deleted by the next start.
//!
//! It needs the cluster to accept replication connections from 127.0.0.1 without a password, as
//! `scripts/pg-cluster` sets up, and PostgreSQL's server binaries next to the client ones.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::cluster::cluster;
use super::runtime::{block_on, connect};

const DIR_PREFIX: &str = "flotilla-standby-";

/// A running streaming standby of the shared cluster; stopped and deleted on drop.
pub struct Standby {
    dir: PathBuf,
    port: u16,
    user: String,
    bin: PathBuf,
    _turn: MutexGuard<'static, ()>,
}

impl Standby {
    /// Copies the shared cluster and starts the copy as its streaming standby, waiting (after any other test's
    /// standby of this process is gone) until it streams. Panics with the reason and the standby's log when it
    /// cannot.
    pub fn start() -> Standby {
        static TURN: Mutex<()> = Mutex::new(());
        // A test that panicked while holding its standby still dropped (stopped) it.
        let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let primary: tokio_postgres::Config = cluster().url().parse().expect("the cluster url parses");
        let host = match primary.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            other => panic!("a standby needs a TCP host in the cluster url, not {other:?}"),
        };
        let primary_port = primary.get_ports().first().copied().unwrap_or(5432);
        let user = primary.get_user().unwrap_or("postgres").to_string();
        let bin = cluster()
            .bin("pg_basebackup")
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        sweep_dead_standbys(&bin);

        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        if is_root() {
            run_checked(
                Command::new("chown").arg("postgres:").arg(&dir),
                "chown the standby directory",
            );
        }
        let port = free_port();
        let standby = Standby {
            dir,
            port,
            user,
            bin,
            _turn: turn,
        };
        let data = standby.data();
        let out = standby
            .as_server_user("pg_basebackup")
            .args(["-h", &host, "-p", &primary_port.to_string(), "-U", &standby.user])
            .arg("-D")
            .arg(&data)
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
            .output()
            .expect("run pg_basebackup");
        if !out.status.success() {
            panic!(
                "pg_basebackup of the test cluster failed (it needs `host replication` in pg_hba.conf, as \
                 scripts/pg-cluster writes):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The copy carries the primary's settings file; the command line overrides its port and socket.
        let options = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c hot_standby=on",
            standby.dir.display()
        );
        let out = standby
            .as_server_user("pg_ctl")
            .arg("start")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(standby.log())
            .args(["-w", "-t", "60", "-o", &options])
            .output()
            .expect("run pg_ctl start");
        if !out.status.success() {
            panic!(
                "the standby did not start:\n{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                standby.log_tail()
            );
        }
        standby.wait_streaming();
        standby
    }

    /// A superuser url of `db_name` on the standby.
    pub fn db_url(&self, db_name: &str) -> String {
        format!("postgres://{}@127.0.0.1:{}/{db_name}", self.user, self.port)
    }

    /// A superuser url of the standby's maintenance database.
    pub fn url(&self) -> String {
        self.db_url("postgres")
    }

    /// Runs one statement on the standby's maintenance database and returns its first column of its first row as
    /// text (NULL as `None`).
    pub fn query(&self, sql: &str) -> Option<String> {
        self.query_in("postgres", sql)
    }

    /// [`Standby::query`] in database `db_name`; `None` also while the standby has no such database yet (it has not
    /// replayed its creation), so callers poll.
    pub fn query_in(&self, db_name: &str, sql: &str) -> Option<String> {
        let (url, sql) = (self.db_url(db_name), sql.to_string());
        block_on(async move {
            let client = match connect(&url).await {
                Ok(client) => client,
                Err(e) if format!("{e:#}").contains("does not exist") => return None,
                Err(e) => panic!("connect to the standby: {e:#}"),
            };
            let rows = client.simple_query(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            rows.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
                _ => None,
            })
        })
        .flatten()
    }

    /// Whether the standby has replayed all the WAL it received, and replayed a transaction since it started
    /// (so its `pg_last_xact_replay_timestamp()` is set).
    pub fn is_caught_up(&self) -> bool {
        self.query(
            "SELECT pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn() \
             AND pg_last_xact_replay_timestamp() IS NOT NULL",
        )
        .as_deref()
            == Some("t")
    }

    /// Whether the standby has received WAL it has not replayed.
    pub fn is_behind(&self) -> bool {
        self.query("SELECT pg_last_wal_replay_lsn() < pg_last_wal_receive_lsn()")
            .as_deref()
            == Some("t")
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A command running `program` of the server binaries as the cluster's OS user.
    fn as_server_user(&self, program: &str) -> Command {
        as_server_user(&self.bin.join(program))
    }

    fn wait_streaming(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let url = self.url();
            let status = block_on(async move {
                let client = connect(&url).await.ok()?;
                let row = client
                    .query_opt("SELECT status FROM pg_stat_wal_receiver", &[])
                    .await
                    .ok()??;
                Some(row.get::<_, String>(0))
            });
            if status.as_deref() == Some("streaming") {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the standby on port {} did not stream within 60s (status {status:?}):\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        stop_and_delete(&self.bin, &self.dir);
    }
}

fn stop_and_delete(bin: &Path, dir: &Path) {
    let data = dir.join("data");
    if data.join("postmaster.pid").exists() {
        let _ = as_server_user(&bin.join("pg_ctl"))
            .arg("stop")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "-t", "30"])
            .output();
    }
    let _ = fs::remove_dir_all(dir);
}

/// Stops and deletes the standbys of test processes that are no longer running (killed before their drop ran).
fn sweep_dead_standbys(bin: &Path) {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            stop_and_delete(bin, &entry.path());
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `program` as the cluster's OS user: `postgres` when we are root (the server refuses to run as root), from `/`
/// (its tools fail when they cannot resolve the working directory, such as `/root/...`).
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program).current_dir("/");
        command
    } else {
        Command::new(program)
    }
}

fn run_checked(command: &mut Command, what: &str) -> Output {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("the bound address").port()
}
