//! The version store: how a database records which revisions it is at (one row per applied head, Alembic's
//! model) and what ran (an append-only history). [`VersionStore`] is the extension point; [`TableStore`] is the
//! built-in store (Alembic's version table layout plus `flotilla_history`).
//!
//! A store speaks SQL text rather than running queries itself, so its writes ride in the same transaction and
//! the same pipelined round trip as the revision's own statements: the version update can never commit apart
//! from the DDL it records.

use std::fmt;
use std::sync::Arc;

use super::sql::{quote_ident, quote_literal};
use crate::revision::RevisionId;

/// What a database's version state is made of, as SQL. Every method is pure (no IO); the executor runs the text.
///
/// Result shapes the executor relies on are given per method. Names the store does not qualify resolve through
/// the session's `search_path`, which is how a schema tenant keeps its own state inside its schema.
pub trait VersionStore: fmt::Debug + Send + Sync {
    /// The two keys of the advisory lock that keeps two runs off the same store: a constant and an SQL
    /// expression. Every spelling of the same store must give the same keys.
    fn lock_key_sql(&self) -> (i32, String);

    /// Two SQL boolean expressions: whether the version rows exist to be read, and whether the history does.
    fn exists_sql(&self) -> [String; 2];

    /// DDL creating whatever is missing; safe to run when everything exists.
    fn create_sql(&self) -> String;

    /// A query whose rows' first column is each current revision id: one `SELECT` without a trailing `;`, since
    /// offline scripts use it as a subquery.
    fn read_rows_sql(&self) -> String;

    /// Statements moving the version rows of one step: remove `delete`, add `insert`.
    fn rows_sql(&self, delete: &[RevisionId], insert: &[RevisionId]) -> Vec<String>;

    /// Statements replacing every version row with `rows` (stamp).
    fn replace_rows_sql(&self, rows: &[RevisionId]) -> Vec<String>;

    /// A statement appending `entry` to the history.
    fn history_sql(&self, entry: &HistoryEntry<'_>) -> String;

    /// A query for the newest history entry: revision, direction, status, applied_at (text), error,
    /// is_transactional (`'true'`/`'false'`); one `SELECT` without a trailing `;` (offline scripts use it as a
    /// subquery).
    fn last_entry_sql(&self) -> String;

    /// A query for the newest `limit` history entries, newest first: revision, direction, status, checksum,
    /// applied_at (text), duration_ms (text), tool_version.
    fn history_rows_sql(&self, limit: usize) -> String;

    /// A query for the checksum each revision was last applied (up) with: revision, checksum. Revisions whose
    /// last applied step was a downgrade are left out.
    fn applied_checksums_sql(&self) -> String;

    /// The schema the store's tables live in, where other bookkeeping (backfill checkpoints) goes too; `None`
    /// follows `search_path`.
    fn schema(&self) -> Option<&str>;

    /// The same store with unqualified names placed in `schema`, for reading a schema tenant without changing
    /// a pooled session's `search_path`. A store that names its own schema stays as it is.
    fn in_schema(&self, schema: &str) -> Arc<dyn VersionStore>;

    /// Where the version table is, as (schema, table), when the store knows (a store placed in a schema by
    /// [`VersionStore::in_schema`]): bulk reads then find many tenants' tables in one catalog query instead of
    /// an [`VersionStore::exists_sql`] expression each. `None` (the default): only `exists_sql` is used.
    fn version_table_at(&self) -> Option<(String, String)> {
        None
    }

    /// The tables the store owns, unqualified, so schema comparisons (autogenerate) leave them out.
    fn owned_tables(&self) -> Vec<String>;
}

/// One history entry.
#[derive(Debug, Clone, Copy)]
pub struct HistoryEntry<'a> {
    /// A revision id, or for a stamp the new rows joined by commas (`base` when none).
    pub revision: &'a str,
    /// `up`, `down` or `stamp`.
    pub direction: &'a str,
    /// `applied`, `started`, `failed` or `resolved`.
    pub status: &'a str,
    pub checksum: Option<&'a str>,
    pub is_transactional: bool,
    /// An SQL expression for the duration in milliseconds (`NULL` when unknown).
    pub duration_sql: &'a str,
    pub error: Option<&'a str>,
}

