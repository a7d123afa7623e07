//! The one error type of the CLI edge: an exit code plus the error chain `main` prints once.

use crate::error::ExitCode;
use crate::executor::{ExecError, ExecFailure};
use crate::graph::GraphError;
use crate::script::ScriptError;

#[derive(Debug)]
pub struct CliError {
    pub code: ExitCode,
    pub error: anyhow::Error,
}

impl CliError {
    pub fn new(code: ExitCode, error: impl Into<anyhow::Error>) -> Self {
        CliError {
            code,
            error: error.into(),
        }
    }

    pub fn usage(message: impl std::fmt::Display) -> Self {
        CliError {
            code: ExitCode::Usage,
            error: anyhow::anyhow!("{message}"),
        }
    }
}

impl From<ScriptError> for CliError {
    fn from(e: ScriptError) -> Self {
        CliError::new(ExitCode::Usage, e)
    }
}

impl From<GraphError> for CliError {
    fn from(e: GraphError) -> Self {
        CliError::new(ExitCode::Usage, e)
    }
}

impl From<crate::config::ConfigError> for CliError {
    fn from(e: crate::config::ConfigError) -> Self {
        CliError::new(ExitCode::Usage, e)
    }
}

/// The exit code an executor error maps to.
pub fn exec_code(e: &ExecError) -> ExitCode {
    match e {
        ExecError::Locked { .. } => ExitCode::Locked,
        ExecError::Blocked(_) => ExitCode::NeedsResolve,
        ExecError::NoTransactionInRunMode(_)
        | ExecError::MissingScript(_)
        | ExecError::BackfillInRunMode(_)
        | ExecError::IrreversibleBackfill { .. }
        | ExecError::BackfillScriptChanged { .. } => ExitCode::Usage,
        ExecError::Step { .. } | ExecError::Db { .. } | ExecError::SchemaMissing { .. } => ExitCode::Failed,
        ExecError::Interrupted => ExitCode::Interrupted,
    }
}

impl From<ExecError> for CliError {
    fn from(e: ExecError) -> Self {
        CliError::new(exec_code(&e), e)
    }
}

impl From<ExecFailure> for CliError {
    fn from(e: ExecFailure) -> Self {
        CliError::new(exec_code(&e.error), e)
    }
}
