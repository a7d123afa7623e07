//! What goes into the ledger and what comes back out: runs, tenants, updates and selectors.

use serde::{Deserialize, Serialize};

use super::id::RunId;
use super::queue::RunnerRecord;
use super::status::{StatusCounts, TenantStatus};

/// A fleet run about to start. Every text field is already redacted by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    /// `upgrade`, `downgrade` or `stamp`.
    pub command: String,
    /// The target as the user gave it (`head`, a revision id, `base`, ...).
    pub target: String,
    /// The resolved options that shape the run; `fleet retry` reruns with these.
    pub options: serde_json::Value,
    pub user: String,
    pub host: String,
}

/// One tenant selected for a run; it starts as [`TenantStatus::Pending`], or as [`TenantStatus::Skipped`] when it
/// is known to be at its target already. Borrowed from the caller's tenant list, so recording a run of 10,000
/// tenants copies no strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewTenant<'a> {
    pub tenant_id: &'a str,
    pub server: &'a str,
    /// `schema` or `database`.
    pub kind: &'a str,
    /// The absolute target an earlier run resolved for this tenant (see [`TenantUpdate::target_revision`]).
    pub target: Option<&'a str>,
    /// A canary: claimed before every other tenant of the run.
    pub canary: bool,
    /// The tenant's tags as a JSON object of strings (placement matches on them); `None` for none.
    pub tags: Option<&'a str>,
    /// Known, before the run, to be at its target at these version rows (comma-joined, empty at base): recorded
    /// skipped when the run opens, never claimed (a run of 100,000 tenants mostly at the target writes each once).
    pub at_target: Option<&'a str>,
}

/// The whole current state of one tenant of a run, as the coordinator knows it.
///
/// [`crate::ledger::Ledger::record`] stores every field as given: a `None` clears the stored value. The coordinator
/// keeps this per tenant and sends it again whenever something changes, so a repeated update is harmless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantUpdate {
    pub tenant_id: String,
    pub status: TenantStatus,
    pub from_revision: Option<String>,
    pub to_revision: Option<String>,
    /// The revision that failed, when `status` is failed or interrupted part way.
    pub failed_revision: Option<String>,
    pub attempts: u32,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    /// A short fixed word for what failed (`sql_error`, `schema_missing`, `connection`, ...).
    pub error_kind: Option<String>,
    pub sqlstate: Option<String>,
    /// The version rows the tenant's plan leads to, comma-joined (`base` for none), resolved once when the run
    /// first plans the tenant. Never cleared: `None` keeps what is stored.
    pub target_revision: Option<String>,
}

impl TenantUpdate {
    /// An update with only a status; fill the other fields as known.
    pub fn new(tenant_id: impl Into<String>, status: TenantStatus) -> TenantUpdate {
        TenantUpdate {
            tenant_id: tenant_id.into(),
            status,
            from_revision: None,
            to_revision: None,
            failed_revision: None,
            attempts: 0,
            duration_ms: None,
            error: None,
            error_kind: None,
            sqlstate: None,
            target_revision: None,
        }
    }
}

/// Version rows as `target_revision` stores them (and as fleet output shows them): comma-joined, `base` for none.
pub fn rows_text<S: AsRef<str>>(rows: &[S]) -> String {
    if rows.is_empty() {
        "base".to_string()
    } else {
        rows.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(",")
    }
}

/// Version rows as the ledger's `from_revision`/`to_revision` columns hold them: comma-joined, `None` at base.
pub fn rows_column<S: AsRef<str>>(rows: &[S]) -> Option<String> {
    (!rows.is_empty()).then(|| rows.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(","))
}

/// The rows of a [`rows_text`] string.
pub fn rows_of(text: &str) -> Vec<&str> {
    if text == "base" {
        Vec::new()
    } else {
        text.split(',').collect()
    }
}

/// Which run to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunSelector {
    /// The run begun last (by insertion order, not by clock).
    Latest,
    /// The run with this id, as a user typed it.
    Id(String),
}

/// A run as stored. `counts` are the stored statuses; see [`RunRecord::state`] for runs that never finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: RunId,
    pub command: String,
    pub target: String,
    pub options: serde_json::Value,
    pub user: String,
    pub host: String,
    /// The process id of the flotilla process that began the run, on `host`.
    pub pid: u32,
    /// RFC 3339, UTC, milliseconds.
    pub started_at: String,
    /// `None` while the run goes on, and forever if its process died before finishing it.
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
    pub n_tenants: usize,
    pub counts: StatusCounts,
    /// `--run-name`, for a run runners share.
    pub name: Option<String>,
    /// A canary or threshold halted it (no runner claims more).
    pub is_halted: bool,
    /// Its runners, in the order they came (the first began it).
    pub runners: Vec<RunnerRecord>,
}

/// Whether a run is over, going on, or was abandoned by a process that died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// [`crate::ledger::Ledger::finish_run`] was called.
    Finished,
    /// Not finished, and its process is alive (or on another host, where it cannot be checked).
    Live,
    /// Not finished, and its process on this host is gone: a crash or SIGKILL. Its pending and running
    /// tenants are shown as interrupted.
    Abandoned,
}

impl RunRecord {
    pub fn is_finished(&self) -> bool {
        self.finished_at.is_some()
    }

