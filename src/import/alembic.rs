//! Alembic projects: run Alembic itself (offline) in the user's Python environment.

use std::path::{Path, PathBuf};

use super::error::ImportError;
use super::write::ImportReport;

/// How to run Alembic.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Python interpreter that has the project's Alembic installed.
    pub python: String,
    /// The ini file, relative to the project directory.
    pub ini: PathBuf,
}

/// Import an Alembic project.
pub async fn import(_from: &Path, _into: &Path, _options: &Options) -> Result<ImportReport, ImportError> {
    Err(ImportError::Tool("importing Alembic projects is not built yet".into()))
}
