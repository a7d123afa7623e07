//! The revision graph with Alembic's semantics: heads, bases, merges, branch labels, depends_on, target
//! resolution and upgrade/downgrade plans. Pure: no IO, no runtime.
//!
//! PLACEHOLDER API (to be implemented by the graph work): the public names below are what `executor` and `cli`
//! rely on. Fields and methods may be added.

use crate::revision::{RevisionId, RevisionMeta};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Up,
    Down,
}

/// One step of a plan: apply (`Up`) or revert (`Down`) one revision, and what that does to the version table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub revision: RevisionId,
    pub direction: Direction,
    /// Version-table rows this step removes and inserts (Alembic's head bookkeeping).
    pub delete_rows: Vec<RevisionId>,
    pub insert_rows: Vec<RevisionId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub direction: Direction,
    pub steps: Vec<Step>,
}

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("todo")]
    Todo,
}

#[derive(Debug, Clone)]
pub struct RevisionGraph {
    _revisions: Vec<RevisionMeta>,
}

impl RevisionGraph {
    pub fn new(_revisions: Vec<RevisionMeta>) -> Result<Self, GraphError> {
        todo!()
    }

    pub fn plan_upgrade(&self, _current: &[RevisionId], _target: &str) -> Result<Plan, GraphError> {
        todo!()
    }

    pub fn plan_downgrade(&self, _current: &[RevisionId], _target: &str) -> Result<Plan, GraphError> {
        todo!()
    }
}
