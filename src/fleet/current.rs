//! `fleet current`: read every selected tenant's version rows (no lock, no writes) under the same caps.

use std::sync::Arc;

use futures_util::stream::{self, StreamExt};

use tokio_postgres::error::SqlState;

use super::server::{ConnectError, Server};
use super::tenant::{Place, Tenant};
use crate::executor::{db_message, quote_literal, VersionStore};
use crate::revision::RevisionId;

/// One tenant's version rows, or why they could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Versions {
    /// The version rows (empty: at base, or no version table yet).
    At(Vec<RevisionId>),
    /// The tenant's schema or database does not exist.
    Missing(String),
    /// The tenant could not be read: the error.
    Unreachable(String),
}

impl Versions {
    /// The version rows when they could be read.
    pub fn rows(&self) -> Option<&Vec<RevisionId>> {
        match self {
            Versions::At(rows) => Some(rows),
            Versions::Missing(_) | Versions::Unreachable(_) => None,
        }
    }

    /// The version rows, or why there are none to read.
    pub fn into_result(self) -> Result<Vec<RevisionId>, String> {
        match self {
            Versions::At(rows) => Ok(rows),
            Versions::Missing(e) | Versions::Unreachable(e) => Err(e),
        }
    }
}

/// Read the version rows of every tenant, `concurrency` at a time, in tenant order.
pub async fn read_versions(
    tenants: &[Tenant],
    servers: &[Arc<Server>],
    store: &dyn VersionStore,
    concurrency: usize,
) -> Vec<Versions> {
    stream::iter(
        tenants
            .iter()
            .map(|tenant| read_one(tenant, &servers[tenant.server], store)),
    )
    .buffered(concurrency.max(1))
    .collect()
    .await
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
    // Qualify with the tenant's schema instead of changing the pooled session's search_path.
    let placed;
    let (store, schema_exists) = match &tenant.place {
        Place::Schema(schema) => {
            placed = store.in_schema(schema);
            let exists = format!(
                "EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = {})",
                quote_literal(schema)
            );
            (placed.as_ref(), exists)
        }
        Place::Database(_) => (store, "true".to_string()),
    };
    let [exists, _] = store.exists_sql();
    let probe = format!("SELECT {schema_exists}, {exists}");
    let client = conn.client();
    let present = match client.query_one(&probe, &[]).await {
        Ok(row) => row,
        Err(e) => return Versions::Unreachable(db_message(&e)),
    };
    if !present.get::<_, bool>(0) {
        conn.release().await;
        return Versions::Missing(match &tenant.place {
            Place::Schema(schema) => format!("schema \"{schema}\" does not exist"),
            Place::Database(db) => format!("database \"{db}\" does not exist"),
        });
    }
    if !present.get::<_, bool>(1) {
        conn.release().await;
        return Versions::At(Vec::new());
    }
    let rows = match client.simple_query(&store.read_rows_sql()).await {
        Ok(rows) => rows,
        Err(e) => return Versions::Unreachable(db_message(&e)),
    };
    conn.release().await;
    Versions::At(
        rows.into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(RevisionId::from),
                _ => None,
            })
            .collect(),
    )
}
