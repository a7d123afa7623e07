//! Adopting another tool's history: `flotilla import FORMAT` turns its migration directory into revision files,
//! and `stamp --from FORMAT` (one database, or each tenant of `fleet stamp --from`) reads its bookkeeping table
//! and stamps the matching revisions, so nothing that already ran runs again.
//!
//! `source.rs` reads the plain-SQL layouts and `alembic.rs` runs Alembic itself (offline) for its projects;
//! `write.rs` turns both into files; `adopt.rs` decides what to stamp (pure) from what `table.rs` reads.
//! The other tool's table is only ever read. The user-facing rules (ids, order, transactions, the report's
//! JSON shape) are in docs/import.md.

mod adopt;
pub mod alembic;
mod error;
mod format;
mod source;
mod sql;
mod table;
mod write;

pub use adopt::{adopt, decide, Adoption, Applied};
pub use error::{rows_text as revision_rows_text, AdoptError, ImportError, SourceProblem};
pub use format::{revision_id, SourceFormat};
pub use source::{read_dir, Skipped, SourceGraph, SourceRevision, SourceSet, SqlText};
pub use sql::no_transaction_reason;
pub use table::{read_applied, Ignored, TableRef};
pub use write::{plan, render, write, ImportReport, Imported, ToolInfo};

use std::path::Path;

use tokio_postgres::Client;

use crate::executor::{ExecError, Session};
use crate::graph::RevisionGraph;
use crate::revision::RevisionId;

/// Read a plain-SQL tool's directory and plan its files (nothing written; see [`write`]).
pub fn import_plain(format: SourceFormat, from: &Path, into: &Path) -> Result<ImportReport, ImportError> {
    let set = read_dir(format, from)?;
    plan(format, from, into, set)
}

/// Why `stamp --from` left a database unchanged.
#[derive(Debug, thiserror::Error)]
pub enum StampFromError {
    #[error(transparent)]
    Adopt(#[from] AdoptError),
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// What `stamp --from` did to one database.
#[derive(Debug, Clone)]
pub struct StampFromReport {
    pub from: Vec<RevisionId>,
    pub to: Vec<RevisionId>,
    /// How many imported revisions the other tool had applied.
    pub n_applied: usize,
    /// False when the Flotilla rows already said the same (or, in a dry run, nothing was written).
    pub is_changed: bool,
    pub ignored: Vec<Ignored>,
}

/// Stamp the revisions `table` records as applied, through `session` (which holds the migration lock and
/// writes the version rows in one transaction). `schema` is a schema tenant's schema, where the table is
/// looked for. Changes nothing when the table matches no consistent point of `graph`, when Flotilla has already
/// recorded something else, or when `is_dry_run`.
pub async fn stamp_from(
    client: &Client,
    session: &mut Session<'_>,
    schema: Option<&str>,
    graph: &RevisionGraph,
    table: &TableRef,
    is_dry_run: bool,
) -> Result<StampFromReport, StampFromError> {
    let (applied, ignored) = read_applied(client, table, schema).await?;
    let adoption = adopt(graph, table.name(), &applied)?;
    let from = session.rows().to_vec();
    let decision = decide(table.name(), &from, &adoption)?;
    let is_changed = match decision {
        Some(rows) if !is_dry_run => {
            session.stamp(&rows).await?;
            true
        }
        _ => false,
    };
    Ok(StampFromReport {
        from,
        to: adoption.rows,
        n_applied: adoption.n_applied,
        is_changed,
        ignored,
    })
}
