//! One tenant's work: take a connection under its server's cap, open a migration session (lock without
//! waiting), plan, run, and retry transient failures with exponential backoff and jitter.
//!
//! What a failure says about the server decides what happens next (issue 14): a server that went away trips its
//! breaker and the tenant waits for it without spending a retry; a 53300 lowers the server's cap and the tenant
//! tries again without spending a retry; a refused password or TLS handshake fails every tenant of the server at
//! once. The breaker decides (`fleet::breaker`); this file does the waiting, probing and logging.
//!
//! Workers never write the ledger or the progress display: they send [`WorkerMsg`]s to the coordinator.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::breaker::{clock_text, Gate};
use super::server::{ConnectError, Server};
use super::shared::SharedEngine;
use super::tenant::{Place, Tenant};
use crate::executor::{ErrorClass, ExecError, ExecEvent, ExecOptions, FailureKind, Session, VersionStore};
use crate::graph::{Direction, GraphError, Plan, RevisionGraph, Step};
use crate::revision::RevisionId;
use crate::script::Script;

/// What a fleet command does to each tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Upgrade(String),
    Downgrade(String),
    Stamp(Vec<String>),
    /// `fleet stamp --from FORMAT`: what each tenant's other tool recorded (see `crate::import`).
    StampFrom(crate::import::TableRef),
}

impl Action {
    pub fn command(&self) -> &'static str {
        match self {
            Action::Upgrade(_) => "upgrade",
            Action::Downgrade(_) => "downgrade",
            Action::Stamp(_) => "stamp",
            Action::StampFrom(_) => "stamp-from",
        }
    }

    pub fn target(&self) -> String {
        match self {
            Action::Upgrade(t) | Action::Downgrade(t) => t.clone(),
            Action::Stamp(revs) => revs.join(" "),
            Action::StampFrom(table) => format!("{} {}", table.format, table.name()),
        }
    }
}

/// The migration set and how to run it, shared by every worker.
pub struct Engine {
    pub graph: RevisionGraph,
    pub scripts: BTreeMap<RevisionId, Script>,
    pub store: Arc<dyn VersionStore>,
    pub exec: ExecOptions,
    /// The shared revision set, applied before an upgrade's tenants (see `fleet::shared`).
    pub shared: Option<Arc<SharedEngine>>,
}

/// Limits for one tenant's work.
#[derive(Debug, Clone)]
pub struct TenantLimits {
    /// Retries of transient errors after the first attempt.
    pub retries: u32,
    pub tenant_timeout: Option<Duration>,
    /// The first retry's delay before jitter; each later retry doubles it, up to `backoff_max`. Probes of a
    /// server that went away follow the same backoff.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The share (0..=1) of each delay drawn at random: 0 waits the whole delay, 1 anything from 0 to it.
    pub backoff_jitter: f64,
    /// How long a server may stay away before the tenants waiting for it fail.
    pub outage_budget: Duration,
}

impl TenantLimits {
    pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(200);
    pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);
    pub const DEFAULT_BACKOFF_JITTER: f64 = 0.75;
    pub const DEFAULT_OUTAGE_BUDGET: Duration = Duration::from_secs(60);
}

/// Messages from a worker to the coordinator.
pub(crate) enum WorkerMsg {
    Started {
        index: usize,
        attempt: u32,
    },
    Connected {
        index: usize,
        token: tokio_postgres::CancelToken,
    },
    Planned {
        index: usize,
        from: Vec<RevisionId>,
        /// The version rows the plan leads to.
        to: Vec<RevisionId>,
        steps: Vec<Step>,
    },
    RevisionStarted {
        index: usize,
        revision: RevisionId,
        direction: Direction,
    },
    RevisionApplied {
        index: usize,
        revision: RevisionId,
        direction: Direction,
        elapsed: Duration,
    },
    BackfillProgress {
        index: usize,
        revision: RevisionId,
        rows_done: u64,
        rows_estimated: Option<u64>,
    },
    Retrying {
        index: usize,
        attempt: u32,
        failure: Failure,
        delay: Duration,
    },
    Done {
        index: usize,
        outcome: Outcome,
    },
    /// This worker found its server over its health limits, or back under them (reported once per change).
    ServerHealth {
        index: usize,
        server: String,
        change: super::health::Change,
    },
    /// This worker's probe found its server back after an outage (reported once per outage).
    ServerRecovered {
        index: usize,
        server: String,
        down: Duration,
        n_waited: usize,
    },
}

/// Why an attempt failed, in the terms the ledger and metrics use.
#[derive(Debug, Clone)]
pub struct Failure {
    pub message: String,
    pub sqlstate: Option<String>,
    pub reason: FailureKind,
    pub is_transient: bool,
    pub failed_revision: Option<RevisionId>,
    pub is_locked: bool,
    /// What the error says about the server: an outage, 53300 and a refused login are not retried like others.
    pub class: ErrorClass,
}

