//! The phases of a section: schema statements and backfills, in the order they run.

use super::split::Statement;
use crate::backfill::BackfillSpec;

/// One unit of a section. A section without backfills is a single `Sql` phase.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Schema statements that run (and commit) together.
    Sql(Vec<Statement>),
    Backfill(BackfillStep),
}

/// A `-- flotilla:backfill` marker and the statement after it.
#[derive(Debug, Clone)]
pub struct BackfillStep {
    pub spec: BackfillSpec,
    /// Holds `{{batch}}`, replaced by each batch's key predicate.
    pub statement: Statement,
    /// 1-based file line of the marker.
    pub marker_line: usize,
}
