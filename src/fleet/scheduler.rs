//! The fleet coordinator: one task that dispatches tenants to workers under the fleet-wide concurrency, the
//! tenant start rate and the canary/failure-threshold rules, handles signals, and turns worker messages into
//! [`FleetEvent`]s for every sink. Only this task writes the ledger, progress and metrics.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::server::Server;
use super::tenant::Tenant;
use super::worker::{run_tenant, Action, Engine, Outcome, TenantLimits, WorkerCtx, WorkerMsg};
use crate::error::ExitCode;
use crate::graph::Step;
use crate::ledger::TenantStatus;
use crate::observe::{FleetEvent, Sink};
use crate::revision::RevisionId;

/// One fleet run, resolved: the selected tenants in dispatch order and every limit.
pub struct FleetRequest {
    pub run_id: String,
    pub action: Action,
    pub tenants: Vec<Tenant>,
    /// By tenant index: the absolute target (version rows) an earlier run resolved for the tenant, used
    /// instead of the action's target so a retried relative target never moves a tenant further.
    pub pinned: BTreeMap<usize, Vec<RevisionId>>,
    /// The first `n_canaries` tenants run first; if any fails, the run halts before the rest start.
    pub n_canaries: usize,
    pub concurrency: usize,
    /// Tenant starts per second, fleet-wide (`None`: unlimited).
    pub rate: Option<f64>,
    pub limits: TenantLimits,
    /// Halt once more than this many tenants failed.
    pub max_failures: Option<usize>,
    /// Halt once more than this share (0..=1) of finished tenants failed, judged after `min(20, n)` finished.
    pub max_failure_rate: Option<f64>,
    /// How long a tenant locked by another runner keeps being put back in the queue before it fails.
    pub lock_requeue_for: Duration,
    pub is_dry_run: bool,
}

/// How the run ended.
pub struct FleetOutcome {
    pub exit_code: ExitCode,
    pub n_succeeded: usize,
    pub n_failed: usize,
    pub n_skipped: usize,
    pub n_interrupted: usize,
    /// Selected tenants that never started (the run was halted or stopped first).
    pub n_not_started: usize,
    pub is_halted: bool,
    /// `--dry-run`: each tenant's plan, in tenant order (tenant index, current rows, steps).
    pub planned: Vec<(usize, Vec<RevisionId>, Vec<Step>)>,
    /// Tenants that failed: (tenant index, message).
    pub failed: Vec<(usize, String)>,
    /// Why the ledger could not be written, when it could not (the run then stopped early).
    pub ledger_failure: Option<String>,
}

fn ids(rows: &[RevisionId]) -> Vec<String> {
    rows.iter().map(|r| r.to_string()).collect()
}

struct Coordinator {
    /// Kept as selected; a worker gets its own copy when it starts, so only tenants in flight cost an `Arc`.
    tenants: Vec<Tenant>,
    servers: Vec<Arc<Server>>,
    states: Vec<TenantStatus>,
    sinks: Vec<Box<dyn Sink>>,
    n_finished: usize,
    n_failed: usize,
    outcome: FleetOutcome,
}

impl Coordinator {
    fn emit(&mut self, event: FleetEvent) {
        for sink in &mut self.sinks {
            sink.event(&event);
        }
    }

    /// The first sink failure that must stop the run (the ledger's).
    fn sink_failure(&self) -> Option<String> {
        self.sinks.iter().find_map(|s| s.health().err())
    }

    fn finish_tenant(&mut self, index: usize, state: TenantStatus) {
        self.states[index] = state;
        self.n_finished += 1;
    }
}