impl Failure {
    fn from_exec(e: &ExecError) -> Failure {
        Failure {
            message: e.to_string(),
            sqlstate: e.sqlstate(),
            reason: e.reason(),
            is_transient: e.is_transient(),
            class: e.class(),
            failed_revision: match e {
                ExecError::Step { revision, .. } => Some(revision.clone()),
                _ => None,
            },
            is_locked: matches!(e, ExecError::Locked { .. }),
        }
    }

    fn from_connect(e: &ConnectError) -> Failure {
        let (sqlstate, class) = match e {
            ConnectError::Pg(pg) | ConnectError::Auth { pg, .. } => (
                pg.code().map(|c| c.code().to_string()),
                crate::executor::classify_pg(pg),
            ),
            ConnectError::Pool(_) => (None, ErrorClass::Transient),
            // Another service on the port does not become PostgreSQL by waiting.
            ConnectError::NotPostgres { .. } => (None, ErrorClass::Fatal),
        };
        let reason = match class {
            _ if matches!(e, ConnectError::NotPostgres { .. }) => FailureKind::NotPostgres,
            ErrorClass::TooManyConnections => FailureKind::TooManyConnections,
            ErrorClass::Fatal => FailureKind::Auth,
            _ => FailureKind::Connection,
        };
        Failure {
            message: e.to_string(),
            sqlstate,
            reason,
            is_transient: class.is_transient(),
            failed_revision: None,
            is_locked: false,
            class,
        }
    }

    pub(crate) fn permanent(message: String, reason: FailureKind) -> Failure {
        Failure {
            message,
            sqlstate: None,
            reason,
            is_transient: false,
            failed_revision: None,
            is_locked: false,
            class: ErrorClass::Permanent,
        }
    }
}

/// How a tenant ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded {
        from: Vec<RevisionId>,
        to: Vec<RevisionId>,
        n_steps: usize,
        attempts: u32,
        elapsed: Duration,
    },
    Skipped {
        at: Vec<RevisionId>,
        attempts: u32,
        elapsed: Duration,
    },
    /// `--dry-run`: what would run.
    Planned { from: Vec<RevisionId>, steps: Vec<Step> },
    Failed {
        from: Vec<RevisionId>,
        to: Vec<RevisionId>,
        failure: Failure,
        attempts: u32,
        elapsed: Duration,
    },
    Interrupted {
        from: Vec<RevisionId>,
        to: Vec<RevisionId>,
        attempts: u32,
        elapsed: Duration,
    },
    /// Another runner holds this tenant's lock: the coordinator puts it back in the queue.
    Locked { attempts: u32 },
}

/// What one attempt produced.
enum Attempt {
    Done {
        from: Vec<RevisionId>,
        to: Vec<RevisionId>,
        n_steps: usize,
    },
    Skipped {
        at: Vec<RevisionId>,
    },
    Planned {
        from: Vec<RevisionId>,
        steps: Vec<Step>,
    },
    Interrupted {
        from: Vec<RevisionId>,
        to: Vec<RevisionId>,
    },
}

struct AttemptError {
    failure: Failure,
    from: Option<Vec<RevisionId>>,
    to: Option<Vec<RevisionId>>,
    /// Steps that committed before the failure.
    n_steps: usize,
}

impl From<Failure> for AttemptError {
    fn from(failure: Failure) -> Self {
        AttemptError {
            failure,
            from: None,
            to: None,
            n_steps: 0,
        }
    }
}

/// The shared revisions a database has after the shared set was applied, or why it could not be.
pub(crate) type SharedResult = Result<BTreeSet<RevisionId>, Failure>;

/// Everything a worker needs besides its tenant.
pub(crate) struct WorkerCtx {
    pub engine: Arc<Engine>,
    pub action: Action,
    pub is_dry_run: bool,
    pub limits: TenantLimits,
    pub stop: Arc<AtomicBool>,
    pub tx: UnboundedSender<WorkerMsg>,
    /// By tenant index: the absolute target an earlier run resolved (see `FleetRequest::pinned`).
    pub pinned: Arc<std::sync::RwLock<BTreeMap<usize, Vec<RevisionId>>>>,
    /// Per server: the shared revisions its own database has, once a worker applied them in this run (a
    /// transient failure is not kept, so the next tenant tries again).
    pub shared_done: Vec<tokio::sync::Mutex<Option<SharedResult>>>,
}

