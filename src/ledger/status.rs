//! Tenant statuses and per-run counts of them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where one tenant of a run stands. Stored and printed in lowercase (`succeeded`, `failed`, ...); these
/// strings are part of the `fleet status --json` contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    /// Selected for the run, not started yet.
    Pending,
    /// A worker is on it.
    Running,
    Succeeded,
    Failed,
    /// Deliberately not run (already at the target, or the run halted before reaching it).
    Skipped,
    /// The run ended (or its process died) before this tenant finished.
    Interrupted,
}

impl TenantStatus {
    pub const ALL: [TenantStatus; 6] = [
        TenantStatus::Pending,
        TenantStatus::Running,
        TenantStatus::Succeeded,
        TenantStatus::Failed,
        TenantStatus::Skipped,
        TenantStatus::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Pending => "pending",
            TenantStatus::Running => "running",
            TenantStatus::Succeeded => "succeeded",
            TenantStatus::Failed => "failed",
            TenantStatus::Skipped => "skipped",
            TenantStatus::Interrupted => "interrupted",
        }
    }

    /// Pending or running: work the run had not finished.
    pub fn is_unfinished(self) -> bool {
        matches!(self, TenantStatus::Pending | TenantStatus::Running)
    }

    /// Succeeded, failed, skipped or interrupted: the tenant is done in this run.
    pub fn is_final(self) -> bool {
        !self.is_unfinished()
    }

    /// What to show for a tenant of a run whose process is gone: unfinished work becomes interrupted.
    pub fn settled(self, is_run_abandoned: bool) -> TenantStatus {
        if is_run_abandoned && self.is_unfinished() {
            TenantStatus::Interrupted
        } else {
            self
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tenant status {0:?} (expected pending, running, succeeded, failed, skipped or interrupted)")]
pub struct ParseStatusError(pub String);

impl FromStr for TenantStatus {
    type Err = ParseStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TenantStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ParseStatusError(s.to_string()))
    }
}

/// How many tenants of a run are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    pub pending: usize,
    pub running: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub skipped: usize,
    pub interrupted: usize,
}

impl StatusCounts {
    pub fn get(&self, status: TenantStatus) -> usize {
        match status {
            TenantStatus::Pending => self.pending,
            TenantStatus::Running => self.running,
            TenantStatus::Succeeded => self.succeeded,
            TenantStatus::Failed => self.failed,
            TenantStatus::Skipped => self.skipped,
            TenantStatus::Interrupted => self.interrupted,
        }
    }

    pub fn add(&mut self, status: TenantStatus, n: usize) {
        *self.slot(status) += n;
    }

    /// One tenant moves from `from` to `to` (whose count must be positive).
    pub fn move_one(&mut self, from: TenantStatus, to: TenantStatus) {
        *self.slot(from) -= 1;
        *self.slot(to) += 1;
    }

    fn slot(&mut self, status: TenantStatus) -> &mut usize {
        match status {
            TenantStatus::Pending => &mut self.pending,
            TenantStatus::Running => &mut self.running,
            TenantStatus::Succeeded => &mut self.succeeded,
            TenantStatus::Failed => &mut self.failed,
            TenantStatus::Skipped => &mut self.skipped,
            TenantStatus::Interrupted => &mut self.interrupted,
        }
    }

    pub fn total(&self) -> usize {
        TenantStatus::ALL.iter().map(|s| self.get(*s)).sum()
    }

    /// Tenants in a final state (succeeded, failed, skipped or interrupted).
    pub fn done(&self) -> usize {
        TenantStatus::ALL
            .iter()
            .filter(|s| s.is_final())
            .map(|s| self.get(*s))
            .sum()
    }

    /// The counts as shown for a run whose process is gone: pending and running move to interrupted.
    pub fn settled(&self, is_run_abandoned: bool) -> StatusCounts {
        let mut out = StatusCounts::default();
        for status in TenantStatus::ALL {
            out.add(status.settled(is_run_abandoned), self.get(status));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_str_and_serde() {
        for status in TenantStatus::ALL {
            assert_eq!(status.as_str().parse::<TenantStatus>(), Ok(status));
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, serde_json::Value::String(status.as_str().to_string()));
        }
        assert_eq!(
            "done".parse::<TenantStatus>(),
            Err(ParseStatusError("done".to_string()))
        );
    }

    #[test]
    fn settled_counts_fold_unfinished_into_interrupted() {
        let mut counts = StatusCounts::default();
        counts.add(TenantStatus::Pending, 2);
        counts.add(TenantStatus::Running, 1);
        counts.add(TenantStatus::Failed, 4);
        counts.add(TenantStatus::Interrupted, 1);
        assert_eq!(counts.settled(false), counts);
        let settled = counts.settled(true);
        assert_eq!((settled.pending, settled.running), (0, 0));
        assert_eq!(settled.interrupted, 4);
        assert_eq!(settled.failed, 4);
        assert_eq!(settled.total(), counts.total());
    }
}