impl<'a> HistoryEntry<'a> {
    /// An entry with no checksum, duration or error.
    pub fn new(revision: &'a str, direction: &'a str, status: &'a str, is_transactional: bool) -> Self {
        HistoryEntry {
            revision,
            direction,
            status,
            checksum: None,
            is_transactional,
            duration_sql: "NULL",
            error: None,
        }
    }

    pub fn checksum(self, checksum: &'a str) -> Self {
        HistoryEntry {
            checksum: Some(checksum),
            ..self
        }
    }

    pub fn duration_sql(self, duration_sql: &'a str) -> Self {
        HistoryEntry { duration_sql, ..self }
    }

    pub fn error(self, error: &'a str) -> Self {
        HistoryEntry {
            error: Some(error),
            ..self
        }
    }
}

/// The settings a store is built from (`version_table`, `version_table_schema`, `history_table`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    pub schema: Option<String>,
    pub table: String,
    pub history_table: String,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
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

/// The built-in store (registered as `table`): a version table in Alembic's layout (`version_num`, one row
/// per head), so an existing `alembic_version` is read and written as is, and an append-only history table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableStore {
    pub settings: StoreSettings,
}

impl TableStore {
    pub fn new(settings: StoreSettings) -> Self {
        TableStore { settings }
    }

    fn qualify(&self, name: &str) -> String {
        match &self.settings.schema {
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(name)),
            None => quote_ident(name),
        }
    }

    pub fn version_table(&self) -> String {
        self.qualify(&self.settings.table)
    }

    pub fn history_table(&self) -> String {
        self.qualify(&self.settings.history_table)
    }

    /// DDL of the version table (Alembic's layout), when missing.
    pub fn version_create_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (version_num varchar(255) NOT NULL, CONSTRAINT {} PRIMARY KEY (version_num))",
            self.version_table(),
            quote_ident(&format!("{}_pkc", self.settings.table)),
        )
    }

    /// DDL of the history table, when missing. Public so a store of another version-row layout can keep
    /// this history.
    pub fn history_create_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\n    \
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
             )",
            self.history_table()
        )
    }

    /// `to_regclass` finds a table the way the same name in SQL would.
    fn exists(&self, name: &str) -> String {
        format!("to_regclass({}) IS NOT NULL", quote_literal(&self.qualify(name)))
    }
}

impl VersionStore for TableStore {
    /// The second key is computed by the server from the schema the version table really lives in
    /// (`current_schema()` when no schema is configured, which is the tenant's schema for schema tenants).
    fn lock_key_sql(&self) -> (i32, String) {
        let schema = self
            .settings
            .schema
            .as_deref()
            .map(quote_literal)
            .unwrap_or_else(|| "NULL".into());
        // 0x666c6f74 is "flot": the first key marks the lock as Flotilla's in pg_locks.
        (
            0x666c_6f74,
            format!(
                "hashtext(coalesce({schema}, current_schema(), '') || '.' || {})",
                quote_literal(&self.settings.table)
            ),
        )
    }

    fn exists_sql(&self) -> [String; 2] {
        [
            self.exists(&self.settings.table),
            self.exists(&self.settings.history_table),
        ]
    }

    fn create_sql(&self) -> String {
        format!("{};\n{};", self.version_create_sql(), self.history_create_sql())
    }

    fn read_rows_sql(&self) -> String {
        format!("SELECT version_num FROM {} ORDER BY version_num", self.version_table())
    }

