//! One tenant's work: take a connection under its server's cap, open a migration session (lock without
//! waiting), plan, run, and retry transient failures with exponential backoff and full jitter.
//!
//! Workers never write the ledger or the progress display: they send [`WorkerMsg`]s to the coordinator.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::server::{ConnectError, Server};
use super::shared::SharedEngine;
use super::tenant::{Place, Tenant};
use crate::executor::{ExecError, ExecEvent, ExecOptions, Session, VersionStore};
use crate::graph::{Direction, GraphError, Plan, RevisionGraph, Step};
use crate::revision::RevisionId;
use crate::script::Script;

/// What a fleet command does to each tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Upgrade(String),
    Downgrade(String),
    Stamp(Vec<String>),
}

impl Action {
    pub fn command(&self) -> &'static str {
        match self {
            Action::Upgrade(_) => "upgrade",
            Action::Downgrade(_) => "downgrade",
            Action::Stamp(_) => "stamp",
        }
    }

    pub fn target(&self) -> String {
        match self {
            Action::Upgrade(t) | Action::Downgrade(t) => t.clone(),
            Action::Stamp(revs) => revs.join(" "),
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
    pub backoff_base: Duration,
    pub backoff_max: Duration,
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
}

/// Why an attempt failed, in the terms the ledger and metrics use.
#[derive(Debug, Clone)]
pub struct Failure {
    pub message: String,
    pub sqlstate: Option<String>,
    pub reason: &'static str,
    pub is_transient: bool,
    pub failed_revision: Option<RevisionId>,
    pub is_locked: bool,
}

impl Failure {
    fn from_exec(e: &ExecError) -> Failure {
        Failure {
            message: e.to_string(),
            sqlstate: e.sqlstate(),
            reason: e.reason(),
            is_transient: e.is_transient(),
            failed_revision: match e {
                ExecError::Step { revision, .. } => Some(revision.clone()),
                _ => None,
            },
            is_locked: matches!(e, ExecError::Locked { .. }),
        }
    }

    fn from_connect(e: &ConnectError) -> Failure {
        let (sqlstate, is_transient) = match e {
            ConnectError::Pg(pg) | ConnectError::Auth { pg, .. } => (
                pg.code().map(|c| c.code().to_string()),
                crate::executor::is_transient_pg(pg),
            ),
            ConnectError::Pool(_) => (None, true),
        };
        Failure {
            message: e.to_string(),
            sqlstate,
            reason: "connection",
            is_transient,
            failed_revision: None,
            is_locked: false,
        }
    }

    fn permanent(message: String, reason: &'static str) -> Failure {
        Failure {
            message,
            sqlstate: None,
            reason,
            is_transient: false,
            failed_revision: None,
            is_locked: false,
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
    pub pinned: BTreeMap<usize, Vec<RevisionId>>,
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
    let started = Instant::now();
    let mut attempt = first_attempt;
    let mut from: Option<Vec<RevisionId>> = None;
    // Steps committed by earlier attempts that failed part way, so the outcome counts the whole tenant.
    let mut n_steps_before = 0;
    let outcome = loop {
        // A retry that was waiting out its backoff when the run was interrupted does not start again.
        if attempt > first_attempt && ctx.stop.load(Ordering::Relaxed) {
            let from = from.unwrap_or_default();
            break Outcome::Interrupted {
                to: from.clone(),
                from,
                attempts: attempt - 1,
                elapsed: started.elapsed(),
            };
        }
        let _ = ctx.tx.send(WorkerMsg::Started { index, attempt });
        let work = one_attempt(&ctx, &server, &tenant, index);
        let result = match ctx.limits.tenant_timeout {
            Some(limit) => match tokio::time::timeout(limit, work).await {
                Ok(result) => result,
                Err(_) => {
                    Err(Failure::permanent(format!("tenant_timeout ({limit:?}) exceeded"), "tenant_timeout").into())
                }
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
            Err(err) => {
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
                let retries_used = attempt - 1;
                if err.failure.is_transient && retries_used < ctx.limits.retries && !ctx.stop.load(Ordering::Relaxed) {
                    let delay = backoff(&ctx.limits, attempt);
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

/// A downgrade to exactly `rows` (an earlier run's resolved target). Downgrading to one of them removes
/// everything above it; the rows it leaves must be exactly `rows`, or the tenant fails instead of guessing.
fn plan_downgrade_to(graph: &RevisionGraph, from: &[RevisionId], rows: &[RevisionId]) -> Result<Plan, String> {
    let Some(first) = rows.first() else {
        return graph.plan_downgrade(from, "base").map_err(|e| e.to_string());
    };
    let plan = graph.plan_downgrade(from, first.as_str()).map_err(|e| e.to_string())?;
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

/// Exponential backoff with full jitter: a random delay in [0, min(max, base * 2^(attempt-1))].
fn backoff(limits: &TenantLimits, attempt: u32) -> Duration {
    let exp = limits
        .backoff_base
        .saturating_mul(1 << attempt.saturating_sub(1).min(16));
    let cap = exp.min(limits.backoff_max);
    let millis = cap.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(millis / 4..=millis.max(1)))
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
            reason: "shared_failed",
            is_transient: e.is_transient(),
            failed_revision: None,
            is_locked: false,
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

async fn one_attempt(ctx: &WorkerCtx, server: &Server, tenant: &Tenant, index: usize) -> Result<Attempt, AttemptError> {
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
    if server.statement_timeout.is_some() {
        opts.statement_timeout = server.statement_timeout;
    }
    let mut session = Session::open(conn.client(), engine.store.as_ref(), &opts)
        .await
        .map_err(|e| Failure::from_exec(&e))?;
    let from = session.rows().to_vec();
    let result = drive(ctx, &mut session, index, &from, shared_applied.as_ref()).await;
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

async fn drive(
    ctx: &WorkerCtx,
    session: &mut Session<'_>,
    index: usize,
    from: &[RevisionId],
    shared_applied: Option<&BTreeSet<RevisionId>>,
) -> Result<Attempt, AttemptError> {
    let engine = &ctx.engine;
    let pinned = ctx.pinned.get(&index);
    let plan: Plan = match (&ctx.action, pinned) {
        (Action::Upgrade(_), Some(rows)) => plan_upgrade_to(&engine.graph, from, rows).map_err(|e| e.to_string()),
        (Action::Downgrade(_), Some(rows)) => plan_downgrade_to(&engine.graph, from, rows),
        (Action::Upgrade(target), None) => engine.graph.plan_upgrade(from, target).map_err(|e| e.to_string()),
        (Action::Downgrade(target), None) => engine
            .graph
            .plan_downgrade_checked(from, target)
            .map_err(|e| e.to_string()),
        (Action::Stamp(targets), _) => {
            let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
            let rows = engine
                .graph
                .stamp(from, &targets, false)
                .map_err(|e| Failure::permanent(e.to_string(), "plan"))?;
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
    .map_err(|e| Failure::permanent(e.to_string(), "plan"))?;
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
                "shared_missing",
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
