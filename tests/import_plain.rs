//! `flotilla import` and `stamp --from` for the plain-SQL tools (sqlx, diesel, Flyway, golang-migrate, dbmate):
//! a directory in each tool's documented layout and its version table as the tool writes it, imported,
//! stamped on a database migrated half-way by applying the first files directly, finished by
//! `flotilla upgrade head`, and compared by catalog with applying every file directly in order.

use std::path::Path;

use crate::harness::TempProject;
use crate::harness::TestDb;
use crate::single_support::{fl, query, rows, snapshot, user_tables};

/// One revision of the scenario, as SQL the tools run.
pub struct Step {
    pub name: &'static str,
    pub up: &'static str,
    pub down: &'static str,
    /// Runs outside a transaction in the tool (its own marker, where the tool has one).
    pub is_no_transaction: bool,
}

/// Five revisions: tables, a concurrent index, an enum with a function, and a file with its own BEGIN/COMMIT.
pub const STEPS: [Step; 5] = [
    Step {
        name: "create_users",
        up: "CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL);\n",
        down: "DROP TABLE users;\n",
        is_no_transaction: false,
    },
    Step {
        name: "create_orders",
        up: "CREATE TABLE orders (\n    id bigserial PRIMARY KEY,\n    user_id bigint REFERENCES users,\n    total numeric(12, 2) -- in cents; really\n);\n",
        down: "DROP TABLE orders;\n",
        is_no_transaction: false,
    },
    Step {
        name: "index_orders",
        up: "CREATE INDEX CONCURRENTLY orders_user_id_idx ON orders (user_id);\n",
        down: "DROP INDEX CONCURRENTLY orders_user_id_idx;\n",
        is_no_transaction: true,
    },
    Step {
        name: "order_status",
        up: "CREATE TYPE order_status AS ENUM ('new', 'paid');\nALTER TABLE orders ADD COLUMN status order_status NOT NULL DEFAULT 'new';\nCREATE FUNCTION order_total(o orders) RETURNS numeric LANGUAGE sql AS $$ SELECT o.total; $$;\n",
        down: "DROP FUNCTION order_total(orders);\nALTER TABLE orders DROP COLUMN status;\nDROP TYPE order_status;\n",
        is_no_transaction: false,
    },
    Step {
        name: "user_names",
        up: "BEGIN;\nALTER TABLE users ADD COLUMN name text;\nCREATE UNIQUE INDEX users_email_idx ON users (email);\nCOMMIT;\n",
        down: "DROP INDEX users_email_idx;\nALTER TABLE users DROP COLUMN name;\n",
        is_no_transaction: false,
    },
];

/// How many steps the half-migrated database had applied by the tool.
const HALF: usize = 2;

/// A tool's layout and bookkeeping.
struct Tool {
    format: &'static str,
    /// Each step's version as the tool records it, which is also its revision id here.
    versions: [&'static str; 5],
    /// Writes the tool's directory for `STEPS` into `dir`.
    write: fn(&Path),
    /// The tool's table, as it creates it.
    table_ddl: &'static str,
    /// SQL recording the first `n` steps as applied, as the tool would.
    record: fn(usize) -> String,
    /// SQL leaving the table in a state `stamp --from` must refuse (a gap, a dirty flag), and the message.
    broken: (&'static str, &'static str),
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("create the directory");
    std::fs::write(path, text).expect("write a source file");
}

fn sqlx() -> Tool {
    Tool {
        format: "sqlx",
        versions: ["1", "2", "3", "4", "5"],
        write: |dir| {
            for (i, s) in STEPS.iter().enumerate() {
                let marker = if s.is_no_transaction { "-- no-transaction\n" } else { "" };
                write(
                    &dir.join(format!("{:04}_{}.up.sql", i + 1, s.name)),
                    &format!("{marker}{}", s.up),
                );
                write(
                    &dir.join(format!("{:04}_{}.down.sql", i + 1, s.name)),
                    &format!("{marker}{}", s.down),
                );
            }
            write(&dir.join("README.md"), "not a migration");
        },
        table_ddl: "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
                    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL, \
                    checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL);",
        record: |n| {
            (1..=n)
                .map(|v| {
                    format!(
                        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                         VALUES ({v}, '{}', true, '\\x00', 1);",
                        STEPS[v - 1].name.replace('_', " ")
                    )
                })
                .collect()
        },
        broken: (
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES \
             (1, 'create users', true, '\\x00', 1), (3, 'index orders', true, '\\x00', 1);",
            "not a prefix",
        ),
    }
}

