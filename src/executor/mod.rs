//! One database: session settings, the migration lock, the version and history tables, running a plan's steps
//! with each revision's SQL and its version-row update in one transaction, and offline SQL rendering.
//!
//! The executor knows one connection and one plan. It never sees tenants, concurrency or progress bars: it
//! reports what it does through [`ExecEvent`]s and leaves scheduling to `fleet`.

mod error;
mod offline;
mod phased;
mod session;
mod sql;
mod store;

pub use error::{
    classify_pg, db_message, is_not_postgres, is_transient_pg, server_at, ErrorClass, ExecError, ExecFailure,
    FailureKind,
};
pub use offline::{OfflineInput, OfflineRenderer, PsqlRenderer};
pub use session::{
    direction_word, schema_exists_sql, search_path, session_reset_sql, stamp_sql, ExecEvent, ExecOptions, ReadSession,
    Report, ResetSession, Session, StepRecord, TransactionPer,
};
pub use sql::{quote_ident, quote_literal};
pub use store::{Blocked, HistoryEntry, HistoryRow, StoreSettings, TableStore, VersionStore};
