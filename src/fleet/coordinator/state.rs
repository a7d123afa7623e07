//! The coordinator's decisions: every rule of a fleet run (dispatch under the concurrency, the start rate and the
//! canary phase; the canary and failure-threshold halts; the lock requeue and its deadline; the first and second
//! signal; the ledger failure stop; the final counts and exit code; each tenant's ledger row) as one synchronous
//! state machine.
//!
//! [`Coordinator::handle`] takes one [`Input`] and the current instant and returns the [`Decision`]s to carry out.
//! It never touches a channel, a timer, a sink or a connection, so unit tests drive it with fake worker messages;
//! the async shell (`shell.rs`) turns messages, timers and signals into inputs and carries decisions out.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::error::ExitCode;
use crate::executor::FailureKind;
use crate::fleet::tenant::Tenant;
use crate::fleet::worker::{Action, Outcome, TenantLimits, WorkerMsg};
use crate::graph::Step;
use crate::ledger::{rows_column, ClaimState, StatusCounts, TenantStatus, TenantUpdate};
use crate::observe::{FleetEvent, HaltReason, RunEvent, StateCounts, TenantId};
use crate::revision::RevisionId;

/// One fleet run, resolved: the selected tenants in dispatch order and every limit.
pub struct FleetRequest {
    pub run_id: String,
    pub action: Action,
    /// The command and target the run is shown as, when not its action's (`fleet rollback` runs a downgrade
    /// shown as `rollback` of the run it undoes).
    pub shown_as: Option<(&'static str, String)>,
    pub tenants: Vec<Tenant>,
    /// By tenant index: the absolute target (version rows) an earlier run resolved for the tenant, used
    /// instead of the action's target so a retried relative target never moves a tenant further.
    pub pinned: BTreeMap<usize, Vec<RevisionId>>,
    /// By tenant index: tenants known, before the run, to be at their target (their version rows, read in bulk).
    /// A recorded run wrote them skipped when it opened (`NewTenant::at_target`), so they are never claimed; the
    /// coordinator reports them skipped first, before any tenant starts, without a worker, a connection, a
    /// concurrency slot, a start or a ledger write each. Tenants at the same rows share one list (100,000
    /// tenants mostly at one head).
    pub at_target: HashMap<usize, Arc<[RevisionId]>>,
    /// Stages of the run (`--waves`, `--waves-by`): the tenants are ordered by wave, and a wave starts only when the
    /// one before it finished under its failure-rate gate, the pause and the gate command.
    pub waves: Option<WaveRun>,
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
    /// Where the tenants to start come from.
    pub source: Source,
    /// The ledger of a recorded run ([`Source::Claims`]): tenant rows, claims, heartbeats, halts.
    pub ledger: Option<crate::fleet::record::LedgerWriter>,
    /// `--wave-gate`: the command run before each next wave (see [`FleetRequest::waves`]).
    pub wave_gate: Option<String>,
    /// In a shared run, this runner's part of `rate` as it changes (the rate split between busy runners).
    pub rate_share: Option<tokio::sync::watch::Receiver<f64>>,
}

/// The waves of a run and what opens each next one.
#[derive(Debug, Clone)]
pub struct WaveRun {
    pub waves: crate::fleet::waves::Waves,
    /// A wave opens the next only when its share of failed tenants is at most this (0: none may fail).
    pub max_failure_rate: f64,
    /// Wait this long between waves.
    pub pause: Duration,
    /// Run the gate command (`--wave-gate`) before each next wave: [`Decision::RunWaveGate`].
    pub has_gate: bool,
}

/// Where the waves of a run stand.
struct WaveState {
    run: WaveRun,
    /// The wave tenants may start in (0-based).
    current: usize,
    /// Per wave: tenants finished, and of those failed.
    n_finished: Vec<usize>,
    n_failed: Vec<usize>,
    opening: Opening,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// The current wave is open.
    Open,
    /// The current wave finished under its gate; the next opens at this instant (after `--wave-pause`).
    Pausing(Instant),
    /// The gate command for the next wave runs.
    Asking,
}

/// Where a run's tenants come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Every tenant of the request, in order (a dry run: nothing is recorded).
    Local,
    /// Claimed from the ledger in batches (every recorded run, alone or shared with other runners): the ledger
    /// hands out tenants in the request's order, keeps canaries first across runners and gives a dead runner's
    /// tenants to the others.
    Claims {
        /// How long to wait before asking again when the ledger has nothing now but other runners hold work.
        poll: Duration,
    },
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

/// Everything that can happen to the coordinator, as the shell reports it.
pub(super) enum Input {
    /// The run begins: announce it and dispatch the first tenants.
    Begin,
    /// A message from a worker. `WorkerMsg::Connected` may come this way or as [`Input::Connected`].
    Worker(WorkerMsg),
    /// Tenant `index` has a connection whose statements a second signal may cancel (the shell keeps the token).
    Connected { index: usize },
    /// The task of tenant `index`, started with `attempt`, ended; `panic` holds its message when it panicked.
    Exited {
        index: usize,
        attempt: u32,
        panic: Option<String>,
    },
    /// A tenant put back after lock contention is due to start again.
    Due { index: usize, attempt: u32 },
    /// A wake-up the coordinator asked for (the start rate allows the next tenant).
    Wake,
    /// SIGINT or SIGTERM.
    Signal,
    /// The periodic tick: open connections per server, in server order.
    Tick { open: Vec<usize> },
    /// The ledger could not be written or read: the run must stop.
    LedgerFailed(String),
    /// The `--wave-gate` command before wave `wave` (1-based) passed, or why it did not.
    WaveGate { wave: usize, result: Result<(), String> },
    /// This runner's part of the start rate changed (a shared run's runners split it).
    Rate(f64),
    /// The ledger answered a [`Decision::Claim`]: these tenants (index, target the run resolved earlier) are
    /// this runner's now.
    Claimed {
        tenants: Vec<(usize, Option<Vec<RevisionId>>)>,
        state: ClaimState,
    },
}

/// What the shell carries out, in order.
#[derive(Debug)]
pub(super) enum Decision {
    /// Spawn a worker for tenant `index`, starting at `attempt`.
    Start { index: usize, attempt: u32 },
    /// Report [`Input::Due`] for this tenant at `at`.
    Requeue { index: usize, attempt: u32, at: Instant },
    /// Report [`Input::Wake`] at this instant. Every request is honoured (requests due together make one wake),
    /// so a wake asked for now never swallows one asked for later.
    WakeAt(Instant),
    /// Hand this event, with the counts right after it, to the sinks.
    Emit(RunEvent),
    /// Write this row of the tenant to the ledger (a recorded run): the whole current state of the tenant, built
    /// from what the coordinator decided, never from the display events.
    Record(TenantUpdate),
    /// This runner halted the run: tell the other runners through the ledger.
    HaltRun,
    /// Tell every worker to stop after its current revision, and wake any that sleeps or waits.
    Stop,
    /// Cancel the running statements of these tenants.
    CancelStatements(Vec<usize>),
    /// Ask the ledger for up to `max` more tenants; it answers with [`Input::Claimed`] (or a ledger failure).
    Claim { max: usize },
    /// Keep this target for tenant `index` (the run resolved it earlier): the worker plans to it.
    Pin { index: usize, rows: Vec<RevisionId> },
    /// Run the `--wave-gate` command before wave `wave` (1-based); it answers with [`Input::WaveGate`].
    RunWaveGate { wave: usize },
    /// Nothing is in flight and nothing will start: sync the sinks and call [`Coordinator::finish`].
    Finish,
}

/// How many tenants known to be at their target one [`Coordinator::handle`] reports skipped.
const SKIP_REPORT_BATCH: usize = 1024;

/// Where the claims of a [`Source::Claims`] run stand.
struct Claims {
    poll: Duration,
    /// A claim was asked for and not answered yet.
    is_asking: bool,
    /// The ledger's last answer.
    state: ClaimState,
    /// When a `Wait` answer may be asked again.
    next_at: Option<Instant>,
    /// By tenant index: whether this runner claimed it.
    claimed: Vec<bool>,
}

/// A tenant in flight.
struct Flight {
    /// The attempt its worker was started with (tells an old worker's exit from a requeued one's).
    first_attempt: u32,
    /// The latest attempt its worker reported.
    attempt: u32,
}

pub(super) struct Coordinator {
    run_id: String,
    command: &'static str,
    target: String,
    /// Kept as selected; a worker gets its own copy when it starts, so only tenants in flight cost an `Arc`.
    tenants: Vec<Tenant>,
    server_names: Vec<String>,
    states: Vec<TenantStatus>,
    /// `states` counted, for every event.
    counts: StateCounts,
    /// The ledger rows of the tenants in flight in a recorded run (a finished tenant's row is sent and dropped).
    rows: HashMap<usize, TenantUpdate>,
    /// See [`FleetRequest::at_target`]: those not reported yet, the lowest index last (reported from the end).
    at_target: Vec<(usize, Arc<[RevisionId]>)>,
    /// How many tenants the run knew at their target when it began: they ran nothing, so the failure rate
    /// leaves them out (95,000 of them must not hide 5,000 failures).
    n_known_at_target: usize,
    n_canaries: usize,
    n_canaries_left: usize,
    concurrency: usize,
    pacer: Option<Pacer>,
    max_failures: Option<usize>,
    max_failure_rate: Option<f64>,
    lock_requeue_for: Duration,
    ready: ReadyQueue,
    /// Tenants put back after lock contention whose [`Input::Due`] has not come yet.
    n_delayed: usize,
    first_locked: HashMap<usize, Instant>,
    in_flight: BTreeMap<usize, Flight>,
    /// Tenants in flight with a connection (their statements can be cancelled).
    connected: BTreeSet<usize>,
    is_stopping: bool,
    is_finishing: bool,
    rate_wait_since: Option<Instant>,
    n_finished: usize,
    n_failed: usize,
    /// `Some` for a [`Source::Claims`] run.
    claims: Option<Claims>,
    /// `Some` for a run in waves.
    waves: Option<WaveState>,
    outcome: FleetOutcome,
}

impl Coordinator {
    /// The coordinator for `req` (its `pinned` targets and limits go to the workers, not here).
    pub(super) fn new(req: FleetRequest, server_names: Vec<String>) -> Coordinator {
        let n = req.tenants.len();
        let n_canaries = req.n_canaries.min(n);
        let claims = match req.source {
            Source::Local => None,
            Source::Claims { poll } => Some(Claims {
                poll,
                is_asking: false,
                state: ClaimState::More,
                next_at: None,
                claimed: vec![false; n],
            }),
        };
        Coordinator {
            run_id: req.run_id,
            command: req
                .shown_as
                .as_ref()
                .map_or(req.action.command(), |(command, _)| command),
            target: req.shown_as.map_or_else(|| req.action.target(), |(_, target)| target),
            tenants: req.tenants,
            server_names,
            states: vec![TenantStatus::Pending; n],
            counts: StateCounts {
                n_tenants: n,
                by_status: StatusCounts {
                    pending: n,
                    ..StatusCounts::default()
                },
            },
            rows: HashMap::new(),
            n_known_at_target: req.at_target.len(),
            at_target: {
                let mut at_target: Vec<_> = req.at_target.into_iter().collect();
                at_target.sort_unstable_by_key(|(index, _)| std::cmp::Reverse(*index));
                at_target
            },
            n_canaries,
            // Claimed runs leave the canary phase to the ledger, which sees every runner's canaries.
            n_canaries_left: if claims.is_some() { 0 } else { n_canaries },
            concurrency: req.concurrency.max(1),
            pacer: req.rate.and_then(|rate| Pacer::new(rate, Instant::now())),
            max_failures: req.max_failures,
            max_failure_rate: req.max_failure_rate,
            lock_requeue_for: req.lock_requeue_for,
            ready: ReadyQueue::new(if claims.is_some() { 0 } else { n }),
            n_delayed: 0,
            first_locked: HashMap::new(),
            in_flight: BTreeMap::new(),
            connected: BTreeSet::new(),
            is_stopping: false,
            is_finishing: false,
            rate_wait_since: None,
            n_finished: 0,
            n_failed: 0,
            claims,
            waves: req.waves.map(|run| WaveState {
                n_finished: vec![0; run.waves.len()],
                n_failed: vec![0; run.waves.len()],
                run,
                current: 0,
                opening: Opening::Open,
            }),
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
        }
    }

