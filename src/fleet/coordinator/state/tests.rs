//! The coordinator's rules, driven with fake worker messages: no database, no runtime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Coordinator, Decision, FleetRequest, Input, Source, SKIP_REPORT_BATCH};
use crate::error::ExitCode;
use crate::fleet::tenant::{Place, Tenant};
use crate::fleet::worker::{Action, Failure, Outcome, TenantLimits, WorkerMsg};
use crate::ledger::ClaimState;
use crate::revision::RevisionId;

/// A request for `n` schema tenants on one server, all at once, two retries each.
pub(in crate::fleet::coordinator) fn request(n: usize) -> FleetRequest {
    FleetRequest {
        run_id: "run".into(),
        shown_as: None,
        action: Action::Upgrade("head".into()),
        tenants: (0..n)
            .map(|i| Tenant {
                id: format!("t{i}"),
                server: 0,
                place: Place::Schema(format!("t{i}")),
                tags: Arc::default(),
            })
            .collect(),
        pinned: Default::default(),
        at_target: Default::default(),
        waves: None,
        wave_gate: None,
        n_canaries: 0,
        concurrency: n.max(1),
        rate: None,
        limits: TenantLimits {
            retries: 2,
            tenant_timeout: None,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            backoff_jitter: TenantLimits::DEFAULT_BACKOFF_JITTER,
            outage_budget: TenantLimits::DEFAULT_OUTAGE_BUDGET,
        },
        max_failures: None,
        max_failure_rate: None,
        lock_requeue_for: Duration::from_secs(10),
        is_dry_run: false,
        source: Source::Local,
        ledger: None,
        rate_share: None,
    }
}

/// A coordinator and a clock that only the test moves.
struct Run {
    co: Coordinator,
    now: Instant,
}

impl Run {
    fn new(req: FleetRequest) -> Run {
        Run {
            co: Coordinator::new(req, vec!["s1".into()]),
            now: Instant::now(),
        }
    }

    /// Handle `input` and compare the decisions, in the short words of [`show`] (ledger rows left out: see
    /// [`Run::rows`]).
    fn check(&mut self, input: Input, expected: &[&str]) {
        let got: Vec<String> = self
            .co
            .handle(input, self.now)
            .iter()
            .filter(|d| !matches!(d, Decision::Record(_)))
            .map(show)
            .collect();
        assert_eq!(got, expected);
    }

