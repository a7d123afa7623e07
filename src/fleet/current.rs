//! `fleet current`: read every selected tenant's version rows (no lock, no writes) under the same caps.

use std::sync::Arc;

use futures_util::stream::{self, StreamExt};

use tokio_postgres::error::SqlState;

use super::server::{ConnectError, Server};
use super::tenant::{Place, Tenant};
use crate::executor::{db_message, ExecError, ExecOptions, ReadSession, VersionStore};
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
    Versions::At(rows)
}
