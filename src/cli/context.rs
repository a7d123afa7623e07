//! Resolves the global flags, flotilla.toml and the environment into the typed context every command uses.
//! This is the only place that reads environment variables (through `config::process_env`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_postgres::Client;

use super::args::{Format, GlobalArgs};
use super::error::CliError;
use crate::config::{self, HookCommand, ProjectConfig, ProjectFile};
use crate::error::ExitCode;
use crate::executor::{ExecOptions, OfflineRenderer, StoreSettings, VersionStore};
use crate::extend::{UnknownName, DEFAULT_RENDERER, DEFAULT_SOURCE, DEFAULT_STORE};
use crate::fleet;
use crate::graph::RevisionGraph;
use crate::revision::RevisionId;
use crate::script::{self, RevisionSource, Script};
use crate::signals::Canceller;

/// Everything a command needs, resolved once.
pub struct Ctx {
    pub project: ProjectConfig,
    pub project_dir: PathBuf,
    pub script_dir: PathBuf,
    /// Where revision files are read from (and new ones written to).
    pub locations: script::Locations,
    pub file_template: String,
    pub store: Arc<dyn VersionStore>,
    pub source: Arc<dyn RevisionSource>,
    pub renderer: Arc<dyn OfflineRenderer>,
    pub exec: ExecOptions,
    pub post_write: Vec<HookCommand>,
    pub tenants_file: PathBuf,
    url_flag: Option<String>,
    pub format: Format,
    /// The shared revision set (`[shared]`), unless this command acts on it itself (`--shared`).
    pub shared: Option<SharedSet>,
}

/// Where the shared revision set lives and how a database records it.
#[derive(Clone)]
pub struct SharedSet {
    pub locations: script::Locations,
    pub store: Arc<dyn VersionStore>,
}

/// The parsed revision files and their graph.
pub struct Loaded {
    pub scripts: BTreeMap<RevisionId, Script>,
    pub graph: RevisionGraph,
    /// The shared revision set, when configured and this command acts on the tenant revisions.
    pub shared: Option<Arc<fleet::SharedEngine>>,
}

/// Read a before_each/after_each SQL file into its statements.
fn hook_statements(path: &PathBuf) -> Result<Vec<String>, CliError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| CliError::usage(format!("hook file {}: {e}", path.display())))?;
    let statements = script::split_statements(&text, 1)
        .map_err(|e| CliError::usage(format!("hook file {}: {e}", path.display())))?;
    Ok(statements.into_iter().map(|s| s.sql).collect())
}

