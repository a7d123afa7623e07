//! `fleet current`: read every selected tenant's version rows (no lock, no writes) under the same caps.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};

use tokio_postgres::error::SqlState;

use super::server::{ConnectError, Server};
use super::tenant::{Place, Tenant};
use crate::executor::{
    db_message, quote_literal, schema_exists_sql, ExecError, ExecOptions, ReadSession, VersionStore,
};
use crate::revision::RevisionId;

/// One tenant's version rows, or why they could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Versions {
    /// The version rows (empty: at base, or no version table yet). Tenants of a bulk read's chunk at the same
    /// rows share one list: 100,000 tenants at the head hold a few hundred, not 100,000.
    At(Arc<[RevisionId]>),
    /// The tenant's schema or database does not exist.
    Missing(String),
    /// The tenant could not be read: the error.
    Unreachable(String),
}

impl Versions {
    /// The version rows when they could be read.
    pub fn rows(&self) -> Option<&[RevisionId]> {
        match self {
            Versions::At(rows) => Some(rows),
            Versions::Missing(_) | Versions::Unreachable(_) => None,
        }
    }

    /// The version rows, or why there are none to read.
    pub fn into_result(self) -> Result<Vec<RevisionId>, String> {
        match self {
            Versions::At(rows) => Ok(rows.to_vec()),
            Versions::Missing(e) | Versions::Unreachable(e) => Err(e),
        }
    }
}

/// Schema tenants per chunk of [`read_schemas`]: one catalog query finds the chunk's version tables and one
/// round trip reads them, so a fleet of 10,000 schemas costs a few dozen round trips.
const SCHEMAS_PER_CHUNK: usize = 500;

/// Version tables per `UNION ALL` statement of a chunk's read. Planning a `UNION ALL` grows faster than its
/// branches: 10,000 tables read 500 to a statement took 4 s, 50 to a statement 1.4 s (load-tests/FINDINGS.md §9).
const TABLES_PER_STATEMENT: usize = 50;

/// Chunks of one server database read at once, each lane on its own pooled connection (at most the server's
/// connection cap). Opening a table the session has not seen costs the server about 0.1 ms of catalog reads,
/// which parallel sessions share out.
const PARALLEL_CHUNKS: usize = 4;

/// Read the version rows of every tenant, in tenant order: schema tenants of a server in bulk (two statements
/// per few hundred schemas, on one connection, never a session per tenant), database tenants `concurrency` at a
/// time, each in its own read-only session.
pub async fn read_versions(
    tenants: &[Tenant],
    servers: &[Arc<Server>],
    store: &dyn VersionStore,
    concurrency: usize,
) -> Vec<Versions> {
    let mut out: Vec<Option<Versions>> = vec![None; tenants.len()];
    for (i, versions) in read_schema_tenants(tenants, servers, store, concurrency).await {
        out[i] = Some(versions);
    }
    let databases = stream::iter(
        tenants
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(t.place, Place::Database(_)))
            .map(|(i, tenant)| async move { (i, read_one(tenant, &servers[tenant.server], store).await) }),
    )
    .buffer_unordered(concurrency.max(1))
    .collect::<Vec<_>>()
    .await;
    for (i, versions) in databases {
        out[i] = Some(versions);
    }
    out.into_iter()
        .map(|v| v.unwrap_or_else(|| Versions::Unreachable("not read".to_string())))
        .collect()
}

/// The version rows of the schema tenants among `tenants` (by tenant index; database tenants are left out), in
/// bulk per server database, `concurrency` server databases at a time.
pub async fn read_schema_tenants(
    tenants: &[Tenant],
    servers: &[Arc<Server>],
    store: &dyn VersionStore,
    concurrency: usize,
) -> Vec<(usize, Versions)> {
    let mut by_server: Vec<Vec<(usize, &str)>> = vec![Vec::new(); servers.len()];
    for (i, tenant) in tenants.iter().enumerate() {
        if let Place::Schema(schema) = &tenant.place {
            by_server[tenant.server].push((i, schema.as_str()));
        }
    }
    stream::iter(
        by_server
            .iter()
            .enumerate()
            .filter(|(_, group)| !group.is_empty())
            .map(|(server, group)| read_schemas(&servers[server], group, store)),
    )
    .buffer_unordered(concurrency.max(1))
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .flatten()
    .collect()
}

