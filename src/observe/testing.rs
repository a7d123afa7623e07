//! A synthetic fleet run shared by the sink tests.

use std::time::{Duration, SystemTime};

use super::event::{FleetEvent, RunEvent, TenantId};
use super::tally::StateBook;
use crate::executor::FailureKind;
use crate::graph::Direction;
use crate::revision::RevisionId;

pub const TENANTS: [&str; 5] = ["t-alpha", "t-beta", "t-gamma", "t-delta", "t-epsilon"];

pub fn start_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn s(v: &str) -> String {
    v.to_string()
}

pub fn t(id: &str) -> TenantId {
    TenantId::from(id)
}

pub fn rev(id: &str) -> RevisionId {
    RevisionId::new(id)
}

/// `events` with the counts a coordinator would give each (counted by a [`StateBook`]).
pub fn with_counts(events: impl IntoIterator<Item = FleetEvent>) -> Vec<RunEvent> {
    let mut book = StateBook::new();
    events
        .into_iter()
        .map(|event| {
            book.apply(&event);
            RunEvent {
                event,
                counts: book.counts(),
            }
        })
        .collect()
}

/// One event with zero counts, for a sink test that does not look at counts.
pub fn bare(event: FleetEvent) -> RunEvent {
    RunEvent {
        event,
        counts: Default::default(),
    }
}

/// [`sample_run`] with counts.
pub fn sample_run_events() -> Vec<RunEvent> {
    with_counts(sample_run())
}

/// Five tenants: two succeed (one after a retry), one fails, one is skipped, one is interrupted.
pub fn sample_run() -> Vec<FleetEvent> {
    let ms = Duration::from_millis;
    vec![
        FleetEvent::RunStarted {
            run_id: s("run-1"),
            command: s("upgrade"),
            target: s("head"),
            n_tenants: 5,
            concurrency: 2,
            at: start_time(),
        },
        FleetEvent::Connections {
            server: s("db1"),
            open: 2,
        },
        FleetEvent::RateLimited { waited: ms(250) },
        FleetEvent::TenantStarted {
            tenant: t("t-alpha"),
            server: s("db1"),
            attempt: 1,
        },
        FleetEvent::TenantPlanned {
            tenant: t("t-alpha"),
            from: vec![rev("r0")],
            to: vec![rev("r2")],
            n_steps: 2,
        },
        FleetEvent::RevisionStarted {
            tenant: t("t-alpha"),
            revision: rev("r1"),
            direction: Direction::Up,
        },
        FleetEvent::BackfillProgress {
            tenant: t("t-alpha"),
            revision: rev("r1"),
            rows_done: 100,
            rows_estimated: Some(1000),
        },
        FleetEvent::BackfillProgress {
            tenant: t("t-alpha"),
            revision: rev("r1"),
            rows_done: 400,
            rows_estimated: Some(1000),
        },
        FleetEvent::RevisionApplied {
            tenant: t("t-alpha"),
            revision: rev("r1"),
            direction: Direction::Up,
            duration: ms(1500),
        },
        FleetEvent::RevisionStarted {
            tenant: t("t-alpha"),
            revision: rev("r2"),
            direction: Direction::Up,
        },
        FleetEvent::RevisionApplied {
            tenant: t("t-alpha"),
            revision: rev("r2"),
            direction: Direction::Up,
            duration: ms(400),
        },
        FleetEvent::TenantSucceeded {
            tenant: t("t-alpha"),
            from: vec![rev("r0")],
            to: vec![rev("r2")],
            n_steps: 2,
            attempts: 1,
            duration: ms(2000),
        },
        FleetEvent::TenantStarted {
            tenant: t("t-beta"),
            server: s("db1"),
            attempt: 1,
        },
        FleetEvent::RevisionStarted {
            tenant: t("t-beta"),
            revision: rev("r1"),
            direction: Direction::Up,
        },
        FleetEvent::TenantRetrying {
            tenant: t("t-beta"),
            attempt: 1,
            reason: FailureKind::Connection,
            error: s("connection reset by peer"),
            sqlstate: Some(s("08006")),
            delay: ms(1000),
        },
        FleetEvent::TenantStarted {
            tenant: t("t-beta"),
            server: s("db1"),
            attempt: 2,
        },
        FleetEvent::RevisionStarted {
            tenant: t("t-beta"),
            revision: rev("r1"),
            direction: Direction::Up,
        },
        FleetEvent::RevisionApplied {
            tenant: t("t-beta"),
            revision: rev("r1"),
            direction: Direction::Up,
            duration: ms(3000),
        },
        FleetEvent::TenantSucceeded {
            tenant: t("t-beta"),
            from: vec![rev("r0")],
            to: vec![rev("r1")],
            n_steps: 1,
            attempts: 2,
            duration: ms(5000),
        },
        FleetEvent::TenantStarted {
            tenant: t("t-gamma"),
            server: s("db2"),
            attempt: 1,
        },
        FleetEvent::RevisionStarted {
            tenant: t("t-gamma"),
            revision: rev("r2"),
            direction: Direction::Up,
        },
        FleetEvent::TenantFailed {
            tenant: t("t-gamma"),
            from: vec![rev("r1")],
            to: vec![rev("r1")],
            failed_revision: Some(rev("r2")),
            error: s("duplicate key value violates unique constraint \"users_pkey\""),
            error_kind: FailureKind::SqlError,
            sqlstate: Some(s("23505")),
            attempts: 1,
            duration: ms(800),
        },
        FleetEvent::TenantStarted {
            tenant: t("t-delta"),
            server: s("db2"),
            attempt: 1,
        },
        FleetEvent::TenantSkipped {
            tenant: t("t-delta"),
            at: vec![rev("r2")],
        },
        FleetEvent::TenantStarted {
            tenant: t("t-epsilon"),
            server: s("db2"),
            attempt: 1,
        },
        FleetEvent::TenantInterrupted {
            tenant: t("t-epsilon"),
            from: vec![],
            to: vec![],
        },
        FleetEvent::Connections {
            server: s("db1"),
            open: 0,
        },
        FleetEvent::RunFinished {
            run_id: s("run-1"),
            succeeded: 2,
            failed: 1,
            skipped: 1,
            interrupted: 1,
            not_started: 0,
            exit_code: 130,
            at: start_time() + Duration::from_secs(10),
        },
    ]
}
