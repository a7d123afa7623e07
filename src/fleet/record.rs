//! The ledger as a sink of run events: the coordinator's events become batched tenant updates, written by a
//! thread of their own so SQLite never blocks the runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::ledger::{Claim, Ledger, RunId, TenantStatus, TenantUpdate};
use crate::observe::{FleetEvent, Sink};

/// Flush when this many tenants changed, or when this much time passed since the last flush.
const FLUSH_EVERY_N: usize = 500;
const FLUSH_EVERY: Duration = Duration::from_millis(250);

enum Cmd {
    Record(Vec<TenantUpdate>),
    Finish(i32),
    /// Answer once every earlier command is done.
    Sync(mpsc::Sender<()>),
    Claim {
        max: usize,
        reply: tokio::sync::oneshot::Sender<Result<Claim, String>>,
    },
    Halt,
}

/// Claims tenants from the ledger through the writer thread (the ledger's one connection), so claims and
/// records reach the ledger in the order they were made.
#[derive(Clone)]
pub struct LedgerQueue {
    tx: mpsc::Sender<Cmd>,
}

impl LedgerQueue {
    /// Ask for up to `max` tenants; the answer comes on the receiver (an error text when the ledger failed).
    pub fn claim(&self, max: usize) -> tokio::sync::oneshot::Receiver<Result<Claim, String>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if let Err(mpsc::SendError(Cmd::Claim { reply, .. })) = self.tx.send(Cmd::Claim { max, reply }) {
            let _ = reply.send(Err("the ledger writer thread stopped".to_string()));
        }
        answer
    }
}

pub struct LedgerSink {
    run: RunId,
    tx: Option<mpsc::Sender<Cmd>>,
    thread: Option<JoinHandle<()>>,
    tenants: BTreeMap<String, TenantUpdate>,
    dirty: BTreeSet<String>,
    last_flush: Instant,
    exit_code: Option<i32>,
    /// The first write that failed, set by the writer thread.
    failure: Arc<Mutex<Option<String>>>,
}

fn joined(rows: &[String]) -> Option<String> {
    (!rows.is_empty()).then(|| rows.join(","))
}

impl LedgerSink {
    /// Take over `ledger` for the run `run` (already begun or joined), renewing the runner's lease every
    /// `heartbeat` when given.
    pub fn new(mut ledger: Box<dyn Ledger>, run: RunId, heartbeat: Option<Duration>) -> LedgerSink {
        let (tx, rx) = mpsc::channel::<Cmd>();
        let thread_run = run.clone();
        let failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let thread_failure = failure.clone();
        let thread = std::thread::Builder::new()
            .name("flotilla-ledger".into())
            .spawn(move || {
                let mut next_beat = heartbeat.map(|every| Instant::now() + every);
                loop {
                    let cmd = match next_beat {
                        Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                            Ok(cmd) => Some(cmd),
                            Err(mpsc::RecvTimeoutError::Timeout) => None,
                            Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        },
                        None => match rx.recv() {
                            Ok(cmd) => Some(cmd),
                            Err(_) => break,
                        },
                    };
                    let outcome = match cmd {
                        None => {
                            next_beat = heartbeat.map(|every| Instant::now() + every);
                            ledger.heartbeat(&thread_run)
                        }
                        Some(Cmd::Record(updates)) => ledger.record(&thread_run, &updates),
                        Some(Cmd::Finish(code)) => {
                            next_beat = None;
                            ledger.finish_run(&thread_run, code)
                        }
                        Some(Cmd::Sync(reply)) => {
                            let _ = reply.send(());
                            Ok(())
                        }
                        Some(Cmd::Halt) => ledger.halt(&thread_run),
                        Some(Cmd::Claim { max, reply }) => {
                            // A claim renews the lease too.
                            next_beat = heartbeat.map(|every| Instant::now() + every);
                            let claim = ledger.claim(&thread_run, max);
                            let answer = match &claim {
                                Ok(claim) => Ok(claim.clone()),
                                Err(e) => Err(crate::error::error_chain(e)),
                            };
                            let _ = reply.send(answer);
                            claim.map(|_| ())
                        }
                    };
                    if let Err(e) = outcome {
                        tracing::error!(error = %e, "could not write the ledger");
                        let mut slot = thread_failure.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert_with(|| crate::error::error_chain(&e));
                    }
                }
            })
            .ok();
        if thread.is_none() {
            *failure.lock().unwrap_or_else(|p| p.into_inner()) =
                Some("could not start the ledger writer thread".to_string());
        }
        LedgerSink {
            run,
            tx: Some(tx),
            thread,
            tenants: BTreeMap::new(),
            dirty: BTreeSet::new(),
            last_flush: Instant::now(),
            exit_code: None,
            failure,
        }
    }

    pub fn run_id(&self) -> &RunId {
        &self.run
    }

    /// The claim handle of this run's runner.
    pub fn queue(&self) -> Option<LedgerQueue> {
        self.tx.as_ref().map(|tx| LedgerQueue { tx: tx.clone() })
    }

    fn update(&mut self, tenant: &str, change: impl FnOnce(&mut TenantUpdate)) {
        let entry = self
            .tenants
            .entry(tenant.to_string())
            .or_insert_with(|| TenantUpdate::new(tenant, TenantStatus::Pending));
        change(entry);
        self.dirty.insert(tenant.to_string());
    }

    fn flush(&mut self) {
        self.last_flush = Instant::now();
        if self.dirty.is_empty() {
            return;
        }
        let mut updates = Vec::with_capacity(self.dirty.len());
        for id in std::mem::take(&mut self.dirty) {
            let Some(update) = self.tenants.get(&id) else { continue };
            // A tenant that reached its final state sends no more updates: forget it, so memory stays flat
            // however large the fleet.
            if matches!(
                update.status,
                TenantStatus::Succeeded | TenantStatus::Failed | TenantStatus::Skipped | TenantStatus::Interrupted
            ) {
                updates.extend(self.tenants.remove(&id));
            } else {
                updates.push(update.clone());
            }
        }
        if let Some(tx) = &self.tx {
            if tx.send(Cmd::Record(updates)).is_err() {
                let mut slot = self.failure.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert_with(|| "the ledger writer thread stopped".to_string());
            }
        }
    }
}

