//! Tenant discovery: turn a `[[sources]]` entry into tenants by asking the server.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_postgres::SimpleQueryMessage;

use super::error::FleetError;
use super::server::Server;
use super::tenant::{Place, Tenant};
use crate::config::SourceKind;
use crate::executor::{db_message, quote_literal};

fn describe(kind: &SourceKind) -> String {
    match kind {
        SourceKind::SchemasLike(p) => format!("schemas_like {p:?}"),
        SourceKind::DatabasesLike(p) => format!("databases_like {p:?}"),
        SourceKind::Query(_) => "query".to_string(),
    }
}

/// Ask `server` for the tenants `kind` describes, each tagged with `tags` (plus a query's extra columns).
pub async fn discover(
    server: &Server,
    server_index: usize,
    kind: &SourceKind,
    tags: &BTreeMap<String, String>,
) -> Result<Vec<Tenant>, FleetError> {
    let fail = |message: String| FleetError::Discovery {
        server: server.name.clone(),
        source_desc: describe(kind),
        message,
    };
    let conn = server.pooled().await.map_err(|e| fail(e.to_string()))?;
    let sql = match kind {
        SourceKind::SchemasLike(pattern) => format!(
            "SELECT nspname AS id, nspname AS schema FROM pg_namespace WHERE nspname LIKE {} ORDER BY 1",
            quote_literal(pattern)
        ),
        SourceKind::DatabasesLike(pattern) => format!(
            "SELECT datname AS id, datname AS database FROM pg_database \
             WHERE datname LIKE {} AND datallowconn AND NOT datistemplate ORDER BY 1",
            quote_literal(pattern)
        ),
        SourceKind::Query(query) => query.clone(),
    };
    let messages = conn
        .client()
        .simple_query(&sql)
        .await
        .map_err(|e| fail(db_message(&e)))?;
    conn.release().await;
    // One row per message but the row description and the command tag: the list is built at its final size.
    let mut tenants = Vec::with_capacity(messages.len());
    // Rows without extra columns share the source's tags (see `Tenant::tags`).
    let source_tags = Arc::new(tags.clone());
    for message in messages {
        let SimpleQueryMessage::Row(row) = message else {
            continue;
        };
        let mut id = None;
        let mut place = None;
        let mut extra_tags: Option<BTreeMap<String, String>> = None;
        for (i, column) in row.columns().iter().enumerate() {
            let Some(value) = row.get(i) else { continue };
            match column.name() {
                "id" => id = Some(value.to_string()),
                "schema" => place = Some(Place::Schema(value.to_string())),
                "database" => place = Some(Place::Database(value.to_string())),
                other => {
                    extra_tags
                        .get_or_insert_with(|| tags.clone())
                        .insert(other.to_string(), value.to_string());
                }
            }
        }
        match (id, place) {
            (Some(id), Some(place)) => tenants.push(Tenant {
                id,
                server: server_index,
                place,
                tags: extra_tags.map_or_else(|| source_tags.clone(), Arc::new),
            }),
            _ => {
                return Err(fail(
                    "each row must have a non-null `id` column and a non-null `schema` or `database` column".into(),
                ))
            }
        }
    }
    Ok(tenants)
}
