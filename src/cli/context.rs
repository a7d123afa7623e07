//! Resolves the global flags, flotilla.toml and the environment into the typed context every command uses.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::Context as _;
use tokio_postgres::Client;

use super::args::{Format, GlobalArgs};
use super::error::CliError;
use crate::error::ExitCode;
use crate::executor::{ExecOptions, VersionStore};
use crate::graph::RevisionGraph;
use crate::revision::RevisionId;
use crate::script::{self, Script};

/// Everything a single-database command needs, resolved once.
pub struct Ctx {
    pub project_dir: PathBuf,
    pub script_dir: PathBuf,
    pub file_template: String,
    pub store: VersionStore,
    pub exec: ExecOptions,
    pub post_write: Vec<Vec<String>>,
    pub url: Option<String>,
    pub format: Format,
}

/// The parsed revision files and their graph.
pub struct Loaded {
    pub scripts: BTreeMap<RevisionId, Script>,
    pub graph: RevisionGraph,
}

impl Ctx {
    pub fn load(global: &GlobalArgs) -> Result<Ctx, CliError> {
        let project_dir = global
            .config
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        Ok(Ctx {
            script_dir: project_dir.join("migrations"),
            project_dir,
            file_template: crate::script::DEFAULT_FILE_TEMPLATE.to_string(),
            store: VersionStore::default(),
            exec: ExecOptions::default(),
            post_write: Vec::new(),
            url: global
                .url
                .clone()
                .or_else(|| std::env::var("DATABASE_URL").ok()),
            format: global.format,
        })
    }

    /// Parse every revision file and build the graph; any problem stops the command before it touches a
    /// database.
    pub fn load_scripts(&self) -> Result<Loaded, CliError> {
        let scripts = script::load_dir(&self.script_dir)?;
        let graph = RevisionGraph::new(scripts.iter().map(|s| s.meta.clone()).collect())?;
        let scripts = scripts
            .into_iter()
            .map(|s| (s.meta.id.clone(), s))
            .collect();
        Ok(Loaded { scripts, graph })
    }

    pub async fn connect(&self) -> Result<Client, CliError> {
        let url = self.url.as_deref().ok_or_else(|| {
            CliError::usage(
                "no database given: pass --url, set `url` in flotilla.toml, or set DATABASE_URL",
            )
        })?;
        let config = tokio_postgres::Config::from_str(url).map_err(|e| {
            CliError::new(
                ExitCode::Usage,
                anyhow::Error::new(e).context("bad database url"),
            )
        })?;
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .context("could not connect to the database")
            .map_err(|e| CliError::new(ExitCode::Failed, e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed");
            }
        });
        Ok(client)
    }
}
