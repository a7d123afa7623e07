//! Scratch databases on the dev server: created with unique names, filled (by running the revisions, or by
//! loading the desired schema), introspected, and dropped again, also when a step fails.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use tokio_postgres::Client;

use super::error::AutogenError;
use super::introspect::{introspect, Scope};
use super::model::Catalog;
use super::rename::Rename;
use crate::config::TlsMode;
use crate::executor::{db_message, quote_ident, Session};
use crate::fleet::Engine;
use crate::revision::RevisionId;

/// The server scratch databases are created on (`dev_url`, else the project's database url). Its url's
/// database is only used to run `CREATE DATABASE` and `DROP DATABASE`.
#[derive(Clone)]
pub struct DevServer {
    pub pg: tokio_postgres::Config,
    pub tls: TlsMode,
    /// The redacted url, for messages.
    pub target: String,
}

impl DevServer {
    async fn connect(&self, dbname: Option<&str>) -> Result<Client, AutogenError> {
        let mut pg = self.pg.clone();
        if let Some(db) = dbname {
            pg.dbname(db);
        }
        let connected = match &self.tls {
            TlsMode::NoTls => pg
                .connect(tokio_postgres::NoTls)
                .await
                .map(|(c, conn)| (c, spawn(conn))),
            TlsMode::Rustls(t) => pg.connect(t.clone()).await.map(|(c, conn)| (c, spawn(conn))),
        };
        connected.map(|(client, _)| client).map_err(|e| AutogenError::Connect {
            target: self.target.clone(),
            message: db_message(&e),
        })
    }
}

fn spawn<F>(connection: F) -> tokio::task::JoinHandle<()>
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "scratch connection closed");
        }
    })
}

/// One scratch database and a connection to it. Call [`Scratch::destroy`] on every path.
pub struct Scratch {
    pub name: String,
    pub client: Client,
    admin: Client,
}

impl Scratch {
    /// Create `flotilla_scratch_<label>_<pid>_<random>` from `template0`.
    pub async fn create(server: &DevServer, label: &str) -> Result<Scratch, AutogenError> {
        let admin = server.connect(None).await?;
        let name = format!(
            "flotilla_scratch_{label}_{}_{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 4]>())
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(&name)))
            .await
            .map_err(|e| AutogenError::Scratch {
                action: "create",
                name: name.clone(),
                message: db_message(&e),
            })?;
        match server.connect(Some(&name)).await {
            Ok(client) => Ok(Scratch { name, client, admin }),
            Err(e) => {
                let _ = drop_database(&admin, &name).await;
                Err(e)
            }
        }
    }

    /// Close the connection and drop the database.
    pub async fn destroy(self) -> Result<(), AutogenError> {
        drop(self.client);
        drop_database(&self.admin, &self.name).await
    }
}

async fn drop_database(admin: &Client, name: &str) -> Result<(), AutogenError> {
    // The scratch connection closes asynchronously: end it (and anything else still there) before dropping.
    let sql = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid()",
        crate::executor::quote_literal(name)
    );
    let _ = admin.simple_query(&sql).await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(name)))
        .await
        .map_err(|e| AutogenError::Scratch {
            action: "drop",
            name: name.to_string(),
            message: db_message(&e),
        })
}

/// Run `work` on a fresh scratch database and drop it afterwards, whatever `work` returned.
async fn with_scratch<T>(
    server: &DevServer,
    label: &str,
    work: impl AsyncFnOnce(&Client) -> Result<T, AutogenError>,
) -> Result<T, AutogenError> {
    let scratch = Scratch::create(server, label).await?;
    let result = work(&scratch.client).await;
    let dropped = scratch.destroy().await;
    match (result, dropped) {
        (Ok(value), Ok(())) => Ok(value),
        (Err(e), dropped) => {
            if let Err(d) = dropped {
                tracing::warn!(error = %d, "could not drop a scratch database");
            }
            Err(e)
        }
        (Ok(_), Err(d)) => Err(d),
    }
}

/// The tables a catalog leaves out: the version and history tables, the shared set's too.
pub fn store_tables(engine: &Engine) -> Vec<String> {
    let mut tables = engine.store.owned_tables();
    if let Some(shared) = &engine.shared {
        tables.extend(shared.store.owned_tables());
    }
    tables
}

