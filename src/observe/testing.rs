//! A synthetic fleet run shared by the sink tests.

use std::time::{Duration, SystemTime};

use super::event::FleetEvent;

pub const TENANTS: [&str; 5] = ["t-alpha", "t-beta", "t-gamma", "t-delta", "t-epsilon"];

pub fn start_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn s(v: &str) -> String {
    v.to_string()
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
            tenant: s("t-alpha"),
            server: s("db1"),
            attempt: 1,
        },
        FleetEvent::TenantPlanned {
            tenant: s("t-alpha"),
            from: vec![s("r0")],
            to: vec![s("r2")],
            n_steps: 2,
        },
        FleetEvent::RevisionStarted {
            tenant: s("t-alpha"),
            revision: s("r1"),
            direction: s("upgrade"),
        },
        FleetEvent::BackfillProgress {
            tenant: s("t-alpha"),
            revision: s("r1"),
            rows_done: 100,
            rows_estimated: Some(1000),
        },
        FleetEvent::BackfillProgress {
            tenant: s("t-alpha"),
            revision: s("r1"),
            rows_done: 400,
            rows_estimated: Some(1000),
        },
        FleetEvent::RevisionApplied {
            tenant: s("t-alpha"),
            revision: s("r1"),
            direction: s("upgrade"),
            duration: ms(1500),
        },
        FleetEvent::RevisionStarted {
            tenant: s("t-alpha"),
            revision: s("r2"),
            direction: s("upgrade"),
        },
        FleetEvent::RevisionApplied {
            tenant: s("t-alpha"),
            revision: s("r2"),
            direction: s("upgrade"),
            duration: ms(400),
        },
        FleetEvent::TenantSucceeded {
            tenant: s("t-alpha"),
            from: vec![s("r0")],
            to: vec![s("r2")],
            n_steps: 2,
            attempts: 1,
            duration: ms(2000),
        },
        FleetEvent::TenantStarted {
            tenant: s("t-beta"),
            server: s("db1"),
            attempt: 1,
        },
        FleetEvent::RevisionStarted {
            tenant: s("t-beta"),
            revision: s("r1"),
            direction: s("upgrade"),
        },
        FleetEvent::TenantRetrying {
            tenant: s("t-beta"),
            attempt: 1,
            reason: s("connection"),
            error: s("connection reset by peer"),
            sqlstate: Some(s("08006")),
            delay: ms(1000),
        },
        FleetEvent::TenantStarted {
            tenant: s("t-beta"),
            server: s("db1"),
            attempt: 2,
        },
        FleetEvent::RevisionStarted {
            tenant: s("t-beta"),
            revision: s("r1"),
            direction: s("upgrade"),
        },
        FleetEvent::RevisionApplied {
            tenant: s("t-beta"),
            revision: s("r1"),
            direction: s("upgrade"),
            duration: ms(3000),
        },
        FleetEvent::TenantSucceeded {
            tenant: s("t-beta"),
            from: vec![s("r0")],
            to: vec![s("r1")],
            n_steps: 1,
            attempts: 2,
            duration: ms(5000),
        },
        FleetEvent::TenantStarted {
            tenant: s("t-gamma"),
            server: s("db2"),
            attempt: 1,
        },
        FleetEvent::RevisionStarted {
            tenant: s("t-gamma"),
            revision: s("r2"),
            direction: s("upgrade"),
        },
        FleetEvent::TenantFailed {
            tenant: s("t-gamma"),
            from: vec![s("r1")],
            to: vec![s("r1")],
            failed_revision: Some(s("r2")),
            error: s("duplicate key value violates unique constraint \"users_pkey\""),
            error_kind: s("sql_error"),
            sqlstate: Some(s("23505")),
            attempts: 1,
            duration: ms(800),
        },
        FleetEvent::TenantStarted {
            tenant: s("t-delta"),
            server: s("db2"),
            attempt: 1,
        },
        FleetEvent::TenantSkipped {
            tenant: s("t-delta"),
            at: vec![s("r2")],
        },
        FleetEvent::TenantStarted {
            tenant: s("t-epsilon"),
            server: s("db2"),
            attempt: 1,
        },
        FleetEvent::TenantInterrupted {
            tenant: s("t-epsilon"),
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