/// Run one tenant to its end (success, skip, failure after retries, interruption, or lock contention).
/// `cancel` is cancelled when the run stops (with `ctx.stop` set first), so a backoff sleep ends at once.
pub(crate) async fn run_tenant(
    ctx: Arc<WorkerCtx>,
    server: Arc<Server>,
    tenant: Arc<Tenant>,
    index: usize,
    first_attempt: u32,
    cancel: CancellationToken,
) {
    // Counted as demand on the server while it lives (a shared run's ledger shares connections by it).
    let _counted = server.worker();
    let started = Instant::now();
    let mut attempt = first_attempt;
    // Retries spent on transient errors; waiting out an outage or a lowered cap spends none.
    let mut retries_used = 0;
    let mut from: Option<Vec<RevisionId>> = None;
    // Steps committed by earlier attempts that failed part way, so the outcome counts the whole tenant.
    let mut n_steps_before = 0;
    // The server's health throttling, before the tenant starts and before each of its backfill batches.
    let gate = Arc::new(super::health::HealthGate {
        server: server.clone(),
        tx: ctx.tx.clone(),
        index,
        cancel: cancel.clone(),
    });
    let outcome = loop {
        // A retry that was waiting out its backoff when the run was interrupted does not start again.
        if attempt > first_attempt && ctx.stop.load(Ordering::Relaxed) {
            break interrupted(from, attempt - 1, started);
        }
        match wait_for_server(&ctx, &server, index).await {
            Ok(()) => {}
            Err(None) => break interrupted(from, attempt - 1, started),
            Err(Some(failure)) => {
                let from = from.unwrap_or_default();
                break Outcome::Failed {
                    to: from.clone(),
                    from,
                    failure,
                    attempts: attempt,
                    elapsed: started.elapsed(),
                };
            }
        }
        // A server over its health limits holds its tenants here (other servers' tenants go on).
        if !crate::backfill::BatchGate::wait(&*gate).await {
            break interrupted(from, attempt - 1, started);
        }
        let _ = ctx.tx.send(WorkerMsg::Started { index, attempt });
        let attempt_started = Instant::now();
        let work = one_attempt(&ctx, &server, &tenant, index, &gate);
        let result = match ctx.limits.tenant_timeout {
            Some(limit) => match tokio::time::timeout(limit, work).await {
                Ok(result) => result,
                Err(_) => Err(Failure::permanent(
                    format!("tenant_timeout ({}) exceeded", crate::observe::human::duration(limit)),
                    FailureKind::TenantTimeout,
                )
                .into()),
            },
            None => work.await,
        };
        match result {
            Ok(done) => {
                let elapsed = started.elapsed();
                break match done {
                    Attempt::Done { from: f, to, n_steps } => Outcome::Succeeded {
                        from: from.unwrap_or(f),
                        to,
                        n_steps: n_steps_before + n_steps,
                        attempts: attempt,
                        elapsed,
                    },
                    Attempt::Skipped { at } => Outcome::Skipped {
                        at,
                        attempts: attempt,
                        elapsed,
                    },
                    Attempt::Planned { from, steps } => Outcome::Planned { from, steps },
                    Attempt::Interrupted { from: f, to } => Outcome::Interrupted {
                        from: from.unwrap_or(f),
                        to,
                        attempts: attempt,
                        elapsed,
                    },
                };
            }
            Err(mut err) => {
                if from.is_none() {
                    from = err.from.clone();
                }
                n_steps_before += err.n_steps;
                if err.failure.is_locked {
                    break Outcome::Locked { attempts: attempt };
                }
                // The second signal cancels statements in flight (57014): that tenant was interrupted, not failed.
                if ctx.stop.load(Ordering::Relaxed) && err.failure.sqlstate.as_deref() == Some("57014") {
                    let from = from.unwrap_or_default();
                    break Outcome::Interrupted {
                        to: err.to.unwrap_or_else(|| from.clone()),
                        from,
                        attempts: attempt,
                        elapsed: started.elapsed(),
                    };
                }
                let is_stopping = ctx.stop.load(Ordering::Relaxed);
                match err.failure.class {
                    ErrorClass::Fatal => {
                        err.failure = fatal_for_server(&server, err.failure);
                    }
                    ErrorClass::Outage if !is_stopping => {
                        if server.breaker().on_outage(attempt_started, Instant::now()) {
                            tracing::warn!(
                                server = %server.name,
                                error = %err.failure.message,
                                budget = ?ctx.limits.outage_budget,
                                "server unavailable: its tenants wait for it (outage_budget)"
                            );
                        }
                        // Wait for the server now, so the retry counts only when the server never was down
                        // (one backend terminated, not a restart).
                        let _ = ctx.tx.send(WorkerMsg::Retrying {
                            index,
                            attempt,
                            failure: err.failure.clone(),
                            delay: Duration::ZERO,
                        });
                        match wait_for_server(&ctx, &server, index).await {
                            Ok(()) => {}
                            Err(None) => break interrupted(from, attempt, started),
                            Err(Some(failure)) => err.failure = failure,
                        }
                        if err.failure.class == ErrorClass::Outage {
                            let was_down = server.breaker().was_down_since(attempt_started);
                            if was_down || retries_used < ctx.limits.retries {
                                retries_used += u32::from(!was_down);
                                attempt += 1;
                                continue;
                            }
                        }
                    }
                    ErrorClass::TooManyConnections if !is_stopping => {
                        if let Some((old, new)) = server.lower_cap() {
                            tracing::warn!(
                                server = %server.name,
                                from = old,
                                to = new,
                                "server refused a connection (too many connections, SQLSTATE 53300): lowering its \
                                 connection cap to {new} for the rest of the run"
                            );
                            let _ = ctx.tx.send(WorkerMsg::Retrying {
                                index,
                                attempt,
                                failure: err.failure,
                                delay: Duration::ZERO,
                            });
                            attempt += 1;
                            continue;
                        }
                    }
                    _ => {}
                }
                if err.failure.is_transient && retries_used < ctx.limits.retries && !is_stopping {
                    let delay = backoff(&ctx.limits, retries_used + 1);
                    let _ = ctx.tx.send(WorkerMsg::Retrying {
                        index,
                        attempt,
                        failure: err.failure,
                        delay,
                    });
                    // A stop during the sleep ends it; the check at the top of the loop then reports the tenant
                    // interrupted.
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = cancel.cancelled() => {}
                    }
                    retries_used += 1;
                    attempt += 1;
                    continue;
                }
                let from = from.unwrap_or_default();
                let to = err.to.unwrap_or_else(|| from.clone());
                break Outcome::Failed {
                    from,
                    to,
                    failure: err.failure,
                    attempts: attempt,
                    elapsed: started.elapsed(),
                };
            }
        }
    };
    let _ = ctx.tx.send(WorkerMsg::Done { index, outcome });
}