    pub(super) fn tenant(&self, index: usize) -> &Tenant {
        &self.tenants[index]
    }

    /// Tenant ids to their indices, for claimed runs (the ledger hands out ids).
    pub(super) fn tenant_indices(&self) -> HashMap<String, usize> {
        self.tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i))
            .collect()
    }

    /// Whether a ledger failure was already reported (the shell stops asking the ledger writer).
    pub(super) fn has_ledger_failure(&self) -> bool {
        self.outcome.ledger_failure.is_some()
    }

    /// Decide what `input` means at `now`: then start what the limits allow, or finish when nothing is left.
    pub(super) fn handle(&mut self, input: Input, now: Instant) -> Vec<Decision> {
        let mut out = Vec::new();
        if self.is_finishing {
            return out;
        }
        match input {
            Input::Begin => {
                let started = FleetEvent::RunStarted {
                    run_id: self.run_id.clone(),
                    command: self.command.to_string(),
                    target: self.target.clone(),
                    n_tenants: self.tenants.len(),
                    concurrency: self.concurrency,
                    at: SystemTime::now(),
                };
                self.emit(started, &mut out);
                self.announce_wave(&mut out);
            }
            Input::Worker(msg) => self.on_message(msg, now, &mut out),
            Input::Connected { index } => {
                if self.in_flight.contains_key(&index) {
                    self.connected.insert(index);
                }
            }
            Input::Exited { index, attempt, panic } => self.on_exit(index, attempt, panic, &mut out),
            Input::Due { index, attempt } => {
                self.n_delayed -= 1;
                self.ready.push_front((index, attempt));
            }
            Input::Wake => {}
            Input::Signal => self.on_signal(&mut out),
            Input::Tick { open } => {
                for (server, open) in self.server_names.clone().into_iter().zip(open) {
                    self.emit(FleetEvent::Connections { server, open }, &mut out);
                }
            }
            Input::Claimed { tenants, state } => self.on_claimed(tenants, state, now, &mut out),
            Input::Rate(rate) => self.pacer = Pacer::new(rate, now),
            Input::WaveGate { wave, result } => self.on_wave_gate(wave, result, &mut out),
            Input::LedgerFailed(e) => {
                if self.outcome.ledger_failure.is_none() {
                    tracing::error!(
                        "{e}; no new tenants start, and tenants in flight stop after their current revision"
                    );
                    self.outcome.ledger_failure = Some(e);
                    if !self.is_stopping {
                        self.is_stopping = true;
                        out.push(Decision::Stop);
                    }
                }
            }
        }
        self.report_at_target(now, &mut out);
        self.check_wave(now, &mut out);
        self.dispatch(now, &mut out);
        self.ask_for_more(now, &mut out);
        let is_claimed_out = self
            .claims
            .as_ref()
            .is_none_or(|c| c.state == ClaimState::Done && !c.is_asking);
        let is_drained = self.ready.is_empty() && self.n_delayed == 0 && is_claimed_out;
        // The tenants known at their target are all reported, even after a signal: the ledger has them skipped.
        let is_reported = self.at_target.is_empty();
        if self.in_flight.is_empty() && is_reported && (is_drained || self.is_stopping || self.outcome.is_halted) {
            self.is_finishing = true;
            out.push(Decision::Finish);
        }
        out
    }

    /// Report the next [`SKIP_REPORT_BATCH`] tenants known to be at their target as skipped (events in bounded
    /// batches, so 100,000 of them are never held as decisions at once), and ask to be woken for the next.
    fn report_at_target(&mut self, now: Instant, out: &mut Vec<Decision>) {
        if self.at_target.is_empty() {
            return;
        }
        for _ in 0..SKIP_REPORT_BATCH {
            let Some((index, at)) = self.at_target.pop() else {
                break;
            };
            self.outcome.n_skipped += 1;
            self.count_finished(index, TenantStatus::Skipped);
            let tenant = TenantId::from(self.tenants[index].id.as_str());
            self.emit(
                FleetEvent::TenantSkipped {
                    tenant,
                    at: at.to_vec(),
                },
                out,
            );
            self.after_finish(index, out);
        }
        if self.at_target.is_empty() {
            self.at_target = Vec::new();
        } else {
            out.push(Decision::WakeAt(now));
        }
    }

    /// Start as many tenants as the concurrency, the canary phase and the start rate allow right now (once the
    /// tenants known at their target are reported).
    fn dispatch(&mut self, now: Instant, out: &mut Vec<Decision>) {
        while !self.is_stopping && !self.outcome.is_halted && self.at_target.is_empty() {
            let Some((index, attempt)) = self.ready.front() else {
                break;
            };
            // Reported already (known at its target).
            if self.states[index] != TenantStatus::Pending {
                self.ready.pop_front();
                continue;
            }
            // During the canary phase only canaries start.
            if self.n_canaries_left > 0 && index >= self.n_canaries {
                break;
            }
            // Only the open wave's tenants start.
            if let Some(w) = &self.waves {
                if w.opening != Opening::Open || index >= w.run.waves.ends[w.current] {
                    break;
                }
            }
            if self.in_flight.len() >= self.concurrency {
                break;
            }
            if let Some(pacer) = &mut self.pacer {
                if let Err(at) = pacer.take(now) {
                    self.rate_wait_since.get_or_insert(now);
                    out.push(Decision::WakeAt(at));
                    break;
                }
            }
            if let Some(since) = self.rate_wait_since.take() {
                let waited = now.saturating_duration_since(since);
                self.emit(FleetEvent::RateLimited { waited }, out);
            }
            self.ready.pop_front();
            self.set_state(index, TenantStatus::Running);
            self.in_flight.insert(
                index,
                Flight {
                    first_attempt: attempt,
                    attempt,
                },
            );
            out.push(Decision::Start { index, attempt });
        }
    }

    /// Ask the ledger for more tenants when the ready queue runs low and the ledger may have some.
    fn ask_for_more(&mut self, now: Instant, out: &mut Vec<Decision>) {
        let n_ready = self.ready.len();
        let n_in_flight = self.in_flight.len();
        let concurrency = self.concurrency;
        let is_open = !self.is_stopping && !self.outcome.is_halted;
        let Some(claims) = &mut self.claims else {
            return;
        };
        if !is_open || claims.is_asking || n_ready >= concurrency {
            return;
        }
        match claims.state {
            ClaimState::Done | ClaimState::Halted => return,
            ClaimState::Wait if claims.next_at.is_some_and(|at| now < at) => return,
            ClaimState::More | ClaimState::Wait => {}
        }
        // Enough for the free slots and as many again, so a finishing worker finds the next tenant ready.
        let max = (2 * concurrency).saturating_sub(n_ready + n_in_flight).max(1);
        claims.is_asking = true;
        claims.next_at = None;
        out.push(Decision::Claim { max });
    }

    fn on_claimed(
        &mut self,
        tenants: Vec<(usize, Option<Vec<RevisionId>>)>,
        state: ClaimState,
        now: Instant,
        out: &mut Vec<Decision>,
    ) {
        let Some(claims) = &mut self.claims else {
            return;
        };
        claims.is_asking = false;
        claims.state = state;
        for (index, pinned) in tenants {
            if index >= claims.claimed.len() || self.in_flight.contains_key(&index) {
                continue;
            }
            claims.claimed[index] = true;
            if let Some(rows) = pinned {
                out.push(Decision::Pin { index, rows });
            }
            self.ready.push_back((index, 1));
        }
        match state {
            ClaimState::Wait => {
                let at = now + claims.poll;
                claims.next_at = Some(at);
                out.push(Decision::WakeAt(at));
            }
            ClaimState::Halted if !self.outcome.is_halted => {
                tracing::error!("another runner halted the run: no new tenants start");
                self.outcome.is_halted = true;
                let halted = FleetEvent::RunHalted {
                    reason: HaltReason::OtherRunner,
                    tenant: None,
                    error: None,
                };
                self.emit(halted, out);
            }
            _ => {}
        }
    }

    /// First signal: stop starting tenants and stop each in-flight tenant after its current revision. Any later
    /// one (or the first after a ledger failure already stopped the run): also cancel the statements in flight.
    fn on_signal(&mut self, out: &mut Vec<Decision>) {
        if !self.is_stopping {
            self.is_stopping = true;
            tracing::warn!("interrupted: no new tenants start; tenants in flight stop after their current revision (signal again to cancel them)");
            out.push(Decision::Stop);
            return;
        }
        tracing::warn!(
            n = self.connected.len(),
            "interrupted again: cancelling the statements in flight"
        );
        out.push(Decision::CancelStatements(self.connected.iter().copied().collect()));
    }

    /// A worker task ended. One that sent its outcome is already accounted for; one that panicked (or ended
    /// without an outcome) fails its tenant, so the run never waits for it.
    fn on_exit(&mut self, index: usize, attempt: u32, panic: Option<String>, out: &mut Vec<Decision>) {
        let Some(flight) = self.in_flight.get(&index) else {
            return;
        };
        if flight.first_attempt != attempt {
            return;
        }
        let attempts = flight.attempt;
        self.in_flight.remove(&index);
        self.connected.remove(&index);
        let error = match panic {
            Some(message) => format!("the worker panicked: {message}"),
            None => "the worker ended without an outcome".to_string(),
        };
        tracing::error!(tenant = %self.tenants[index].id, "{error}");
        self.fail(index, error, FailureKind::Panic, attempts, out);
        self.after_finish(index, out);
    }

    fn on_message(&mut self, msg: WorkerMsg, now: Instant, out: &mut Vec<Decision>) {
        // An outage belongs to a server, not to the tenant whose probe found it over.
        if let WorkerMsg::ServerRecovered {
            server, down, n_waited, ..
        } = msg
        {
            self.emit(FleetEvent::ServerOutage { server, down, n_waited }, out);
            return;
        }
        if let WorkerMsg::ServerHealth { server, change, .. } = msg {
            let event = match change {
                crate::fleet::health::Change::Paused(reason) => {
                    tracing::warn!(server = %server, "pausing the server's tenants: {reason}");
                    FleetEvent::ServerPaused { server, reason }
                }
                crate::fleet::health::Change::Resumed(paused) => {
                    tracing::info!(server = %server, "resuming the server's tenants after {}", crate::observe::human::duration(paused));
                    FleetEvent::ServerResumed { server, paused }
                }
            };
            self.emit(event, out);
            return;
        }
        let index = msg_index(&msg);
        // A message from a worker that no longer counts (its tenant failed when it panicked) changes nothing.
        let Some(flight) = self.in_flight.get_mut(&index) else {
            return;
        };
        let tenant = TenantId::from(self.tenants[index].id.as_str());
        let event = match msg {
            WorkerMsg::Started { attempt, .. } => {
                flight.attempt = attempt;
                self.record(index, out, |row| {
                    row.status = TenantStatus::Running;
                    row.attempts = attempt;
                });
                let server = self.server_names[self.tenants[index].server].clone();
                FleetEvent::TenantStarted {
                    tenant,
                    server,
                    attempt,
                }
            }
            WorkerMsg::Connected { .. } => {
                self.connected.insert(index);
                return;
            }
            WorkerMsg::Planned { from, to, steps, .. } => {
                self.record(index, out, |row| {
                    row.from_revision = rows_column(&from);
                    row.to_revision = rows_column(&from);
                    row.target_revision = Some(crate::ledger::rows_text(&to));
                });
                FleetEvent::TenantPlanned {
                    tenant,
                    from,
                    to,
                    n_steps: steps.len(),
                }
            }
            WorkerMsg::RevisionStarted {
                revision, direction, ..
            } => FleetEvent::RevisionStarted {
                tenant,
                revision,
                direction,
            },
            WorkerMsg::RevisionApplied {
                revision,
                direction,
                elapsed,
                ..
            } => FleetEvent::RevisionApplied {
                tenant,
                revision,
                direction,
                duration: elapsed,
            },
            WorkerMsg::BackfillProgress {
                revision,
                rows_done,
                rows_estimated,
                ..
            } => FleetEvent::BackfillProgress {
                tenant,
                revision,
                rows_done,
                rows_estimated,
            },
            WorkerMsg::Retrying {
                attempt,
                failure,
                delay,
                ..
            } => {
                flight.attempt = attempt;
                self.record(index, out, |row| {
                    row.error = Some(failure.message.clone());
                    row.error_kind = Some(failure.reason.to_string());
                    row.sqlstate = failure.sqlstate.clone();
                    row.attempts = attempt;
                });
                FleetEvent::TenantRetrying {
                    tenant,
                    attempt,
                    reason: failure.reason,
                    error: failure.message,
                    sqlstate: failure.sqlstate,
                    delay,
                }
            }
            WorkerMsg::Done { outcome, .. } => {
                self.in_flight.remove(&index);
                self.connected.remove(&index);
                self.on_done(index, outcome, now, out);
                return;
            }
            WorkerMsg::ServerRecovered { .. } | WorkerMsg::ServerHealth { .. } => return,
        };
        self.emit(event, out);
    }

    fn on_done(&mut self, index: usize, outcome: Outcome, now: Instant, out: &mut Vec<Decision>) {
        let tenant = TenantId::from(self.tenants[index].id.as_str());
        let event = match outcome {
            Outcome::Locked { attempts } => {
                // Put back, not retried: the ledger keeps the tenant this runner's (running) meanwhile.
                self.set_state(index, TenantStatus::Pending);
                let error = "another run holds this tenant's migration lock; trying again later in the run";
                self.record(index, out, |row| {
                    row.error = Some(error.to_string());
                    row.error_kind = Some(FailureKind::Locked.to_string());
                    row.sqlstate = None;
                    row.attempts = attempts;
                });
                let retrying = FleetEvent::TenantRetrying {
                    tenant,
                    attempt: attempts,
                    reason: FailureKind::Locked,
                    error: error.into(),
                    sqlstate: None,
                    delay: Duration::ZERO,
                };
                self.emit(retrying, out);
                let since = *self.first_locked.entry(index).or_insert(now);
                if now.saturating_duration_since(since) >= self.lock_requeue_for {
                    let error = format!(
                        "another run held this tenant's migration lock for longer than {}",
                        crate::observe::human::duration(self.lock_requeue_for)
                    );
                    self.fail(index, error, FailureKind::Locked, attempts, out);
                    self.after_finish(index, out);
                } else {
                    let delay = Duration::from_millis(200 * u64::from(attempts.min(10)));
                    self.n_delayed += 1;
                    out.push(Decision::Requeue {
                        index,
                        attempt: attempts + 1,
                        at: now + delay,
                    });
                }
                return;
            }
            Outcome::Succeeded {
                from,
                to,
                n_steps,
                attempts,
                elapsed,
            } => {
                self.outcome.n_succeeded += 1;
                self.settle(index, TenantStatus::Succeeded, out, |row| {
                    row.from_revision = rows_column(&from);
                    row.to_revision = rows_column(&to);
                    row.attempts = attempts;
                    row.duration_ms = Some(elapsed.as_millis() as u64);
                    row.error = None;
                    row.error_kind = None;
                    row.sqlstate = None;
                    row.failed_revision = None;
                });
                FleetEvent::TenantSucceeded {
                    tenant,
                    from,
                    to,
                    n_steps,
                    attempts,
                    duration: elapsed,
                }
            }
            Outcome::Skipped { at, .. } => self.skipped(index, tenant, at, out),
            Outcome::Planned { from, steps } => {
                self.outcome.planned.push((index, from.clone(), steps));
                self.skipped(index, tenant, from, out)
            }
            Outcome::Failed {
                from,
                to,
                failure,
                attempts,
                elapsed,
            } => {
                self.n_failed += 1;
                self.outcome.n_failed += 1;
                self.outcome.failed.push((index, failure.message.clone()));
                self.settle(index, TenantStatus::Failed, out, |row| {
                    row.from_revision = rows_column(&from);
                    row.to_revision = rows_column(&to);
                    row.failed_revision = failure.failed_revision.as_ref().map(|r| r.to_string());
                    row.error = Some(failure.message.clone());
                    row.error_kind = Some(failure.reason.to_string());
                    row.sqlstate = failure.sqlstate.clone();
                    row.attempts = attempts;
                    row.duration_ms = Some(elapsed.as_millis() as u64);
                });
                FleetEvent::TenantFailed {
                    tenant,
                    from,
                    to,
                    failed_revision: failure.failed_revision,
                    error: failure.message,
                    error_kind: failure.reason,
                    sqlstate: failure.sqlstate,
                    attempts,
                    duration: elapsed,
                }
            }
            Outcome::Interrupted { from, to, .. } => {
                self.outcome.n_interrupted += 1;
                self.settle(index, TenantStatus::Interrupted, out, |row| {
                    if !from.is_empty() || !to.is_empty() {
                        row.from_revision = rows_column(&from);
                        row.to_revision = rows_column(&to);
                    }
                });
                FleetEvent::TenantInterrupted { tenant, from, to }
            }
        };
        self.emit(event, out);
        self.after_finish(index, out);
    }

    /// Tenant `index` was already at its target (or, in a dry run, planned): skipped.
    fn skipped(&mut self, index: usize, tenant: TenantId, at: Vec<RevisionId>, out: &mut Vec<Decision>) -> FleetEvent {
        self.outcome.n_skipped += 1;
        self.settle(index, TenantStatus::Skipped, out, |row| {
            row.from_revision = rows_column(&at);
            row.to_revision = rows_column(&at);
            row.error = None;
            row.error_kind = None;
            row.sqlstate = None;
        });
        FleetEvent::TenantSkipped { tenant, at }
    }

    /// Fail tenant `index` for a reason of the coordinator's own (lock contention past the deadline, a panic).
    fn fail(&mut self, index: usize, error: String, error_kind: FailureKind, attempts: u32, out: &mut Vec<Decision>) {
        self.n_failed += 1;
        self.outcome.n_failed += 1;
        self.outcome.failed.push((index, error.clone()));
        self.settle(index, TenantStatus::Failed, out, |row| {
            row.error = Some(error.clone());
            row.error_kind = Some(error_kind.to_string());
            row.sqlstate = None;
            row.attempts = attempts;
        });
        let failed = FleetEvent::TenantFailed {
            tenant: TenantId::from(self.tenants[index].id.as_str()),
            from: Vec::new(),
            to: Vec::new(),
            failed_revision: None,
            error,
            error_kind,
            sqlstate: None,
            attempts,
            duration: Duration::ZERO,
        };
        self.emit(failed, out);
    }

    /// Tenant `index` reached its final `state`: count it, and send its last ledger row, changed by `change`.
    fn settle(
        &mut self,
        index: usize,
        state: TenantStatus,
        out: &mut Vec<Decision>,
        change: impl FnOnce(&mut TenantUpdate),
    ) {
        self.count_finished(index, state);
        self.record(index, out, |row| {
            row.status = state;
            change(row);
        });
        self.rows.remove(&index);
    }

    /// Tenant `index` reached its final `state`: count it for the run and its wave.
    fn count_finished(&mut self, index: usize, state: TenantStatus) {
        self.set_state(index, state);
        self.n_finished += 1;
        if let Some(w) = &mut self.waves {
            let wave = w.run.waves.wave_of(index);
            w.n_finished[wave] += 1;
            if state == TenantStatus::Failed {
                w.n_failed[wave] += 1;
            }
        }
    }

    fn set_state(&mut self, index: usize, to: TenantStatus) {
        let from = std::mem::replace(&mut self.states[index], to);
        if from != to {
            self.counts.by_status.move_one(from, to);
        }
    }

    /// Change the ledger row of tenant `index` and send it whole (a recorded run only).
    fn record(&mut self, index: usize, out: &mut Vec<Decision>, change: impl FnOnce(&mut TenantUpdate)) {
        if self.claims.is_none() {
            return;
        }
        let row = self
            .rows
            .entry(index)
            .or_insert_with(|| TenantUpdate::new(self.tenants[index].id.as_str(), TenantStatus::Running));
        change(row);
        out.push(Decision::Record(row.clone()));
    }

    /// Hand `event` to the sinks with the counts as they stand now.
    fn emit(&self, event: FleetEvent, out: &mut Vec<Decision>) {
        out.push(Decision::Emit(RunEvent {
            event,
            counts: self.counts,
        }));
    }

    /// After a tenant reached its final state: count a finished canary (one of the first `n_canaries`; a failed
    /// one halts the run), and halt when the failure threshold is passed.
    fn after_finish(&mut self, index: usize, out: &mut Vec<Decision>) {
        if index < self.n_canaries {
            self.n_canaries_left = self.n_canaries_left.saturating_sub(1);
            if self.states[index] == TenantStatus::Failed {
                tracing::error!(tenant = %self.tenants[index].id, "canary failed: halting before the rest of the fleet");
                self.halt(HaltReason::Canary, index, out);
            }
        }
        if self.exceeds_threshold() && !self.outcome.is_halted {
            tracing::error!(
                failed = self.n_failed,
                "failure threshold exceeded: no new tenants start"
            );
            let reason = HaltReason::FailureThreshold {
                n_failed: self.n_failed,
                n_finished: self.n_ran(),
            };
            self.halt(reason, index, out);
        }
    }

    /// This runner halts the run because of tenant `index`.
    fn halt(&mut self, reason: HaltReason, index: usize, out: &mut Vec<Decision>) {
        let tenant = Some(TenantId::from(self.tenants[index].id.as_str()));
        let error = self.last_error(index);
        self.halt_for(reason, tenant, error, out);
    }

    fn halt_for(
        &mut self,
        reason: HaltReason,
        tenant: Option<TenantId>,
        error: Option<String>,
        out: &mut Vec<Decision>,
    ) {
        self.outcome.is_halted = true;
        let halted = FleetEvent::RunHalted { reason, tenant, error };
        self.emit(halted, out);
        if self.claims.is_some() {
            out.push(Decision::HaltRun);
        }
    }

    /// Announce the open wave.
    fn announce_wave(&self, out: &mut Vec<Decision>) {
        if let Some(w) = &self.waves {
            tracing::info!(
                "wave {}/{} ({}): {} starting",
                w.run.waves.number(w.current),
                w.run.waves.of,
                w.run.waves.names[w.current],
                crate::observe::count(w.run.waves.size(w.current), "tenant")
            );
            let started = FleetEvent::WaveStarted {
                wave: w.run.waves.number(w.current),
                n_waves: w.run.waves.of,
                name: w.run.waves.names[w.current].clone(),
                n_tenants: w.run.waves.size(w.current),
            };
            self.emit(started, out);
        }
    }

    /// When the open wave has finished: halt if too many of its tenants failed, else pause, then ask the gate
    /// command, then open the next wave.
    fn check_wave(&mut self, now: Instant, out: &mut Vec<Decision>) {
        if self.is_stopping || self.outcome.is_halted {
            return;
        }
        let Some(w) = &mut self.waves else {
            return;
        };
        let current = w.current;
        if w.opening == Opening::Open {
            let size = w.run.waves.size(current);
            if current + 1 >= w.run.waves.len() || w.n_finished[current] < size {
                return;
            }
            let n_failed = w.n_failed[current];
            if n_failed as f64 > w.run.max_failure_rate * size as f64 {
                let wave = w.run.waves.number(current);
                tracing::error!(wave, n_failed, "the wave's failure gate stopped the run");
                let reason = HaltReason::WaveFailed {
                    wave,
                    n_failed,
                    n_tenants: size,
                };
                self.halt_for(reason, None, None, out);
                return;
            }
            let at = now + w.run.pause;
            w.opening = Opening::Pausing(at);
            if !w.run.pause.is_zero() {
                tracing::info!(
                    wave = w.run.waves.number(current + 1),
                    "wave {} finished; the next wave starts after the pause",
                    w.run.waves.number(current)
                );
                out.push(Decision::WakeAt(at));
                return;
            }
        }
        if let Opening::Pausing(at) = w.opening {
            if now < at {
                return;
            }
            if w.run.has_gate {
                w.opening = Opening::Asking;
                out.push(Decision::RunWaveGate {
                    wave: w.run.waves.number(current + 1),
                });
            } else {
                self.open_next_wave(out);
            }
        }
    }

    fn on_wave_gate(&mut self, wave: usize, result: Result<(), String>, out: &mut Vec<Decision>) {
        let Some(w) = &self.waves else {
            return;
        };
        if w.opening != Opening::Asking || wave != w.run.waves.number(w.current + 1) {
            return;
        }
        match result {
            Ok(()) => self.open_next_wave(out),
            Err(error) => {
                tracing::error!(wave, "the wave gate refused the next wave: {error}");
                self.halt_for(HaltReason::WaveGateRefused { wave }, None, Some(error), out);
            }
        }
    }

    fn open_next_wave(&mut self, out: &mut Vec<Decision>) {
        if let Some(w) = &mut self.waves {
            w.current += 1;
            w.opening = Opening::Open;
        }
        self.announce_wave(out);
    }

    /// Tenants finished, less those reported at their target as the run began.
    fn n_ran(&self) -> usize {
        self.n_finished - (self.n_known_at_target - self.at_target.len())
    }

    fn exceeds_threshold(&self) -> bool {
        if self.max_failures.is_some_and(|max| self.n_failed > max) {
            return true;
        }
        match self.max_failure_rate {
            Some(rate) => {
                let n_ran = self.n_ran();
                let min_finished = (self.tenants.len() - self.n_known_at_target).min(20);
                n_ran >= min_finished && n_ran > 0 && (self.n_failed as f64 / n_ran as f64) > rate
            }
            None => false,
        }
    }

    /// The failure message recorded for tenant `index`, if it failed.
    fn last_error(&self, index: usize) -> Option<String> {
        self.outcome
            .failed
            .iter()
            .rev()
            .find(|(i, _)| *i == index)
            .map(|(_, e)| e.clone())
    }

    /// After [`Decision::Finish`] and the sinks' sync: count the tenants that never started, decide the exit code
    /// (`ledger_failure` is the ledger writer's health after its sync) and return the closing event.
    pub(super) fn finish(&mut self, ledger_failure: Option<String>) -> RunEvent {
        // Tenants that never started (stopped, halted) stay pending: "not started", and retry picks them up. A
        // claimed run counts those it claimed, and, unless the ledger said every tenant is done, those it never
        // got to claim (exact for a lone runner; with other runners, some of those may be theirs).
        let is_pending = |i: &usize| self.states[*i] == TenantStatus::Pending;
        self.outcome.n_not_started = match &self.claims {
            Some(c) if c.state == ClaimState::Done => (0..self.states.len())
                .filter(|i| c.claimed[*i] && is_pending(i))
                .count(),
            _ => (0..self.states.len()).filter(is_pending).count(),
        };
        if self.outcome.ledger_failure.is_none() {
            self.outcome.ledger_failure = ledger_failure;
        }
        // Tenants left pending that this runner never started are other runners' (a shared run): not this run's.
        let n_elsewhere = self.counts.pending.saturating_sub(self.outcome.n_not_started);
        self.counts.n_tenants -= n_elsewhere;
        self.counts.by_status.pending -= n_elsewhere;
        let o = &mut self.outcome;
        o.exit_code = if o.ledger_failure.is_some() {
            ExitCode::LedgerFailed
        } else if self.is_stopping {
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
        RunEvent {
            event: FleetEvent::RunFinished {
                run_id: self.run_id.clone(),
                succeeded: o.n_succeeded,
                failed: o.n_failed,
                skipped: o.n_skipped,
                interrupted: o.n_interrupted,
                not_started: o.n_not_started,
                exit_code: o.exit_code.code(),
                at: SystemTime::now(),
            },
            counts: self.counts,
        }
    }

    /// The run's own closing record failed: it must not end with exit 0 while the ledger shows it unfinished.
    pub(super) fn closing_failed(&mut self, e: String) {
        if self.outcome.ledger_failure.is_none() {
            self.outcome.ledger_failure = Some(e);
            self.outcome.exit_code = ExitCode::LedgerFailed;
        }
    }

    /// How many waves the run shows (1 for a run without waves; a retry shows its first run's count).
    pub(super) fn n_waves(&self) -> usize {
        self.waves.as_ref().map_or(1, |w| w.run.waves.of)
    }

    /// The exit code [`Coordinator::finish`] decided.
    pub(super) fn exit_code(&self) -> ExitCode {
        self.outcome.exit_code
    }

    pub(super) fn into_outcome(self) -> FleetOutcome {
        self.outcome
    }
}

