//! Revision script files: header, upgrade/downgrade sections, the SQL statement splitter, checksums, and the
//! file template for new revisions. Pure: no database, no runtime.
//!
//! PLACEHOLDER API (to be implemented by the script work): the public names below are what `executor`, `cli`
//! and `graph` callers rely on. Fields may be added.

use std::path::{Path, PathBuf};

use crate::revision::RevisionMeta;

/// One parsed revision file.
#[derive(Debug, Clone)]
pub struct Script {
    pub path: PathBuf,
    pub meta: RevisionMeta,
    /// `create_date` header, verbatim.
    pub create_date: Option<String>,
    /// False when the header carries the no-transaction marker.
    pub is_transactional: bool,
    pub upgrade: Section,
    pub downgrade: Section,
}

/// The SQL of one direction of a revision.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// The section's text exactly as in the file (after the marker line), used for offline SQL and checksums.
    pub text: String,
    /// 1-based line in the file where the section's text starts.
    pub first_line: usize,
    pub statements: Vec<Statement>,
    /// Versioned checksum of the normalised text, e.g. `v1:sha256:<hex>`.
    pub checksum: String,
}

/// One SQL statement (without its terminating semicolon) and the 1-based file line where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub line: usize,
}

/// Every problem found in one or more files; nothing runs when this is returned.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ScriptError {
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{}:{line}: {message}", .path.display())]
pub struct Problem {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

/// Parse one revision file's text.
pub fn parse_script(_path: &Path, _text: &str) -> Result<Script, ScriptError> {
    todo!()
}

/// Load and parse every revision file (`*.sql`) directly inside `dir`, collecting all problems.
pub fn load_dir(_dir: &Path) -> Result<Vec<Script>, ScriptError> {
    todo!()
}