/// Run the fleet to its end. Never returns an error: every tenant's fate is in the events and the outcome.
pub async fn run(
    mut req: FleetRequest,
    engine: Arc<Engine>,
    servers: Vec<Arc<Server>>,
    sinks: Vec<Box<dyn Sink>>,
) -> FleetOutcome {
    let n = req.tenants.len();
    let mut co = Coordinator {
        tenants: std::mem::take(&mut req.tenants),
        servers,
        states: vec![TenantStatus::Pending; n],
        sinks,
        n_finished: 0,
        n_failed: 0,
        outcome: FleetOutcome {
            exit_code: ExitCode::Ok,
            n_succeeded: 0,
            n_failed: 0,
            n_skipped: 0,
            n_interrupted: 0,
            n_not_started: 0,
            is_halted: false,
            planned: Vec::new(),
            failed: Vec::new(),
            ledger_failure: None,
        },
    };
    co.emit(FleetEvent::RunStarted {
        run_id: req.run_id.clone(),
        command: req.action.command().to_string(),
        target: req.action.target(),
        n_tenants: n,
        concurrency: req.concurrency,
        at: SystemTime::now(),
    });

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(WorkerCtx {
        engine,
        action: req.action.clone(),
        is_dry_run: req.is_dry_run,
        limits: req.limits.clone(),
        stop: stop.clone(),
        tx,
        pinned: std::mem::take(&mut req.pinned),
        shared_done: co.servers.iter().map(|_| tokio::sync::Mutex::new(None)).collect(),
    });
    let clock = DefaultClock::default();
    let limiter = req
        .rate
        .filter(|r| *r > 0.0)
        .and_then(|r| Quota::with_period(Duration::from_secs_f64(1.0 / r)))
        .map(RateLimiter::direct);

    // Ready tenants (index, attempt) in order, and tenants put back until a moment (locked by another runner).
    let mut ready = ReadyQueue::new(n);
    let mut delayed: BinaryHeap<Reverse<(Instant, usize, u32)>> = BinaryHeap::new();
    let mut first_locked: HashMap<usize, Instant> = HashMap::new();
    let mut tokens: HashMap<usize, tokio_postgres::CancelToken> = HashMap::new();
    let mut in_flight = 0usize;
    let n_canaries = req.n_canaries.min(n);
    let mut canaries_left = n_canaries;
    let mut is_stopping = false;
    // A ledger write failed: stop as the first signal does, and end with ExitCode::LedgerFailed.
    let mut ledger_failure: Option<String> = None;
    let mut rate_wait_since: Option<Instant> = None;
    let mut sigint = signal(SignalKind::interrupt()).ok();
    let mut sigterm = signal(SignalKind::terminate()).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        // Dispatch as many tenants as the limits allow right now.
        let mut wake_at: Option<Instant> = None;
        while !is_stopping && !co.outcome.is_halted && in_flight < req.concurrency.max(1) {
            let now = Instant::now();
            while let Some(Reverse((at, _, _))) = delayed.peek() {
                if *at > now {
                    break;
                }
                let Reverse((_, index, attempt)) = delayed.pop().expect("peeked");
                ready.push_front((index, attempt));
            }
            let Some((index, attempt)) = ready.front() else {
                wake_at = delayed.peek().map(|Reverse((at, _, _))| *at);
                break;
            };
            // During the canary phase only canaries start.
            if canaries_left > 0 && index >= n_canaries {
                break;
            }
            if let Some(limiter) = &limiter {
                if let Err(not_until) = limiter.check() {
                    rate_wait_since.get_or_insert(now);
                    wake_at = Some(now + not_until.wait_time_from(clock.now()));
                    break;
                }
            }
            if let Some(since) = rate_wait_since.take() {
                co.emit(FleetEvent::RateLimited {
                    waited: since.elapsed(),
                });
            }
            ready.pop_front();
            in_flight += 1;
            co.states[index] = TenantStatus::Running;
            let tenant = Arc::new(co.tenants[index].clone());
            let server = co.servers[tenant.server].clone();
            tokio::spawn(run_tenant(ctx.clone(), server, tenant, index, attempt));
        }
        let is_drained = ready.is_empty() && delayed.is_empty();
        if in_flight == 0 && (is_drained || is_stopping || co.outcome.is_halted) {
            break;
        }
        if ledger_failure.is_none() {
            if let Some(e) = co.sink_failure() {
                tracing::error!("{e}; no new tenants start, and tenants in flight stop after their current revision");
                ledger_failure = Some(e);
                is_stopping = true;
                stop.store(true, Ordering::Relaxed);
                continue;
            }
        }
        tokio::select! {
            Some(msg) = rx.recv() => {
                if let Some(done) = handle(&mut co, msg, &mut tokens) {
                    in_flight -= 1;
                    match done {
                        Done::Requeue { index, attempts } => {
                            let since = *first_locked.entry(index).or_insert_with(Instant::now);
                            if since.elapsed() >= req.lock_requeue_for {
                                let failure = format!(
                                    "another run held this tenant's migration lock for longer than {:?}",
                                    req.lock_requeue_for
                                );
                                fail_locked(&mut co, index, attempts, failure);
                                after_finish(&mut co, &req, index, n_canaries, &mut canaries_left);
                            } else {
                                let delay = Duration::from_millis(200 * u64::from(attempts.min(10)));
                                delayed.push(Reverse((Instant::now() + delay, index, attempts + 1)));
                            }
                        }
                        Done::Finished { index } => after_finish(&mut co, &req, index, n_canaries, &mut canaries_left),
                    }
                }
            }
            _ = sleep_until(wake_at), if wake_at.is_some() => {}
            _ = recv_signal(&mut sigint), if sigint.is_some() => {
                on_signal(&mut is_stopping, &stop, &tokens, &co).await;
            }
            _ = recv_signal(&mut sigterm), if sigterm.is_some() => {
                on_signal(&mut is_stopping, &stop, &tokens, &co).await;
            }
            _ = tick.tick() => {
                for i in 0..co.servers.len() {
                    let (name, open) = (co.servers[i].name.clone(), co.servers[i].open_connections());
                    co.emit(FleetEvent::Connections { server: name, open });
                }
            }
        }
    }

    // Tenants that never started (stopped, halted) stay pending: "not started", and retry picks them up.
    co.outcome.n_not_started = co.states.iter().filter(|s| **s == TenantStatus::Pending).count();
    for server in &co.servers {
        server.close_idle();
    }
    for sink in &mut co.sinks {
        sink.sync();
    }
    if ledger_failure.is_none() {
        ledger_failure = co.sink_failure();
    }
    let o = &mut co.outcome;
    o.exit_code = if ledger_failure.is_some() {
        ExitCode::LedgerFailed
    } else if is_stopping {
        ExitCode::Interrupted
    } else if o.is_halted {
        ExitCode::Halted
    } else if o.n_failed > 0 {
        ExitCode::Failed
    } else if o.n_interrupted + o.n_not_started > 0 {
        ExitCode::Interrupted
    } else {
        ExitCode::Ok
    };
    let finished = FleetEvent::RunFinished {
        run_id: req.run_id.clone(),
        succeeded: o.n_succeeded,
        failed: o.n_failed,
        skipped: o.n_skipped,
        interrupted: o.n_interrupted,
        not_started: o.n_not_started,
        exit_code: o.exit_code.code(),
        at: SystemTime::now(),
    };
    co.emit(finished);
    for sink in &mut co.sinks {
        sink.finish();
    }
    // The run's own closing record can fail too: it must not end with exit 0 while the ledger shows it unfinished.
    if ledger_failure.is_none() {
        ledger_failure = co.sink_failure();
        if ledger_failure.is_some() {
            co.outcome.exit_code = ExitCode::LedgerFailed;
        }
    }
    co.outcome.ledger_failure = ledger_failure;
    co.outcome
}

