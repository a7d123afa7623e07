//! The coordinator's rules, driven with fake worker messages: no database, no runtime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Coordinator, Decision, FleetRequest, Input, Source};
use crate::error::ExitCode;
use crate::fleet::tenant::{Place, Tenant};
use crate::fleet::worker::{Action, Failure, Outcome, TenantLimits, WorkerMsg};
use crate::ledger::ClaimState;
use crate::revision::RevisionId;

/// A request for `n` schema tenants on one server, all at once, two retries each.
pub(in crate::fleet::coordinator) fn request(n: usize) -> FleetRequest {
    FleetRequest {
        run_id: "run".into(),
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
        queue: None,
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

    /// Handle `input` and compare the decisions, in the short words of [`show`].
    fn check(&mut self, input: Input, expected: &[&str]) {
        let got: Vec<String> = self.co.handle(input, self.now).iter().map(show).collect();
        assert_eq!(got, expected);
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
        Decision::Emit(event) => {
            let v = serde_json::to_value(event).expect("events serialize");
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
        reason: "sql",
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
    run.check(done(0, failed()), &["tenant_failed t0 sql #1", "run_halted t0 canary"]);
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
    run.check(done(0, failed()), &["tenant_failed t0 sql #1", "start 2#1"]);
    run.check(
        done(1, failed()),
        &[
            "tenant_failed t1 sql #1",
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
        run.check(done(0, failed()), &["tenant_failed t0 sql #1", "start 1#1"]);
        run.check(done(1, failed()), &["tenant_failed t1 sql #1", "start 2#1"]);
        // Two of three failed is above the rate, but only three of four finished.
        run.check(done(2, ok()), &["tenant_succeeded t2 #1", "start 3#1"]);
        run
    };
    let mut run = rate_run();
    run.check(
        done(3, failed()),
        &[
            "tenant_failed t3 sql #1",
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
        &["tenant_retrying t0 sql #1"],
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
    run.check(Input::SinkFailed("ledger: disk full".into()), &["stop"]);
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
        &["tenant_failed t0 sql #1", "run_halted t0 canary", "finish"],
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
