//! Backfills: data changes over large tables, run as keyset batches that each commit with their checkpoint.
//!
//! This module owns the `-- flotilla:backfill` marker's attributes ([`BackfillSpec`]), the SQL of one batch
//! (keyset bound, key predicate, progress-table checkpoint), the batch loop on one connection, the rows/s
//! throttle, adaptive batch sizing and the `max_hold` ceiling on how long a batch holds its locks. Where a backfill sits in a revision (its phases) belongs to `script`,
//! and the revision's version rows and history belong to `executor`, which calls [`run_backfill`].
//! The user-facing format is documented in `docs/backfill.md`.

mod batch;
mod hold;
mod spec;
mod sql;
mod throttle;

pub use batch::{run_backfill, BackfillError, BackfillRun, BatchOutcome};
pub use hold::{after_error, AfterError, BatchError, HoldBudget};
pub use spec::{BackfillSpec, BackfillSpecError, BatchCommit, Estimate, BATCH_PLACEHOLDER, MIN_MAX_HOLD};
pub use sql::{progress_create_sql, progress_key, progress_table, render_offline_loop, Bounds, PROGRESS_TABLE};
pub use throttle::{BatchGate, BatchSizer, RowThrottle};
