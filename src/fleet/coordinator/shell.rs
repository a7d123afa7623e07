//! The coordinator's async shell: the only place that waits. It turns worker messages, worker exits (a
//! `JoinSet`), requeue and rate timers, the connection tick, signals and the ledger sink's health into
//! [`Input`]s for the state machine, and carries its [`Decision`]s out: spawning workers, feeding sinks,
//! stopping and cancelling. It decides nothing itself.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use super::state::{Coordinator, Decision, FleetOutcome, FleetRequest, Input};
use crate::fleet::server::Server;
use crate::fleet::tenant::Tenant;
use crate::fleet::worker::{run_tenant, Engine, WorkerCtx, WorkerMsg};
use crate::observe::{FleetEvent, Sink};
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
    let ctx = Arc::new(WorkerCtx {
        engine,
        action: req.action.clone(),
        is_dry_run: req.is_dry_run,
        limits: req.limits.clone(),
        stop: stop.clone(),
        tx,
        pinned: std::mem::take(&mut req.pinned),
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
    Shell::new(servers, sinks, signals, stop).drive(state, rx, launch).await
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
    sinks: Vec<Box<dyn Sink>>,
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
    /// The wake-up the start rate asked for.
    wake: Option<Instant>,
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
            sinks,
            signals,
            stop,
            cancel: CancellationToken::new(),
            tokens: HashMap::new(),
            workers: JoinSet::new(),
            tasks: HashMap::new(),
            delayed: BinaryHeap::new(),
            wake: None,
        }
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
            if !state.has_ledger_failure() {
                if let Some(e) = self.sink_failure() {
                    decisions = state.handle(Input::SinkFailed(e), Instant::now());
                    continue;
                }
            }
            let due_at = self.delayed.peek().map(|Reverse((at, _, _))| *at);
            // Biased: a signal is never starved by a stream of worker messages, and a worker's last messages are
            // read before its exit, so an exit that finds its tenant still in flight means the worker ended
            // without an outcome.
            let input = tokio::select! {
                biased;
                _ = self.signals.next() => Some(Input::Signal),
                Some(msg) = rx.recv() => Some(self.input_of(msg)),
                Some(joined) = self.workers.join_next_with_id() => self.exited(joined),
                () = sleep_until(due_at), if due_at.is_some() => {
                    self.delayed.pop().map(|Reverse((_, index, attempt))| Input::Due { index, attempt })
                }
                () = sleep_until(self.wake), if self.wake.is_some() => {
                    self.wake = None;
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
        for server in &self.servers {
            server.close_idle();
        }
        for sink in &mut self.sinks {
            sink.sync();
        }
        let finished = state.finish(self.sink_failure());
        self.emit(&finished);
        for sink in &mut self.sinks {
            sink.finish();
        }
        if let Some(e) = self.sink_failure() {
            state.closing_failed(e);
        }
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
                Decision::WakeAt(at) => self.wake = Some(at),
                Decision::Emit(event) => self.emit(&event),
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

    fn emit(&mut self, event: &FleetEvent) {
        for sink in &mut self.sinks {
            sink.event(event);
        }
    }

    /// The first sink failure that must stop the run (the ledger's).
    fn sink_failure(&self) -> Option<String> {
        self.sinks.iter().find_map(|s| s.health().err())
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

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
