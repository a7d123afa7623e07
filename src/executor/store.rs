//! The version table (one row per applied head, Alembic's model) and the append-only history table.

use super::sql::{quote_ident, quote_literal};
use crate::revision::RevisionId;

/// Where a database keeps its version state.
///
/// With `schema = None` the tables are named unqualified, so they resolve through the session's `search_path`:
/// that is how a schema tenant keeps its own tables inside its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionStore {
    pub schema: Option<String>,
    pub table: String,
    pub history_table: String,
}

impl Default for VersionStore {
    fn default() -> Self {
        VersionStore {
            schema: None,
            table: "flotilla_version".into(),
            history_table: "flotilla_history".into(),
        }
    }
}

/// The last history row, when it shows a no-transaction revision that started or failed and was never resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub revision: RevisionId,
    pub direction: String,
    pub status: String,
    pub at: String,
    pub error: Option<String>,
}

/// One row of the history table, as `current --verbose` and `validate` read it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HistoryRow {
    pub revision: String,
    pub direction: String,
    pub status: String,
    pub checksum: Option<String>,
    pub applied_at: String,
    pub duration_ms: Option<i64>,
    pub tool_version: String,
}

impl VersionStore {
    fn qualify(&self, name: &str) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(name)),
            None => quote_ident(name),
        }
    }

    pub fn version_table(&self) -> String {
        self.qualify(&self.table)
    }

    pub fn history_table(&self) -> String {
        self.qualify(&self.history_table)
    }

    /// The text `to_regclass` needs to find a table the way an unqualified name in SQL would.
    pub(crate) fn regclass_literal(&self, name: &str) -> String {
        quote_literal(&self.qualify(name))
    }

    /// The two keys of this store's advisory lock, the second as an SQL expression. The server computes it
    /// from the schema the version table really lives in (`current_schema()` when no schema is configured, which
    /// is the tenant's schema for schema tenants), so every spelling of the same table takes the same lock.
    pub fn lock_key_sql(&self) -> (i32, String) {
        let schema = self
            .schema
            .as_deref()
            .map(quote_literal)
            .unwrap_or_else(|| "NULL".into());
        // 0x666c6f74 is "flot": the first key marks the lock as Flotilla's in pg_locks.
        (
            0x666c_6f74,
            format!(
                "hashtext(coalesce({schema}, current_schema(), '') || '.' || {})",
                quote_literal(&self.table)
            ),
        )
    }

    /// DDL creating both tables when missing. The version table matches Alembic's layout, so an existing
    /// `alembic_version` is read and written as is.
    pub fn create_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {v} (version_num varchar(255) NOT NULL, CONSTRAINT {pk} PRIMARY KEY (version_num));\n\
             CREATE TABLE IF NOT EXISTS {h} (\n    \
                 id bigserial PRIMARY KEY,\n    \
                 revision text NOT NULL,\n    \
                 direction text NOT NULL,\n    \
                 status text NOT NULL,\n    \
                 checksum text,\n    \
                 is_transactional boolean NOT NULL DEFAULT true,\n    \
                 applied_at timestamptz NOT NULL DEFAULT now(),\n    \
                 duration_ms bigint,\n    \
                 tool_version text NOT NULL,\n    \
                 error text\n\
             );",
            v = self.version_table(),
            pk = quote_ident(&format!("{}_pkc", self.table)),
            h = self.history_table(),
        )
    }

    /// Statements moving the version rows: delete then insert.
    pub fn rows_sql(&self, delete: &[RevisionId], insert: &[RevisionId]) -> Vec<String> {
        let mut out = Vec::new();
        if !delete.is_empty() {
            let list: Vec<String> = delete.iter().map(|r| quote_literal(r.as_str())).collect();
            out.push(format!(
                "DELETE FROM {} WHERE version_num IN ({})",
                self.version_table(),
                list.join(", ")
            ));
        }
        if !insert.is_empty() {
            let list: Vec<String> = insert
                .iter()
                .map(|r| format!("({})", quote_literal(r.as_str())))
                .collect();
            out.push(format!(
                "INSERT INTO {} (version_num) VALUES {}",
                self.version_table(),
                list.join(", ")
            ));
        }
        out
    }

    /// An insert into the history table. `duration_sql` is an SQL expression (or `NULL`).
    #[allow(clippy::too_many_arguments)]
    pub fn history_sql(
        &self,
        revision: &str,
        direction: &str,
        status: &str,
        checksum: Option<&str>,
        is_transactional: bool,
        duration_sql: &str,
        error: Option<&str>,
    ) -> String {
        format!(
            "INSERT INTO {} (revision, direction, status, checksum, is_transactional, duration_ms, tool_version, error) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, {})",
            self.history_table(),
            quote_literal(revision),
            quote_literal(direction),
            quote_literal(status),
            checksum.map(quote_literal).unwrap_or_else(|| "NULL".into()),
            is_transactional,
            duration_sql,
            quote_literal(env!("CARGO_PKG_VERSION")),
            error.map(quote_literal).unwrap_or_else(|| "NULL".into()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_and_lock_keys() {
        let store = VersionStore::default();
        assert_eq!(store.version_table(), "\"flotilla_version\"");
        let other = VersionStore {
            schema: Some("s".into()),
            ..VersionStore::default()
        };
        assert_eq!(other.history_table(), "\"s\".\"flotilla_history\"");
        assert_eq!(
            store.lock_key_sql().1,
            "hashtext(coalesce(NULL, current_schema(), '') || '.' || 'flotilla_version')"
        );
        assert_eq!(
            other.lock_key_sql().1,
            "hashtext(coalesce('s', current_schema(), '') || '.' || 'flotilla_version')"
        );
    }

    #[test]
    fn rows_sql_quotes_ids() {
        let store = VersionStore::default();
        let sql = store.rows_sql(&["a".into(), "b".into()], &["c".into()]);
        assert_eq!(
            sql[0],
            "DELETE FROM \"flotilla_version\" WHERE version_num IN ('a', 'b')"
        );
        assert_eq!(sql[1], "INSERT INTO \"flotilla_version\" (version_num) VALUES ('c')");
    }
}