    /// Whether the run is finished, live or abandoned, probing its process id when it ran on `this_host` (the
    /// same notion of host the caller put in [`NewRun::host`]).
    ///
    /// A run from another host is reported live: the ledger cannot see that machine's processes. A reused
    /// process id can make a dead run look live; it never makes a live run look abandoned.
    pub fn state(&self, this_host: &str) -> RunState {
        self.state_with(this_host, is_process_alive)
    }

    pub(crate) fn state_with(&self, this_host: &str, is_alive: impl Fn(u32) -> bool) -> RunState {
        if self.is_finished() {
            return RunState::Finished;
        }
        if !self.runners.is_empty() {
            // A runner is live while its lease holds and, on this host, its process exists.
            let is_live =
                |r: &RunnerRecord| r.finished_at.is_none() && r.is_live && (r.host != this_host || is_alive(r.pid));
            return if self.runners.iter().any(is_live) {
                RunState::Live
            } else {
                RunState::Abandoned
            };
        }
        if self.host != this_host || is_alive(self.pid) {
            RunState::Live
        } else {
            RunState::Abandoned
        }
    }
}

/// Whether a process with this id exists on this machine.
fn is_process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        if pid <= 0 {
            // Zero and negative ids address process groups, not one process.
            return false;
        }
        // SAFETY: signal 0 only checks that the process exists and that we may signal it; nothing is sent.
        let rc = unsafe { libc::kill(pid, 0) };
        // EPERM means the process exists but belongs to another user.
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        // Without a cheap probe, assume the run goes on rather than call it abandoned.
        true
    }
}

/// One tenant of a run as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub tenant_id: String,
    pub server: String,
    pub kind: String,
    pub status: TenantStatus,
    pub from_revision: Option<String>,
    pub to_revision: Option<String>,
    pub failed_revision: Option<String>,
    pub attempts: u32,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    pub error_kind: Option<String>,
    pub sqlstate: Option<String>,
    /// The absolute target of the tenant's plan (see [`TenantUpdate::target_revision`]).
    pub target_revision: Option<String>,
    /// The runner that holds or last held it.
    pub runner: Option<String>,
    /// RFC 3339, UTC, milliseconds: when the row last changed.
    pub updated_at: String,
    /// Its place in the run's dispatch order (0-based): with the run's stored waves, its wave.
    #[serde(default)]
    pub position: usize,
}

impl TenantRecord {
    /// A row for tests: a schema tenant on server `s` after one attempt, nothing else set.
    #[cfg(test)]
    pub(crate) fn example(id: &str, status: TenantStatus) -> TenantRecord {
        TenantRecord {
            tenant_id: id.to_string(),
            server: "s".to_string(),
            kind: "schema".to_string(),
            status,
            from_revision: None,
            to_revision: None,
            failed_revision: None,
            attempts: 1,
            duration_ms: None,
            error: None,
            error_kind: None,
            sqlstate: None,
            target_revision: None,
            runner: None,
            updated_at: String::new(),
            position: 0,
        }
    }

    /// The status as people and scripts read it: [`TenantRecord::effective_status`], except that a tenant a
    /// finished run never started reads `not_started`.
    pub fn status_label(&self, run_state: RunState) -> &'static str {
        match self.effective_status(run_state) {
            TenantStatus::Pending if run_state == RunState::Finished => "not_started",
            status => status.as_str(),
        }
    }

    /// The status to show: pending and running tenants of an abandoned run are interrupted.
    pub fn effective_status(&self, run_state: RunState) -> TenantStatus {
        self.status.settled(run_state == RunState::Abandoned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(host: &str, pid: u32, finished_at: Option<&str>) -> RunRecord {
        RunRecord {
            id: RunId("20260101T000000Z-0000".to_string()),
            command: "upgrade".to_string(),
            target: "head".to_string(),
            options: serde_json::json!({}),
            user: "ops".to_string(),
            host: host.to_string(),
            pid,
            started_at: "2026-01-01T00:00:00.000Z".to_string(),
            finished_at: finished_at.map(str::to_string),
            exit_code: None,
            n_tenants: 0,
            counts: StatusCounts::default(),
            name: None,
            is_halted: false,
            runners: Vec::new(),
        }
    }

    #[test]
    fn state_of_finished_live_and_abandoned_runs() {
        let dead = |_| false;
        let alive = |_| true;
        let finished = run("a", 1, Some("2026-01-01T00:01:00.000Z"));
        assert_eq!(finished.state_with("a", dead), RunState::Finished);
        assert_eq!(run("a", 1, None).state_with("a", alive), RunState::Live);
        assert_eq!(run("a", 1, None).state_with("a", dead), RunState::Abandoned);
        assert_eq!(run("b", 1, None).state_with("a", dead), RunState::Live);
    }

    #[test]
    fn own_process_is_alive_and_a_reaped_child_is_not() {
        assert!(is_process_alive(std::process::id()));
        assert!(!is_process_alive(0));
        #[cfg(unix)]
        {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            assert!(!is_process_alive(pid));
        }
    }

    #[test]
    fn effective_status_interrupts_only_abandoned_unfinished_work() {
        let mut tenant = TenantRecord {
            server: "s1".to_string(),
            ..TenantRecord::example("t1", TenantStatus::Running)
        };
        assert_eq!(tenant.effective_status(RunState::Live), TenantStatus::Running);
        assert_eq!(tenant.effective_status(RunState::Abandoned), TenantStatus::Interrupted);
        tenant.status = TenantStatus::Succeeded;
        assert_eq!(tenant.effective_status(RunState::Abandoned), TenantStatus::Succeeded);
    }
}