impl Ctx {
    /// Load flotilla.toml (`--config`, else the nearest one in the current directory or its parents; see
    /// [`config::find_project_file`]) and resolve the selected environment.
    pub fn load(global: &GlobalArgs) -> Result<Ctx, CliError> {
        let path = match &global.config {
            Some(path) if path.exists() => path.clone(),
            Some(path) => return Err(CliError::usage(format!("config file {} not found", path.display()))),
            None => {
                let cwd = std::env::current_dir()
                    .map_err(|e| CliError::usage(format!("cannot read the current directory: {e}")))?;
                config::find_project_file(&cwd, Path::exists).ok_or_else(|| {
                    CliError::usage(format!(
                        "no {} in {} or its parents (the search stops at a repository root); \
                         create one with `flotilla init DIR`, or name one with --config",
                        config::DEFAULT_CONFIG_FILE,
                        cwd.display()
                    ))
                })?
            }
        };
        let project = ProjectFile::load(&path, &config::process_env)?.resolve(global.env.as_deref())?;
        let project_dir = project
            .path
            .as_ref()
            .and_then(|p| p.parent())
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from);
        let exec = ExecOptions {
            lock_timeout: Some(project.lock_timeout).filter(|d| !d.is_zero()),
            statement_timeout: project.statement_timeout,
            lock_wait: project.lock_wait,
            transaction_per: project.transaction_per,
            shared_schemas: project.shared_schemas.clone(),
            reset_session: project.reset_session,
            before_each: project
                .hooks
                .before_each
                .iter()
                .map(hook_statements)
                .collect::<Result<Vec<_>, _>>()?
                .concat(),
            after_each: project
                .hooks
                .after_each
                .iter()
                .map(hook_statements)
                .collect::<Result<Vec<_>, _>>()?
                .concat(),
            ..ExecOptions::default()
        };
        let registry = &global.registry;
        let settings = StoreSettings {
            schema: project.version_table_schema.clone(),
            table: project.version_table.clone(),
            history_table: project.history_table.clone(),
        };
        let mut locations = script::Locations {
            dirs: project.version_locations.clone(),
            recursive: project.recursive_version_locations,
        };
        let mut store = chosen(&project.version_store, DEFAULT_STORE, |n| registry.store(n, &settings))?;
        let mut shared = match &project.shared {
            Some(cfg) => {
                let settings = StoreSettings {
                    schema: Some(cfg.version_table_schema.clone()),
                    table: cfg.version_table.clone(),
                    history_table: cfg.history_table.clone(),
                };
                Some(SharedSet {
                    locations: script::Locations {
                        dirs: cfg.version_locations.clone(),
                        recursive: project.recursive_version_locations,
                    },
                    store: chosen(&project.version_store, DEFAULT_STORE, |n| registry.store(n, &settings))?,
                })
            }
            None => None,
        };
        if global.shared {
            let Some(set) = shared.take() else {
                return Err(CliError::usage(
                    "--shared needs a [shared] table in flotilla.toml (its version_locations hold the shared revisions)",
                ));
            };
            locations = set.locations;
            store = set.store;
        }
        let source = chosen(&project.revision_source, DEFAULT_SOURCE, |n| registry.source(n))?;
        let renderer = chosen(&project.offline_renderer, DEFAULT_RENDERER, |n| registry.renderer(n))?;
        Ok(Ctx {
            project_dir,
            script_dir: project.script_location.clone(),
            locations,
            file_template: project.file_template.clone(),
            store,
            source,
            renderer,
            exec,
            post_write: project.hooks.post_write.clone(),
            tenants_file: project.tenants.clone(),
            url_flag: global.url.clone(),
            format: global.format,
            shared,
            project,
        })
    }

    /// Refuse a command that writes a revision file (`revision`, `merge`) when the configured source would not
    /// read it.
    pub fn check_writable_source(&self, command: &str) -> Result<(), CliError> {
        if self.source.reads_new_files() {
            return Ok(());
        }
        let name = self
            .project
            .revision_source
            .as_ref()
            .map(|n| n.value.as_str())
            .unwrap_or_default();
        Err(CliError::usage(format!(
            "`{command}` writes a revision file, which revision_source = \"{name}\" does not read; \
             add the revision where that source keeps its revisions"
        )))
    }

    /// Parse every revision file and build the graph; any problem stops the command before it touches a
    /// database.
    pub fn load_scripts(&self) -> Result<Loaded, CliError> {
        let shared = match &self.shared {
            Some(set) => {
                let scripts = self.source.load(&set.locations)?;
                let graph = script::build_graph(&scripts)?;
                let scripts: BTreeMap<RevisionId, Script> =
                    scripts.into_iter().map(|s| (s.meta.id.clone(), s)).collect();
                Some((graph, scripts, set.store.clone()))
            }
            None => None,
        };
        let mut scripts = self.source.load(&self.locations)?;
        // A tenant revision may depend on a shared revision by id: that is a requirement checked against the
        // database's shared version rows at run time, not an edge of the tenant graph.
        let mut requires = BTreeMap::new();
        if let Some((_, shared_scripts, _)) = &shared {
            for script in &mut scripts {
                if let Some(other) = shared_scripts.get(&script.meta.id) {
                    return Err(CliError::usage(format!(
                        "revision id {} is used by both {} (tenant) and {} (shared)",
                        script.meta.id,
                        script.path.display(),
                        other.path.display()
                    )));
                }
                let (on_shared, own): (Vec<String>, Vec<String>) = std::mem::take(&mut script.meta.depends_on)
                    .into_iter()
                    .partition(|d| shared_scripts.contains_key(&RevisionId(d.clone())));
                script.meta.depends_on = own;
                if !on_shared.is_empty() {
                    requires.insert(script.meta.id.clone(), on_shared.into_iter().map(RevisionId).collect());
                }
            }
        }
        let graph = script::build_graph(&scripts)?;
        let scripts = scripts.into_iter().map(|s| (s.meta.id.clone(), s)).collect();
        let shared = shared.map(|(graph, scripts, store)| {
            Arc::new(fleet::SharedEngine {
                graph,
                scripts,
                store,
                requires,
            })
        });
        Ok(Loaded { scripts, graph, shared })
    }

    /// Connect to the single database of `--url`, flotilla.toml `url`, `DATABASE_URL` or the PG* variables.
    pub async fn connect(&self) -> Result<Client, CliError> {
        Ok(self.connect_cancellable().await?.0)
    }

    /// [`Ctx::connect`], with what cancels that connection's statements (over the same TLS mode).
    pub async fn connect_cancellable(&self) -> Result<(Client, Canceller), CliError> {
        let resolved = config::resolve_db_url(
            self.url_flag.as_deref(),
            self.project.url.as_ref(),
            &config::process_env,
        )?;
        let url = resolved.url;
        let tls = url.tls()?;
        let pg = url.pg_config();
        let connected = match &tls {
            config::TlsMode::NoTls => pg
                .connect(tokio_postgres::NoTls)
                .await
                .map(|(c, conn)| (c, spawn(conn))),
            config::TlsMode::Rustls(t) => pg.connect(t.clone()).await.map(|(c, conn)| (c, spawn(conn))),
        };
        let (client, _driver) = connected.map_err(|e| {
            if crate::executor::is_not_postgres(&e) {
                return CliError::new(
                    ExitCode::Failed,
                    anyhow::anyhow!(
                        "could not connect to {}: {} did not answer as PostgreSQL ({})",
                        url.redacted(),
                        crate::executor::server_at(&pg),
                        crate::executor::db_message(&e)
                    ),
                );
            }
            CliError::new(
                ExitCode::Failed,
                anyhow::anyhow!(
                    "could not connect to {}: {}",
                    url.redacted(),
                    crate::executor::db_message(&e)
                ),
            )
        })?;
        let canceller = Canceller::new(&client, tls);
        Ok((client, canceller))
    }
}

/// The registry entry a flotilla.toml key names (the default when absent); an unknown name is a usage error
/// pointing at the key.
fn chosen<T>(
    name: &Option<config::Located<String>>,
    default: &str,
    lookup: impl Fn(&str) -> Result<T, UnknownName>,
) -> Result<T, CliError> {
    match name {
        None => lookup(default).map_err(|e| CliError::usage(e.to_string())),
        Some(located) => lookup(&located.value).map_err(|e| CliError::usage(format!("{}: {e}", located.at))),
    }
}

fn spawn<F>(connection: F) -> tokio::task::JoinHandle<()>
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection closed");
        }
    })
}
