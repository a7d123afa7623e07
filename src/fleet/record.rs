//! The ledger writer: the tenant rows the coordinator decides ([`Decision::Record`]) are batched and written by a
//! thread of their own, so the ledger never blocks the runtime; claims, heartbeats, halts and the connection and
//! rate shares of a shared run go through the same thread.
//!
//! [`Decision::Record`]: crate::fleet::coordinator

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::fleet::server::Server;
use crate::ledger::{Claim, Ledger, LedgerError, RunId, ServerDemand, TenantUpdate};

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

/// The coordinator's handle on the ledger of a recorded run.
pub struct LedgerWriter {
    run: RunId,
    tx: Option<mpsc::Sender<Cmd>>,
    thread: Option<JoinHandle<()>>,
    /// Rows not sent to the thread yet, by tenant: only the latest row of a tenant is written.
    dirty: BTreeMap<String, TenantUpdate>,
    last_flush: Instant,
    /// The first write that failed, set by the writer thread.
    failure: Arc<Mutex<Option<String>>>,
}

/// How often a runner of a shared run renews its share of each server's connection budget.
const SHARE_EVERY: Duration = Duration::from_millis(250);

/// What the writer thread does besides writing: renew the runner's lease, and share connection budgets.
#[derive(Default)]
pub struct WriterDuties {
    /// Renew the lease this often.
    pub heartbeat: Option<Duration>,
    /// Share these servers' connection budgets with the other runners of the run (see
    /// [`crate::ledger::Ledger::share_connections`]): each server's cap becomes this runner's share.
    pub share: Vec<Arc<Server>>,
    /// The run's start rate (tenants per second) and where to send this runner's part of it: the rate split
    /// between the runners that have work.
    pub rate: Option<(f64, tokio::sync::watch::Sender<f64>)>,
}

/// The writer thread: the one user of the ledger value.
struct Writer {
    ledger: Box<dyn Ledger>,
    run: RunId,
    duties: WriterDuties,
    next_beat: Option<Instant>,
    next_share: Option<Instant>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Cmd>, failure: Arc<Mutex<Option<String>>>) {
        // Before any worker starts, so a shared run's runner never opens more than its share.
        let first = self.share();
        self.note(first, &failure);
        loop {
            let next = match (self.next_beat, self.next_share) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let cmd = match next {
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
                None => self.timers(),
                Some(cmd) => self.command(cmd),
            };
            self.note(outcome, &failure);
        }
    }

    fn note(&self, outcome: Result<(), LedgerError>, failure: &Mutex<Option<String>>) {
        if let Err(e) = outcome {
            tracing::error!(error = %e, "could not write the ledger");
            let mut slot = failure.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| crate::error::error_chain(&e));
        }
    }

    /// A due heartbeat or share.
    fn timers(&mut self) -> Result<(), LedgerError> {
        let now = Instant::now();
        if self.next_share.is_some_and(|at| at <= now) {
            self.share()?;
        }
        if self.next_beat.is_some_and(|at| at <= now) {
            self.next_beat = self.duties.heartbeat.map(|every| now + every);
            self.ledger.heartbeat(&self.run)?;
        }
        Ok(())
    }

    fn command(&mut self, cmd: Cmd) -> Result<(), LedgerError> {
        match cmd {
            Cmd::Record(updates) => self.ledger.record(&self.run, &updates),
            Cmd::Finish(code) => {
                self.next_beat = None;
                self.next_share = None;
                self.ledger.finish_run(&self.run, code)
            }
            Cmd::Sync(reply) => {
                let _ = reply.send(());
                Ok(())
            }
            Cmd::Halt => self.ledger.halt(&self.run),
            Cmd::Claim { max, reply } => {
                // A claim renews the lease too.
                self.next_beat = self.duties.heartbeat.map(|every| Instant::now() + every);
                let claim = self.ledger.claim(&self.run, max);
                let answer = match &claim {
                    Ok(claim) => Ok(claim.clone()),
                    Err(e) => Err(crate::error::error_chain(e)),
                };
                let _ = reply.send(answer);
                claim.map(|_| ())
            }
        }
    }

    /// Renew this runner's share of each server's connections and apply it to the server's cap.
    fn share(&mut self) -> Result<(), LedgerError> {
        if self.duties.share.is_empty() {
            return Ok(());
        }
        self.next_share = Some(Instant::now() + SHARE_EVERY);
        let demands: Vec<ServerDemand> = self
            .duties
            .share
            .iter()
            .map(|server| {
                let n_workers = server.n_workers();
                if n_workers == 0 && server.open_connections() > 0 {
                    // Idle pooled connections would hold a share this runner does not use.
                    server.close_idle();
                }
                // The connection reserved for the health signals is wanted as long as the tenants' are.
                let want = if n_workers == 0 {
                    0
                } else {
                    n_workers + server.n_reserved()
                };
                ServerDemand {
                    server: server.name.clone(),
                    cap: server.configured_connections(),
                    want: want.min(server.configured_connections()),
                    in_use: server.open_connections(),
                }
            })
            .collect();
        let shares = self.ledger.share_connections(&self.run, &demands)?;
        for (server, share) in self.duties.share.iter().zip(shares.connections) {
            server.set_share(share);
        }
        if let Some((rate, tx)) = &self.duties.rate {
            let part = rate / shares.n_busy_runners.max(1) as f64;
            tx.send_if_modified(|now| {
                let is_new = (*now - part).abs() > f64::EPSILON;
                *now = part;
                is_new
            });
        }
        Ok(())
    }
}

