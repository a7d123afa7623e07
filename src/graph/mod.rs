//! The revision graph with Alembic's semantics: heads, bases, merges, branch labels, depends_on, identifier
//! resolution, upgrade/downgrade plans with their version-row effects, stamp and history ranges.
//!
//! Pure: no IO, no runtime. Reading revision files is `script`'s job; running a plan against a database (and
//! writing the version rows each step names) is `executor`'s.
//!
//! The reference is Alembic's `alembic/script/revision.py` (`RevisionMap`) and `HeadMaintainer` in
//! `alembic/runtime/migration.py`; the code keeps Alembic's structure and names so the two can be read side by
//! side, and `alembic_tests.rs` checks recorded Alembic answers (`tests/fixtures/alembic/`).
//!
//! Ordering: lists follow the order revisions were given to [`RevisionGraph::new`] (Alembic's map order); plans
//! follow Alembic's topological walk; sets are [`std::collections::BTreeSet`]s.
//!
//! Deliberate differences from Alembic:
//! - Construction errors instead of warning on duplicate ids and missing down_revisions, and collects problems.
//! - depends_on also accepts a unique id prefix (Alembic: exact id or branch label only).
//! - Where Alembic's order depends on Python set iteration (several dependencies, unmerge targets), we use
//!   header order; where Alembic crashes on an assertion, we return a [`GraphError`].
//! - Version-row bookkeeping on a merge deletes only rows that exist (Alembic raises `KeyError` when a merge or
//!   a depends_on names an ancestor of another parent and that ancestor has no row), and an unmerge skips
//!   re-inserting a row that exists; both only change cases where Alembic fails.
//! - Rows passed in must be full ids (Alembic would also accept prefixes there).
//! - Rows effects are reported as delete/insert lists; Alembic's `UPDATE` of one row is one delete plus one insert.

mod collect;
mod error;
mod map;
mod plan;
mod relative;
mod resolve;

#[cfg(test)]
mod alembic_tests;
#[cfg(test)]
mod tests;

pub use error::{GraphError, RowsProblem};
pub use map::RevisionGraph;
pub use plan::{Direction, Plan, Step};
