//! A runner for the real `flotilla` binary (and `psql`): a builder, a timeout, and assertions that show the whole
//! command, its exit code, stdout and stderr when they fail.
//!
//! The child gets a clean environment for the things that could leak in from a developer's shell (see
//! [`child_env`]); anything a test needs it sets explicitly.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::cluster::cluster;

/// How long a command may run before the runner kills it and fails the test.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The binary under test, ready for arguments.
pub fn flotilla() -> Cmd {
    Cmd::new(env!("CARGO_BIN_EXE_flotilla"))
}

/// `psql` from the cluster's bin dir, without any psqlrc; add `-d URL` (or use `TestDb::psql`).
pub fn psql() -> Cmd {
    let mut cmd = Cmd::new(cluster().bin("psql"));
    cmd.args(["-X", "-q"]);
    cmd
}

/// A command to run once or several times; see [`flotilla`].
#[derive(Debug, Clone)]
pub struct Cmd {
    program: PathBuf,
    args: Vec<OsString>,
    /// Explicit settings (`None` removes), applied after the default scrubbing.
    envs: Vec<(OsString, Option<OsString>)>,
    current_dir: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl Cmd {
    pub fn new(program: impl AsRef<Path>) -> Cmd {
        Cmd {
            program: program.as_ref().to_path_buf(),
            args: Vec::new(),
            envs: Vec::new(),
            current_dir: None,
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Cmd {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Sets a variable for the child, including one the runner would otherwise remove (`DATABASE_URL`, `PG*`).
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Cmd {
        self.envs
            .push((key.as_ref().to_os_string(), Some(value.as_ref().to_os_string())));
        self
    }

    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Cmd {
        self.envs.push((key.as_ref().to_os_string(), None));
        self
    }

    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Cmd {
        self.current_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Bytes fed to the child's stdin; without this, stdin is `/dev/null` so a prompt cannot hang a test.
    pub fn stdin(&mut self, input: impl Into<Vec<u8>>) -> &mut Cmd {
        self.stdin = Some(input.into());
        self
    }

    pub fn timeout(&mut self, timeout: Duration) -> &mut Cmd {
        self.timeout = timeout;
        self
    }

    /// Runs the command to completion and returns its output whatever the exit code.
    ///
    /// Panics when it cannot start or outlives its timeout (the child is killed first).
    pub fn output(&self) -> CmdOutput {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .envs(child_env(std::env::vars_os(), &self.envs))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.display()));

        // Readers and the writer run on threads, so a child filling one pipe cannot deadlock against us.
        let stdin_writer = child.stdin.take().map(|mut pipe| {
            let input = self.stdin.clone().unwrap_or_default();
            std::thread::spawn(move || {
                // The child may exit without reading everything; that is its business.
                let _ = pipe.write_all(&input);
            })
        });
        let stdout = read_in_background(child.stdout.take().expect("piped stdout"));
        let stderr = read_in_background(child.stderr.take().expect("piped stderr"));

        let status = wait_with_deadline(&mut child, self.timeout);
        if let Some(writer) = stdin_writer {
            let _ = writer.join();
        }
        let output = CmdOutput {
            command: self.display(),
            status,
            stdout: String::from_utf8_lossy(&join_reader(stdout)).into_owned(),
            stderr: String::from_utf8_lossy(&join_reader(stderr)).into_owned(),
        };
        if output.status.is_none() {
            panic!("timed out after {:?}\n{}", self.timeout, output.report());
        }
        output
    }

    /// Runs the command and panics with the full report unless it exits with `code`.
    pub fn assert_code(&self, code: i32) -> CmdOutput {
        self.output().assert_code(code)
    }

    /// Runs the command and panics with the full report unless it exits with 0.
    pub fn assert_success(&self) -> CmdOutput {
        self.assert_code(0)
    }

    /// The command as a shell line, with the variables and directory the test set explicitly.
    pub fn display(&self) -> String {
        let mut line = String::new();
        if let Some(dir) = &self.current_dir {
            let _ = write!(line, "cd {} && ", shell_quote(dir.as_os_str()));
        }
        if !self.envs.is_empty() {
            line.push_str("env ");
        }
        for (key, value) in &self.envs {
            match value {
                Some(value) => {
                    let _ = write!(line, "{}={} ", key.to_string_lossy(), shell_quote(value));
                }
                None => {
                    let _ = write!(line, "-u {} ", key.to_string_lossy());
                }
            }
        }
        line.push_str(&shell_quote(self.program.as_os_str()));
        for arg in &self.args {
            line.push(' ');
            line.push_str(&shell_quote(arg));
        }
        line
    }
}

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    pub command: String,
    /// `None` only while the runner reports a timeout.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    /// The exit code; `None` when a signal ended the child.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    pub fn assert_code(self, code: i32) -> CmdOutput {
        if let Err(report) = self.check_code(code) {
            panic!("{report}");
        }
        self
    }

    pub fn assert_success(self) -> CmdOutput {
        self.assert_code(0)
    }

    /// `Err(report)` unless the command exited with `code`; the assertions panic with that report.
    pub fn check_code(&self, code: i32) -> Result<(), String> {
        if self.code() == Some(code) {
            Ok(())
        } else {
            Err(format!("expected exit code {code}\n{}", self.report()))
        }
    }

    /// The command, how it ended, and both streams in full.
    pub fn report(&self) -> String {
        let ended = match self.status {
            None => "killed by the runner (timeout)".to_string(),
            Some(status) => match status.code() {
                Some(code) => format!("exit code {code}"),
                None => format!("ended by {status}"),
            },
        };
        format!(
            "command: {}\nended:   {ended}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- end ---",
            self.command, self.stdout, self.stderr
        )
    }

    /// Stdout parsed as one JSON document; panics with the report when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", self.report()))
    }
}

/// The child's environment: the parent's, minus what could point it at a developer's database or change its
/// output (`DATABASE_URL`, `PG*`, `FLOTILLA_*`, color and log settings), plus `NO_COLOR=1`, then the explicit
/// settings in order.
pub fn child_env<I>(parent: I, explicit: &[(OsString, Option<OsString>)]) -> Vec<(OsString, OsString)>
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    let is_scrubbed = |key: &str| {
        key == "DATABASE_URL"
            || key.starts_with("PG")
            || key.starts_with("FLOTILLA_")
            || matches!(
                key,
                "RUST_LOG" | "NO_COLOR" | "CLICOLOR" | "CLICOLOR_FORCE" | "FORCE_COLOR"
            )
    };
    let mut env: Vec<(OsString, OsString)> = parent
        .into_iter()
        .filter(|(key, _)| !key.to_str().is_some_and(is_scrubbed))
        .collect();
    env.push(("NO_COLOR".into(), "1".into()));
    for (key, value) in explicit {
        env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            env.push((key.clone(), value.clone()));
        }
    }
    env
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn join_reader(reader: JoinHandle<Vec<u8>>) -> Vec<u8> {
    reader.join().unwrap_or_default()
}

/// Waits for the child; `None` when the deadline passed and it was killed.
fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => panic!("wait for child: {e}"),
        }
    }
}

fn shell_quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let is_plain = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if is_plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
