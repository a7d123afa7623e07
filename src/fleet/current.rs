//! `fleet current`: read every selected tenant's version rows (no lock, no writes) under the same caps.

use std::sync::Arc;

use futures_util::stream::{self, StreamExt};

use super::server::Server;
use super::tenant::{Place, Tenant};
use crate::executor::{db_message, VersionStore};
use crate::revision::RevisionId;

/// One tenant's version rows, or why they could not be read.
pub type Versions = Result<Vec<RevisionId>, String>;

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
    }
    .map_err(|e| e.to_string())?;
    // Qualify with the tenant's schema instead of changing the pooled session's search_path.
    let placed;
    let store = match &tenant.place {
        Place::Schema(schema) => {
            placed = store.in_schema(schema);
            placed.as_ref()
        }
        Place::Database(_) => store,
    };
    let [exists, _] = store.exists_sql();
    let exists = format!("SELECT {exists}");
    let sql = store.read_rows_sql();
    let client = conn.client();
    let present = client.query_one(&exists, &[]).await.map_err(|e| db_message(&e))?;
    if !present.get::<_, bool>(0) {
        conn.release();
        return Ok(Vec::new());
    }
    let rows = client.simple_query(&sql).await.map_err(|e| db_message(&e))?;
    conn.release();
    Ok(rows
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(RevisionId::from),
            _ => None,
        })
        .collect())
}