    /// Handle `input` and return the ledger rows it decided.
    fn rows(&mut self, input: Input) -> Vec<crate::ledger::TenantUpdate> {
        self.co
            .handle(input, self.now)
            .into_iter()
            .filter_map(|d| match d {
                Decision::Record(row) => Some(row),
                _ => None,
            })
            .collect()
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Close the run as the shell does when the sinks are healthy: the exit code and the counts
    /// (succeeded, failed, skipped, interrupted, not started).
    fn finish(mut self) -> (ExitCode, [usize; 5]) {
        self.co.finish(None);
        let o = self.co.into_outcome();
        let counts = [o.n_succeeded, o.n_failed, o.n_skipped, o.n_interrupted, o.n_not_started];
        (o.exit_code, counts)
    }
}

/// A decision in a few words: `start 2#1`, `requeue 0#2`, `tenant_failed t1 panic #3`, `run_halted t0 canary`.
fn show(decision: &Decision) -> String {
    match decision {
        Decision::Start { index, attempt } => format!("start {index}#{attempt}"),
        Decision::Requeue { index, attempt, .. } => format!("requeue {index}#{attempt}"),
        Decision::WakeAt(_) => "wake".into(),
        Decision::Stop => "stop".into(),
        Decision::CancelStatements(indices) => format!("cancel {indices:?}"),
        Decision::Finish => "finish".into(),
        Decision::Claim { max } => format!("claim {max}"),
        Decision::Pin { index, rows } => format!("pin {index} {}", crate::ledger::rows_text(rows)),
        Decision::Record(row) => format!("record {} {}", row.tenant_id, row.status.as_str()),
        Decision::HaltRun => "halt_run".into(),
        Decision::RunWaveGate { wave } => format!("run_wave_gate {wave}"),
        Decision::Emit(event) => {
            let v = serde_json::to_value(&event.event).expect("events serialize");
            let mut words = vec![v["event"].as_str().expect("tagged").to_string()];
            for key in ["tenant", "error_kind", "reason"] {
                if let Some(s) = v.get(key).and_then(|s| s.as_str()) {
                    words.push(s.to_string());
                }
            }
            for key in ["attempt", "attempts"] {
                if let Some(n) = v.get(key).and_then(|n| n.as_u64()) {
                    words.push(format!("#{n}"));
                }
            }
            if let (Some(wave), Some(of)) = (v["wave"].as_u64(), v["n_waves"].as_u64()) {
                words.push(format!("{wave}/{of}"));
            }
            words.join(" ")
        }
    }
}

fn done(index: usize, outcome: Outcome) -> Input {
    Input::Worker(WorkerMsg::Done { index, outcome })
}

fn ok() -> Outcome {
    Outcome::Succeeded {
        from: Vec::new(),
        to: Vec::new(),
        n_steps: 1,
        attempts: 1,
        elapsed: Duration::ZERO,
    }
}

fn failure() -> Failure {
    Failure {
        message: "relation exists".into(),
        sqlstate: Some("42P07".into()),
        reason: crate::executor::FailureKind::SqlError,
        is_transient: false,
        failed_revision: None,
        is_locked: false,
        class: crate::executor::ErrorClass::Permanent,
    }
}

fn failed() -> Outcome {
    Outcome::Failed {
        from: Vec::new(),
        to: Vec::new(),
        failure: failure(),
        attempts: 1,
        elapsed: Duration::ZERO,
    }
}

fn interrupted() -> Outcome {
    Outcome::Interrupted {
        from: Vec::new(),
        to: Vec::new(),
        attempts: 1,
        elapsed: Duration::ZERO,
    }
}

#[test]
fn an_empty_fleet_finishes_at_once() {
    let mut run = Run::new(request(0));
    run.check(Input::Begin, &["run_started", "finish"]);
    assert_eq!(run.finish(), (ExitCode::Ok, [0; 5]));
}

#[test]
fn only_canaries_start_until_they_finish() {
    let mut run = Run::new(FleetRequest {
        n_canaries: 2,
        ..request(4)
    });
    run.check(Input::Begin, &["run_started", "start 0#1", "start 1#1"]);
    run.check(done(1, ok()), &["tenant_succeeded t1 #1"]);
    run.check(done(0, ok()), &["tenant_succeeded t0 #1", "start 2#1", "start 3#1"]);
    run.check(done(2, ok()), &["tenant_succeeded t2 #1"]);
    run.check(done(3, ok()), &["tenant_succeeded t3 #1", "finish"]);
    assert_eq!(run.finish(), (ExitCode::Ok, [4, 0, 0, 0, 0]));
}

#[test]
fn a_failed_canary_halts_before_the_rest_start() {
    let mut run = Run::new(FleetRequest {
        n_canaries: 2,
        ..request(5)
    });
    run.check(Input::Begin, &["run_started", "start 0#1", "start 1#1"]);
    run.check(
        done(0, failed()),
        &["tenant_failed t0 sql_error #1", "run_halted t0 canary"],
    );
    // The other canary in flight still finishes; nothing else starts.
    run.check(done(1, ok()), &["tenant_succeeded t1 #1", "finish"]);
    assert_eq!(run.finish(), (ExitCode::Halted, [1, 1, 0, 0, 3]));
}

#[test]
fn more_failures_than_max_failures_halt() {
    let mut run = Run::new(FleetRequest {
        concurrency: 2,
        max_failures: Some(1),
        ..request(5)
    });
    run.check(Input::Begin, &["run_started", "start 0#1", "start 1#1"]);
    run.check(done(0, failed()), &["tenant_failed t0 sql_error #1", "start 2#1"]);
    run.check(
        done(1, failed()),
        &[
            "tenant_failed t1 sql_error #1",
            "run_halted t1 failure threshold (2 failed of 2 finished)",
        ],
    );
    run.check(done(2, ok()), &["tenant_succeeded t2 #1", "finish"]);
    assert_eq!(run.finish(), (ExitCode::Halted, [1, 2, 0, 0, 2]));
}

#[test]
fn the_failure_rate_is_judged_after_min_20_n_finished() {
    let rate_run = || {
        let mut run = Run::new(FleetRequest {
            concurrency: 1,
            max_failure_rate: Some(0.5),
            ..request(4)
        });
        run.check(Input::Begin, &["run_started", "start 0#1"]);
        run.check(done(0, failed()), &["tenant_failed t0 sql_error #1", "start 1#1"]);
        run.check(done(1, failed()), &["tenant_failed t1 sql_error #1", "start 2#1"]);
        // Two of three failed is above the rate, but only three of four finished.
        run.check(done(2, ok()), &["tenant_succeeded t2 #1", "start 3#1"]);
        run
    };
    let mut run = rate_run();
    run.check(
        done(3, failed()),
        &[
            "tenant_failed t3 sql_error #1",
            "run_halted t3 failure threshold (3 failed of 4 finished)",
            "finish",
        ],
    );
    assert_eq!(run.finish(), (ExitCode::Halted, [1, 3, 0, 0, 0]));
    // Exactly the rate does not halt.
    let mut run = rate_run();
    run.check(done(3, ok()), &["tenant_succeeded t3 #1", "finish"]);
    assert_eq!(run.finish(), (ExitCode::Failed, [2, 2, 0, 0, 0]));
}

#[test]
fn a_locked_tenant_is_requeued_until_the_deadline_then_fails() {
    let mut run = Run::new(FleetRequest {
        lock_requeue_for: Duration::from_secs(1),
        ..request(1)
    });
    run.check(Input::Begin, &["run_started", "start 0#1"]);
    run.check(
        done(0, Outcome::Locked { attempts: 1 }),
        &["tenant_retrying t0 locked #1", "requeue 0#2"],
    );
    run.check(Input::Due { index: 0, attempt: 2 }, &["start 0#2"]);
    run.check(
        done(0, Outcome::Locked { attempts: 2 }),
        &["tenant_retrying t0 locked #2", "requeue 0#3"],
    );
    run.advance(Duration::from_secs(1));
    run.check(Input::Due { index: 0, attempt: 3 }, &["start 0#3"]);
    run.check(
        done(0, Outcome::Locked { attempts: 3 }),
        &["tenant_retrying t0 locked #3", "tenant_failed t0 locked #3", "finish"],
    );
    assert_eq!(run.finish(), (ExitCode::Failed, [0, 1, 0, 0, 0]));
}

#[test]
fn the_first_signal_stops_and_the_second_cancels_statements() {
    let mut run = Run::new(FleetRequest {
        concurrency: 2,
        ..request(3)
    });
    run.check(Input::Begin, &["run_started", "start 0#1", "start 1#1"]);
    run.check(Input::Connected { index: 1 }, &[]);
    run.check(Input::Signal, &["stop"]);
    run.check(Input::Signal, &["cancel [1]"]);
    run.check(done(1, interrupted()), &["tenant_interrupted t1"]);
    // A stopped run starts nothing, not even into a free slot.
    run.check(Input::Signal, &["cancel []"]);
    run.check(done(0, ok()), &["tenant_succeeded t0 #1", "finish"]);
    assert_eq!(run.finish(), (ExitCode::Interrupted, [1, 0, 0, 1, 1]));
}

#[test]
fn a_signal_while_a_tenant_waits_for_its_lock_leaves_it_pending() {
    let mut run = Run::new(request(1));
    run.check(Input::Begin, &["run_started", "start 0#1"]);
    run.check(
        done(0, Outcome::Locked { attempts: 1 }),
        &["tenant_retrying t0 locked #1", "requeue 0#2"],
    );
    run.check(Input::Signal, &["stop", "finish"]);
    assert_eq!(run.finish(), (ExitCode::Interrupted, [0, 0, 0, 0, 1]));
}

#[test]
fn worker_messages_become_events_with_their_attempt() {
    let mut run = Run::new(request(1));
    run.check(Input::Begin, &["run_started", "start 0#1"]);
    run.check(
        Input::Worker(WorkerMsg::Started { index: 0, attempt: 1 }),
        &["tenant_started t0 #1"],
    );
    run.check(
        Input::Worker(WorkerMsg::Retrying {
            index: 0,
            attempt: 1,
            failure: failure(),
            delay: Duration::from_millis(300),
        }),
        &["tenant_retrying t0 sql_error #1"],
    );
    run.check(
        Input::Worker(WorkerMsg::Started { index: 0, attempt: 2 }),
        &["tenant_started t0 #2"],
    );
    run.check(
        done(
            0,
            Outcome::Skipped {
                at: Vec::new(),
                attempts: 2,
                elapsed: Duration::ZERO,
            },
        ),
        &["tenant_skipped t0", "finish"],
    );
    assert_eq!(run.finish(), (ExitCode::Ok, [0, 0, 1, 0, 0]));
}

#[test]
fn a_ledger_failure_stops_like_a_first_signal() {
    let mut run = Run::new(FleetRequest {
        concurrency: 1,
        ..request(3)
    });
    run.check(Input::Begin, &["run_started", "start 0#1"]);
    run.check(Input::LedgerFailed("ledger: disk full".into()), &["stop"]);
    run.check(Input::Connected { index: 0 }, &[]);
    // The stop is already sent, so the first signal cancels.
    run.check(Input::Signal, &["cancel [0]"]);
    run.check(done(0, ok()), &["tenant_succeeded t0 #1", "finish"]);
    let mut co = run.co;
    co.finish(None);
    let o = co.into_outcome();
    assert_eq!(o.exit_code, ExitCode::LedgerFailed);
    assert_eq!(o.ledger_failure.as_deref(), Some("ledger: disk full"));
    assert_eq!((o.n_succeeded, o.n_not_started), (1, 2));
}

#[test]
fn a_sink_failure_found_at_the_end_decides_the_exit_code() {
    let mut run = Run::new(request(1));
    run.check(Input::Begin, &["run_started", "start 0#1"]);
    run.check(done(0, ok()), &["tenant_succeeded t0 #1", "finish"]);
    let mut co = run.co;
    co.finish(Some("ledger: closed".into()));
    assert_eq!(co.into_outcome().exit_code, ExitCode::LedgerFailed);
    // The closing record itself failing turns an exit 0 into a ledger failure.
    let mut run = Run::new(request(1));
    run.check(Input::Begin, &["run_started", "start 0#1"]);
    run.check(done(0, ok()), &["tenant_succeeded t0 #1", "finish"]);
    let mut co = run.co;
    co.finish(None);
    co.closing_failed("ledger: closed".into());
    assert_eq!(co.into_outcome().exit_code, ExitCode::LedgerFailed);
}

#[test]
fn interrupted_tenants_without_a_signal_exit_interrupted() {
    let mut run = Run::new(request(2));
    run.check(Input::Begin, &["run_started", "start 0#1", "start 1#1"]);
    run.check(done(0, interrupted()), &["tenant_interrupted t0"]);
    run.check(done(1, ok()), &["tenant_succeeded t1 #1", "finish"]);
    assert_eq!(run.finish(), (ExitCode::Interrupted, [1, 0, 0, 1, 0]));
}

#[test]
fn a_panicked_worker_fails_its_tenant_and_the_run_goes_on() {
    let mut run = Run::new(FleetRequest {
        concurrency: 1,
        ..request(2)
    });
    run.check(Input::Begin, &["run_started", "start 0#1"]);
    run.check(
        Input::Worker(WorkerMsg::Started { index: 0, attempt: 1 }),
        &["tenant_started t0 #1"],
    );
    run.check(
        Input::Exited {
            index: 0,
            attempt: 1,
            panic: Some("boom".into()),
        },
        &["tenant_failed t0 panic #1", "start 1#1"],
    );
    run.check(done(1, ok()), &["tenant_succeeded t1 #1", "finish"]);
    let mut co = run.co;
    co.finish(None);
    let o = co.into_outcome();
    assert_eq!(o.exit_code, ExitCode::Failed);
    assert_eq!(o.failed, [(0, "the worker panicked: boom".to_string())]);
}

#[test]
fn a_worker_exit_after_its_outcome_changes_nothing() {
    let mut run = Run::new(request(2));
    run.check(Input::Begin, &["run_started", "start 0#1", "start 1#1"]);
    run.check(done(0, ok()), &["tenant_succeeded t0 #1"]);
    run.check(
        Input::Exited {
            index: 0,
            attempt: 1,
            panic: None,
        },
        &[],
    );
    // A requeued tenant's old worker exiting does not touch the new one.
    run.check(
        done(1, Outcome::Locked { attempts: 1 }),
        &["tenant_retrying t1 locked #1", "requeue 1#2"],
    );
    run.check(Input::Due { index: 1, attempt: 2 }, &["start 1#2"]);
    run.check(
        Input::Exited {
            index: 1,
            attempt: 1,
            panic: None,
        },
        &[],
    );
    run.check(done(1, ok()), &["tenant_succeeded t1 #1", "finish"]);
    assert_eq!(run.finish(), (ExitCode::Ok, [2, 0, 0, 0, 0]));
}

#[test]
fn a_worker_that_ends_without_an_outcome_fails_its_tenant() {
    let mut run = Run::new(request(1));
    run.check(Input::Begin, &["run_started", "start 0#1"]);
    run.check(
        Input::Exited {
            index: 0,
            attempt: 1,
            panic: None,
        },
        &["tenant_failed t0 panic #1", "finish"],
    );
    assert_eq!(run.finish(), (ExitCode::Failed, [0, 1, 0, 0, 0]));
}

#[test]
fn the_start_rate_paces_starts_and_reports_the_wait() {
    let mut run = Run::new(FleetRequest {
        rate: Some(2.0),
        ..request(2)
    });
    run.check(Input::Begin, &["run_started", "start 0#1", "wake"]);
    run.advance(Duration::from_millis(100));
    run.check(Input::Wake, &["wake"]);
    run.advance(Duration::from_millis(400));
    run.check(Input::Wake, &["rate_limited", "start 1#1"]);
}

#[test]
fn the_tick_reports_open_connections_per_server() {
    let mut run = Run::new(request(1));
    run.check(Input::Begin, &["run_started", "start 0#1"]);
    run.check(Input::Tick { open: vec![3] }, &["connections"]);
}

/// A claimed run of `n` tenants at concurrency `c`.
fn claimed_run(n: usize, c: usize) -> Run {
    let mut req = request(n);
    req.concurrency = c;
    req.source = Source::Claims {
        poll: Duration::from_millis(500),
    };
    Run::new(req)
}

fn claimed(indices: &[usize], state: ClaimState) -> Input {
    Input::Claimed {
        tenants: indices.iter().map(|i| (*i, None)).collect(),
        state,
    }
}

#[test]
fn a_claimed_run_starts_what_the_ledger_hands_out_and_asks_again_when_low() {
    let mut run = claimed_run(6, 2);
    run.check(Input::Begin, &["run_started", "claim 4"]);
    // Only one claim is out at a time.
    run.check(Input::Tick { open: vec![0] }, &["connections"]);
    run.check(claimed(&[0, 1, 2, 3], ClaimState::More), &["start 0#1", "start 1#1"]);
    run.check(done(0, ok()), &["tenant_succeeded t0 #1", "start 2#1", "claim 1"]);
    run.check(claimed(&[4, 5], ClaimState::Done), &[]);
    for (i, next) in [(1, "start 3#1"), (2, "start 4#1"), (3, "start 5#1")] {
        let tenant = format!("tenant_succeeded t{i} #1");
        run.check(done(i, ok()), &[tenant.as_str(), next]);
    }
    run.check(done(4, ok()), &["tenant_succeeded t4 #1"]);
    run.check(done(5, ok()), &["tenant_succeeded t5 #1", "finish"]);
    assert_eq!(run.finish(), (ExitCode::Ok, [6, 0, 0, 0, 0]));
}

#[test]
fn a_claimed_run_waits_while_other_runners_hold_work_and_pins_resolved_targets() {
    let mut run = claimed_run(3, 2);
    run.check(Input::Begin, &["run_started", "claim 4"]);
    let pinned = Input::Claimed {
        tenants: vec![(2, Some(vec![RevisionId::new("abc")]))],
        state: ClaimState::Wait,
    };
    run.check(pinned, &["pin 2 abc", "wake", "start 2#1"]);
    run.check(done(2, ok()), &["tenant_succeeded t2 #1"]);
    // Not before the poll interval.
    run.check(Input::Wake, &[]);
    run.advance(Duration::from_millis(500));
    run.check(Input::Wake, &["claim 4"]);
    // Another runner died: its tenants come back.
    run.check(claimed(&[0], ClaimState::Done), &["start 0#1"]);
    run.check(done(0, ok()), &["tenant_succeeded t0 #1", "finish"]);
    // Tenant 1 was done by another runner: not counted as not started here.
    assert_eq!(run.finish(), (ExitCode::Ok, [2, 0, 0, 0, 0]));
}

#[test]
fn a_halt_by_another_runner_stops_claims_and_a_lone_halted_runner_counts_unclaimed_tenants() {
    let mut run = claimed_run(4, 1);
    run.check(Input::Begin, &["run_started", "claim 2"]);
    run.check(claimed(&[0, 1], ClaimState::More), &["start 0#1"]);
    run.check(
        claimed(&[], ClaimState::Halted),
        &["run_halted halted by another runner"],
    );
    run.check(done(0, ok()), &["tenant_succeeded t0 #1", "finish"]);
    assert_eq!(run.finish(), (ExitCode::Halted, [1, 0, 0, 0, 3]));
}

#[test]
fn a_failed_canary_of_a_claimed_run_halts_it() {
    let mut req = request(3);
    req.concurrency = 1;
    req.n_canaries = 1;
    req.source = Source::Claims {
        poll: Duration::from_millis(500),
    };
    let mut run = Run::new(req);
    run.check(Input::Begin, &["run_started", "claim 2"]);
    run.check(claimed(&[0], ClaimState::Wait), &["wake", "start 0#1"]);
    run.check(
        done(0, failed()),
        &[
            "tenant_failed t0 sql_error #1",
            "run_halted t0 canary",
            "halt_run",
            "finish",
        ],
    );
    assert_eq!(run.finish(), (ExitCode::Halted, [0, 1, 0, 0, 2]));
}

#[test]
fn a_new_rate_share_paces_the_next_starts() {
    let mut req = request(3);
    req.rate = Some(100.0);
    let mut run = Run::new(req);
    run.check(Input::Begin, &["run_started", "start 0#1", "wake"]);
    // Other runners joined: this one's part drops to 1/s. The new pace lets one start through (the wait so far is
    // reported), then the next waits a full new period.
    run.check(Input::Rate(1.0), &["rate_limited", "start 1#1", "wake"]);
    run.advance(Duration::from_millis(500));
    run.check(Input::Wake, &["wake"]);
    run.advance(Duration::from_millis(500));
    run.check(Input::Wake, &["rate_limited", "start 2#1"]);
}

fn rev(id: &str) -> RevisionId {
    RevisionId::new(id)
}

/// The rows of a ledger row a test looks at: tenant, status, from, to, target, attempts, error kind.
fn row_words(row: &crate::ledger::TenantUpdate) -> String {
    let none = || "-".to_string();
    format!(
        "{} {} from={} to={} target={} #{} {}",
        row.tenant_id,
        row.status.as_str(),
        row.from_revision.clone().unwrap_or_else(none),
        row.to_revision.clone().unwrap_or_else(none),
        row.target_revision.clone().unwrap_or_else(none),
        row.attempts,
        row.error_kind.clone().unwrap_or_else(none),
    )
}

#[test]
fn a_recorded_run_writes_each_tenants_row_from_its_outcome() {
    let mut run = claimed_run(3, 3);
    run.check(Input::Begin, &["run_started", "claim 6"]);
    run.check(
        claimed(&[0, 1, 2], ClaimState::Done),
        &["start 0#1", "start 1#1", "start 2#1"],
    );
    let words = |rows: Vec<crate::ledger::TenantUpdate>| rows.iter().map(row_words).collect::<Vec<_>>();
    let started = run.rows(Input::Worker(WorkerMsg::Started { index: 0, attempt: 1 }));
    assert_eq!(words(started), ["t0 running from=- to=- target=- #1 -"]);
    let planned = run.rows(Input::Worker(WorkerMsg::Planned {
        index: 0,
        from: vec![rev("a")],
        to: vec![rev("c")],
        steps: Vec::new(),
    }));
    assert_eq!(words(planned), ["t0 running from=a to=a target=c #1 -"]);
    let retrying = run.rows(Input::Worker(WorkerMsg::Retrying {
        index: 0,
        attempt: 2,
        failure: Failure {
            reason: crate::executor::FailureKind::Deadlock,
            ..failure()
        },
        delay: Duration::ZERO,
    }));
    assert_eq!(words(retrying), ["t0 running from=a to=a target=c #2 deadlock"]);
    // The outcome decides the final row; the retry's error is cleared, the target the plan resolved stays.
    let succeeded = run.rows(done(
        0,
        Outcome::Succeeded {
            from: vec![rev("a")],
            to: vec![rev("c")],
            n_steps: 2,
            attempts: 2,
            elapsed: Duration::from_millis(1500),
        },
    ));
    assert_eq!(words(succeeded.clone()), ["t0 succeeded from=a to=c target=c #2 -"]);
    assert_eq!(
        (succeeded[0].duration_ms, succeeded[0].error.as_deref()),
        (Some(1500), None)
    );
    let failed_row = run.rows(done(
        1,
        Outcome::Failed {
            from: vec![rev("a")],
            to: vec![rev("b")],
            failure: Failure {
                failed_revision: Some(rev("c")),
                ..failure()
            },
            attempts: 1,
            elapsed: Duration::ZERO,
        },
    ));
    assert_eq!(
        words(failed_row.clone()),
        ["t1 failed from=a to=b target=- #1 sql_error"]
    );
    assert_eq!(
        (
            failed_row[0].failed_revision.as_deref(),
            failed_row[0].sqlstate.as_deref()
        ),
        (Some("c"), Some("42P07"))
    );
    // A worker that panics: the coordinator's own failure is recorded too.
    let panicked = run.rows(Input::Exited {
        index: 2,
        attempt: 1,
        panic: Some("boom".into()),
    });
    assert_eq!(words(panicked), ["t2 failed from=- to=- target=- #1 panic"]);
}

#[test]
fn a_lock_requeue_keeps_the_row_running_and_a_dry_run_records_nothing() {
    let mut run = claimed_run(1, 1);
    run.check(Input::Begin, &["run_started", "claim 2"]);
    run.check(claimed(&[0], ClaimState::Done), &["start 0#1"]);
    let locked = run.rows(done(0, Outcome::Locked { attempts: 1 }));
    assert_eq!(
        locked.iter().map(row_words).collect::<Vec<_>>(),
        ["t0 running from=- to=- target=- #1 locked"]
    );

    let mut dry = Run::new(request(2));
    let mut decisions = dry.co.handle(Input::Begin, dry.now);
    decisions.extend(
        dry.co
            .handle(Input::Worker(WorkerMsg::Started { index: 0, attempt: 1 }), dry.now),
    );
    decisions.extend(dry.co.handle(done(0, ok()), dry.now));
    assert!(!decisions
        .iter()
        .any(|d| matches!(d, Decision::Record(_) | Decision::HaltRun)));
}

/// The counts every emitted event carries, as (pending, running, succeeded, failed) after each.
fn emitted_counts(decisions: &[Decision]) -> Vec<(String, [usize; 4])> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Emit(e) => {
                let c = e.counts;
                let sum: usize = crate::ledger::TenantStatus::ALL.iter().map(|s| c.get(*s)).sum();
                assert_eq!(sum, c.n_tenants, "{e:?}");
                Some((show(d), [c.pending, c.running, c.succeeded, c.failed]))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn every_event_carries_the_coordinators_counts() {
    let mut run = Run::new(FleetRequest {
        concurrency: 2,
        ..request(3)
    });
    let begin = run.co.handle(Input::Begin, run.now);
    assert_eq!(emitted_counts(&begin), [("run_started".to_string(), [3, 0, 0, 0])]);
    let started = run
        .co
        .handle(Input::Worker(WorkerMsg::Started { index: 0, attempt: 1 }), run.now);
    assert_eq!(
        emitted_counts(&started),
        [("tenant_started t0 #1".to_string(), [1, 2, 0, 0])]
    );
    let locked = run.co.handle(done(1, Outcome::Locked { attempts: 1 }), run.now);
    // Put back after lock contention: pending again, not running.
    assert_eq!(
        emitted_counts(&locked),
        [("tenant_retrying t1 locked #1".to_string(), [2, 1, 0, 0])]
    );
    // The freed slot went to t2 when t1 was put back.
    let succeeded = run.co.handle(done(0, ok()), run.now);
    assert_eq!(
        emitted_counts(&succeeded),
        [("tenant_succeeded t0 #1".to_string(), [1, 1, 1, 0])]
    );
    let failed_now = run.co.handle(done(2, failed()), run.now);
    assert_eq!(
        emitted_counts(&failed_now),
        [("tenant_failed t2 sql_error #1".to_string(), [1, 0, 1, 1])]
    );
}

#[test]
fn a_shared_runners_closing_counts_leave_out_the_tenants_other_runners_took() {
    let mut run = claimed_run(4, 2);
    run.check(Input::Begin, &["run_started", "claim 4"]);
    run.check(claimed(&[1], ClaimState::Done), &["start 1#1"]);
    run.check(done(1, ok()), &["tenant_succeeded t1 #1", "finish"]);
    let closing = run.co.finish(None);
    assert_eq!(closing.counts.n_tenants, 1);
    assert_eq!((closing.counts.succeeded, closing.counts.pending), (1, 0));
}

#[test]
fn tenants_known_at_target_are_reported_skipped_first_and_never_recorded_again() {
    let mut req = request(4);
    req.concurrency = 1;
    req.source = Source::Claims {
        poll: Duration::from_millis(500),
    };
    req.at_target = [(2, vec![rev("c")].into()), (1, vec![rev("c")].into())].into();
    let mut run = Run::new(req);
    // The ledger wrote them skipped when the run opened: reported in order, without a ledger row, a slot or a
    // claim (the ledger never hands them out).
    let begin: Vec<String> = run.co.handle(Input::Begin, run.now).iter().map(show).collect();
    assert_eq!(
        begin,
        ["run_started", "tenant_skipped t1", "tenant_skipped t2", "claim 2"]
    );
    run.check(claimed(&[0, 3], ClaimState::Done), &["start 0#1"]);
    let rows = run.rows(done(0, ok()));
    assert_eq!(
        rows.iter().map(row_words).collect::<Vec<_>>(),
        ["t0 succeeded from=- to=- target=- #1 -"]
    );
    run.check(done(3, ok()), &["tenant_succeeded t3 #1", "finish"]);
    assert_eq!(run.finish(), (ExitCode::Ok, [2, 0, 2, 0, 0]));
}

#[test]
fn many_tenants_known_at_target_are_reported_in_batches_before_any_start() {
    let n = 2 * SKIP_REPORT_BATCH + 3;
    let mut req = request(n);
    req.concurrency = 2;
    // Every tenant but the last is at its target.
    req.at_target = (0..n - 1).map(|i| (i, Arc::from(vec![rev("c")]))).collect();
    let mut run = Run::new(req);
    let count = |decisions: &[Decision], what: &str| decisions.iter().filter(|d| show(d).starts_with(what)).count();
    let first = run.co.handle(Input::Begin, run.now);
    assert_eq!(count(&first, "tenant_skipped"), SKIP_REPORT_BATCH);
    assert_eq!((count(&first, "wake"), count(&first, "start")), (1, 0));
    // A signal while reporting: nothing starts, but every known skip is still reported before the run finishes
    // (the ledger has them skipped).
    let stopped = run.co.handle(Input::Signal, run.now);
    assert_eq!(count(&stopped, "tenant_skipped"), SKIP_REPORT_BATCH);
    assert_eq!(count(&stopped, "finish"), 0);
    let last = run.co.handle(Input::Wake, run.now);
    assert_eq!(count(&last, "tenant_skipped"), n - 1 - 2 * SKIP_REPORT_BATCH);
    assert_eq!((count(&last, "wake"), count(&last, "start")), (0, 0));
    assert_eq!(count(&last, "finish"), 1);
    assert_eq!(run.finish(), (ExitCode::Interrupted, [0, 0, n - 1, 0, 1]));
}

#[test]
fn tenants_known_at_target_are_not_started_after_their_report() {
    let mut req = request(3);
    req.n_canaries = 1;
    req.at_target = [(0, vec![rev("c")].into()), (2, vec![rev("c")].into())].into();
    let mut run = Run::new(req);
    // A skipped canary counts as a finished canary; the local queue passes over the reported tenants.
    run.check(
        Input::Begin,
        &["run_started", "tenant_skipped t0", "tenant_skipped t2", "start 1#1"],
    );
    run.check(done(1, ok()), &["tenant_succeeded t1 #1", "finish"]);
    assert_eq!(run.finish(), (ExitCode::Ok, [1, 0, 2, 0, 0]));
}

#[test]
fn tenants_known_at_target_do_not_dilute_the_failure_rate() {
    // 1,000 tenants at the target and 20 to run at a 50% limit: 11 failures of the 20 that ran halt the run
    // (11 of 1,020 finished would not).
    let mut req = FleetRequest {
        concurrency: 1,
        max_failure_rate: Some(0.5),
        ..request(1020)
    };
    req.at_target = (20..1020).map(|i| (i, Arc::from(vec![rev("c")]))).collect();
    let mut run = Run::new(req);
    let shows = |decisions: Vec<Decision>| decisions.iter().map(show).collect::<Vec<_>>();
    let begun = shows(run.co.handle(Input::Begin, run.now));
    assert!(begun.contains(&"start 0#1".to_string()), "{begun:?}");
    for i in 0..19 {
        let outcome = if i < 11 { failed() } else { ok() };
        let next = shows(run.co.handle(done(i, outcome), run.now));
        assert!(next.contains(&format!("start {}#1", i + 1)), "t{i}: {next:?}");
    }
    let last = shows(run.co.handle(done(19, ok()), run.now));
    assert!(
        last.contains(&"run_halted t19 failure threshold (11 failed of 20 finished)".to_string()),
        "{last:?}"
    );
    assert_eq!(run.finish(), (ExitCode::Halted, [9, 11, 1000, 0, 0]));
}

/// `n` tenants in waves ending at `ends`, at concurrency `c`.
fn wave_run(n: usize, c: usize, ends: &[usize], max_failure_rate: f64, pause: Duration, has_gate: bool) -> Run {
    Run::new(wave_request(n, c, ends, max_failure_rate, pause, has_gate))
}

fn wave_request(
    n: usize,
    c: usize,
    ends: &[usize],
    max_failure_rate: f64,
    pause: Duration,
    has_gate: bool,
) -> FleetRequest {
    let mut req = request(n);
    req.concurrency = c;
    req.waves = Some(super::WaveRun {
        waves: crate::fleet::waves::Waves::new(ends.to_vec(), ends.iter().map(|e| e.to_string()).collect()),
        max_failure_rate,
        pause,
        has_gate,
    });
    req
}

#[test]
fn a_wave_of_tenants_known_at_target_opens_the_next_wave() {
    let mut run = Run::new(FleetRequest {
        at_target: [(0, Arc::from(vec![rev("c")])), (1, Arc::from(vec![rev("c")]))].into(),
        ..wave_request(4, 4, &[2, 4], 0.0, Duration::ZERO, false)
    });
    run.check(
        Input::Begin,
        &[
            "run_started",
            "wave_started 1/2",
            "tenant_skipped t0",
            "tenant_skipped t1",
            "wave_started 2/2",
            "start 2#1",
            "start 3#1",
        ],
    );
    run.check(done(2, ok()), &["tenant_succeeded t2 #1"]);
    run.check(done(3, ok()), &["tenant_succeeded t3 #1", "finish"]);
    assert_eq!(run.finish(), (ExitCode::Ok, [2, 0, 2, 0, 0]));
}

#[test]
fn a_wave_starts_only_when_the_one_before_finished() {
    let mut run = wave_run(4, 4, &[1, 4], 0.0, Duration::ZERO, false);
    run.check(Input::Begin, &["run_started", "wave_started 1/2", "start 0#1"]);
    run.check(
        done(0, ok()),
        &[
            "tenant_succeeded t0 #1",
            "wave_started 2/2",
            "start 1#1",
            "start 2#1",
            "start 3#1",
        ],
    );
    for i in 1..3 {
        run.check(done(i, ok()), &[format!("tenant_succeeded t{i} #1").as_str()]);
    }
    run.check(done(3, ok()), &["tenant_succeeded t3 #1", "finish"]);
    assert_eq!(run.finish(), (ExitCode::Ok, [4, 0, 0, 0, 0]));
}

#[test]
fn a_failure_in_a_wave_halts_the_run_at_the_default_rate_and_passes_under_a_given_rate() {
    let mut run = wave_run(4, 2, &[2, 4], 0.0, Duration::ZERO, false);
    run.check(
        Input::Begin,
        &["run_started", "wave_started 1/2", "start 0#1", "start 1#1"],
    );
    run.check(done(0, failed()), &["tenant_failed t0 sql_error #1"]);
    run.check(
        done(1, ok()),
        &[
            "tenant_succeeded t1 #1",
            "run_halted wave 1 failure gate (1 failed of 2)",
            "finish",
        ],
    );
    assert_eq!(run.finish(), (ExitCode::Halted, [1, 1, 0, 0, 2]));

    let mut run = wave_run(4, 2, &[2, 4], 0.5, Duration::ZERO, false);
    run.check(
        Input::Begin,
        &["run_started", "wave_started 1/2", "start 0#1", "start 1#1"],
    );
    run.check(done(0, failed()), &["tenant_failed t0 sql_error #1"]);
    run.check(
        done(1, ok()),
        &["tenant_succeeded t1 #1", "wave_started 2/2", "start 2#1", "start 3#1"],
    );
}

#[test]
fn the_next_wave_waits_for_the_pause_then_the_gate() {
    let mut run = wave_run(2, 2, &[1, 2], 0.0, Duration::from_secs(60), true);
    run.check(Input::Begin, &["run_started", "wave_started 1/2", "start 0#1"]);
    run.check(done(0, ok()), &["tenant_succeeded t0 #1", "wake"]);
    run.advance(Duration::from_secs(30));
    run.check(Input::Wake, &[]);
    run.advance(Duration::from_secs(30));
    run.check(Input::Wake, &["run_wave_gate 2"]);
    // An answer for another wave changes nothing.
    run.check(
        Input::WaveGate {
            wave: 3,
            result: Ok(()),
        },
        &[],
    );
    run.check(
        Input::WaveGate {
            wave: 2,
            result: Ok(()),
        },
        &["wave_started 2/2", "start 1#1"],
    );
}

#[test]
fn a_retry_shows_and_gates_its_waves_by_the_first_run_numbers() {
    let mut req = request(3);
    req.concurrency = 3;
    req.waves = Some(super::WaveRun {
        waves: crate::fleet::waves::Waves {
            ends: vec![1, 3],
            names: vec!["25%".into(), "rest".into()],
            numbers: vec![3, 4],
            of: 4,
        },
        max_failure_rate: 0.0,
        pause: Duration::ZERO,
        has_gate: true,
    });
    let mut run = Run::new(req);
    run.check(Input::Begin, &["run_started", "wave_started 3/4", "start 0#1"]);
    run.check(done(0, ok()), &["tenant_succeeded t0 #1", "run_wave_gate 4"]);
    run.check(
        Input::WaveGate {
            wave: 4,
            result: Ok(()),
        },
        &["wave_started 4/4", "start 1#1", "start 2#1"],
    );
}

#[test]
fn a_refusing_gate_halts_and_a_signal_in_the_pause_stops() {
    let mut run = wave_run(2, 2, &[1, 2], 0.0, Duration::ZERO, true);
    run.check(Input::Begin, &["run_started", "wave_started 1/2", "start 0#1"]);
    run.check(done(0, ok()), &["tenant_succeeded t0 #1", "run_wave_gate 2"]);
    run.check(
        Input::WaveGate {
            wave: 2,
            result: Err("exit status: 1".into()),
        },
        &["run_halted wave gate refused wave 2", "finish"],
    );
    assert_eq!(run.finish(), (ExitCode::Halted, [1, 0, 0, 0, 1]));

    let mut run = wave_run(2, 2, &[1, 2], 0.0, Duration::from_secs(600), false);
    run.check(Input::Begin, &["run_started", "wave_started 1/2", "start 0#1"]);
    run.check(done(0, ok()), &["tenant_succeeded t0 #1", "wake"]);
    run.check(Input::Signal, &["stop", "finish"]);
    assert_eq!(run.finish(), (ExitCode::Interrupted, [1, 0, 0, 0, 1]));
}