/// The plan of an upgrade or downgrade from the version rows `from`: to `pinned`, the absolute target an earlier
/// run resolved for the tenant, when there is one, else to the action's target. `None` for a stamp action.
/// The worker plans with it, and the run start uses it to find tenants already at their target.
pub fn migration_plan(
    graph: &RevisionGraph,
    action: &Action,
    from: &[RevisionId],
    pinned: Option<&[RevisionId]>,
) -> Option<Result<Plan, String>> {
    Some(match (action, pinned) {
        (Action::Upgrade(_), Some(rows)) => plan_upgrade_to(graph, from, rows).map_err(|e| e.to_string()),
        (Action::Downgrade(_), Some(rows)) => plan_downgrade_to(graph, from, rows),
        (Action::Upgrade(target), None) => graph.plan_upgrade(from, target).map_err(|e| e.to_string()),
        (Action::Downgrade(target), None) => graph.plan_downgrade_checked(from, target).map_err(|e| e.to_string()),
        (Action::Stamp(_) | Action::StampFrom(_), _) => return None,
    })
}

/// An upgrade to exactly `rows` (an earlier run's resolved target): each row in turn, from where the last left.
fn plan_upgrade_to(graph: &RevisionGraph, from: &[RevisionId], rows: &[RevisionId]) -> Result<Plan, GraphError> {
    let mut current = from.to_vec();
    let mut steps = Vec::new();
    for row in rows {
        let plan = graph.plan_upgrade(&current, row.as_str())?;
        current = plan.apply_rows(&current);
        steps.extend(plan.steps);
    }
    Ok(Plan {
        direction: Direction::Up,
        steps,
    })
}

/// A downgrade to exactly `rows` (an earlier run's resolved target): to each row in turn, from where the last
/// left (downgrading to one row removes everything above it, so a tenant whose independent branches all moved
/// goes back on each). The rows it leaves must be exactly `rows`, or the tenant fails instead of guessing.
pub(super) fn plan_downgrade_to(
    graph: &RevisionGraph,
    from: &[RevisionId],
    rows: &[RevisionId],
) -> Result<Plan, String> {
    if rows.is_empty() {
        return graph.plan_downgrade(from, "base").map_err(|e| e.to_string());
    }
    let mut current = from.to_vec();
    let mut steps = Vec::new();
    for row in rows {
        if current.contains(row) {
            continue;
        }
        let plan = graph
            .plan_downgrade(&current, row.as_str())
            .map_err(|e| e.to_string())?;
        current = plan.apply_rows(&current);
        steps.extend(plan.steps);
    }
    let plan = Plan {
        direction: Direction::Down,
        steps,
    };
    let mut reached = plan.apply_rows(from);
    reached.sort();
    let mut wanted = rows.to_vec();
    wanted.sort();
    if reached != wanted {
        let text = |rows: &[RevisionId]| rows.iter().map(RevisionId::as_str).collect::<Vec<_>>().join(",");
        return Err(format!(
            "the run's target for this tenant was {}, which a downgrade from {} cannot reach exactly (it would \
             reach {}); downgrade this tenant to an explicit revision",
            text(&wanted),
            text(from),
            text(&reached)
        ));
    }
    Ok(plan)
}

