//! The ledger as a shared work queue: runners open (or join) a run, claim its tenants in small batches under a
//! lease they renew, and finish; a runner whose lease lapses loses its unfinished tenants to the others.
//!
//! The rules every backend keeps (the shared suite in `tests.rs` checks them on each):
//! - a tenant is claimable when it is pending, or interrupted while the run is not finished, or claimed or
//!   running by a runner whose lease has lapsed; claims go in dispatch order (`NewTenant` order);
//! - while a canary tenant of the run is unfinished, only canaries are claimable; a halted run hands out nothing;
//! - a runner's writes to a tenant are refused once another runner holds that tenant ([`LedgerError::LostClaim`]);
//! - the run is finished by the last runner to finish while no other runner holds a live lease.
//!
//! [`LedgerError::LostClaim`]: super::LedgerError::LostClaim

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::id::RunId;
use super::record::NewRun;

/// What a runner may claim: tenants on one of `servers` (any server when empty) carrying every tag in `tags`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub servers: Vec<String>,
    pub tags: Vec<(String, String)>,
}

impl Placement {
    pub fn is_everything(&self) -> bool {
        self.servers.is_empty() && self.tags.is_empty()
    }

    /// Whether a tenant on `server` with `tags` (a JSON object of strings, as stored) is this runner's.
    pub fn admits(&self, server: &str, tags: &serde_json::Value) -> bool {
        (self.servers.is_empty() || self.servers.iter().any(|s| s == server))
            && self
                .tags
                .iter()
                .all(|(k, v)| tags.get(k).and_then(|t| t.as_str()) == Some(v.as_str()))
    }
}

/// Who is asking: one flotilla process on one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerInfo {
    /// Unique per process: `host:pid:random`.
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub placement: Placement,
    /// How long the runner's claims last without a heartbeat.
    pub lease: Duration,
}

impl RunnerInfo {
    /// This process, as a runner with `placement` and `lease`.
    pub fn this_process(host: &str, placement: Placement, lease: Duration) -> RunnerInfo {
        let pid = std::process::id();
        let suffix: u16 = rand::random();
        RunnerInfo {
            id: format!("{host}:{pid}:{suffix:04x}"),
            host: host.to_string(),
            pid,
            placement,
            lease,
        }
    }
}

/// A run to begin, or to join when `name` names a run that exists.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenRun {
    pub run: NewRun,
    /// `--run-name`: runners giving the same name share one run. `None`: always a new run.
    pub name: Option<String>,
    pub runner: RunnerInfo,
}

/// The run a runner works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub run: RunId,
    /// True when this runner created the run (its tenants were recorded from this runner's list).
    pub is_new: bool,
    /// The run was finished before this runner came: nothing to do.
    pub is_finished: bool,
    /// The run's command and target as its creator recorded them (a joiner must run the same).
    pub command: String,
    pub target: String,
}

/// A tenant handed to this runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedTenant {
    pub tenant_id: String,
    /// The absolute target the run resolved for it earlier (by this or another runner), to be kept.
    pub target_revision: Option<String>,
    /// Attempts made on it so far in this run (by any runner).
    pub attempts: u32,
}

/// What a claim found besides the tenants it handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimState {
    /// There may be more: claim again when there is room.
    More,
    /// Nothing claimable now, but tenants of this placement are held by live runners (or wait for canaries):
    /// ask again after a while, since a runner that dies gives its tenants back when its lease lapses.
    Wait,
    /// Every tenant of this placement is finished.
    Done,
    /// The run was halted (a canary or a failure threshold, by any runner): claim nothing more.
    Halted,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub tenants: Vec<ClaimedTenant>,
    pub state: ClaimState,
}

/// One runner of a run, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerRecord {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub placement: Placement,
    /// RFC 3339, UTC, milliseconds.
    pub started_at: String,
    /// The last heartbeat (RFC 3339).
    pub heartbeat_at: String,
    /// Whether its lease still holds, judged by the ledger's clock when read.
    pub is_live: bool,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
}

/// One server's connection budget as a runner of a shared run sees it, for [`super::Ledger::share_connections`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDemand {
    pub server: String,
    /// The server's `max_connections`: the budget of the whole run on that server.
    pub cap: usize,
    /// The connections this runner could use there now (0: no work there).
    pub want: usize,
    /// The connections this runner has open there now (its share never drops below them, since nothing in use
    /// is closed).
    pub in_use: usize,
}

/// A runner's part of a shared run's budgets, from [`super::Ledger::share_connections`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shares {
    /// Connections this runner may open, per server, in the order of the demands.
    pub connections: Vec<usize>,
    /// Live runners of the run with work on some server (this one included when it has work; at least 1): the
    /// run's start rate is split between them.
    pub n_busy_runners: usize,
}

/// The share rule, one server at a time: a fair part of the cap for every live runner that wants some, never
/// more than the runner wants, never more than the others leave free, and never below what the runner has open.
/// `others` holds (granted, wants any) of every other live runner.
pub fn fair_share(demand: &ServerDemand, others: &[(usize, bool)]) -> usize {
    let n_wanting = others.iter().filter(|(_, wants)| *wants).count() + usize::from(demand.want > 0);
    let fair = demand.cap.div_ceil(n_wanting.max(1));
    let held: usize = others.iter().map(|(granted, _)| granted).sum();
    let free = demand.cap.saturating_sub(held);
    demand.want.min(fair).min(free).max(demand.in_use)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(cap: usize, want: usize, in_use: usize) -> ServerDemand {
        ServerDemand {
            server: "s".into(),
            cap,
            want,
            in_use,
        }
    }

    #[test]
    fn shares_split_the_cap_and_never_exceed_what_others_leave() {
        // Alone: what it wants, up to the cap.
        assert_eq!(fair_share(&demand(10, 4, 0), &[]), 4);
        assert_eq!(fair_share(&demand(10, 16, 0), &[]), 10);
        // Two wanting runners: half each; a newcomer gets only what the first leaves free until it shrinks.
        assert_eq!(fair_share(&demand(10, 10, 0), &[(10, true)]), 0);
        assert_eq!(
            fair_share(&demand(10, 10, 10), &[(0, true)]),
            10,
            "never below what is open"
        );
        assert_eq!(fair_share(&demand(10, 10, 3), &[(0, true)]), 5);
        assert_eq!(fair_share(&demand(10, 10, 0), &[(5, true)]), 5);
        // A runner without work there takes nothing, and does not count against the others' fair part.
        assert_eq!(fair_share(&demand(10, 0, 0), &[(10, true)]), 0);
        assert_eq!(fair_share(&demand(10, 10, 0), &[(0, false)]), 10);
        // Three runners over a cap of 4: at most 2 each, and never past the cap together.
        assert_eq!(fair_share(&demand(4, 4, 0), &[(2, true), (2, true)]), 0);
        assert_eq!(fair_share(&demand(4, 4, 0), &[(2, true), (1, true)]), 1);
    }
}