/// Upgrade a scratch database to `targets` (each an id; none means base) and read it once per scope.
pub async fn build_at(
    server: &DevServer,
    engine: &Engine,
    targets: &[RevisionId],
    scopes: &[Scope],
) -> Result<Vec<Catalog>, AutogenError> {
    build(server, engine, targets, &[], scopes, false).await
}

/// As [`build_at`], with the revisions run as they run for a schema tenant: in `public` as the tenant's
/// schema, `shared_schemas` after it on `search_path` (which decides what unqualified names in their
/// expressions resolve to, so a schema tenant is compared with a build that resolved them the same way).
pub async fn build_as_schema_tenant(
    server: &DevServer,
    engine: &Engine,
    targets: &[RevisionId],
    scopes: &[Scope],
) -> Result<Vec<Catalog>, AutogenError> {
    build(server, engine, targets, &[], scopes, true).await
}

/// As [`build_at`], with the `--rename` hints applied after the upgrade, so the catalog is the head's schema
/// with those names (PostgreSQL rewrites every view, index and constraint that refers to them).
pub async fn build_renamed(
    server: &DevServer,
    engine: &Engine,
    targets: &[RevisionId],
    renames: &[Rename],
    scopes: &[Scope],
) -> Result<Vec<Catalog>, AutogenError> {
    build(server, engine, targets, renames, scopes, false).await
}

async fn build(
    server: &DevServer,
    engine: &Engine,
    targets: &[RevisionId],
    renames: &[Rename],
    scopes: &[Scope],
    is_schema_tenant: bool,
) -> Result<Vec<Catalog>, AutogenError> {
    with_scratch(server, "rev", async |client: &Client| {
        let mut exec = engine.exec.clone();
        exec.schema = is_schema_tenant.then(|| "public".to_string());
        let stop = AtomicBool::new(false);
        // What belongs to the database (extensions, shared tables) comes first, as a fleet run does it.
        if let Some(shared) = &engine.shared {
            shared
                .upgrade(client, &exec, &stop)
                .await
                .map_err(|e| AutogenError::Shared(e.to_string()))?;
        }
        let mut session = Session::open(client, engine.store.as_ref(), &exec)
            .await
            .map_err(AutogenError::Exec)?;
        let mut result = Ok(());
        for target in targets {
            let plan = match engine.graph.plan_upgrade(session.rows(), target.as_str()) {
                Ok(plan) => plan,
                Err(source) => {
                    result = Err(AutogenError::Plan {
                        target: target.to_string(),
                        source,
                    });
                    break;
                }
            };
            if let Err(e) = session.run(&plan, &engine.scripts, &mut |_| {}, &stop).await {
                result = Err(AutogenError::Apply(e));
                break;
            }
        }
        let closed = session.close().await.map_err(AutogenError::Exec);
        result?;
        closed?;
        for rename in renames {
            client
                .batch_execute(&rename.sql())
                .await
                .map_err(|e| AutogenError::RenameFailed {
                    hint: rename.to_string(),
                    message: db_message(&e),
                })?;
        }
        let mut out = Vec::with_capacity(scopes.len());
        for scope in scopes {
            out.push(introspect(client, scope).await?);
        }
        Ok(out)
    })
    .await
}

/// The `*.sql` files of the desired schema in name order (or the one file `path` names).
pub fn desired_files(path: &Path) -> Result<Vec<PathBuf>, AutogenError> {
    let read_error = |source| AutogenError::ReadDesired {
        path: path.to_path_buf(),
        source,
    };
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_error)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(AutogenError::NoDesired {
            path: path.to_path_buf(),
        });
    }
    Ok(files)
}

/// Load the desired schema into a scratch database and read it with `scope`.
pub async fn load_desired(server: &DevServer, path: &Path, scope: &Scope) -> Result<Catalog, AutogenError> {
    let files = desired_files(path)?;
    let mut texts = Vec::with_capacity(files.len());
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|source| AutogenError::ReadDesired {
            path: file.clone(),
            source,
        })?;
        texts.push((file.clone(), text));
    }
    with_scratch(server, "desired", async |client: &Client| {
        for (file, text) in &texts {
            client
                .batch_execute(text)
                .await
                .map_err(|e| AutogenError::LoadDesired {
                    path: file.clone(),
                    message: db_message(&e),
                })?;
        }
        introspect(client, scope).await
    })
    .await
}