fn diesel() -> Tool {
    Tool {
        format: "diesel",
        versions: [
            "20240101000000",
            "20240102000000",
            "20240103000000",
            "20240104000000",
            "20240105000000",
        ],
        write: |dir| {
            for (i, s) in STEPS.iter().enumerate() {
                let sub = dir.join(format!("2024-01-0{}-000000_{}", i + 1, s.name));
                write(&sub.join("up.sql"), s.up);
                write(&sub.join("down.sql"), s.down);
                if s.is_no_transaction {
                    write(&sub.join("metadata.toml"), "run_in_transaction = false\n");
                }
            }
            write(&dir.join(".keep"), "");
        },
        table_ddl: "CREATE TABLE __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, \
                    run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);",
        record: |n| {
            (1..=n)
                .map(|i| format!("INSERT INTO __diesel_schema_migrations (version) VALUES ('2024010{i}000000');"))
                .collect()
        },
        broken: (
            "INSERT INTO __diesel_schema_migrations (version) VALUES ('20240101000000'), ('20240199000000');",
            "which no imported revision has",
        ),
    }
}

fn flyway() -> Tool {
    Tool {
        format: "flyway",
        versions: ["1", "1.1", "2", "2.1", "3"],
        write: |dir| {
            let files = ["1", "1_1", "2", "2_1", "3"];
            for (s, v) in STEPS.iter().zip(files) {
                // Flyway scans its locations recursively.
                let sub = if v.starts_with('1') {
                    dir.to_path_buf()
                } else {
                    dir.join("later")
                };
                write(&sub.join(format!("V{v}__{}.sql", s.name)), s.up);
                write(&sub.join(format!("U{v}__{}.sql", s.name)), s.down);
            }
            write(
                &dir.join("R__refresh_views.sql"),
                "CREATE OR REPLACE VIEW v AS SELECT 1;\n",
            );
        },
        table_ddl: "CREATE TABLE flyway_schema_history (installed_rank INT NOT NULL PRIMARY KEY, version VARCHAR(50), \
                    description VARCHAR(200) NOT NULL, type VARCHAR(20) NOT NULL, script VARCHAR(1000) NOT NULL, \
                    checksum INTEGER, installed_by VARCHAR(100) NOT NULL, installed_on TIMESTAMP NOT NULL DEFAULT \
                    now(), execution_time INTEGER NOT NULL, success BOOLEAN NOT NULL); \
                    CREATE INDEX flyway_schema_history_s_idx ON flyway_schema_history (success);",
        record: |n| {
            let versions = ["1", "1.1", "2", "2.1", "3"];
            let mut sql: String = (0..n)
                .map(|i| {
                    format!(
                        "INSERT INTO flyway_schema_history VALUES ({}, '{}', '{}', 'SQL', 'V{}__{}.sql', 1, \
                         'postgres', now(), 1, true);",
                        i + 1,
                        versions[i],
                        STEPS[i].name.replace('_', " "),
                        versions[i].replace('.', "_"),
                        STEPS[i].name
                    )
                })
                .collect();
            // A repeatable migration's row has no version and never counts.
            sql.push_str(&format!(
                "INSERT INTO flyway_schema_history VALUES ({}, NULL, 'refresh views', 'SQL', 'R__refresh_views.sql', \
                 1, 'postgres', now(), 1, true);",
                n + 1
            ));
            sql
        },
        broken: (
            "INSERT INTO flyway_schema_history VALUES (1, '1', 'create users', 'SQL', 'V1__create_users.sql', 1, \
             'postgres', now(), 1, true), (2, '2', 'index orders', 'SQL', 'V2__index_orders.sql', 1, 'postgres', \
             now(), 1, true);",
            "not a prefix",
        ),
    }
}

fn golang_migrate() -> Tool {
    Tool {
        format: "golang-migrate",
        versions: ["1", "2", "3", "4", "5"],
        write: |dir| {
            for (i, s) in STEPS.iter().enumerate() {
                write(&dir.join(format!("{:06}_{}.up.sql", i + 1, s.name)), s.up);
                write(&dir.join(format!("{:06}_{}.down.sql", i + 1, s.name)), s.down);
            }
        },
        table_ddl: "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);",
        record: |n| format!("INSERT INTO schema_migrations VALUES ({n}, false);"),
        broken: (
            "INSERT INTO schema_migrations VALUES (2, true);",
            "is dirty at version 2",
        ),
    }
}

fn dbmate() -> Tool {
    Tool {
        format: "dbmate",
        versions: [
            "20240101120000",
            "20240102120000",
            "20240103120000",
            "20240104120000",
            "20240105120000",
        ],
        write: |dir| {
            for (i, s) in STEPS.iter().enumerate() {
                let option = if s.is_no_transaction { " transaction:false" } else { "" };
                write(
                    &dir.join(format!("2024010{}120000_{}.sql", i + 1, s.name)),
                    &format!("-- migrate:up{option}\n{}\n-- migrate:down{option}\n{}", s.up, s.down),
                );
            }
        },
        table_ddl: "CREATE TABLE IF NOT EXISTS schema_migrations (version varchar(128) PRIMARY KEY);",
        record: |n| {
            (1..=n)
                .map(|i| format!("INSERT INTO schema_migrations (version) VALUES ('2024010{i}120000');"))
                .collect()
        },
        broken: (
            "INSERT INTO schema_migrations (version) VALUES ('20240102120000');",
            "not a prefix",
        ),
    }
}

