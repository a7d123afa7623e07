//! Tenant counts per [`TenantStatus`]: [`StateCounts`] is what the coordinator hands every sink with each event,
//! so progress, the summary and the `flotilla_tenants` gauge show the coordinator's own counts and never
//! recount. [`StateBook`] (tests only) derives the same counts from a list of events, for sink tests that feed
//! synthetic runs.

#[cfg(test)]
use std::collections::HashMap;
#[cfg(test)]
use std::hash::{Hash, Hasher};

#[cfg(test)]
use super::event::FleetEvent;
use crate::ledger::StatusCounts;
#[cfg(test)]
use crate::ledger::TenantStatus;

/// Tenants per state, the ledger's [`StatusCounts`] (read through `Deref`) with the run's size; the six counts
/// always add up to `n_tenants`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateCounts {
    pub n_tenants: usize,
    #[serde(flatten)]
    pub by_status: StatusCounts,
}

impl std::ops::Deref for StateCounts {
    type Target = StatusCounts;

    fn deref(&self) -> &StatusCounts {
        &self.by_status
    }
}

/// A state change the last event caused.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: TenantStatus,
    pub to: TenantStatus,
}

/// Every tenant's state in the current run. `run_started` resets it.
///
/// Tenants that are not yet finished (a few, about the run's concurrency) are kept by id; a finished tenant is
/// kept only as a 64-bit hash of its id, so a book of 10,000 tenants costs well under 1 MB (each sink that counts
/// keeps one). Two ids sharing a hash would make the second look finished early: with 64 bits, about one run in
/// 10^11 of 10,000 tenants.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct StateBook {
    live: HashMap<Box<str>, TenantStatus>,
    finished: HashMap<u64, TenantStatus>,
    counts: StateCounts,
}

#[cfg(test)]
fn id_hash(tenant: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    tenant.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
impl StateBook {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn counts(&self) -> StateCounts {
        self.counts
    }

    pub fn state(&self, tenant: &str) -> Option<TenantStatus> {
        self.live
            .get(tenant)
            .or_else(|| self.finished.get(&id_hash(tenant)))
            .copied()
    }

    /// Applies one event and returns the state change it caused, if any.
    ///
    /// A tenant the run did not announce counts as one more tenant (it starts from pending), so the counts
    /// keep adding up to `n_tenants`. A retry keeps the tenant running: it still holds a place in the fleet.
    pub fn apply(&mut self, event: &FleetEvent) -> Option<Transition> {
        let (tenant, to) = match event {
            FleetEvent::RunStarted { n_tenants, .. } => {
                self.live.clear();
                self.finished.clear();
                self.counts = StateCounts {
                    n_tenants: *n_tenants,
                    by_status: StatusCounts {
                        pending: *n_tenants,
                        ..StatusCounts::default()
                    },
                };
                return None;
            }
            FleetEvent::TenantStarted { tenant, .. } => (tenant, TenantStatus::Running),
            FleetEvent::TenantPlanned { tenant, .. }
            | FleetEvent::RevisionStarted { tenant, .. }
            | FleetEvent::RevisionApplied { tenant, .. }
            | FleetEvent::BackfillProgress { tenant, .. }
            | FleetEvent::TenantRetrying { tenant, .. } => {
                // Only a tenant nobody has seen start is moved; a late progress event never revives a finished one.
                if self.state(tenant).is_some() {
                    return None;
                }
                (tenant, TenantStatus::Running)
            }
            FleetEvent::TenantSucceeded { tenant, .. } => (tenant, TenantStatus::Succeeded),
            FleetEvent::TenantFailed { tenant, .. } => (tenant, TenantStatus::Failed),
            FleetEvent::TenantSkipped { tenant, .. } => (tenant, TenantStatus::Skipped),
            FleetEvent::TenantInterrupted { tenant, .. } => (tenant, TenantStatus::Interrupted),
            FleetEvent::RateLimited { .. }
            | FleetEvent::WaveStarted { .. }
            | FleetEvent::ServerPaused { .. }
            | FleetEvent::ServerResumed { .. }
            | FleetEvent::Connections { .. }
            | FleetEvent::RunHalted { .. }
            | FleetEvent::ServerOutage { .. }
            | FleetEvent::RunFinished { .. } => return None,
        };
        let from = match self.live.remove(tenant.as_str()) {
            Some(state) => state,
            None => match self.finished.remove(&id_hash(tenant)) {
                Some(state) => state,
                None => {
                    if self.counts.pending == 0 {
                        self.counts.n_tenants += 1;
                        self.counts.by_status.add(TenantStatus::Pending, 1);
                    }
                    TenantStatus::Pending
                }
            },
        };
        if to.is_final() {
            self.finished.insert(id_hash(tenant), to);
        } else {
            self.live.insert(tenant.as_str().into(), to);
        }
        if from == to {
            return None;
        }
        self.counts.by_status.move_one(from, to);
        Some(Transition { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::testing::sample_run;

    #[test]
    fn counts_add_up_after_every_event() {
        let mut book = StateBook::new();
        for event in sample_run() {
            book.apply(&event);
            let c = book.counts();
            let sum: usize = TenantStatus::ALL.iter().map(|s| c.get(*s)).sum();
            assert_eq!(sum, c.n_tenants, "after {event:?}");
        }
        let c = book.counts();
        assert_eq!(
            (c.pending, c.running, c.succeeded, c.failed, c.skipped, c.interrupted),
            (0, 0, 2, 1, 1, 1)
        );
    }

    #[test]
    fn unannounced_tenant_grows_the_run() {
        let mut book = StateBook::new();
        book.apply(&FleetEvent::TenantSkipped {
            tenant: "x".into(),
            at: vec![],
        });
        assert_eq!(book.counts().n_tenants, 1);
        assert_eq!(book.counts().skipped, 1);
    }

    #[test]
    fn late_progress_does_not_revive_a_finished_tenant() {
        let mut book = StateBook::new();
        book.apply(&FleetEvent::TenantInterrupted {
            tenant: "x".into(),
            from: vec![],
            to: vec![],
        });
        let t = book.apply(&FleetEvent::BackfillProgress {
            tenant: "x".into(),
            revision: "r".into(),
            rows_done: 1,
            rows_estimated: None,
        });
        assert_eq!(t, None);
        assert_eq!(book.state("x"), Some(TenantStatus::Interrupted));
    }

    #[test]
    fn finished_tenants_leave_the_live_map() {
        let mut book = StateBook::new();
        book.apply(&FleetEvent::TenantStarted {
            tenant: "x".into(),
            server: "s".into(),
            attempt: 1,
        });
        assert_eq!(book.live.len(), 1);
        book.apply(&FleetEvent::TenantSucceeded {
            tenant: "x".into(),
            from: vec![],
            to: vec![],
            n_steps: 0,
            attempts: 1,
            duration: std::time::Duration::ZERO,
        });
        assert!(book.live.is_empty());
        assert_eq!(book.state("x"), Some(TenantStatus::Succeeded));
        assert_eq!(book.state("y"), None);
    }
}
