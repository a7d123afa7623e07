//! Identity of a revision: the id newtype and the graph-relevant header fields every other module shares.
//!
//! `script` produces [`RevisionMeta`] from revision files; `graph` consumes it. Neither owns the other.

use std::fmt;

/// The most characters a revision id, branch label or `depends_on` entry may have: the version table's
/// `version_num varchar(255)` column holds ids, and labels and references stand for ids in the same places.
pub const MAX_NAME_CHARS: usize = 255;

/// A revision id as written in a revision file header (for example `1a2b3c4d5e6f`).
///
/// Ids are case-sensitive, non-empty, and never one of the reserved words `head`, `heads`, `base`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct RevisionId(pub String);

impl RevisionId {
    pub fn new(id: impl Into<String>) -> Self {
        RevisionId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for RevisionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RevisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for RevisionId {
    fn from(s: &str) -> Self {
        RevisionId(s.to_string())
    }
}

/// The header fields of one revision that define its place in the graph.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RevisionMeta {
    pub id: RevisionId,
    /// Empty for a root (base) revision, several for a merge.
    pub down_revisions: Vec<RevisionId>,
    pub branch_labels: Vec<String>,
    /// Revision ids (full or unique prefix) or branch labels this revision needs applied first, without being
    /// its parent.
    pub depends_on: Vec<String>,
    pub message: String,
}