impl LedgerWriter {
    /// Take over `ledger` for the run `run` (already begun or joined), with the writer thread's other `duties`.
    pub fn new(ledger: Box<dyn Ledger>, run: RunId, duties: WriterDuties) -> LedgerWriter {
        let (tx, rx) = mpsc::channel::<Cmd>();
        let failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let thread_failure = failure.clone();
        let writer = Writer {
            ledger,
            run: run.clone(),
            next_beat: duties.heartbeat.map(|every| Instant::now() + every),
            next_share: None,
            duties,
        };
        let thread = std::thread::Builder::new()
            .name("flotilla-ledger".into())
            .spawn(move || {
                // A thread that dies (a bug, a panic in the driver) must stop the run like a failed write: the
                // coordinator reads the failure without having to send anything more.
                let ran =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer.run(rx, thread_failure.clone())));
                if let Err(panic) = ran {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".to_string());
                    let mut slot = thread_failure.lock().unwrap_or_else(|p| p.into_inner());
                    slot.get_or_insert_with(|| format!("the ledger writer thread stopped: {why}"));
                }
            })
            .ok();
        if thread.is_none() {
            *failure.lock().unwrap_or_else(|p| p.into_inner()) =
                Some("could not start the ledger writer thread".to_string());
        }
        LedgerWriter {
            run,
            tx: Some(tx),
            thread,
            dirty: BTreeMap::new(),
            last_flush: Instant::now(),
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

    /// Write `row` (the whole current state of its tenant) with the next batch.
    pub fn record(&mut self, row: TenantUpdate) {
        self.dirty.insert(row.tenant_id.clone(), row);
        self.flush_if_due();
    }

    /// Send the batch when it is large or old enough (the shell calls this at least once a second).
    pub fn flush_if_due(&mut self) {
        if self.dirty.len() >= FLUSH_EVERY_N || self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush();
        }
    }

    /// This runner halted the run: the other runners claim nothing more (halting a halted run changes nothing).
    pub fn halt(&mut self) {
        self.flush();
        self.send(Cmd::Halt);
    }

    /// Write everything recorded so far and wait until it is written; then the first failure, if any.
    pub fn sync(&mut self) -> Result<(), String> {
        self.flush();
        let (reply, done) = mpsc::channel();
        let is_synced = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(Cmd::Sync(reply)).is_ok() && done.recv().is_ok());
        if !is_synced {
            // The thread stopped before it got to the sync, so what was sent before it may never be written (its
            // own note of why may not be in yet).
            self.note_stopped();
        }
        self.health()
    }

    /// The first failure of the ledger, or `Ok`.
    pub fn health(&self) -> Result<(), String> {
        match &*self.failure.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(format!("the ledger could not be written: {e}")),
            None => Ok(()),
        }
    }

    /// Close this runner's part of the run with `exit_code` (the last live runner closes the run) and wait for
    /// the thread; then the first failure, if any.
    pub fn finish(&mut self, exit_code: i32) -> Result<(), String> {
        self.flush();
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Cmd::Finish(exit_code));
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                self.note_stopped();
            }
        }
        self.health()
    }

    fn note_stopped(&self) {
        let mut slot = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| "the ledger writer thread stopped".to_string());
    }

    fn flush(&mut self) {
        self.last_flush = Instant::now();
        if self.dirty.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.dirty).into_values().collect();
        self.send(Cmd::Record(rows));
    }

    fn send(&mut self, cmd: Cmd) {
        let is_sent = self.tx.as_ref().is_some_and(|tx| tx.send(cmd).is_ok());
        if !is_sent {
            self.note_stopped();
        }
    }
}