/// The failure message recorded for tenant `index`, if it failed.
fn last_error(co: &Coordinator, index: usize) -> Option<String> {
    co.outcome
        .failed
        .iter()
        .rev()
        .find(|(i, _)| *i == index)
        .map(|(_, e)| e.clone())
}

/// After a tenant reached its final state: count a finished canary (one of the first `n_canaries`; a failed one
/// halts the run), and halt when the failure threshold is passed.
fn after_finish(co: &mut Coordinator, req: &FleetRequest, index: usize, n_canaries: usize, canaries_left: &mut usize) {
    let n = co.tenants.len();
    if index < n_canaries {
        *canaries_left -= 1;
        if co.states[index] == TenantStatus::Failed {
            tracing::error!(tenant = %co.tenants[index].id, "canary failed: halting before the rest of the fleet");
            co.outcome.is_halted = true;
            let tenant = co.tenants[index].id.clone();
            let error = last_error(co, index);
            co.emit(FleetEvent::RunHalted {
                reason: "canary".into(),
                tenant: Some(tenant),
                error,
            });
        }
    }
    if exceeds_threshold(co, req, n) && !co.outcome.is_halted {
        tracing::error!(failed = co.n_failed, "failure threshold exceeded: no new tenants start");
        co.outcome.is_halted = true;
        let tenant = co.tenants[index].id.clone();
        let error = last_error(co, index);
        co.emit(FleetEvent::RunHalted {
            reason: format!(
                "failure threshold ({} failed of {} finished)",
                co.n_failed, co.n_finished
            ),
            tenant: Some(tenant),
            error,
        });
    }
}

