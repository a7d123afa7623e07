//! Reading another tool's bookkeeping table, read-only: the table is never written, altered or dropped.

use tokio_postgres::Client;

use super::adopt::Applied;
use super::error::AdoptError;
use super::format::SourceFormat;
use crate::executor::{db_message, quote_ident, quote_literal};

/// Where the table is: `table` (default: the tool's) in `schema`, else found through the session's
/// `search_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    pub format: SourceFormat,
    pub table: Option<String>,
}

impl TableRef {
    pub fn name(&self) -> &str {
        self.table.as_deref().unwrap_or(self.format.default_table())
    }

    fn qualified(&self, schema: Option<&str>) -> String {
        match schema {
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(self.name())),
            None => quote_ident(self.name()),
        }
    }
}

/// A failed sqlx row: recorded but not applied, reported and left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub version: String,
    pub why: &'static str,
}

/// What the table says is applied, and the rows left out with why. `schema` is a schema tenant's schema.
pub async fn read_applied(
    client: &Client,
    table: &TableRef,
    schema: Option<&str>,
) -> Result<(Applied, Vec<Ignored>), AdoptError> {
    let qualified = table.qualified(schema);
    let label = match schema {
        Some(schema) => format!("{schema}.{}", table.name()),
        None => table.name().to_string(),
    };
    let unreadable = |e: tokio_postgres::Error| AdoptError::Unreadable {
        table: label.clone(),
        message: db_message(&e),
    };
    let exists = client
        .query_one(
            &format!("SELECT to_regclass({}) IS NOT NULL", quote_literal(&qualified)),
            &[],
        )
        .await
        .map_err(unreadable)?;
    if !exists.get::<_, bool>(0) {
        return Err(AdoptError::NoTable {
            table: label.clone(),
            lookup: match schema {
                Some(_) => "the tenant's schema".to_string(),
                None => "the session's search_path".to_string(),
            },
        });
    }
    let texts = |sql: String| {
        let unreadable = &unreadable;
        async move {
            let rows = client.query(&sql, &[]).await.map_err(unreadable)?;
            Ok::<_, AdoptError>(rows.iter().map(|r| r.get::<_, Option<String>>(0)).collect::<Vec<_>>())
        }
    };
    let mut ignored = Vec::new();
    let applied = match table.format {
        SourceFormat::Sqlx => {
            let rows = client
                .query(
                    &format!("SELECT version::text, success FROM {qualified} ORDER BY version"),
                    &[],
                )
                .await
                .map_err(unreadable)?;
            let mut versions = Vec::new();
            for row in rows {
                let version: String = row.get(0);
                if row.get::<_, bool>(1) {
                    versions.push(version);
                } else {
                    ignored.push(Ignored {
                        version,
                        why: "sqlx recorded it as failed (success = false), so it counts as not applied",
                    });
                }
            }
            Applied::Versions {
                versions,
                baseline: None,
            }
        }
        SourceFormat::Diesel | SourceFormat::Dbmate => Applied::Versions {
            versions: texts(format!("SELECT version::text FROM {qualified} ORDER BY version"))
                .await?
                .into_iter()
                .flatten()
                .collect(),
            baseline: None,
        },
        SourceFormat::Flyway => {
            // In installed order: an undo row takes its version back out; a baseline counts everything up to it.
            let rows = client
                .query(
                    &format!(
                        "SELECT version, type FROM {qualified} WHERE success AND version IS NOT NULL \
                         ORDER BY installed_rank"
                    ),
                    &[],
                )
                .await
                .map_err(unreadable)?;
            let mut versions: Vec<String> = Vec::new();
            let mut baseline = None;
            for row in rows {
                let version: String = row.get(0);
                let kind: String = row.get(1);
                match kind.as_str() {
                    "BASELINE" => baseline = Some(version),
                    "SCHEMA" | "DELETE" => {}
                    k if k.starts_with("UNDO") => versions.retain(|v| v != &version),
                    _ => versions.push(version),
                }
            }
            Applied::Versions { versions, baseline }
        }
        SourceFormat::GolangMigrate => {
            let rows = client
                .query(&format!("SELECT version::text, dirty FROM {qualified}"), &[])
                .await
                .map_err(unreadable)?;
            if rows.len() > 1 {
                return Err(AdoptError::Unreadable {
                    table: label,
                    message: format!("golang-migrate keeps one row, this table has {}", rows.len()),
                });
            }
            match rows.first() {
                None => Applied::Current(None),
                Some(row) => {
                    let version: String = row.get(0);
                    if row.get::<_, bool>(1) {
                        return Err(AdoptError::Dirty { table: label, version });
                    }
                    // golang-migrate writes version -1 (nil) after migrating all the way down.
                    Applied::Current(Some(version).filter(|v| v != "-1"))
                }
            }
        }
        SourceFormat::Alembic => Applied::Heads(
            texts(format!("SELECT version_num::text FROM {qualified}"))
                .await?
                .into_iter()
                .flatten()
                .collect(),
        ),
    };
    Ok((applied, ignored))
}
