//! The fleet's event model. Workers report to the coordinator; the coordinator turns that into these events,
//! each with its current counts ([`RunEvent`]), and hands each to every sink in order, so progress, metrics and
//! the NDJSON stream never disagree and never count for themselves. Values are typed (tenant ids, revision
//! ids, directions, failure kinds); they become words only where they leave the process (NDJSON, text, metric
//! labels), through their `Serialize` and `Display`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::tally::StateCounts;
use crate::executor::FailureKind;
use crate::graph::Direction;
use crate::revision::RevisionId;

/// A tenant's id in an event: cheap to clone, a string where it leaves the process.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl Serialize for TenantId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl TenantId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for TenantId {
    fn from(id: &str) -> Self {
        TenantId(id.into())
    }
}

impl From<String> for TenantId {
    fn from(id: String) -> Self {
        TenantId(id.into())
    }
}

impl std::ops::Deref for TenantId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a run stopped starting tenants. Serialised as the sentence `reason` has always had in NDJSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaltReason {
    /// More of a wave's tenants failed than `--max-failure-rate` allows (`wave` is 1-based).
    WaveFailed {
        wave: usize,
        n_failed: usize,
        n_tenants: usize,
    },
    /// The `--wave-gate` command before `wave` failed.
    WaveGateRefused { wave: usize },
    /// A canary failed.
    Canary,
    /// `--max-failures` or `--max-failure-rate` was passed.
    FailureThreshold { n_failed: usize, n_finished: usize },
    /// Another runner of the shared run halted it.
    OtherRunner,
}

impl fmt::Display for HaltReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HaltReason::Canary => f.write_str("canary"),
            HaltReason::FailureThreshold { n_failed, n_finished } => {
                write!(f, "failure threshold ({n_failed} failed of {n_finished} finished)")
            }
            HaltReason::OtherRunner => f.write_str("halted by another runner"),
            HaltReason::WaveFailed {
                wave,
                n_failed,
                n_tenants,
            } => write!(f, "wave {wave} failure gate ({n_failed} failed of {n_tenants})"),
            HaltReason::WaveGateRefused { wave } => write!(f, "wave gate refused wave {wave}"),
        }
    }
}

impl Serialize for HaltReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An event as the coordinator hands it to sinks: what happened, and the run's tenant counts right after it.
#[derive(Debug, Clone)]
pub struct RunEvent {
    pub event: FleetEvent,
    /// Tenants per state, as the coordinator holds them after this event (they always add up to `n_tenants`).
    pub counts: StateCounts,
}

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
        tenant: TenantId,
        server: String,
        attempt: u32,
    },
    /// The tenant's plan is known (after reading its version rows).
    TenantPlanned {
        tenant: TenantId,
        from: Vec<RevisionId>,
        /// The version rows the plan leads to: the tenant's absolute target, kept for `fleet retry`.
        to: Vec<RevisionId>,
        n_steps: usize,
    },
    RevisionStarted {
        tenant: TenantId,
        revision: RevisionId,
        direction: Direction,
    },
    RevisionApplied {
        tenant: TenantId,
        revision: RevisionId,
        direction: Direction,
        #[serde(with = "millis", rename = "duration_ms")]
        duration: Duration,
    },
    /// Rows a backfill has done so far in this tenant (cumulative) and its estimate.
    BackfillProgress {
        tenant: TenantId,
        revision: RevisionId,
        rows_done: u64,
        rows_estimated: Option<u64>,
    },
    TenantRetrying {
        tenant: TenantId,
        attempt: u32,
        /// What failed ([`FailureKind::Locked`]: put back because another run holds the tenant's lock).
        reason: FailureKind,
        error: String,
        sqlstate: Option<String>,
        #[serde(with = "millis", rename = "delay_ms")]
        delay: Duration,
    },
    TenantSucceeded {
        tenant: TenantId,
        from: Vec<RevisionId>,
        to: Vec<RevisionId>,
        n_steps: usize,
        attempts: u32,
        #[serde(with = "millis", rename = "duration_ms")]
        duration: Duration,
    },
    TenantSkipped {
        tenant: TenantId,
        at: Vec<RevisionId>,
    },
    TenantFailed {
        tenant: TenantId,
        from: Vec<RevisionId>,
        to: Vec<RevisionId>,
        failed_revision: Option<RevisionId>,
        error: String,
        /// What kind of failure (`sql_error`, `schema_missing`, `connection`, `locked`, ...).
        error_kind: FailureKind,
        sqlstate: Option<String>,
        attempts: u32,
        #[serde(with = "millis", rename = "duration_ms")]
        duration: Duration,
    },
    /// The tenant stopped before reaching the target: `from`/`to` are its version rows before and after (empty
    /// and equal when it never started).
    TenantInterrupted {
        tenant: TenantId,
        from: Vec<RevisionId>,
        to: Vec<RevisionId>,
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
    /// A server's health signals passed a threshold: its tenants wait before they start (`reason` says which).
    ServerPaused {
        server: String,
        reason: String,
    },
    /// A paused server is back under its thresholds; its tenants go on.
    ServerResumed {
        server: String,
        #[serde(with = "millis", rename = "paused_ms")]
        paused: Duration,
    },
    /// A wave of the run opened (`wave` is 1-based; `name` is what the wave is: `5%`, `ring=canary`).
    WaveStarted {
        wave: usize,
        n_waves: usize,
        name: String,
        n_tenants: usize,
    },
    /// A failed canary or the failure threshold stopped the run from starting more tenants.
    RunHalted {
        reason: HaltReason,
        /// The tenant whose failure halted the run, and its error.
        tenant: Option<TenantId>,
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
    pub fn tenant(&self) -> Option<&TenantId> {
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
///
/// A sink that returns an error is logged once and left out of the rest of the run: a display or metrics sink
/// never stops a run. (The ledger is not a sink: the coordinator writes it from its own decisions, and a failed
/// ledger write stops the run.)
pub trait Sink: Send {
    /// What the sink is, for the message when it fails (`progress`, `metrics`, `events file`, ...).
    fn name(&self) -> &'static str;
    fn event(&mut self, event: &RunEvent) -> Result<(), SinkError>;
    /// The run is over: flush, print or write whatever is final.
    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Why a sink could not take an event (the sink is then disabled for the rest of the run).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

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
