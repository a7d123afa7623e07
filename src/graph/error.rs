//! Errors from building the revision graph, resolving identifiers and planning.

use crate::revision::RevisionId;

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// Everything that can go wrong in `graph`. Variants hold the facts (ids, specs); messages are built on display.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("revision {revision} is defined more than once")]
    DuplicateRevision { revision: RevisionId },
    #[error(
        "revision id `{revision}` is not allowed: use a non-empty id without `@ - + :` that is not head, heads or base"
    )]
    InvalidRevisionId { revision: RevisionId },
    #[error("revision {revision} names down_revision {down_revision}, which does not exist")]
    UnknownDownRevision {
        revision: RevisionId,
        down_revision: RevisionId,
    },
    #[error("revision {revision} depends on `{dependency}`, which names no revision or branch label")]
    UnknownDependency { revision: RevisionId, dependency: String },
    #[error("revision {revision} depends on `{dependency}`, which matches several revisions ({}): use a longer prefix", join(.candidates))]
    AmbiguousDependency {
        revision: RevisionId,
        dependency: String,
        candidates: Vec<RevisionId>,
    },
    #[error("branch label `{label}` of revision {revision} is already used by {other}")]
    DuplicateBranchLabel {
        label: String,
        revision: RevisionId,
        other: RevisionId,
    },
    #[error("cycle among revisions ({})", join(.revisions))]
    Cycle { revisions: Vec<RevisionId> },
    #[error("dependency cycle among revisions ({}): check their depends_on", join(.revisions))]
    DependencyCycle { revisions: Vec<RevisionId> },
    #[error("revision graph has {} problems: {}", .problems.len(), join(.problems))]
    Invalid { problems: Vec<GraphError> },

    #[error("no such revision or branch `{spec}`")]
    UnknownRevision { spec: String },
    #[error("`{prefix}` matches several revisions ({}): use a longer prefix", join(.candidates))]
    AmbiguousPrefix { prefix: String, candidates: Vec<String> },
    #[error("no such branch `{label}`")]
    UnknownBranch { label: String },
    #[error("revision {revision} is not on branch `{label}`")]
    NotOnBranch { revision: RevisionId, label: String },
    #[error("multiple heads ({}) for `{argument}`: use `heads` or name one", join(.heads))]
    MultipleHeads { argument: String, heads: Vec<RevisionId> },
    #[error(
        "downgrade `{spec}` is ambiguous: the database has several heads ({}); {}",
        join(.heads),
        if .hints.is_empty() {
            "name the revision to downgrade to".to_string()
        } else {
            format!("pick one with {}", .hints.iter().map(|h| format!("`{h}`")).collect::<Vec<_>>().join(" or "))
        }
    )]
    RelativeDowngradeOfSeveralHeads {
        spec: String,
        heads: Vec<RevisionId>,
        hints: Vec<String>,
    },
    #[error(
        "relative revision `{spec}` is ambiguous at a branch point or merge point; {}",
        if .hints.is_empty() {
            "name the revision to downgrade to".to_string()
        } else {
            format!("downgrade to {} instead", .hints.iter().map(|h| format!("`{h}`")).collect::<Vec<_>>().join(" or "))
        }
    )]
    AmbiguousWalkAt { spec: String, hints: Vec<String> },
    #[error("relative revision `{spec}` goes past the end of the graph")]
    RelativeOutOfRange { spec: String },
    #[error(
        "relative revision `{spec}` is ambiguous at a branch point or merge point: name a revision or `<label>@{spec}`"
    )]
    AmbiguousWalk { spec: String },
    #[error("relative upgrade from several current revisions ({}) is ambiguous: use `<label>@+N` or name a revision", join(.current))]
    AmbiguousUpgrade { current: Vec<RevisionId> },
    #[error("revision {revision} overlaps with other requested revisions ({})", join(.others))]
    Overlap {
        revision: RevisionId,
        others: Vec<RevisionId>,
    },
    #[error("`{lower}` is not an ancestor of `{upper}` on the same branch")]
    RangeNotAncestor { lower: String, upper: String },
    #[error("`{target}` is not a valid downgrade target from the current revisions")]
    InvalidDowngradeTarget { target: String },
    #[error("history range `{range}` must look like start:end, start: or :end")]
    BadRange { range: String },
    #[error("version rows cannot take step {revision}: {problem}")]
    RowsConflict { revision: RevisionId, problem: RowsProblem },
}

/// Why a step's version-row effect does not fit the rows it would apply to (Alembic fails the same way).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowsProblem {
    #[error("row {0} is not present")]
    Missing(RevisionId),
    #[error("row {0} is already present")]
    AlreadyPresent(RevisionId),
    #[error("the row to update is ambiguous")]
    Ambiguous,
}
