//! The extension registry end to end: a program registers its own revision source, version store and offline
//! renderer, `flotilla.toml` names them, and the real commands (through `cli::run_with`) use them against a
//! real database.

use std::sync::{Arc, Mutex};

use clap::Parser;
use flotilla::cli::{run_with, Cli};
use flotilla::error::ExitCode;
use flotilla::executor::{
    quote_literal, ExecError, HistoryEntry, OfflineInput, OfflineRenderer, PsqlRenderer, StoreSettings, TableStore,
    VersionStore,
};
use flotilla::extend::Registry;
use flotilla::observe::LogRoute;
use flotilla::revision::RevisionId;
use flotilla::script::Embedded;

use crate::harness::{TempProject, TestDb};
use crate::single_support::{assert_contains, fl_offline, history_of, query};

/// Version rows in a table of another layout (`migration_heads(head, recorded_at)`), history through the
/// built-in store's history table `migration_log`: what adopting another tool's bookkeeping looks like.
#[derive(Debug)]
struct HeadsStore {
    history: TableStore,
}

impl HeadsStore {
    fn new(settings: &StoreSettings) -> HeadsStore {
        HeadsStore {
            history: TableStore::new(StoreSettings {
                history_table: "migration_log".into(),
                ..settings.clone()
            }),
        }
    }
}

fn literal(id: &RevisionId) -> String {
    quote_literal(id.as_str())
}

impl VersionStore for HeadsStore {
    fn lock_key_sql(&self) -> (i32, String) {
        (7, "hashtext(current_schema() || '.migration_heads')".into())
    }

    fn exists_sql(&self) -> [String; 2] {
        let [_, history] = self.history.exists_sql();
        ["to_regclass('migration_heads') IS NOT NULL".into(), history]
    }

    fn create_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS migration_heads (head text PRIMARY KEY, recorded_at timestamptz NOT NULL \
             DEFAULT now());\n{};",
            self.history.history_create_sql()
        )
    }

    fn read_rows_sql(&self) -> String {
        "SELECT head FROM migration_heads ORDER BY head".into()
    }

    fn rows_sql(&self, delete: &[RevisionId], insert: &[RevisionId]) -> Vec<String> {
        let mut out = Vec::new();
        if !delete.is_empty() {
            let list: Vec<String> = delete.iter().map(literal).collect();
            out.push(format!(
                "DELETE FROM migration_heads WHERE head IN ({})",
                list.join(", ")
            ));
        }
        if !insert.is_empty() {
            let list: Vec<String> = insert.iter().map(|r| format!("({})", literal(r))).collect();
            out.push(format!("INSERT INTO migration_heads (head) VALUES {}", list.join(", ")));
        }
        out
    }

    fn replace_rows_sql(&self, rows: &[RevisionId]) -> Vec<String> {
        let mut out = vec!["DELETE FROM migration_heads".to_string()];
        out.extend(self.rows_sql(&[], rows));
        out
    }

    fn history_sql(&self, entry: &HistoryEntry<'_>) -> String {
        self.history.history_sql(entry)
    }

    fn last_entry_sql(&self) -> String {
        self.history.last_entry_sql()
    }

    fn history_rows_sql(&self, limit: usize) -> String {
        self.history.history_rows_sql(limit)
    }

    fn applied_checksums_sql(&self) -> String {
        self.history.applied_checksums_sql()
    }

    fn schema(&self) -> Option<&str> {
        None
    }

    fn in_schema(&self, _schema: &str) -> Arc<dyn VersionStore> {
        unreachable!("not used by single-database commands")
    }

    fn owned_tables(&self) -> Vec<String> {
        vec!["migration_heads".into(), "migration_log".into()]
    }
}

/// The built-in renderer's script with a psql preamble, kept where the test can read it.
#[derive(Clone, Default)]
struct Capturing {
    last: Arc<Mutex<String>>,
}

impl OfflineRenderer for Capturing {
    fn render_plan(&self, input: &OfflineInput<'_>) -> Result<String, ExecError> {
        let sql = format!("\\set ON_ERROR_STOP on\n{}", PsqlRenderer.render_plan(input)?);
        *self.last.lock().unwrap() = sql.clone();
        Ok(sql)
    }

    fn render_stamp(
        &self,
        store: &dyn VersionStore,
        from: Option<&[RevisionId]>,
        rows: &[RevisionId],
    ) -> Result<String, ExecError> {
        PsqlRenderer.render_stamp(store, from, rows)
    }
}

const ACCOUNTS: &str = "-- revision: e1a\n-- down_revision:\n-- message: accounts\n\n-- flotilla:upgrade\n\
    CREATE TABLE accounts (id bigint PRIMARY KEY);\n\n-- flotilla:downgrade\nDROP TABLE accounts;\n";
const PLANS: &str = "-- revision: e2b\n-- down_revision: e1a\n-- message: plans\n\n-- flotilla:upgrade\n\
    CREATE TABLE plans (id bigint PRIMARY KEY, account_id bigint REFERENCES accounts);\n\n\
    -- flotilla:downgrade\nDROP TABLE plans;\n";

const CONFIG: &str = "revision_source = \"embedded\"\nversion_store = \"heads\"\noffline_renderer = \"capturing\"\n";