impl Sink for LedgerSink {
    fn event(&mut self, event: &FleetEvent) {
        match event {
            FleetEvent::TenantStarted { tenant, attempt, .. } => self.update(tenant, |u| {
                u.status = TenantStatus::Running;
                u.attempts = *attempt;
            }),
            FleetEvent::TenantPlanned { tenant, from, to, .. } => self.update(tenant, |u| {
                u.from_revision = joined(from);
                u.to_revision = joined(from);
                u.target_revision = Some(crate::ledger::rows_text(to));
            }),
            FleetEvent::TenantRetrying {
                tenant,
                error,
                reason,
                sqlstate,
                attempt,
                ..
            } => self.update(tenant, |u| {
                u.error = Some(error.clone());
                u.error_kind = Some(reason.clone());
                u.sqlstate = sqlstate.clone();
                u.attempts = *attempt;
            }),
            FleetEvent::TenantSucceeded {
                tenant,
                from,
                to,
                attempts,
                duration,
                ..
            } => self.update(tenant, |u| {
                u.status = TenantStatus::Succeeded;
                u.from_revision = joined(from);
                u.to_revision = joined(to);
                u.attempts = *attempts;
                u.duration_ms = Some(duration.as_millis() as u64);
                u.error = None;
                u.error_kind = None;
                u.sqlstate = None;
                u.failed_revision = None;
            }),
            FleetEvent::TenantSkipped { tenant, at } => self.update(tenant, |u| {
                u.status = TenantStatus::Skipped;
                u.from_revision = joined(at);
                u.to_revision = joined(at);
                u.error = None;
                u.error_kind = None;
                u.sqlstate = None;
            }),
            FleetEvent::TenantFailed {
                tenant,
                from,
                to,
                failed_revision,
                error,
                error_kind,
                sqlstate,
                attempts,
                duration,
            } => self.update(tenant, |u| {
                u.status = TenantStatus::Failed;
                u.error_kind = Some(error_kind.clone());
                u.from_revision = joined(from);
                u.to_revision = joined(to);
                u.failed_revision = failed_revision.clone();
                u.error = Some(error.clone());
                u.sqlstate = sqlstate.clone();
                u.attempts = *attempts;
                u.duration_ms = Some(duration.as_millis() as u64);
            }),
            FleetEvent::TenantInterrupted { tenant, from, to } => self.update(tenant, |u| {
                u.status = TenantStatus::Interrupted;
                if !from.is_empty() || !to.is_empty() {
                    u.from_revision = joined(from);
                    u.to_revision = joined(to);
                }
            }),
            FleetEvent::RunFinished { exit_code, .. } => self.exit_code = Some(*exit_code),
            // A halt reaches the other runners through the ledger: they claim nothing more (halting a halted run
            // again changes nothing).
            FleetEvent::RunHalted { .. } => {
                self.flush();
                if let Some(tx) = &self.tx {
                    let _ = tx.send(Cmd::Halt);
                }
            }
            // Other events change no tenant record, but they come often enough (the coordinator samples connections
            // every second) to flush a tenant that started a long revision.
            _ => {}
        }
        if self.dirty.len() >= FLUSH_EVERY_N || self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush();
        }
    }

    fn sync(&mut self) {
        self.flush();
        let (reply, done) = mpsc::channel();
        if let Some(tx) = &self.tx {
            if tx.send(Cmd::Sync(reply)).is_ok() {
                let _ = done.recv();
            }
        }
    }

    fn health(&self) -> Result<(), String> {
        match &*self.failure.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(format!("the ledger could not be written: {e}")),
            None => Ok(()),
        }
    }

    fn finish(&mut self) {
        self.flush();
        if let Some(tx) = self.tx.take() {
            if let Some(code) = self.exit_code {
                let _ = tx.send(Cmd::Finish(code));
            }
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