impl Drop for LedgerWriter {
    /// A writer dropped without [`LedgerWriter::finish`] (a run that never ran) still writes what it has.
    fn drop(&mut self) {
        self.flush();
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ledger::{Joined, NewRun, NewTenant, OpenRun, RunRecord, RunSelector, SqliteLedger, TenantRecord};
    use crate::ledger::{TenantStatus, TenantUpdate};

    /// A SQLite ledger whose writer thread dies (a panic) at its `n`-th `record` call (1-based): a bug or a
    /// broken driver stopping the thread, as opposed to a write the ledger refuses.
    pub(crate) struct DiesAtRecord {
        inner: SqliteLedger,
        n_left: usize,
    }

    /// A fresh in-memory ledger holding a run of `tenants` (ids `t0`..), and the run's id.
    pub(crate) fn dies_at_record(n: usize, tenants: usize) -> (DiesAtRecord, RunId) {
        let mut inner = SqliteLedger::open_in_memory().expect("an in-memory ledger");
        let ids: Vec<String> = (0..tenants).map(|i| format!("t{i}")).collect();
        let rows: Vec<NewTenant<'_>> = ids
            .iter()
            .map(|id| NewTenant {
                tenant_id: id,
                server: "s1",
                kind: "schema",
                target: None,
                canary: false,
                tags: None,
                at_target: None,
            })
            .collect();
        let run = NewRun {
            command: "upgrade".into(),
            target: "head".into(),
            options: serde_json::json!({}),
            user: "test".into(),
            host: "test".into(),
        };
        let id = inner.begin_run(&run, &rows).expect("begin the run");
        (DiesAtRecord { inner, n_left: n }, id)
    }

    impl Ledger for DiesAtRecord {
        fn open_run_iter<'t>(
            &mut self,
            open: &OpenRun,
            tenants: &mut dyn Iterator<Item = NewTenant<'t>>,
        ) -> Result<Joined, LedgerError> {
            self.inner.open_run_iter(open, tenants)
        }
        fn claim(&mut self, run: &RunId, max: usize) -> Result<Claim, LedgerError> {
            self.inner.claim(run, max)
        }
        fn heartbeat(&mut self, run: &RunId) -> Result<(), LedgerError> {
            self.inner.heartbeat(run)
        }
        fn halt(&mut self, run: &RunId) -> Result<(), LedgerError> {
            self.inner.halt(run)
        }
        fn record(&mut self, run: &RunId, updates: &[TenantUpdate]) -> Result<(), LedgerError> {
            self.n_left -= 1;
            assert!(self.n_left > 0, "the ledger writer's driver broke");
            self.inner.record(run, updates)
        }
        fn finish_run(&mut self, run: &RunId, exit_code: i32) -> Result<(), LedgerError> {
            self.inner.finish_run(run, exit_code)
        }
        fn run(&self, which: &RunSelector) -> Result<Option<RunRecord>, LedgerError> {
            self.inner.run(which)
        }
        fn tenants(&self, run: &RunId, statuses: Option<&[TenantStatus]>) -> Result<Vec<TenantRecord>, LedgerError> {
            self.inner.tenants(run, statuses)
        }
        fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, LedgerError> {
            self.inner.runs(limit)
        }
        fn retry_set(&self, run: &RunId) -> Result<Vec<String>, LedgerError> {
            self.inner.retry_set(run)
        }
    }

    #[test]
    fn a_thread_that_dies_on_the_last_rows_fails_the_sync_and_the_finish() {
        let (ledger, run) = dies_at_record(1, 1);
        let mut writer = LedgerWriter::new(Box::new(ledger), run, WriterDuties::default());
        writer.record(TenantUpdate::new("t0", TenantStatus::Succeeded));
        // The rows went to the thread, which died writing them: nothing else is sent after them.
        let synced = writer.sync().expect_err("rows the thread never wrote");
        assert!(synced.contains("the ledger writer thread stopped"), "{synced}");
        let finished = writer.finish(0).expect_err("the run cannot finish cleanly");
        assert!(finished.contains("the ledger writer thread stopped"), "{finished}");
    }

    #[test]
    fn a_thread_that_dies_is_seen_without_another_write() {
        let (ledger, run) = dies_at_record(1, 1);
        let mut writer = LedgerWriter::new(Box::new(ledger), run, WriterDuties::default());
        writer.record(TenantUpdate::new("t0", TenantStatus::Running));
        writer.flush();
        let deadline = Instant::now() + Duration::from_secs(10);
        let failure = loop {
            if let Err(e) = writer.health() {
                break e;
            }
            assert!(
                Instant::now() < deadline,
                "the writer's health never showed its thread stopped"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(
            failure.contains("the ledger writer thread stopped: the ledger writer's driver broke"),
            "{failure}"
        );
    }
}
