//! The coordinator's async shell: the only place that waits. It turns worker messages, worker exits (a
//! `JoinSet`), requeue and rate timers, the connection tick, signals and the ledger writer's health into
//! [`Input`]s for the state machine, and carries its [`Decision`]s out: spawning workers, feeding sinks, writing
//! the ledger rows it decided, stopping and cancelling. It decides nothing itself.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use super::state::{Coordinator, Decision, FleetOutcome, FleetRequest, Input};
use crate::fleet::record::{LedgerQueue, LedgerWriter};
use crate::fleet::server::Server;
use crate::fleet::tenant::Tenant;
use crate::fleet::worker::{run_tenant, Engine, WorkerCtx, WorkerMsg};
use crate::ledger::Claim;
use crate::observe::{Fanout, Sink};
use crate::revision::RevisionId;
use crate::signals::{SignalSource, Signals};

/// Run the fleet to its end, stopped by SIGINT and SIGTERM. Never returns an error: every tenant's fate is in
/// the events and the outcome.
pub async fn run(
    req: FleetRequest,
    engine: Arc<Engine>,
    servers: Vec<Arc<Server>>,
    sinks: Vec<Box<dyn Sink>>,
) -> FleetOutcome {
    run_with_signals(req, engine, servers, sinks, Signals::new()).await
}

/// [`run`], interrupted by `signals` instead of the process's signals.
pub async fn run_with_signals(
    mut req: FleetRequest,
    engine: Arc<Engine>,
    servers: Vec<Arc<Server>>,
    sinks: Vec<Box<dyn Sink>>,
    signals: impl SignalSource,
) -> FleetOutcome {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::unbounded_channel();
    let pinned = Arc::new(RwLock::new(std::mem::take(&mut req.pinned)));
    let ledger = req.ledger.take();
    let rate_share = req.rate_share.take();
    let wave_gate = req.wave_gate.take().map(|command| WaveGateCommand {
        command,
        run_id: req.run_id.clone(),
    });
    let ctx = Arc::new(WorkerCtx {
        engine,
        action: req.action.clone(),
        is_dry_run: req.is_dry_run,
        limits: req.limits.clone(),
        stop: stop.clone(),
        tx,
        pinned: pinned.clone(),
        shared_done: servers.iter().map(|_| tokio::sync::Mutex::new(None)).collect(),
    });
    let state = Coordinator::new(req, servers.iter().map(|s| s.name.clone()).collect());
    let worker_servers = servers.clone();
    let launch = move |start: Launch| {
        let server = worker_servers[start.tenant.server].clone();
        run_tenant(
            ctx.clone(),
            server,
            Arc::new(start.tenant),
            start.index,
            start.attempt,
            start.cancel,
        )
    };
    let mut shell = Shell::new(servers, sinks, signals, stop);
    if let Some(ledger) = ledger {
        shell = shell.with_ledger(ledger, &state, pinned);
    }
    shell.rate_share = rate_share;
    shell.wave_gate = wave_gate;
    shell.drive(state, rx, launch).await
}

/// A claimed run's link to the ledger: claims go out through `queue`, and claimed tenant ids come back as
/// indices of this runner's tenant list.
struct Claiming {
    queue: LedgerQueue,
    index_of: HashMap<String, usize>,
    /// The claim asked for and not answered yet.
    asking: Option<tokio::sync::oneshot::Receiver<Result<Claim, String>>>,
    /// Shared with the workers: targets the run resolved earlier, by tenant index.
    pinned: Arc<RwLock<BTreeMap<usize, Vec<RevisionId>>>>,
}

impl Claiming {
    /// The ledger's answer as an input; tenants this runner does not know are left to other runners.
    fn input_of(&self, answer: Result<Result<Claim, String>, tokio::sync::oneshot::error::RecvError>) -> Input {
        let claim = match answer {
            Ok(Ok(claim)) => claim,
            Ok(Err(e)) => return Input::LedgerFailed(format!("the ledger could not hand out tenants: {e}")),
            Err(_) => return Input::LedgerFailed("the ledger writer thread stopped".to_string()),
        };
        let mut tenants = Vec::with_capacity(claim.tenants.len());
        for t in claim.tenants {
            let Some(&index) = self.index_of.get(&t.tenant_id) else {
                tracing::error!(
                    tenant = %t.tenant_id,
                    "the run has a tenant this runner's tenants file does not list: left for another runner"
                );
                continue;
            };
            let rows = t
                .target_revision
                .as_deref()
                .map(|text| crate::ledger::rows_of(text).into_iter().map(RevisionId::new).collect());
            tenants.push((index, rows));
        }
        Input::Claimed {
            tenants,
            state: claim.state,
        }
    }
}