fn exceeds_threshold(co: &Coordinator, req: &FleetRequest, n: usize) -> bool {
    if req.max_failures.is_some_and(|max| co.n_failed > max) {
        return true;
    }
    match req.max_failure_rate {
        Some(rate) => {
            let min_finished = n.min(20);
            co.n_finished >= min_finished && co.n_finished > 0 && (co.n_failed as f64 / co.n_finished as f64) > rate
        }
        None => false,
    }
}

fn fail_locked(co: &mut Coordinator, index: usize, attempts: u32, error: String) {
    co.finish_tenant(index, TenantStatus::Failed);
    co.n_failed += 1;
    co.outcome.n_failed += 1;
    co.outcome.failed.push((index, error.clone()));
    let tenant = co.tenants[index].id.clone();
    co.emit(FleetEvent::TenantFailed {
        tenant,
        from: Vec::new(),
        to: Vec::new(),
        failed_revision: None,
        error,
        error_kind: "locked".into(),
        sqlstate: None,
        attempts,
        duration: Duration::ZERO,
    });
}

enum Done {
    Finished { index: usize },
    Requeue { index: usize, attempts: u32 },
}

/// Apply one worker message: emit its event, and report when the worker is done.
fn handle(
    co: &mut Coordinator,
    msg: WorkerMsg,
    tokens: &mut HashMap<usize, tokio_postgres::CancelToken>,
) -> Option<Done> {
    let name = |co: &Coordinator, index: usize| co.tenants[index].id.clone();
    match msg {
        WorkerMsg::Started { index, attempt } => {
            let server = co.servers[co.tenants[index].server].name.clone();
            let tenant = name(co, index);
            co.emit(FleetEvent::TenantStarted {
                tenant,
                server,
                attempt,
            });
        }
        WorkerMsg::Connected { index, token } => {
            tokens.insert(index, token);
        }
        WorkerMsg::Planned { index, from, to, steps } => {
            let tenant = name(co, index);
            co.emit(FleetEvent::TenantPlanned {
                tenant,
                from: ids(&from),
                to: ids(&to),
                n_steps: steps.len(),
            });
        }
        WorkerMsg::RevisionStarted {
            index,
            revision,
            direction,
        } => {
            let tenant = name(co, index);
            let direction = crate::executor::direction_word(direction).to_string();
            co.emit(FleetEvent::RevisionStarted {
                tenant,
                revision: revision.to_string(),
                direction,
            });
        }
        WorkerMsg::RevisionApplied {
            index,
            revision,
            direction,
            elapsed,
        } => {
            let tenant = name(co, index);
            let direction = crate::executor::direction_word(direction).to_string();
            co.emit(FleetEvent::RevisionApplied {
                tenant,
                revision: revision.to_string(),
                direction,
                duration: elapsed,
            });
        }
        WorkerMsg::BackfillProgress {
            index,
            revision,
            rows_done,
            rows_estimated,
        } => {
            let tenant = name(co, index);
            co.emit(FleetEvent::BackfillProgress {
                tenant,
                revision: revision.to_string(),
                rows_done,
                rows_estimated,
            });
        }
        WorkerMsg::Retrying {
            index,
            attempt,
            failure,
            delay,
        } => {
            let tenant = name(co, index);
            co.emit(FleetEvent::TenantRetrying {
                tenant,
                attempt,
                reason: failure.reason.to_string(),
                error: failure.message,
                sqlstate: failure.sqlstate,
                delay,
            });
        }
        WorkerMsg::Done { index, outcome } => {
            tokens.remove(&index);
            let tenant = name(co, index);
            match outcome {
                Outcome::Locked { attempts } => {
                    co.states[index] = TenantStatus::Pending;
                    co.emit(FleetEvent::TenantRetrying {
                        tenant,
                        attempt: attempts,
                        reason: "locked".into(),
                        error: "another run holds this tenant's migration lock; trying again later in the run".into(),
                        sqlstate: None,
                        delay: Duration::ZERO,
                    });
                    return Some(Done::Requeue { index, attempts });
                }
                Outcome::Succeeded {
                    from,
                    to,
                    n_steps,
                    attempts,
                    elapsed,
                } => {
                    co.finish_tenant(index, TenantStatus::Succeeded);
                    co.outcome.n_succeeded += 1;
                    co.emit(FleetEvent::TenantSucceeded {
                        tenant,
                        from: ids(&from),
                        to: ids(&to),
                        n_steps,
                        attempts,
                        duration: elapsed,
                    });
                }
                Outcome::Skipped { at, .. } => {
                    co.finish_tenant(index, TenantStatus::Skipped);
                    co.outcome.n_skipped += 1;
                    co.emit(FleetEvent::TenantSkipped { tenant, at: ids(&at) });
                }
                Outcome::Planned { from, steps } => {
                    co.finish_tenant(index, TenantStatus::Skipped);
                    co.outcome.n_skipped += 1;
                    co.outcome.planned.push((index, from.clone(), steps));
                    co.emit(FleetEvent::TenantSkipped { tenant, at: ids(&from) });
                }
                Outcome::Failed {
                    from,
                    to,
                    failure,
                    attempts,
                    elapsed,
                } => {
                    co.finish_tenant(index, TenantStatus::Failed);
                    co.n_failed += 1;
                    co.outcome.n_failed += 1;
                    co.outcome.failed.push((index, failure.message.clone()));
                    co.emit(FleetEvent::TenantFailed {
                        tenant,
                        from: ids(&from),
                        to: ids(&to),
                        failed_revision: failure.failed_revision.map(|r| r.to_string()),
                        error: failure.message,
                        error_kind: failure.reason.into(),
                        sqlstate: failure.sqlstate,
                        attempts,
                        duration: elapsed,
                    });
                }
                Outcome::Interrupted { from, to, .. } => {
                    co.finish_tenant(index, TenantStatus::Interrupted);
                    co.outcome.n_interrupted += 1;
                    co.emit(FleetEvent::TenantInterrupted {
                        tenant,
                        from: ids(&from),
                        to: ids(&to),
                    });
                }
            }
            return Some(Done::Finished { index });
        }
    }
    None
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn recv_signal(sig: &mut Option<tokio::signal::unix::Signal>) {
    match sig {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// First signal: stop starting tenants and stop each in-flight tenant after its current revision. Second:
/// also cancel the statements in flight.
async fn on_signal(
    is_stopping: &mut bool,
    stop: &AtomicBool,
    tokens: &HashMap<usize, tokio_postgres::CancelToken>,
    co: &Coordinator,
) {
    if !*is_stopping {
        *is_stopping = true;
        stop.store(true, Ordering::Relaxed);
        tracing::warn!("interrupted: no new tenants start; tenants in flight stop after their current revision (signal again to cancel them)");
        return;
    }
    tracing::warn!(
        n = tokens.len(),
        "interrupted again: cancelling the statements in flight"
    );
    for (index, token) in tokens {
        let server = &co.servers[co.tenants[*index].server];
        server.cancel(token).await;
    }
}

/// Tenants ready to start, in order: those put back after waiting first, then the next tenant never started.
/// A cursor stands for the never-started ones, so the queue costs nothing per tenant.
struct ReadyQueue {
    next: usize,
    n: usize,
    requeued: VecDeque<(usize, u32)>,
}

impl ReadyQueue {
    fn new(n: usize) -> Self {
        ReadyQueue {
            next: 0,
            n,
            requeued: VecDeque::new(),
        }
    }

    /// The next tenant (index, attempt) without taking it.
    fn front(&self) -> Option<(usize, u32)> {
        self.requeued
            .front()
            .copied()
            .or_else(|| (self.next < self.n).then_some((self.next, 1)))
    }

    fn pop_front(&mut self) {
        if self.requeued.pop_front().is_none() && self.next < self.n {
            self.next += 1;
        }
    }

    fn push_front(&mut self, tenant: (usize, u32)) {
        self.requeued.push_front(tenant);
    }

    fn is_empty(&self) -> bool {
        self.requeued.is_empty() && self.next >= self.n
    }
}

#[cfg(test)]
mod tests {
    use super::ReadyQueue;

    #[test]
    fn ready_queue_serves_requeued_tenants_before_new_ones() {
        let mut ready = ReadyQueue::new(3);
        assert_eq!(ready.front(), Some((0, 1)));
        ready.pop_front();
        ready.push_front((0, 2));
        assert_eq!(ready.front(), Some((0, 2)));
        ready.pop_front();
        let mut order = Vec::new();
        while let Some(next) = ready.front() {
            order.push(next);
            ready.pop_front();
        }
        assert_eq!(order, [(1, 1), (2, 1)]);
        assert!(ready.is_empty());
        ready.push_front((2, 2));
        assert!(!ready.is_empty());
    }
}
