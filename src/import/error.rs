//! What can go wrong reading another tool's revisions or bookkeeping table.

use std::path::{Path, PathBuf};

use crate::revision::RevisionId;

/// A problem in one source file, at a line when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceProblem {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl SourceProblem {
    pub fn file(path: &Path, message: String) -> SourceProblem {
        SourceProblem {
            path: path.to_path_buf(),
            line: None,
            message,
        }
    }

    pub fn line(path: &Path, line: usize, message: String) -> SourceProblem {
        SourceProblem {
            path: path.to_path_buf(),
            line: Some(line),
            message,
        }
    }
}

impl std::fmt::Display for SourceProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

fn lines(problems: &[SourceProblem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// Why `flotilla import` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("nothing was imported:\n{}", lines(.0))]
    Malformed(Vec<SourceProblem>),
    #[error("{0}: no revisions found for this format")]
    Empty(PathBuf),
    #[error("refusing to overwrite existing files (nothing was written):\n{}", .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join("\n"))]
    Exists(Vec<PathBuf>),
    #[error("could not write {path} (the files written before it were removed): {source}")]
    Write { path: PathBuf, source: std::io::Error },
    /// Running the other tool (Alembic) failed.
    #[error("{0}")]
    Tool(String),
}

impl ImportError {
    pub fn read(path: &Path, source: std::io::Error) -> ImportError {
        ImportError::Read {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why a database's bookkeeping matches no point of the imported revisions; the database is left unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdoptError {
    #[error("{table} does not exist (looked up as {lookup}); nothing was changed")]
    NoTable { table: String, lookup: String },
    #[error("{table} records version {version}, which no imported revision has (expected revision id {id}); nothing was changed")]
    Unknown {
        table: String,
        version: String,
        id: RevisionId,
    },
    #[error(
        "{table} records {top} as applied but not {}, which come before it: the applied set is not a prefix of \
         the imported order; nothing was changed",
        .missing.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")
    )]
    Gap {
        table: String,
        top: RevisionId,
        missing: Vec<RevisionId>,
    },
    #[error("{table} is dirty at version {version} (a migration failed part way): fix it with that tool first; nothing was changed")]
    Dirty { table: String, version: String },
    #[error(
        "the Flotilla version table already holds {} while {table} leads to {}: stamp --from adopts only databases \
         Flotilla has not recorded; nothing was changed",
        rows_text(.rows), rows_text(.target)
    )]
    AlreadyStamped {
        table: String,
        rows: Vec<RevisionId>,
        target: Vec<RevisionId>,
    },
    #[error("{table}: {message}; nothing was changed")]
    Unreadable { table: String, message: String },
}

/// Version rows as text, `base` for none.
pub fn rows_text(rows: &[RevisionId]) -> String {
    if rows.is_empty() {
        "base".to_string()
    } else {
        rows.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
    }
}