/// The schema tenants already at their target, read in bulk before a run (never a session per tenant): by
/// tenant index, their version rows. `is_done(index, rows)` says whether a tenant at `rows` has nothing to do;
/// a tenant that cannot be read is left out (its worker reports why).
pub async fn schema_tenants_at_target(
    tenants: &[Tenant],
    servers: &[Arc<Server>],
    store: &dyn VersionStore,
    concurrency: usize,
    mut is_done: impl FnMut(usize, &[RevisionId]) -> bool,
) -> HashMap<usize, Arc<[RevisionId]>> {
    read_schema_tenants(tenants, servers, store, concurrency)
        .await
        .into_iter()
        .filter_map(|(i, versions)| match versions {
            Versions::At(rows) if is_done(i, &rows) => Some((i, rows)),
            _ => None,
        })
        .collect()
}

/// The version rows of the schema tenants `group` (tenant index, schema) of one server database, in chunks on
/// up to [`PARALLEL_CHUNKS`] pooled connections at once, each taking the next chunk until none is left (a
/// connection is reset only once, when it goes back to the pool). Per chunk, one statement tells for each schema
/// whether it and its version table exist, and one round trip reads the rows of those that have the table.
async fn read_schemas(server: &Server, group: &[(usize, &str)], store: &dyn VersionStore) -> Vec<(usize, Versions)> {
    let chunks: Vec<&[(usize, &str)]> = group.chunks(SCHEMAS_PER_CHUNK).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let lanes = PARALLEL_CHUNKS.min(server.max_connections()).min(chunks.len()).max(1);
    let lane = || async {
        let mut out = Vec::new();
        let mut conn = None;
        while let Some(chunk) = chunks.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
            let unreachable = |e: String| chunk.iter().map(move |(i, _)| (*i, Versions::Unreachable(e.clone())));
            if conn.is_none() {
                match server.pooled().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        out.extend(unreachable(e.to_string()));
                        continue;
                    }
                }
            }
            let Some(c) = &conn else { continue };
            match read_chunk(c.client(), chunk, store).await {
                Ok(rows) => out.extend(rows),
                Err(e) => {
                    // The connection is dropped, not pooled: a failed statement may have left it unusable.
                    conn = None;
                    out.extend(unreachable(db_message(&e)));
                }
            }
        }
        if let Some(conn) = conn {
            conn.release().await;
        }
        out
    };
    futures_util::future::join_all((0..lanes).map(|_| lane()))
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// For each schema of `chunk` (by its position `k`): whether the schema exists, and whether its version table
/// does, from one query over the catalogs. Each lookup is a scalar subquery on a catalog's unique name index
/// (`pg_namespace_nspname_index`, `pg_class_relname_nsp_index`), so the cost stays per schema asked about: a
/// join over the catalogs let the planner hash all of `pg_class`, over a minute per 500 schemas among 100,000.
fn catalog_probe(chunk: &[(usize, &str)], tables: &[(String, String)]) -> String {
    let array = |items: &mut dyn Iterator<Item = &str>| {
        let quoted: Vec<String> = items.map(quote_literal).collect();
        format!("ARRAY[{}]::text[]", quoted.join(","))
    };
    let tenants = array(&mut chunk.iter().map(|(_, schema)| *schema));
    let schemas = array(&mut tables.iter().map(|(schema, _)| schema.as_str()));
    let names = array(&mut tables.iter().map(|(_, table)| table.as_str()));
    format!(
        "SELECT u.k - 1, \
           (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = u.tenant) IS NOT NULL, \
           EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.relname = u.vtable \
             AND c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = u.vschema)) \
         FROM unnest({tenants}, {schemas}, {names}) WITH ORDINALITY AS u(tenant, vschema, vtable, k)"
    )
}

/// The same as [`catalog_probe`] through each store's own `exists_sql` (a store that cannot say where its table is).
fn expression_probe(chunk: &[(usize, &str)], placed: &[Arc<dyn VersionStore>]) -> String {
    let probe: Vec<String> = chunk
        .iter()
        .zip(placed)
        .enumerate()
        .map(|(k, ((_, schema), placed))| {
            let [version_exists, _] = placed.exists_sql();
            format!(
                "SELECT {k}, {}, CASE WHEN {} THEN {version_exists} ELSE false END",
                schema_exists_sql(schema),
                schema_exists_sql(schema)
            )
        })
        .collect();
    probe.join(" UNION ALL ")
}