fn interrupted(from: Option<Vec<RevisionId>>, attempts: u32, started: Instant) -> Outcome {
    let from = from.unwrap_or_default();
    Outcome::Interrupted {
        to: from.clone(),
        from,
        attempts,
        elapsed: started.elapsed(),
    }
}

/// A refused login or TLS handshake becomes the server's: every tenant of it fails with the first one's
/// failure, worded for the whole server, so the summary groups them in one line.
fn fatal_for_server(server: &Server, failure: Failure) -> Failure {
    let grouped = Failure {
        message: format!(
            "server {}: {}; not retried (a refused login or TLS handshake does not heal), so every tenant of this \
             server fails",
            server.name, failure.message
        ),
        ..failure
    };
    let (first, is_first) = server.breaker().on_fatal(grouped);
    if is_first {
        tracing::error!(server = %server.name, error = %first.message, "server refused this run: its tenants fail without connecting");
    }
    first
}

/// Wait until the server's breaker lets the tenant go: at once when the server answers, else until a probe
/// (this worker's or another's) reaches it. `Err(None)`: the run was interrupted while waiting.
/// `Err(Some(failure))`: the tenant fails (the server refused this run, or stayed away past the outage budget).
async fn wait_for_server(ctx: &WorkerCtx, server: &Server, index: usize) -> Result<(), Option<Failure>> {
    let limits = &ctx.limits;
    loop {
        let gate = server.breaker().gate(index, Instant::now(), limits.outage_budget);
        match gate {
            Gate::Go => return Ok(()),
            Gate::Fatal(failure) => return Err(Some(failure)),
            Gate::Expired { since, is_new } => {
                if is_new {
                    tracing::error!(
                        server = %server.name,
                        n_waited = server.breaker().n_waited(),
                        "server {} unavailable for longer than outage_budget ({}), {} tenants waited: they fail",
                        server.name,
                        clock_text(limits.outage_budget),
                        server.breaker().n_waited()
                    );
                }
                let message = format!(
                    "server {} unavailable since {} ago, longer than outage_budget ({})",
                    server.name,
                    clock_text(since.elapsed()),
                    clock_text(limits.outage_budget)
                );
                return Err(Some(Failure::permanent(message, FailureKind::ServerUnavailable)));
            }
            Gate::Wait(until) => {
                if !sleep_unless_stopped(&ctx.stop, until).await {
                    return Err(None);
                }
            }
            Gate::Probe => {
                let probe_limit = limits.backoff_max.max(Duration::from_secs(1));
                let result = server.probe(probe_limit).await;
                let is_down = match &result {
                    Ok(()) => false,
                    Err(e) => {
                        Failure::from_connect(e).class == ErrorClass::Outage || matches!(e, ConnectError::Pool(_))
                    }
                };
                if is_down {
                    let n = server.breaker().n_failed_probes();
                    let retry_in = backoff(limits, n + 1);
                    server.breaker().probe_failed(Instant::now(), retry_in);
                } else if let Some(report) = server.breaker().probe_succeeded(Instant::now()) {
                    tracing::warn!(
                        server = %server.name,
                        n_waited = report.n_waited,
                        "server {} unavailable {}, {} tenants waited",
                        server.name,
                        clock_text(report.down),
                        report.n_waited
                    );
                    let _ = ctx.tx.send(WorkerMsg::ServerRecovered {
                        index,
                        server: server.name.clone(),
                        down: report.down,
                        n_waited: report.n_waited,
                    });
                }
                if ctx.stop.load(Ordering::Relaxed) {
                    return Err(None);
                }
            }
        }
    }
}

/// Sleep until `until`, waking at once (within a tick) when the run is stopped. Returns false when stopped.
async fn sleep_unless_stopped(stop: &AtomicBool, until: Instant) -> bool {
    // The stop flag is a plain atomic the coordinator sets; a short tick lets Ctrl-C reach a waiting worker
    // without a wake-up channel per worker.
    const TICK: Duration = Duration::from_millis(50);
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        tokio::time::sleep((until - now).min(TICK)).await;
    }
}