/// What a worker is started with.
pub(super) struct Launch {
    pub index: usize,
    pub attempt: u32,
    pub tenant: Tenant,
    /// Cancelled when the run stops, so a worker sleeping or waiting hears it at once.
    pub cancel: CancellationToken,
}

pub(super) struct Shell<S> {
    servers: Vec<Arc<Server>>,
    sinks: Fanout,
    /// A recorded run's ledger.
    ledger: Option<LedgerWriter>,
    signals: S,
    /// What the executor checks between revisions (it takes a flag, not a token).
    stop: Arc<AtomicBool>,
    /// The parent of every worker's token.
    cancel: CancellationToken,
    /// By tenant index: the cancel token of its connection, for the second signal.
    tokens: HashMap<usize, tokio_postgres::CancelToken>,
    workers: JoinSet<()>,
    /// By worker task: its tenant and first attempt, so a panic is charged to the right tenant.
    tasks: HashMap<tokio::task::Id, (usize, u32)>,
    /// Tenants put back after lock contention, by the instant they are due.
    delayed: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// The wake-ups asked for (the start rate, a claim to ask again, a wave's pause, the next batch of known
    /// skips): each is honoured, so a near one never swallows a later one.
    wakes: std::collections::BTreeSet<Instant>,
    claiming: Option<Claiming>,
    /// This runner's part of a shared run's start rate.
    rate_share: Option<tokio::sync::watch::Receiver<f64>>,
    /// The `--wave-gate` command, and the wave asked about with the answer of the one running.
    wave_gate: Option<WaveGateCommand>,
    gate_answer: Option<(usize, tokio::sync::oneshot::Receiver<Result<(), String>>)>,
}

/// `--wave-gate`: a shell command run before each next wave, with the run id and the wave in its environment.
struct WaveGateCommand {
    command: String,
    run_id: String,
}

impl WaveGateCommand {
    /// Run the command for `wave` (1-based) on a task of its own; its verdict comes on the receiver.
    fn start(&self, wave: usize, n_waves: usize) -> tokio::sync::oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(&self.command)
            .env("FLOTILLA_RUN_ID", &self.run_id)
            .env("FLOTILLA_WAVE", wave.to_string())
            .env("FLOTILLA_WAVES", n_waves.to_string())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        tokio::spawn(async move {
            let verdict = match cmd.output().await {
                Ok(out) => {
                    for line in String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .chain(String::from_utf8_lossy(&out.stderr).lines())
                    {
                        tracing::info!(wave, "wave gate: {line}");
                    }
                    if out.status.success() {
                        Ok(())
                    } else {
                        let last = String::from_utf8_lossy(&out.stderr)
                            .lines()
                            .last()
                            .unwrap_or_default()
                            .to_string();
                        Err(format!(
                            "the wave gate command failed ({}){}",
                            out.status,
                            if last.is_empty() {
                                String::new()
                            } else {
                                format!(": {last}")
                            }
                        ))
                    }
                }
                Err(e) => Err(format!("the wave gate command could not start: {e}")),
            };
            let _ = tx.send(verdict);
        });
        rx
    }
}

impl<S: SignalSource> Shell<S> {
    pub(super) fn new(
        servers: Vec<Arc<Server>>,
        sinks: Vec<Box<dyn Sink>>,
        signals: S,
        stop: Arc<AtomicBool>,
    ) -> Shell<S> {
        Shell {
            servers,
            sinks: Fanout::from(sinks),
            ledger: None,
            signals,
            stop,
            cancel: CancellationToken::new(),
            tokens: HashMap::new(),
            workers: JoinSet::new(),
            tasks: HashMap::new(),
            delayed: BinaryHeap::new(),
            wakes: Default::default(),
            claiming: None,
            rate_share: None,
            wave_gate: None,
            gate_answer: None,
        }
    }

