//! Helpers shared by the `single_*` modules: projects built from the example set or a fixture, a `flotilla`
//! command aimed at a test database, and synchronous reads of what the database holds.
//!
//! Everything here reads `pg_catalog` and the version/history tables directly; nothing calls the product's code.

use std::path::Path;

use crate::harness::{block_on, catalog_snapshot, connect, tables, version_rows, Cmd, TempProject, TestDb};

/// Revision ids of the repository's `migrations/` example set.
pub mod example {
    pub const USERS: &str = "4c2d8e1f9a07";
    pub const PRODUCTS: &str = "b71e3a5c0d92";
    pub const ORDERS: &str = "e5f0a9c3b284";
    pub const AUDIT: &str = "1d9b6f2e7c35";
    pub const ACTOR: &str = "8a4c7e0b3f61";
    pub const MERGE: &str = "c3e8d1a6b950";
    pub const INDEX: &str = "2f7a0e4d9c18";
    pub const ACTIVE: &str = "9d5b2c7f1e46";
    pub const BACKFILL: &str = "6e1f3b8a2d54";
    pub const HEAD: &str = BACKFILL;

    /// Every revision, in the order an upgrade from base applies them (and `plan upgrade head` lists them).
    pub const UPGRADE_ORDER: &[&str] = &[USERS, PRODUCTS, AUDIT, ACTOR, ORDERS, MERGE, INDEX, ACTIVE, BACKFILL];

    /// Every table the example set creates, sorted.
    pub const TABLES: &[&str] = &["audit_log", "order_items", "orders", "products", "users"];
}

/// A project holding a copy of the repository's `migrations/`, with `config` as its `flotilla.toml`.
pub fn example_project(config: &str) -> TempProject {
    let project = TempProject::new(config);
    project.copy_repo_migrations();
    project
}

/// A project holding a copy of `tests/fixtures/<fixture>/`, with `config` as its `flotilla.toml`.
pub fn fixture_project(fixture: &str, config: &str) -> TempProject {
    let project = TempProject::new(config);
    project.copy_fixture(fixture);
    project
}

/// `flotilla --url <db> ARGS...` run in the project directory.
pub fn fl(project: &TempProject, db: &TestDb, args: &[&str]) -> Cmd {
    let mut cmd = project.flotilla();
    cmd.args(["--url", db.url()]).args(args);
    cmd
}

/// `flotilla ARGS...` run in the project directory, without any database.
pub fn fl_offline(project: &TempProject, args: &[&str]) -> Cmd {
    let mut cmd = project.flotilla();
    cmd.args(args);
    cmd
}

/// The default version table's rows.
pub fn rows(db: &TestDb) -> Vec<String> {
    rows_of(db, "flotilla_version")
}

/// The rows of the version table `table` (may be schema-qualified); empty when it does not exist.
pub fn rows_of(db: &TestDb, table: &str) -> Vec<String> {
    let (url, table) = (db.url().to_string(), table.to_string());
    block_on(async move { version_rows(&connect(&url).await.unwrap(), &table).await })
}

/// The tables of `schema`, sorted, leaving out Flotilla's own version and history tables.
pub fn user_tables(db: &TestDb, schema: &str) -> Vec<String> {
    let (url, schema) = (db.url().to_string(), schema.to_string());
    let all = block_on(async move { tables(&connect(&url).await.unwrap(), &schema).await });
    all.into_iter().filter(|t| !t.starts_with("flotilla_")).collect()
}

/// Every table of `schema`, sorted, Flotilla's own included.
pub fn all_tables(db: &TestDb, schema: &str) -> Vec<String> {
    let (url, schema) = (db.url().to_string(), schema.to_string());
    block_on(async move { tables(&connect(&url).await.unwrap(), &schema).await })
}

/// The catalog snapshot of `schema` (see the harness), Flotilla's own tables included.
pub fn snapshot(db: &TestDb, schema: &str) -> String {
    let (url, schema) = (db.url().to_string(), schema.to_string());
    block_on(async move { catalog_snapshot(&connect(&url).await.unwrap(), &schema).await })
}

/// Rows of one query, every column cast to text by the caller's SQL; `NULL` becomes `"NULL"`.
pub fn query(db: &TestDb, sql: &str) -> Vec<Vec<String>> {
    let (url, sql) = (db.url().to_string(), sql.to_string());
    block_on(async move {
        let client = connect(&url).await.unwrap();
        client
            .simple_query(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).unwrap_or("NULL").to_string())
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    })
}

/// `(revision, direction, status)` of each history row, oldest first.
pub fn history(db: &TestDb) -> Vec<(String, String, String)> {
    history_of(db, "flotilla_history")
}

/// As [`history`] for a history table with another (possibly qualified) name.
pub fn history_of(db: &TestDb, table: &str) -> Vec<(String, String, String)> {
    query(
        db,
        &format!("SELECT revision, direction, status FROM {table} ORDER BY id"),
    )
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
    .collect()
}

/// The revisions of the history rows with direction `up` and status `applied`, oldest first.
pub fn applied_up(db: &TestDb) -> Vec<String> {
    history(db)
        .into_iter()
        .filter(|(_, d, s)| d == "up" && s == "applied")
        .map(|(r, _, _)| r)
        .collect()
}

/// Whether a relation (table, view, index...) named `name` exists, as `to_regclass` sees it.
pub fn exists(db: &TestDb, name: &str) -> bool {
    query(db, &format!("SELECT (to_regclass('{name}') IS NOT NULL)::text"))[0][0] == "true"
}

/// The user-visible state of a database: every schema's tables, the version rows (if any) and whether
/// Flotilla's tables exist. Two equal states mean a command changed nothing that matters.
pub fn state(db: &TestDb) -> String {
    let rows = query(
        db,
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1",
    );
    rows.into_iter().map(|r| r[0].clone()).collect::<Vec<_>>().join("\n")
}

/// Strings of `ids` as owned `String`s, for comparing with [`rows`].
pub fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// The single `.sql` file in `dir` whose name contains `needle`.
pub fn file_containing(dir: &Path, needle: &str) -> std::path::PathBuf {
    let matches: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(needle))
        .collect();
    assert_eq!(
        matches.len(),
        1,
        "files containing {needle:?} in {}: {matches:?}",
        dir.display()
    );
    matches.into_iter().next().unwrap()
}

/// Asserts that `haystack` contains every needle, showing the whole output otherwise.
#[track_caller]
pub fn assert_contains(haystack: &str, needles: &[&str], report: &str) {
    for needle in needles {
        assert!(haystack.contains(needle), "{needle:?} missing\n{report}");
    }
}