fn registry(renderer: &Capturing) -> Registry {
    let mut registry = Registry::standard();
    registry
        .add_source("embedded", Embedded::new([("e1a.sql", ACCOUNTS), ("e2b.sql", PLANS)]))
        .add_store("heads", |settings: &StoreSettings| {
            Arc::new(HeadsStore::new(settings)) as Arc<dyn VersionStore>
        })
        .add_renderer("capturing", renderer.clone());
    registry
}

async fn run(project: &TempProject, registry: &Registry, args: &[&str]) -> ExitCode {
    let config = project.config_path();
    let mut argv = vec!["flotilla", "--config", config.to_str().unwrap()];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).unwrap();
    match run_with(cli, LogRoute::new(), registry.clone()).await {
        Ok(code) => code,
        Err(e) => panic!("{args:?}: {:#}", e.error),
    }
}

fn heads(db: &TestDb) -> Vec<String> {
    query(db, "SELECT head FROM migration_heads ORDER BY 1")
        .into_iter()
        .map(|row| row[0].clone())
        .collect()
}

fn tables(db: &TestDb) -> Vec<String> {
    query(
        db,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .into_iter()
    .map(|row| row[0].clone())
    .collect()
}

#[tokio::test]
async fn registered_source_store_and_renderer_drive_the_real_commands() {
    // The revision files exist only in the program: migrations/ stays empty.
    let project = TempProject::new(CONFIG);
    let capturing = Capturing::default();
    let registry = registry(&capturing);
    let db = TestDb::new("extend_custom");

    assert_eq!(
        run(&project, &registry, &["--url", db.url(), "upgrade", "head"]).await,
        ExitCode::Ok
    );
    assert_eq!(heads(&db), ["e2b"]);
    assert_eq!(tables(&db), ["accounts", "migration_heads", "migration_log", "plans"]);
    let log = history_of(&db, "migration_log");
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[1], ("e2b".into(), "up".into(), "applied".into()));
    // The store's rows and history serve `validate` and the downgrade's plan too.
    assert_eq!(
        run(&project, &registry, &["--url", db.url(), "validate"]).await,
        ExitCode::Ok
    );
    // ... and it reads the checksums back: a changed script under the same id is reported.
    let mut changed = registry.clone();
    let plans_changed = PLANS.replace("account_id bigint", "account_id integer");
    changed.add_source(
        "embedded",
        Embedded::new([("e1a.sql", ACCOUNTS), ("e2b.sql", plans_changed.as_str())]),
    );
    assert_eq!(
        run(&project, &changed, &["--url", db.url(), "validate"]).await,
        ExitCode::Failed
    );
    assert_eq!(
        run(&project, &registry, &["--url", db.url(), "downgrade", "e1a"]).await,
        ExitCode::Ok
    );
    assert_eq!(heads(&db), ["e1a"]);
    assert_eq!(tables(&db), ["accounts", "migration_heads", "migration_log"]);

    // Offline, the registered renderer writes the script, with the registered store's bookkeeping.
    assert_eq!(
        run(&project, &registry, &["upgrade", "head", "--sql"]).await,
        ExitCode::Ok
    );
    let script = capturing.last.lock().unwrap().clone();
    assert_contains(
        &script,
        &[
            "\\set ON_ERROR_STOP on",
            "CREATE TABLE IF NOT EXISTS migration_heads",
            "INSERT INTO migration_heads",
        ],
        &script,
    );
    let offline = TestDb::new("extend_offline");
    offline.psql().stdin(script).assert_success();
    assert_eq!(heads(&offline), ["e2b"]);
    assert_eq!(
        history_of(&offline, "migration_log"),
        history_of(&db, "migration_log")[..2]
    );
    assert_eq!(
        tables(&offline),
        ["accounts", "migration_heads", "migration_log", "plans"]
    );

    // `revision` and `merge` would write files the embedded source never reads: refused, nothing written.
    for args in [&["revision", "-m", "more"][..], &["merge", "-m", "m", "heads"]] {
        let config = project.config_path();
        let mut argv = vec!["flotilla", "--config", config.to_str().unwrap()];
        argv.extend_from_slice(args);
        let error = run_with(Cli::try_parse_from(argv).unwrap(), LogRoute::new(), registry.clone())
            .await
            .expect_err("refused");
        assert_eq!(error.code, ExitCode::Usage);
        assert!(
            format!("{:#}", error.error).contains("revision_source = \"embedded\""),
            "{:#}",
            error.error
        );
    }
    assert_eq!(std::fs::read_dir(project.path().join("migrations")).unwrap().count(), 0);
}

#[test]
fn unknown_extension_names_are_usage_errors_at_their_key() {
    let project = TempProject::new("script_location = \"migrations\"\n\nversion_store = \"nope\"\n");
    let out = fl_offline(&project, &["heads"]).assert_code(2);
    assert_contains(
        &out.stderr,
        &["flotilla.toml:3:17: unknown version_store \"nope\" (registered: table)"],
        &out.report(),
    );
    let project = TempProject::new("[env.ci]\noffline_renderer = \"dbt\"\n");
    fl_offline(&project, &["heads"]).assert_success();
    let out = fl_offline(&project, &["--env", "ci", "heads"]).assert_code(2);
    assert_contains(
        &out.stderr,
        &["flotilla.toml:2:20: unknown offline_renderer \"dbt\" (registered: psql)"],
        &out.report(),
    );
}
