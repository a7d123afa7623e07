//! The ledger's interface, as the fleet coordinator and the status and retry commands use it.

use super::error::LedgerError;
use super::id::RunId;
use super::record::{NewRun, NewTenant, RunRecord, RunSelector, TenantRecord, TenantUpdate};
use super::status::TenantStatus;

/// The run record. One writer (the fleet coordinator, from a blocking thread); any number of readers, in this or
/// other processes.
pub trait Ledger: Send {
    /// Records a new run and all its tenants as pending, in one transaction, and returns the run's id.
    ///
    /// Errors: [`LedgerError::Sqlite`] when the write fails; nothing is recorded then.
    fn begin_run(&mut self, run: &NewRun, tenants: &[NewTenant<'_>]) -> Result<RunId, LedgerError>;

    /// Stores each update as the tenant's whole new state, all in one transaction.
    ///
    /// Errors: [`LedgerError::UnknownRun`], [`LedgerError::RunFinished`], or [`LedgerError::UnknownTenant`]
    /// for a tenant not in the run; the whole batch is then rolled back.
    fn record(&mut self, run: &RunId, updates: &[TenantUpdate]) -> Result<(), LedgerError>;

    /// Marks the run finished with this exit code, and its running tenants interrupted; pending tenants never
    /// started and stay pending (shown as "not started").
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