/// Exponential backoff with jitter: the delay is `d = min(max, base * 2^(retry-1))`, of which the share
/// `backoff_jitter` is drawn at random, so the wait is uniform in [d * (1 - jitter), d].
fn backoff(limits: &TenantLimits, retry: u32) -> Duration {
    let exp = limits.backoff_base.saturating_mul(1 << retry.saturating_sub(1).min(16));
    let cap = exp.min(limits.backoff_max);
    jittered(cap, limits.backoff_jitter, rand::rng().random_range(0.0..=1.0))
}

/// `cap` less the share `jitter` (clamped to 0..=1) of it scaled by `draw` (0..=1).
fn jittered(cap: Duration, jitter: f64, draw: f64) -> Duration {
    let jitter = jitter.clamp(0.0, 1.0);
    cap.mul_f64(1.0 - jitter * draw.clamp(0.0, 1.0))
}

/// Whether this run applies the shared revision set before its tenants: a real upgrade with a shared set.
fn applies_shared(ctx: &WorkerCtx) -> Option<&SharedEngine> {
    match (&ctx.engine.shared, &ctx.action, ctx.is_dry_run) {
        (Some(shared), Action::Upgrade(_), false) => Some(shared),
        _ => None,
    }
}

/// Apply the shared set on `client`'s database; a failure fails the tenant before it starts.
async fn apply_shared(
    ctx: &WorkerCtx,
    shared: &SharedEngine,
    client: &tokio_postgres::Client,
    server: &Server,
    database: &str,
) -> Result<BTreeSet<RevisionId>, Failure> {
    match shared.upgrade(client, &ctx.engine.exec, &ctx.stop).await {
        Ok((applied, n_steps)) => {
            if n_steps > 0 {
                tracing::info!(server = %server.name, database, n_steps, "applied shared revisions");
            }
            Ok(applied)
        }
        Err(e) => Err(Failure {
            message: e.to_string(),
            sqlstate: match &e {
                super::shared::SharedError::Exec(exec) => exec.sqlstate(),
                _ => None,
            },
            reason: FailureKind::SharedFailed,
            is_transient: e.is_transient(),
            failed_revision: None,
            is_locked: false,
            class: match &e {
                super::shared::SharedError::Exec(exec) => exec.class(),
                _ if e.is_transient() => ErrorClass::Transient,
                _ => ErrorClass::Permanent,
            },
        }),
    }
}

/// The shared revisions of a server's own database (where its schema tenants live), applied by the first
/// worker to get there; the others wait on the lock instead of holding a connection.
async fn shared_of_server(
    ctx: &WorkerCtx,
    shared: &SharedEngine,
    server: &Server,
    slot: usize,
) -> Result<BTreeSet<RevisionId>, Failure> {
    let mut done = ctx.shared_done[slot].lock().await;
    if let Some(result) = done.as_ref() {
        return result.clone();
    }
    let conn = server.pooled().await.map_err(|e| Failure::from_connect(&e))?;
    let result = apply_shared(ctx, shared, conn.client(), server, "(server url's database)").await;
    match &result {
        Ok(_) => conn.release().await,
        // A failed session may hold anything: the connection is closed, not pooled.
        Err(_) => drop(conn),
    }
    if !matches!(&result, Err(f) if f.is_transient) {
        *done = Some(result.clone());
    }
    result
}

async fn one_attempt(
    ctx: &WorkerCtx,
    server: &Server,
    tenant: &Tenant,
    index: usize,
    gate: &Arc<super::health::HealthGate>,
) -> Result<Attempt, AttemptError> {
    let mut shared_applied = match (applies_shared(ctx), &tenant.place) {
        (Some(shared), Place::Schema(_)) => Some(shared_of_server(ctx, shared, server, tenant.server).await?),
        _ => None,
    };
    let conn = match &tenant.place {
        Place::Schema(_) => server.pooled().await,
        Place::Database(db) => server.direct(db).await,
    }
    .map_err(|e| Failure::from_connect(&e))?;
    let _ = ctx.tx.send(WorkerMsg::Connected {
        index,
        token: conn.client().cancel_token(),
    });
    if let (Some(shared), Place::Database(db)) = (applies_shared(ctx), &tenant.place) {
        shared_applied = Some(apply_shared(ctx, shared, conn.client(), server, db).await?);
    }
    let engine = &ctx.engine;
    let mut opts = engine.exec.clone();
    opts.schema = match &tenant.place {
        Place::Schema(schema) => Some(schema.clone()),
        Place::Database(_) => None,
    };
    // A tenant locked by another runner goes back to the queue instead of holding a worker while it waits.
    opts.lock_wait = Duration::ZERO;
    if server.lock_timeout.is_some() {
        opts.lock_timeout = server.lock_timeout;
    }
    if !server.health.limits.is_off() {
        opts.batch_gate = Some(gate.clone());
    }
    if server.statement_timeout.is_some() {
        opts.statement_timeout = server.statement_timeout;
    }
    let mut session = Session::open(conn.client(), engine.store.as_ref(), &opts)
        .await
        .map_err(|e| Failure::from_exec(&e))?;
    let from = session.rows().to_vec();
    let result = match &ctx.action {
        Action::StampFrom(table) => {
            let schema = opts.schema.as_deref();
            stamp_from(ctx, conn.client(), &mut session, schema, table, &from).await
        }
        _ => drive(ctx, &mut session, index, &from, shared_applied.as_ref()).await,
    };
    match result {
        Ok(attempt) => match session.close().await {
            Ok(()) => {
                conn.release().await;
                Ok(attempt)
            }
            // The work committed; only the unlock failed, and dropping the connection releases the lock.
            Err(_) => Ok(attempt),
        },
        Err(mut err) => {
            err.from = Some(from);
            Err(err)
        }
    }
}

