//! The ledger's interface, as the fleet coordinator and the status and retry commands use it.

use super::error::LedgerError;
use super::id::RunId;
use super::queue::{Claim, Joined, OpenRun, Placement, RunnerInfo, ServerDemand, Shares};
use super::record::{NewRun, NewTenant, RunRecord, RunSelector, TenantRecord, TenantUpdate};
use super::status::TenantStatus;

/// The lease of a runner that [`Ledger::begin_run`] registers (one process, no `--run-name`).
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// The run record and work queue. Each value is one runner (one process's connection, from a blocking thread);
/// any number of readers and runners, in this or other processes. See `queue.rs` for the rules of a shared run.
pub trait Ledger: Send {
    /// Records a new run and all its tenants in one transaction (pending, or skipped when known at their target:
    /// [`NewTenant::at_target`]), and registers `open.runner` as its runner. When `open.name` names an existing
    /// run, joins that run instead (its tenants stay as recorded; `tenants` is ignored). Two runners opening the
    /// same name at once end up in one run.
    ///
    /// Errors: [`LedgerError::DuplicateTenant`], [`LedgerError::RunMismatch`] when the named run has another
    /// command or target, or a backend error; nothing is recorded then.
    fn open_run(&mut self, open: &OpenRun, tenants: &[NewTenant<'_>]) -> Result<Joined, LedgerError> {
        self.open_run_iter(open, &mut tenants.iter().copied())
    }

    /// [`Ledger::open_run`] with the tenants made one at a time, so the SQLite ledger records a run of 100,000
    /// tenants without a list of them all (about 10 MB) beside the caller's own. (The PostgreSQL ledger still
    /// copies them into the arrays it sends in one statement.)
    fn open_run_iter<'t>(
        &mut self,
        open: &OpenRun,
        tenants: &mut dyn Iterator<Item = NewTenant<'t>>,
    ) -> Result<Joined, LedgerError>;

    /// Records a new run of this process (no name, no placement) and returns its id: [`Ledger::open_run`] for
    /// a lone runner.
    fn begin_run(&mut self, run: &NewRun, tenants: &[NewTenant<'_>]) -> Result<RunId, LedgerError> {
        let runner = RunnerInfo::this_process(&run.host, Placement::default(), DEFAULT_LEASE);
        let open = OpenRun {
            run: run.clone(),
            name: None,
            runner,
        };
        Ok(self.open_run(&open, tenants)?.run)
    }

    /// Hands this runner (the one of the last [`Ledger::open_run`]) up to `max` claimable tenants of its
    /// placement, in dispatch order, marking them held by it, and renews its lease.
    ///
    /// Errors: [`LedgerError::NotRunner`] without an open run, [`LedgerError::UnknownRun`], a backend error.
    fn claim(&mut self, run: &RunId, max: usize) -> Result<Claim, LedgerError>;

    /// Renews this runner's lease.
    ///
    /// Errors: [`LedgerError::NotRunner`], [`LedgerError::LeaseLost`] when the lease had lapsed already (another
    /// runner may hold this runner's tenants now), a backend error.
    fn heartbeat(&mut self, run: &RunId) -> Result<(), LedgerError>;

    /// Shares each server's connection budget (its `cap`) among the run's live runners by
    /// [`super::queue::fair_share`], recording this runner's part, and returns that part per server, in the order
    /// of `demands`, with how many live runners have work (the run's start rate is split between them). A runner
    /// applies its part to its cap on each server, so the runners together never open more than the cap.
    ///
    /// The default keeps no shared budget and grants each runner its own cap and the whole rate: a backend that
    /// cannot share says so in its documentation.
    fn share_connections(&mut self, run: &RunId, demands: &[ServerDemand]) -> Result<Shares, LedgerError> {
        let _ = run;
        Ok(Shares {
            connections: demands.iter().map(|d| d.cap).collect(),
            n_busy_runners: 1,
        })
    }

    /// Marks the run halted: no runner claims anything more from it.
    fn halt(&mut self, run: &RunId) -> Result<(), LedgerError>;

    /// Stores each update as the tenant's whole new state, all in one transaction.
    ///
    /// Errors: [`LedgerError::UnknownRun`], [`LedgerError::RunFinished`], [`LedgerError::UnknownTenant`] for a
    /// tenant not in the run, or [`LedgerError::LostClaim`] for a tenant another runner holds now; the whole
    /// batch is then rolled back.
    fn record(&mut self, run: &RunId, updates: &[TenantUpdate]) -> Result<(), LedgerError>;

    /// Ends this runner's part with this exit code: its running tenants become interrupted, its claimed but
    /// unstarted ones are given back. When no other runner of the run holds a live lease, the run is finished
    /// with the highest exit code of its runners; pending tenants never started and stay pending (shown as
    /// "not started").
    ///
    /// Errors: [`LedgerError::UnknownRun`], [`LedgerError::RunFinished`] when it was finished already.
    fn finish_run(&mut self, run: &RunId, exit_code: i32) -> Result<(), LedgerError>;

    /// The selected run, or `None` when there is no such run (or no run at all, for `Latest`).
    fn run(&self, which: &RunSelector) -> Result<Option<RunRecord>, LedgerError>;

    /// The run's tenants with their stored statuses, ordered by tenant id, only those in `statuses` when given.
    /// For a run that never finished, see [`RunRecord::state`] and [`TenantRecord::effective_status`].
    ///
    /// Errors: [`LedgerError::UnknownRun`].
    fn tenants(&self, run: &RunId, statuses: Option<&[TenantStatus]>) -> Result<Vec<TenantRecord>, LedgerError>;

    /// The newest `limit` runs, newest first.
    fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, LedgerError>;

    /// The tenant ids `fleet retry` reruns, ordered: failed, interrupted and never started (pending) ones, and,
    /// when the run never finished, the running ones too (its process stopped under them). Callers check
    /// [`RunRecord::state`] first so as not to retry a run that is still live.
    ///
    /// Errors: [`LedgerError::UnknownRun`].
    fn retry_set(&self, run: &RunId) -> Result<Vec<String>, LedgerError>;
}