fn msg_index(msg: &WorkerMsg) -> usize {
    match msg {
        WorkerMsg::Started { index, .. }
        | WorkerMsg::Connected { index, .. }
        | WorkerMsg::Planned { index, .. }
        | WorkerMsg::RevisionStarted { index, .. }
        | WorkerMsg::RevisionApplied { index, .. }
        | WorkerMsg::BackfillProgress { index, .. }
        | WorkerMsg::Retrying { index, .. }
        | WorkerMsg::Done { index, .. }
        | WorkerMsg::ServerHealth { index, .. }
        | WorkerMsg::ServerRecovered { index, .. } => *index,
    }
}

/// Version rows as the ledger's `from_revision`/`to_revision` hold them: comma-joined, `None` for none.
/// governor's clock for the coordinator: the instant `handle` was given, so the rate decision stays synchronous
/// and tests drive time.
#[derive(Debug, Clone)]
struct GivenClock(Arc<Mutex<Instant>>);

impl governor::clock::Clock for GivenClock {
    type Instant = Instant;

    fn now(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type StartLimiter = governor::RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    GivenClock,
    governor::middleware::NoOpMiddleware<Instant>,
>;

/// The fleet-wide start rate: governor's cell rate algorithm with a burst of one, one start per period.
struct Pacer {
    clock: GivenClock,
    limiter: StartLimiter,
}

impl Pacer {
    /// `None` for a rate that allows every start at once (zero, negative, or too high to measure).
    fn new(rate: f64, now: Instant) -> Option<Pacer> {
        if rate.is_nan() || rate <= 0.0 {
            return None;
        }
        let period = Duration::try_from_secs_f64(1.0 / rate).ok()?;
        let quota = governor::Quota::with_period(period)?;
        let clock = GivenClock(Arc::new(Mutex::new(now)));
        let limiter = governor::RateLimiter::direct_with_clock(quota, clock.clone());
        Some(Pacer { clock, limiter })
    }

    /// Take a start at `now`, or say when the next one is allowed.
    fn take(&mut self, now: Instant) -> Result<(), Instant> {
        *self.clock.0.lock().unwrap_or_else(|p| p.into_inner()) = now;
        self.limiter.check().map_err(|not_until| not_until.earliest_possible())
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

    /// Add a tenant after every other (a claimed one; claimed runs start with an empty cursor).
    fn push_back(&mut self, tenant: (usize, u32)) {
        self.requeued.push_back(tenant);
    }

    fn len(&self) -> usize {
        self.requeued.len() + self.n.saturating_sub(self.next)
    }

    fn is_empty(&self) -> bool {
        self.requeued.is_empty() && self.next >= self.n
    }
}

#[cfg(test)]
pub(super) mod tests;
