//! The exit-code table: one code per expected failure, shared by every command.
//!
//! Library errors stay typed in their own modules; the CLI maps each to an [`ExitCode`] here, and `main.rs`
//! prints the error chain once and exits with the code. The table is a contract (scripts rely on it) and is
//! repeated in the README and in `flotilla --help`.

/// An error and its causes on one line, `outer: cause: root cause`, for errors whose own text leaves the cause
/// out (the driver's "error performing TLS handshake", a config parse error).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Process exit codes. Stable: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Everything asked for was done (every selected tenant is at the target).
    Ok = 0,
    /// A revision or tenant failed at run time (some tenants failed); `check`/`validate` found differences.
    Failed = 1,
    /// Usage, configuration, revision-file or revision-graph error: nothing ran.
    Usage = 2,
    /// The fleet run was halted by the failure threshold or a failed canary.
    Halted = 3,
    /// Another run holds the database's migration lock and it was not released within `lock_wait`; or
    /// `fleet retry` or `fleet rollback` named a run still in progress.
    Locked = 4,
    /// A no-transaction revision failed part way earlier; the operator must inspect and `flotilla resolve`.
    NeedsResolve = 5,
    /// The ledger could not be written during the run (disk full, file removed, I/O error): the run stopped
    /// starting tenants, and what the ledger shows may lag behind the databases.
    LedgerFailed = 6,
    /// `fleet plan`: some selected tenant would change (a CI gate; 0 when nothing would run).
    WouldChange = 10,
    /// Interrupted by SIGINT/SIGTERM: the database is at a recorded revision (the version table says what
    /// committed), and for a fleet the ledger records what is left to do.
    Interrupted = 130,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// The table as printed in `--help` and the README.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success: every selected database or tenant is at the target
  1    a revision or tenant failed (or check/validate found differences)
  2    usage, configuration, revision-file or revision-graph error: nothing ran
  3    fleet run halted by --max-failures/--max-failure-rate or a failed canary
  4    another run holds the migration lock (waited lock_wait), or fleet retry/rollback of a run still in
       progress
  5    a no-transaction revision failed part way earlier: inspect, then `flotilla resolve`
  6    the ledger could not be written during a fleet run: the run stopped (check `fleet current`)
  10   fleet plan: some selected tenant would change (0: nothing would run)
  130  interrupted (SIGINT/SIGTERM): the database is at a recorded revision;
       `flotilla upgrade` or `flotilla fleet retry` resumes";