/// Apply the first `n` steps directly, as the tool would (psql: one statement at a time, so a concurrent index
/// and a file's own BEGIN/COMMIT work), and the tool's table recording them.
fn apply_directly(db: &TestDb, tool: &Tool, n: usize) {
    let mut sql = String::new();
    for s in &STEPS[..n] {
        sql.push_str(s.up);
    }
    sql.push_str(tool.table_ddl);
    sql.push('\n');
    sql.push_str(&(tool.record)(n));
    db.psql().stdin(sql).assert_success();
}

fn tool_rows(db: &TestDb, tool: &Tool) -> Vec<Vec<String>> {
    let table = match tool.format {
        "sqlx" => "_sqlx_migrations",
        "diesel" => "__diesel_schema_migrations",
        "flyway" => "flyway_schema_history",
        _ => "schema_migrations",
    };
    query(db, &format!("SELECT t::text FROM {table} t ORDER BY 1"))
}

fn adopt_and_finish(tool: Tool) {
    let project = TempProject::new("");
    let source = project.path().join("source");
    (tool.write)(&source);
    let out = project
        .flotilla()
        .args([
            "import",
            tool.format,
            "--from",
            "source",
            "--into",
            "migrations",
            "--format",
            "json",
        ])
        .assert_success();
    let report = out.json();
    assert_eq!(report["v"], 1, "{}", out.report());
    let ids: Vec<&str> = report["revisions"]
        .as_array()
        .expect("revisions")
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, tool.versions, "ids keep the tool's versions, in its order");
    let no_tx: Vec<&str> = report["no_transaction"]
        .as_array()
        .expect("no_transaction")
        .iter()
        .map(|v| v.as_str().expect("id"))
        .collect();
    assert_eq!(no_tx, [tool.versions[2], tool.versions[4]], "{}", out.report());
    for (r, s) in report["revisions"].as_array().expect("revisions").iter().zip(&STEPS) {
        assert_eq!(r["message"], s.name.replace('_', " "));
    }

    // The fully migrated reference: every file applied directly, then Flotilla told it is at head.
    let direct = TestDb::new(&format!("import_{}_direct", tool.format.replace('-', "_")));
    apply_directly(&direct, &tool, STEPS.len());
    fl(&project, &direct, &["stamp", "head"]).assert_success();

    // Half-way by the tool, adopted, finished by Flotilla.
    let adopted = TestDb::new(&format!("import_{}_adopted", tool.format.replace('-', "_")));
    apply_directly(&adopted, &tool, HALF);
    if tool.format == "sqlx" {
        // A failed sqlx row counts as not applied, and is reported.
        adopted.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (3, 'index orders', false, '\\x00', 1);",
        );
    }
    let before = tool_rows(&adopted, &tool);
    let out = fl(&project, &adopted, &["stamp", "--from", tool.format]).assert_success();
    assert!(out.stdout.contains("Stamped from"), "{}", out.report());
    if tool.format == "sqlx" {
        assert!(
            out.stderr.contains("version 3") && out.stderr.contains("failed"),
            "{}",
            out.report()
        );
    }
    assert_eq!(rows(&adopted), [tool.versions[HALF - 1]]);
    let again = fl(&project, &adopted, &["stamp", "--from", tool.format]).assert_success();
    assert!(again.stdout.contains("Nothing to do"), "{}", again.report());
    let out = fl(&project, &adopted, &["upgrade", "head"]).assert_success();
    assert!(
        out.stdout.contains(&format!("Done: {} step(s)", STEPS.len() - HALF)),
        "{}",
        out.report()
    );
    assert_eq!(rows(&adopted), [tool.versions[4]]);
    assert_eq!(
        tool_rows(&adopted, &tool),
        before,
        "the tool's own table is never written"
    );
    assert_eq!(snapshot(&adopted, "public"), snapshot(&direct, "public"));

    // Once Flotilla owns the database, the tool's table no longer moves it.
    let out = fl(&project, &adopted, &["stamp", "--from", tool.format]).assert_code(1);
    assert!(out.stderr.contains("already holds"), "{}", out.report());
    assert_eq!(rows(&adopted), [tool.versions[4]]);

    // The imported downgrades take it all back.
    fl(&project, &adopted, &["downgrade", "base"]).assert_success();
    let mut left = user_tables(&adopted, "public");
    left.retain(|t| !tool_rows_table(t));
    assert_eq!(left, Vec::<String>::new());

    // A table that matches no point of the imported order changes nothing.
    let broken = TestDb::new(&format!("import_{}_broken", tool.format.replace('-', "_")));
    broken.execute(tool.table_ddl);
    broken.execute(tool.broken.0);
    let out = fl(&project, &broken, &["stamp", "--from", tool.format]).assert_code(1);
    assert!(out.stderr.contains(tool.broken.1), "{}", out.report());
    assert!(out.stderr.contains("nothing was changed"), "{}", out.report());
    assert_eq!(rows(&broken), Vec::<String>::new());

    // A database the tool never touched has no table to read.
    let fresh = TestDb::new(&format!("import_{}_fresh", tool.format.replace('-', "_")));
    let out = fl(&project, &fresh, &["stamp", "--from", tool.format]).assert_code(1);
    assert!(out.stderr.contains("does not exist"), "{}", out.report());
}

