//! The fleet's event model. Workers report to the coordinator; the coordinator turns that into these events
//! and hands each to every sink in order, so the ledger, progress, metrics and the NDJSON stream never disagree.

use std::time::{Duration, SystemTime};

use serde::Serialize;

/// One thing that happened in a fleet run. Serialised (NDJSON) as an object with an `event` field naming the
/// variant in snake_case and, for tenant events, a `tenant` field.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FleetEvent {
    RunStarted {
        run_id: String,
        command: String,
        target: String,
        n_tenants: usize,
        concurrency: usize,
        #[serde(with = "unix_seconds")]
        at: SystemTime,
    },
    TenantStarted {
        tenant: String,
        server: String,
        attempt: u32,
    },
    /// The tenant's plan is known (after reading its version rows).
    TenantPlanned {
        tenant: String,
        from: Vec<String>,
        /// The version rows the plan leads to: the tenant's absolute target, kept for `fleet retry`.
        to: Vec<String>,
        n_steps: usize,
    },
    RevisionStarted {
        tenant: String,
        revision: String,
        direction: String,
    },
    RevisionApplied {
        tenant: String,
        revision: String,
        direction: String,
        #[serde(with = "millis", rename = "duration_ms")]
        duration: Duration,
    },
    /// Rows a backfill has done so far in this tenant (cumulative) and its estimate.
    BackfillProgress {
        tenant: String,
        revision: String,
        rows_done: u64,
        rows_estimated: Option<u64>,
    },
    TenantRetrying {
        tenant: String,
        attempt: u32,
        reason: String,
        error: String,
        sqlstate: Option<String>,
        #[serde(with = "millis", rename = "delay_ms")]
        delay: Duration,
    },
    TenantSucceeded {
        tenant: String,
        from: Vec<String>,
        to: Vec<String>,
        n_steps: usize,
        attempts: u32,
        #[serde(with = "millis", rename = "duration_ms")]
        duration: Duration,
    },
    TenantSkipped {
        tenant: String,
        at: Vec<String>,
    },
    TenantFailed {
        tenant: String,
        from: Vec<String>,
        to: Vec<String>,
        failed_revision: Option<String>,
        error: String,
        /// What kind of failure (`sql_error`, `schema_missing`, `connection`, `locked`, ...): a short fixed word.
        error_kind: String,
        sqlstate: Option<String>,
        attempts: u32,
        #[serde(with = "millis", rename = "duration_ms")]
        duration: Duration,
    },
    /// The tenant stopped before reaching the target: `from`/`to` are its version rows before and after (empty
    /// and equal when it never started).
    TenantInterrupted {
        tenant: String,
        from: Vec<String>,
        to: Vec<String>,
    },
    /// Time a tenant start waited for the rate limiter.
    RateLimited {
        #[serde(with = "millis", rename = "waited_ms")]
        waited: Duration,
    },
    /// Open connections to one server, sampled by the coordinator.
    Connections {
        server: String,
        open: usize,
    },
    /// A server that went away answered again; its tenants waited instead of failing.
    ServerOutage {
        server: String,
        #[serde(with = "millis", rename = "down_ms")]
        down: Duration,
        n_waited: usize,
    },
    /// A failed canary or the failure threshold stopped the run from starting more tenants.
    RunHalted {
        /// `canary`, or the threshold that was passed.
        reason: String,
        /// The tenant whose failure halted the run, and its error.
        tenant: Option<String>,
        error: Option<String>,
    },
    RunFinished {
        run_id: String,
        succeeded: usize,
        failed: usize,
        skipped: usize,
        interrupted: usize,
        /// Selected tenants that never started.
        not_started: usize,
        exit_code: i32,
        #[serde(with = "unix_seconds")]
        at: SystemTime,
    },
}

impl FleetEvent {
    /// The tenant an event is about, if any.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            FleetEvent::TenantStarted { tenant, .. }
            | FleetEvent::TenantPlanned { tenant, .. }
            | FleetEvent::RevisionStarted { tenant, .. }
            | FleetEvent::RevisionApplied { tenant, .. }
            | FleetEvent::BackfillProgress { tenant, .. }
            | FleetEvent::TenantRetrying { tenant, .. }
            | FleetEvent::TenantSucceeded { tenant, .. }
            | FleetEvent::TenantSkipped { tenant, .. }
            | FleetEvent::TenantFailed { tenant, .. }
            | FleetEvent::TenantInterrupted { tenant, .. } => Some(tenant),
            _ => None,
        }
    }
}

/// A consumer of run events. Called from the coordinator only, in event order.
pub trait Sink: Send {
    fn event(&mut self, event: &FleetEvent);
    /// Write out everything received so far and wait until it is written (the coordinator calls it before it
    /// decides the run's exit code).
    fn sync(&mut self) {}
    /// A failure that must stop the run (the ledger could not be written), or `Ok`. Display sinks never fail
    /// a run: they log their errors.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
    /// The run is over: flush, print or write whatever is final.
    fn finish(&mut self) {}
}

mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

mod unix_seconds {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        s.serialize_f64(secs)
    }
}