    /// Record the run in `ledger` and claim tenants from it ([`Decision::Claim`]); `pinned` receives the targets
    /// of [`Decision::Pin`].
    fn with_ledger(
        mut self,
        ledger: LedgerWriter,
        state: &Coordinator,
        pinned: Arc<RwLock<BTreeMap<usize, Vec<RevisionId>>>>,
    ) -> Shell<S> {
        let Some(queue) = ledger.queue() else {
            return self;
        };
        self.ledger = Some(ledger);
        self.claiming = Some(Claiming {
            queue,
            index_of: state.tenant_indices(),
            asking: None,
            pinned,
        });
        self
    }

    /// Feed the state machine until it decides to finish, then close the run.
    pub(super) async fn drive<F, Fut>(
        mut self,
        mut state: Coordinator,
        mut rx: UnboundedReceiver<WorkerMsg>,
        mut launch: F,
    ) -> FleetOutcome
    where
        F: FnMut(Launch) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut decisions = state.handle(Input::Begin, Instant::now());
        loop {
            if self.carry_out(&state, decisions, &mut launch).await {
                break;
            }
            if let Some(ledger) = &mut self.ledger {
                ledger.flush_if_due();
                if !state.has_ledger_failure() {
                    if let Err(e) = ledger.health() {
                        decisions = state.handle(Input::LedgerFailed(e), Instant::now());
                        continue;
                    }
                }
            }
            let due_at = self.delayed.peek().map(|Reverse((at, _, _))| *at);
            let asking = self.claiming.as_mut().and_then(|c| c.asking.as_mut());
            // Biased: a signal is never starved by a stream of worker messages, and a worker's last messages are
            // read before its exit, so an exit that finds its tenant still in flight means the worker ended
            // without an outcome.
            let input = tokio::select! {
                biased;
                _ = self.signals.next() => Some(Input::Signal),
                Some(msg) = rx.recv() => Some(self.input_of(msg)),
                Some(joined) = self.workers.join_next_with_id() => self.exited(joined),
                rate = rate_changed(self.rate_share.as_mut()) => match rate {
                    Some(rate) => Some(Input::Rate(rate)),
                    None => {
                        self.rate_share = None;
                        None
                    }
                },
                answer = answer_of(asking) => self.claiming.as_mut().map(|c| {
                    c.asking = None;
                    c.input_of(answer)
                }),
                verdict = answer_of(self.gate_answer.as_mut().map(|(_, rx)| rx)) => {
                    self.gate_answer.take().map(|(wave, _)| gate_input(wave, verdict))
                }
                () = sleep_until(due_at), if due_at.is_some() => {
                    self.delayed.pop().map(|Reverse((_, index, attempt))| Input::Due { index, attempt })
                }
                () = sleep_until(self.wakes.first().copied()), if !self.wakes.is_empty() => {
                    // One wake for every request due by now.
                    let now = Instant::now();
                    self.wakes.pop_first();
                    while self.wakes.first().is_some_and(|at| *at <= now) {
                        self.wakes.pop_first();
                    }
                    Some(Input::Wake)
                }
                _ = tick.tick() => Some(Input::Tick {
                    open: self.servers.iter().map(|s| s.open_connections()).collect(),
                }),
            };
            decisions = match input {
                Some(input) => state.handle(input, Instant::now()),
                None => Vec::new(),
            };
        }
        // The claim handle holds the ledger thread's channel open: let go of it before the sinks finish.
        self.claiming = None;
        for server in &self.servers {
            server.close_idle();
        }
        let synced = self.ledger.as_mut().and_then(|l| l.sync().err());
        let mut finished = state.finish(synced);
        // The ledger closes first, so the closing event (and the summary) carry the code the run exits with.
        if let Some(ledger) = &mut self.ledger {
            if let Err(e) = ledger.finish(state.exit_code().code()) {
                state.closing_failed(e);
                if let crate::observe::FleetEvent::RunFinished { exit_code, .. } = &mut finished.event {
                    *exit_code = state.exit_code().code();
                }
            }
        }
        self.sinks.event(&finished);
        self.sinks.finish();
        state.into_outcome()
    }

    /// Carry out `decisions` in order; true when the state machine decided to finish.
    async fn carry_out<F, Fut>(&mut self, state: &Coordinator, decisions: Vec<Decision>, launch: &mut F) -> bool
    where
        F: FnMut(Launch) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut is_finished = false;
        for decision in decisions {
            match decision {
                Decision::Start { index, attempt } => {
                    let work = launch(Launch {
                        index,
                        attempt,
                        tenant: state.tenant(index).clone(),
                        cancel: self.cancel.child_token(),
                    });
                    let task = self.workers.spawn(work);
                    self.tasks.insert(task.id(), (index, attempt));
                }
                Decision::Requeue { index, attempt, at } => self.delayed.push(Reverse((at, index, attempt))),
                Decision::WakeAt(at) => {
                    self.wakes.insert(at);
                }
                Decision::Claim { max } => match &mut self.claiming {
                    Some(c) => c.asking = Some(c.queue.claim(max)),
                    None => tracing::error!("a claim was asked for without a ledger"),
                },
                Decision::Pin { index, rows } => {
                    if let Some(c) = &self.claiming {
                        c.pinned.write().unwrap_or_else(|p| p.into_inner()).insert(index, rows);
                    }
                }
                Decision::Emit(event) => self.sinks.event(&event),
                Decision::Record(row) => match &mut self.ledger {
                    Some(ledger) => ledger.record(row),
                    None => tracing::error!("a ledger row was decided without a ledger"),
                },
                Decision::HaltRun => {
                    if let Some(ledger) = &mut self.ledger {
                        ledger.halt();
                    }
                }
                Decision::Stop => {
                    self.stop.store(true, Ordering::Relaxed);
                    self.cancel.cancel();
                }
                Decision::CancelStatements(indices) => {
                    for index in indices {
                        if let Some(token) = self.tokens.get(&index) {
                            self.servers[state.tenant(index).server].cancel(token).await;
                        }
                    }
                }
                Decision::RunWaveGate { wave } => {
                    let answer = match &self.wave_gate {
                        Some(gate) => gate.start(wave, state.n_waves()),
                        // No command to ask: a channel whose sender is gone, so the answer is a refusal.
                        None => tokio::sync::oneshot::channel().1,
                    };
                    self.gate_answer = Some((wave, answer));
                }
                Decision::Finish => is_finished = true,
            }
        }
        is_finished
    }

    /// A worker message as an input; the shell keeps connection cancel tokens, the state only knows who has one.
    fn input_of(&mut self, msg: WorkerMsg) -> Input {
        match msg {
            WorkerMsg::Connected { index, token } => {
                self.tokens.insert(index, token);
                Input::Connected { index }
            }
            WorkerMsg::Done { index, .. } => {
                self.tokens.remove(&index);
                Input::Worker(msg)
            }
            msg => Input::Worker(msg),
        }
    }

    fn exited(&mut self, joined: Result<(tokio::task::Id, ()), JoinError>) -> Option<Input> {
        let (id, panic) = match joined {
            Ok((id, ())) => (id, None),
            Err(e) => (e.id(), Some(panic_message(e))),
        };
        let (index, attempt) = self.tasks.remove(&id)?;
        if panic.is_some() {
            self.tokens.remove(&index);
        }
        Some(Input::Exited { index, attempt, panic })
    }
}

fn panic_message(e: JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_string()),
        Err(_) => "(cancelled before it finished)".to_string(),
    }
}

/// The next rate share; `None` once its sender is gone; never without a receiver.
async fn rate_changed(rx: Option<&mut tokio::sync::watch::Receiver<f64>>) -> Option<f64> {
    match rx {
        Some(rx) => rx.changed().await.ok().map(|()| *rx.borrow_and_update()),
        None => std::future::pending().await,
    }
}

/// The answer awaited (a claim, a wave gate's verdict), when one is; never otherwise.
/// The wave gate's answer for `wave`; a gate task that ended without one (a panic, a command never asked)
/// refuses the wave, so the run halts instead of waiting for an answer that never comes.
fn gate_input(wave: usize, verdict: Result<Result<(), String>, tokio::sync::oneshot::error::RecvError>) -> Input {
    let result = verdict.unwrap_or_else(|_| Err("the wave gate ended without an answer".into()));
    Input::WaveGate { wave, result }
}

async fn answer_of<T>(
    asking: Option<&mut tokio::sync::oneshot::Receiver<T>>,
) -> Result<T, tokio::sync::oneshot::error::RecvError> {
    match asking {
        Some(rx) => rx.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