    fn rows_sql(&self, delete: &[RevisionId], insert: &[RevisionId]) -> Vec<String> {
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

    fn replace_rows_sql(&self, rows: &[RevisionId]) -> Vec<String> {
        let mut out = vec![format!("DELETE FROM {}", self.version_table())];
        out.extend(self.rows_sql(&[], rows));
        out
    }

    fn history_sql(&self, e: &HistoryEntry<'_>) -> String {
        format!(
            "INSERT INTO {} (revision, direction, status, checksum, is_transactional, duration_ms, tool_version, error) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, {})",
            self.history_table(),
            quote_literal(e.revision),
            quote_literal(e.direction),
            quote_literal(e.status),
            e.checksum.map(quote_literal).unwrap_or_else(|| "NULL".into()),
            e.is_transactional,
            e.duration_sql,
            quote_literal(env!("CARGO_PKG_VERSION")),
            e.error.map(quote_literal).unwrap_or_else(|| "NULL".into()),
        )
    }

    fn last_entry_sql(&self) -> String {
        format!(
            "SELECT revision, direction, status, applied_at::text, error, is_transactional::text \
             FROM {} ORDER BY id DESC LIMIT 1",
            self.history_table()
        )
    }

    fn history_rows_sql(&self, limit: usize) -> String {
        format!(
            "SELECT revision, direction, status, checksum, applied_at::text, duration_ms::text, tool_version \
             FROM {} ORDER BY id DESC LIMIT {limit}",
            self.history_table()
        )
    }

    fn applied_checksums_sql(&self) -> String {
        format!(
            "SELECT revision, checksum FROM (SELECT DISTINCT ON (revision) revision, direction, checksum FROM {} \
             WHERE direction IN ('up', 'down') AND status = 'applied' ORDER BY revision, id DESC) AS last \
             WHERE direction = 'up' AND checksum IS NOT NULL",
            self.history_table()
        )
    }

    fn schema(&self) -> Option<&str> {
        self.settings.schema.as_deref()
    }

    fn version_table_at(&self) -> Option<(String, String)> {
        Some((self.settings.schema.clone()?, self.settings.table.clone()))
    }

    fn in_schema(&self, schema: &str) -> Arc<dyn VersionStore> {
        let mut settings = self.settings.clone();
        settings.schema.get_or_insert_with(|| schema.to_string());
        Arc::new(TableStore { settings })
    }

    fn owned_tables(&self) -> Vec<String> {
        vec![self.settings.table.clone(), self.settings.history_table.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(schema: Option<&str>) -> TableStore {
        TableStore::new(StoreSettings {
            schema: schema.map(str::to_string),
            ..StoreSettings::default()
        })
    }

    #[test]
    fn qualified_names_and_lock_keys() {
        assert_eq!(store(None).version_table(), "\"flotilla_version\"");
        assert_eq!(store(Some("s")).history_table(), "\"s\".\"flotilla_history\"");
        assert_eq!(
            store(None).lock_key_sql().1,
            "hashtext(coalesce(NULL, current_schema(), '') || '.' || 'flotilla_version')"
        );
        assert_eq!(
            store(Some("s")).lock_key_sql().1,
            "hashtext(coalesce('s', current_schema(), '') || '.' || 'flotilla_version')"
        );
        assert_eq!(
            store(None).exists_sql()[1],
            "to_regclass('\"flotilla_history\"') IS NOT NULL"
        );
    }

    #[test]
    fn in_schema_qualifies_only_unqualified_stores() {
        assert_eq!(
            store(None).in_schema("t1").read_rows_sql(),
            "SELECT version_num FROM \"t1\".\"flotilla_version\" ORDER BY version_num"
        );
        assert_eq!(store(Some("s")).in_schema("t1").schema(), Some("s"));
    }

    #[test]
    fn rows_sql_quotes_ids() {
        let sql = store(None).rows_sql(&["a".into(), "b".into()], &["c".into()]);
        assert_eq!(
            sql[0],
            "DELETE FROM \"flotilla_version\" WHERE version_num IN ('a', 'b')"
        );
        assert_eq!(sql[1], "INSERT INTO \"flotilla_version\" (version_num) VALUES ('c')");
        assert_eq!(
            store(None).replace_rows_sql(&[]),
            vec!["DELETE FROM \"flotilla_version\"".to_string()]
        );
    }

    #[test]
    fn history_entries_quote_every_text() {
        let entry = HistoryEntry::new("r'1", "up", "failed", false)
            .checksum("v1:x")
            .error("boom\\");
        assert_eq!(
            store(None).history_sql(&entry),
            format!(
                "INSERT INTO \"flotilla_history\" (revision, direction, status, checksum, is_transactional, \
                 duration_ms, tool_version, error) VALUES ('r''1', 'up', 'failed', 'v1:x', false, NULL, '{}', \
                 E'boom\\\\')",
                env!("CARGO_PKG_VERSION")
            )
        );
    }
}