/// `fleet stamp --from`: the tenant's own tool's table decides (`crate::import`); a mismatch fails the tenant
/// unchanged.
async fn stamp_from(
    ctx: &WorkerCtx,
    client: &tokio_postgres::Client,
    session: &mut Session<'_>,
    schema: Option<&str>,
    table: &crate::import::TableRef,
    from: &[RevisionId],
) -> Result<Attempt, AttemptError> {
    use crate::import::StampFromError;
    let report = crate::import::stamp_from(client, session, schema, &ctx.engine.graph, table, ctx.is_dry_run)
        .await
        .map_err(|e| match e {
            StampFromError::Exec(e) => Failure::from_exec(&e),
            StampFromError::Adopt(e) => Failure::permanent(e.to_string(), FailureKind::StampFrom),
        })?;
    for ignored in &report.ignored {
        tracing::warn!(table = table.name(), version = %ignored.version, "{}", ignored.why);
    }
    Ok(match (report.is_changed, ctx.is_dry_run && report.to != from) {
        (true, _) => Attempt::Done {
            from: from.to_vec(),
            to: session.rows().to_vec(),
            n_steps: 0,
        },
        (false, true) => Attempt::Planned {
            from: from.to_vec(),
            steps: Vec::new(),
        },
        (false, false) => Attempt::Skipped { at: from.to_vec() },
    })
}