fn tool_rows_table(name: &str) -> bool {
    [
        "_sqlx_migrations",
        "__diesel_schema_migrations",
        "flyway_schema_history",
        "schema_migrations",
    ]
    .contains(&name)
}

#[test]
fn sqlx_is_imported_stamped_and_finished() {
    adopt_and_finish(sqlx());
}

#[test]
fn diesel_is_imported_stamped_and_finished() {
    adopt_and_finish(diesel());
}

#[test]
fn flyway_is_imported_stamped_and_finished() {
    adopt_and_finish(flyway());
}

#[test]
fn golang_migrate_is_imported_stamped_and_finished() {
    adopt_and_finish(golang_migrate());
}

#[test]
fn dbmate_is_imported_stamped_and_finished() {
    adopt_and_finish(dbmate());
}

#[test]
fn flyway_repeatables_are_reported_and_undo_files_become_downgrades() {
    let project = TempProject::new("");
    (flyway().write)(&project.path().join("source"));
    let out = project
        .flotilla()
        .args(["import", "flyway", "--from", "source"])
        .assert_success();
    assert!(out.stdout.contains("Not imported (unsupported):"), "{}", out.report());
    assert!(
        out.stdout.contains("R__refresh_views.sql: Flyway repeatable"),
        "{}",
        out.report()
    );
    let file = std::fs::read_to_string(project.migrations_dir().join("0002_1.1_create_orders.sql"))
        .expect("the default --into is the project's migrations directory");
    assert!(file.contains("-- revision: 1.1\n-- down_revision: 1\n"), "{file}");
    assert!(file.contains("-- flotilla:downgrade\nDROP TABLE orders;\n"), "{file}");
    assert!(
        file.contains("-- Imported from flyway version 1.1 - V1_1__create_orders.sql + U1_1__create_orders.sql"),
        "{file}"
    );
}

#[test]
fn import_refuses_to_overwrite_and_names_malformed_files() {
    let project = TempProject::new("");
    (sqlx().write)(&project.path().join("source"));
    let args = ["import", "sqlx", "--from", "source", "--into", "migrations"];
    project.flotilla().args(args).assert_success();
    let first = std::fs::read_to_string(project.migrations_dir().join("0001_1_create_users.sql")).expect("written");
    let out = project.flotilla().args(args).assert_code(2);
    assert!(out.stderr.contains("refusing to overwrite"), "{}", out.report());
    assert_eq!(
        std::fs::read_to_string(project.migrations_dir().join("0001_1_create_users.sql")).expect("kept"),
        first
    );

    // An unterminated string is reported at its file and line, and nothing is written.
    let bad = project.path().join("bad");
    write(&bad.join("1_ok.sql"), "CREATE TABLE a (id int);\n");
    write(
        &bad.join("2_broken.sql"),
        "CREATE TABLE b (id int);\nINSERT INTO b VALUES ('oops);\n",
    );
    write(&bad.join("x_not_a_version.sql"), "SELECT 1;\n");
    let out = project
        .flotilla()
        .args(["import", "sqlx", "--from", "bad", "--into", "out"])
        .assert_code(2);
    assert!(
        out.stderr
            .contains("bad/2_broken.sql:2: cannot split the SQL into statements: unterminated string literal"),
        "{}",
        out.report()
    );
    assert!(
        out.stderr.contains("x_not_a_version.sql: `x` is not a sqlx version"),
        "{}",
        out.report()
    );
    assert!(!project.path().join("out").exists(), "nothing is written");

    // A dbmate file without its marker.
    write(
        &project.path().join("dbm/20240101_a.sql"),
        "CREATE TABLE a ();\n-- migrate:up\nSELECT 1;\n",
    );
    let out = project
        .flotilla()
        .args(["import", "dbmate", "--from", "dbm", "--into", "out"])
        .assert_code(2);
    assert!(
        out.stderr
            .contains("20240101_a.sql:1: SQL before the first `-- migrate:` marker"),
        "{}",
        out.report()
    );
}