async fn read_chunk(
    client: &tokio_postgres::Client,
    chunk: &[(usize, &str)],
    store: &dyn VersionStore,
) -> Result<Vec<(usize, Versions)>, tokio_postgres::Error> {
    let placed: Vec<Arc<dyn VersionStore>> = chunk.iter().map(|(_, schema)| store.in_schema(schema)).collect();
    let tables: Option<Vec<(String, String)>> = placed.iter().map(|p| p.version_table_at()).collect();
    let probe = match tables {
        // One catalog query for the chunk (a few ms for 500 schemas, where an expression per schema takes seconds).
        Some(tables) => catalog_probe(chunk, &tables),
        None => expression_probe(chunk, &placed),
    };
    let mut found = vec![(false, false); chunk.len()];
    for row in client.simple_query(&probe).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = row {
            let k: usize = row.get(0).and_then(|k| k.parse().ok()).unwrap_or(usize::MAX);
            if let Some(slot) = found.get_mut(k) {
                // A missing schema has no version table of its own, wherever its store would look.
                let has_schema = row.get(1) == Some("t");
                *slot = (has_schema, has_schema && row.get(2) == Some("t"));
            }
        }
    }
    let reads: Vec<String> = found
        .iter()
        .zip(&placed)
        .enumerate()
        .filter(|(_, ((_, has_table), _))| *has_table)
        .map(|(k, (_, placed))| format!("SELECT {k}, v.* FROM ({}) v", placed.read_rows_sql()))
        .collect();
    let mut rows: Vec<Vec<RevisionId>> = vec![Vec::new(); chunk.len()];
    if !reads.is_empty() {
        // Several statements in one message: one round trip, each statement's plan small.
        let statements: Vec<String> = reads
            .chunks(TABLES_PER_STATEMENT)
            .map(|r| r.join(" UNION ALL "))
            .collect();
        for row in client.simple_query(&statements.join(";\n")).await? {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = row {
                let k: usize = row.get(0).and_then(|k| k.parse().ok()).unwrap_or(usize::MAX);
                if let (Some(slot), Some(rev)) = (rows.get_mut(k), row.get(1)) {
                    slot.push(RevisionId::new(rev));
                }
            }
        }
    }
    // Held for every tenant until the run starts: one list per distinct set of rows in the chunk, not one per
    // tenant (100,000 tenants, about 10 MB).
    let mut shared: HashMap<Vec<RevisionId>, Arc<[RevisionId]>> = HashMap::new();
    Ok(chunk
        .iter()
        .zip(found)
        .zip(rows)
        .map(|(((i, schema), (has_schema, _)), mut rows)| {
            rows.sort();
            let versions = if has_schema {
                Versions::At(Arc::clone(
                    shared.entry(rows).or_insert_with_key(|rows| Arc::from(rows.as_slice())),
                ))
            } else {
                Versions::Missing(format!("schema \"{schema}\" does not exist"))
            };
            (*i, versions)
        })
        .collect())
}

async fn read_one(tenant: &Tenant, server: &Server, store: &dyn VersionStore) -> Versions {
    let conn = match &tenant.place {
        Place::Schema(_) => server.pooled().await,
        Place::Database(db) => server.direct(db).await,
    };
    let conn = match conn {
        Ok(conn) => conn,
        Err(ConnectError::Pg(e)) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
            return Versions::Missing(format!("database does not exist: {}", db_message(&e)))
        }
        Err(e) => return Versions::Unreachable(e.to_string()),
    };
    // The executor's read-only session places the store in the tenant's schema and tells a missing schema from
    // a tenant at base; it takes no lock.
    let opts = ExecOptions {
        schema: match &tenant.place {
            Place::Schema(schema) => Some(schema.clone()),
            Place::Database(_) => None,
        },
        ..ExecOptions::default()
    };
    let session = match ReadSession::open(conn.client(), store, &opts).await {
        Ok(session) => session,
        Err(ExecError::SchemaMissing { schema }) => {
            return Versions::Missing(format!("schema \"{schema}\" does not exist"))
        }
        Err(e) => return Versions::Unreachable(e.to_string()),
    };
    let rows = session.rows().to_vec();
    if session.close().await.is_ok() {
        conn.release().await;
    }
    Versions::At(rows.into())
}