async fn drive(
    ctx: &WorkerCtx,
    session: &mut Session<'_>,
    index: usize,
    from: &[RevisionId],
    shared_applied: Option<&BTreeSet<RevisionId>>,
) -> Result<Attempt, AttemptError> {
    let engine = &ctx.engine;
    let pinned = ctx
        .pinned
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&index)
        .cloned();
    let plan: Plan = match (&ctx.action, pinned.as_ref()) {
        (Action::Upgrade(_) | Action::Downgrade(_), _) => {
            migration_plan(&engine.graph, &ctx.action, from, pinned.as_deref())
                .unwrap_or_else(|| Err("only an upgrade or a downgrade is planned here".to_string()))
        }
        (Action::StampFrom(_), _) => Err("stamp --from is decided by `stamp_from`, not planned".to_string()),
        (Action::Stamp(targets), _) => {
            let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
            let rows = engine
                .graph
                .stamp(from, &targets, false)
                .map_err(|e| Failure::permanent(e.to_string(), FailureKind::Plan))?;
            let mut sorted = rows.clone();
            sorted.sort();
            if sorted == from {
                return Ok(Attempt::Skipped { at: from.to_vec() });
            }
            if ctx.is_dry_run {
                return Ok(Attempt::Planned {
                    from: from.to_vec(),
                    steps: Vec::new(),
                });
            }
            session.stamp(&rows).await.map_err(|e| Failure::from_exec(&e))?;
            return Ok(Attempt::Done {
                from: from.to_vec(),
                to: session.rows().to_vec(),
                n_steps: 0,
            });
        }
    }
    .map_err(|e| Failure::permanent(e.to_string(), FailureKind::Plan))?;
    if plan.steps.is_empty() {
        return Ok(Attempt::Skipped { at: from.to_vec() });
    }
    if ctx.is_dry_run {
        return Ok(Attempt::Planned {
            from: from.to_vec(),
            steps: plan.steps,
        });
    }
    if let (Some(shared), Some(applied)) = (&engine.shared, shared_applied) {
        if let Some(missing) = shared.missing(&plan.steps, applied) {
            return Err(Failure::permanent(
                format!(
                    "revision {} depends on shared revision {}, which this tenant's database does not have; \
                     nothing was changed",
                    missing.revision, missing.shared
                ),
                FailureKind::SharedMissing,
            )
            .into());
        }
    }
    let mut to = plan.apply_rows(from);
    to.sort();
    let _ = ctx.tx.send(WorkerMsg::Planned {
        index,
        from: from.to_vec(),
        to,
        steps: plan.steps.clone(),
    });
    let tx = ctx.tx.clone();
    let mut on_event = move |event: ExecEvent| {
        let msg = match event {
            ExecEvent::StepStarted { revision, direction } => WorkerMsg::RevisionStarted {
                index,
                revision,
                direction,
            },
            ExecEvent::StepFinished {
                revision,
                direction,
                elapsed,
            } => WorkerMsg::RevisionApplied {
                index,
                revision,
                direction,
                elapsed,
            },
            ExecEvent::BackfillProgress {
                revision,
                rows_done,
                rows_estimated,
            } => WorkerMsg::BackfillProgress {
                index,
                revision,
                rows_done,
                rows_estimated,
            },
        };
        let _ = tx.send(msg);
    };
    match session.run(&plan, &engine.scripts, &mut on_event, &ctx.stop).await {
        Ok(report) => Ok(Attempt::Done {
            from: from.to_vec(),
            to: report.rows_after,
            n_steps: report.steps.len(),
        }),
        Err(failure) if matches!(failure.error, ExecError::Interrupted) => Ok(Attempt::Interrupted {
            from: from.to_vec(),
            to: failure.report.rows_after,
        }),
        Err(failure) => Err(AttemptError {
            failure: Failure::from_exec(&failure.error),
            from: Some(from.to_vec()),
            to: Some(failure.report.rows_after),
            n_steps: failure.report.steps.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::{backoff, jittered, plan_downgrade_to, TenantLimits};
    use crate::graph::RevisionGraph;
    use crate::revision::{RevisionId, RevisionMeta};
    use std::time::Duration;

    fn ids(v: &[&str]) -> Vec<RevisionId> {
        v.iter().map(|s| RevisionId::new(*s)).collect()
    }

    /// Two independent branches from base, a1 - a2 and b1 - b2, and m3 merging a2 and b1.
    fn branches() -> RevisionGraph {
        let rev = |id: &str, down: &[&str]| RevisionMeta {
            id: RevisionId::new(id),
            down_revisions: ids(down),
            ..Default::default()
        };
        RevisionGraph::new(vec![
            rev("a1", &[]),
            rev("a2", &["a1"]),
            rev("b1", &[]),
            rev("b2", &["b1"]),
            rev("m3", &["a2", "b1"]),
        ])
        .unwrap()
    }

    #[test]
    fn a_downgrade_to_several_rows_goes_back_on_each_branch() {
        let g = branches();
        let plan = plan_downgrade_to(&g, &ids(&["a2", "b2"]), &ids(&["a1", "b1"])).unwrap();
        let mut undone: Vec<&str> = plan.steps.iter().map(|s| s.revision.as_str()).collect();
        undone.sort();
        assert_eq!(undone, ["a2", "b2"]);
        // Through a merge, and to base.
        let plan = plan_downgrade_to(&g, &ids(&["m3"]), &ids(&["a1", "b1"])).unwrap();
        assert_eq!(plan.steps.len(), 2, "m3 and a2");
        assert_eq!(plan_downgrade_to(&g, &ids(&["a2", "b2"]), &[]).unwrap().steps.len(), 4);
        // Rows no downgrade reaches are refused.
        assert!(plan_downgrade_to(&g, &ids(&["a2"]), &ids(&["a1", "b1"])).is_err());
        let err = plan_downgrade_to(&g, &ids(&["m3"]), &ids(&["a2", "b2"])).unwrap_err();
        assert!(
            err.contains("cannot reach exactly") || err.contains("ancestor"),
            "{err}"
        );
    }

    #[test]
    fn jitter_takes_its_share_of_the_delay_at_random() {
        let d = Duration::from_secs(4);
        assert_eq!(jittered(d, 0.0, 1.0), d);
        assert_eq!(jittered(d, 1.0, 1.0), Duration::ZERO);
        assert_eq!(jittered(d, 0.75, 1.0), Duration::from_secs(1));
        assert_eq!(jittered(d, 0.75, 0.0), d);
        assert_eq!(jittered(d, 0.5, 0.5), Duration::from_secs(3));
        assert_eq!(jittered(d, 7.0, 1.0), Duration::ZERO, "jitter is clamped");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let limits = TenantLimits {
            retries: 3,
            tenant_timeout: None,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(500),
            backoff_jitter: 0.0,
            outage_budget: Duration::from_secs(60),
        };
        let delays: Vec<u128> = (1..=5).map(|r| backoff(&limits, r).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
    }
}
