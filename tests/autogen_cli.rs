//! `revision --autogenerate` options, `check` exit codes, and `fleet drift` on schema and database tenants.

use crate::harness::{cluster, TempProject, TestDb};

const BASE: &str = "-- revision: 000000000001\n-- down_revision:\n\n-- flotilla:upgrade\n\
CREATE TABLE items (id int PRIMARY KEY, name text, price int DEFAULT 0);\n\n-- flotilla:downgrade\nDROP TABLE items;\n";
const SECOND: &str = "-- revision: 000000000002\n-- down_revision: 000000000001\n\n-- flotilla:upgrade\n\
CREATE INDEX items_name ON items (name);\n\n-- flotilla:downgrade\nDROP INDEX items_name;\n";
const DESIRED: &str = "CREATE TABLE items (id int PRIMARY KEY, name text, price int DEFAULT 0);\n\
CREATE INDEX items_name ON items (name);\n";

fn project(extra: &str) -> TempProject {
    let config = format!(
        "script_location = \"migrations\"\ndev_url = \"{}\"\n{extra}",
        cluster().url()
    );
    TempProject::with_revisions(&config, &[("0001_base.sql", BASE), ("0002_index.sql", SECOND)])
}

fn n_revisions(project: &TempProject) -> usize {
    std::fs::read_dir(project.migrations_dir()).unwrap().count()
}

#[test]
fn check_exit_codes() {
    let project = project("");
    project.write("schema/schema.sql", DESIRED);
    project.flotilla().arg("check").assert_code(0);
    project.write(
        "schema/schema.sql",
        &format!("{DESIRED}ALTER TABLE items ADD COLUMN sku text;\n"),
    );
    let out = project.flotilla().arg("check").assert_code(1);
    assert!(out.stdout.contains("add column items.sku"), "{}", out.report());
    assert!(
        out.stdout.contains("ALTER TABLE items ADD COLUMN sku text;"),
        "{}",
        out.report()
    );
    let json = project
        .flotilla()
        .args(["check", "--format", "json"])
        .assert_code(1)
        .json();
    assert_eq!(json["is_different"], true);
    // The desired schema can be named on the command line; a missing one is a usage error.
    project.write("other/a.sql", DESIRED);
    project
        .flotilla()
        .args(["check", "--desired-schema", "other"])
        .assert_code(0);
    project
        .flotilla()
        .args(["check", "--desired-schema", "nowhere"])
        .assert_code(2);
}

#[test]
fn empty_diff_writes_nothing_unless_allowed() {
    let project = project("");
    project.write("schema/schema.sql", DESIRED);
    let out = project
        .flotilla()
        .args(["revision", "--autogenerate", "-m", "nothing"])
        .assert_success();
    assert!(out.stdout.contains("No changes detected"), "{}", out.report());
    assert_eq!(n_revisions(&project), 2);
    project
        .flotilla()
        .args(["revision", "--autogenerate", "--allow-empty", "-m", "nothing"])
        .assert_success();
    assert_eq!(n_revisions(&project), 3);
}

#[test]
fn destructive_changes_are_commented_out_without_the_flag() {
    let db = TestDb::new("autogen destructive");
    let project = project(&format!("url = \"{}\"\n", db.url()));
    project.write(
        "schema/schema.sql",
        "CREATE TABLE items (id int PRIMARY KEY, name text);\n",
    );
    let out = project
        .flotilla()
        .args([
            "revision",
            "--autogenerate",
            "-m",
            "drop price",
            "--rev-id",
            "000000000003",
        ])
        .assert_success();
    assert!(
        out.stdout.contains("drop column items.price (destructive)"),
        "{}",
        out.report()
    );
    let file = std::fs::read_dir(project.migrations_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("000000000003"))
        .unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("-- flotilla: destructive (drop column items.price)"),
        "{text}"
    );
    assert!(text.contains("-- ALTER TABLE items DROP COLUMN price;"), "{text}");
    project.flotilla().args(["upgrade", "head"]).assert_success();
    // Nothing ran: the column is still there, so check still sees the difference.
    project.flotilla().arg("check").assert_code(1);
}

#[test]
fn online_puts_concurrent_indexes_in_a_no_transaction_revision() {
    let db = TestDb::new("autogen online");
    let project = project(&format!("url = \"{}\"\n", db.url()));
    project.write(
        "schema/schema.sql",
        &format!("{DESIRED}CREATE INDEX items_price ON items (price);\nALTER TABLE items ADD COLUMN qty int NOT NULL DEFAULT 1;\n"),
    );
    project
        .flotilla()
        .args(["revision", "--autogenerate", "--online", "-m", "online"])
        .assert_success();
    assert_eq!(n_revisions(&project), 4);
    let texts: Vec<String> = std::fs::read_dir(project.migrations_dir())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let concurrent = texts
        .iter()
        .find(|t| t.contains("CONCURRENTLY"))
        .expect("a concurrent revision");
    assert!(concurrent.contains("-- transaction: false"), "{concurrent}");
    assert!(concurrent.contains("CREATE INDEX CONCURRENTLY items_price ON items USING btree (price);"));
    assert!(concurrent.contains("DROP INDEX CONCURRENTLY items_price;"));
    let main = texts.iter().find(|t| t.contains("qty")).expect("the main revision");
    assert!(main.contains("UPDATE items SET qty = 1 WHERE qty IS NULL;"), "{main}");
    assert!(
        main.contains("ALTER TABLE items ALTER COLUMN qty SET NOT NULL;"),
        "{main}"
    );
    project.flotilla().args(["upgrade", "head"]).assert_success();
    project.flotilla().arg("check").assert_code(0);
    project.flotilla().args(["downgrade", "000000000002"]).assert_success();
}

#[tokio::test]
async fn fleet_drift_finds_hand_modified_tenants_only() {
    let host = TestDb::new("drift host");
    let solo = TestDb::new("drift solo");
    let client = host.client().await;
    client
        .batch_execute("CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b; CREATE SCHEMA tenant_c;")
        .await
        .unwrap();
    let project = project("tenants = \"tenants.toml\"\n");
    project.write(
        "tenants.toml",
        &format!(
            "[[servers]]\nname = \"main\"\nurl = \"{}\"\n\n\
             [[tenants]]\nid = \"a\"\nserver = \"main\"\nschema = \"tenant_a\"\n\n\
             [[tenants]]\nid = \"b\"\nserver = \"main\"\nschema = \"tenant_b\"\n\n\
             [[tenants]]\nid = \"c\"\nserver = \"main\"\nschema = \"tenant_c\"\n\n\
             [[tenants]]\nid = \"solo\"\nserver = \"main\"\ndatabase = \"{}\"\n",
            host.url(),
            solo.name()
        ),
    );
    project
        .flotilla()
        .args(["fleet", "upgrade", "head", "--progress", "none"])
        .assert_success();
    // Tenant c sits one revision back: its expected schema is the one at its own revision.
    project
        .flotilla()
        .args(["fleet", "downgrade", "-1", "--tenant", "c", "--progress", "none"])
        .assert_success();
    let clean = project
        .flotilla()
        .args(["fleet", "drift", "--format", "json"])
        .assert_code(0)
        .json();
    assert_eq!(clean["n_drifted"], 0, "{clean:#}");
    assert_eq!(clean["n_tenants"], 4);

    client
        .batch_execute("CREATE INDEX extra_idx ON tenant_b.items (price); ALTER TABLE tenant_b.items DROP COLUMN name;")
        .await
        .unwrap();
    solo.client()
        .await
        .batch_execute("ALTER TABLE items ALTER COLUMN price SET DEFAULT 5")
        .await
        .unwrap();
    let json = project
        .flotilla()
        .args(["fleet", "drift", "--format", "json"])
        .assert_code(1)
        .json();
    assert_eq!(json["n_drifted"], 2, "{json:#}");
    let tenant = |id: &str| {
        json["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(tenant("a")["is_drifted"], false);
    assert_eq!(tenant("c")["is_drifted"], false);
    let b = tenant("b")["differences"].to_string();
    assert!(b.contains("\"extra\"") && b.contains("index extra_idx on items"), "{b}");
    assert!(b.contains("\"missing\"") && b.contains("column items.name"), "{b}");
    let solo_diff = tenant("solo")["differences"].to_string();
    assert!(solo_diff.contains("default of column items.price"), "{solo_diff}");
    let text = project.flotilla().args(["fleet", "drift"]).assert_code(1);
    assert!(
        text.stdout
            .contains("1 tenant(s) at 000000000002 drifted: b\n    missing index items_name on items\n    missing column items.name\n    extra index extra_idx on items\n"),
        "{}",
        text.report()
    );
    // Selectors apply: the clean tenant alone passes.
    project
        .flotilla()
        .args(["fleet", "drift", "--tenant", "a"])
        .assert_code(0);
    // Tenants drifted the same way print as one block with their count; another drift is another block.
    client
        .batch_execute("CREATE INDEX extra_idx ON tenant_a.items (price); ALTER TABLE tenant_a.items DROP COLUMN name;")
        .await
        .unwrap();
    let text = project.flotilla().args(["fleet", "drift"]).assert_code(1);
    assert!(
        text.stdout.contains(
            "2 tenant(s) at 000000000002 drifted: a, b\n    missing index items_name on items\n    missing column items.name\n    extra index extra_idx on items\n"
        ),
        "{}",
        text.report()
    );
    assert_eq!(text.stdout.matches("tenant(s) at").count(), 2, "{}", text.report());
    assert!(
        text.stdout.contains("1 tenant(s) at 000000000002 drifted: solo\n"),
        "{}",
        text.report()
    );
    let json = project
        .flotilla()
        .args(["fleet", "drift", "--format", "json"])
        .assert_code(1)
        .json();
    assert_eq!(json["groups"][0]["tenants"], serde_json::json!(["a", "b"]), "{json:#}");
    assert_eq!(json["groups"].as_array().unwrap().len(), 2, "{json:#}");
}

#[test]
fn broken_desired_schema_is_a_usage_error() {
    let project = project("");
    project.write("schema/01.sql", "CREATE TABLE items (id int PRIMARY KEY);\n");
    project.write("schema/02.sql", "CREATE TABLE broken (id nosuchtype);\n");
    let out = project.flotilla().arg("check").assert_code(2);
    assert!(out.stderr.contains("02.sql"), "{}", out.report());
    assert!(out.stderr.contains("nosuchtype"), "{}", out.report());
    let out = project
        .flotilla()
        .args(["revision", "--autogenerate", "-m", "x"])
        .assert_code(2);
    assert!(out.stderr.contains("02.sql"), "{}", out.report());
    assert_eq!(n_revisions(&project), 2);
}

#[test]
fn first_revision_of_an_empty_project() {
    let db = TestDb::new("autogen first");
    let config = format!(
        "script_location = \"migrations\"\nurl = \"{}\"\ndesired_schema = \"db/schema\"\n",
        db.url()
    );
    let project = TempProject::new(&config);
    project.write("db/schema/01_tables.sql", DESIRED);
    // Without dev_url the scratch databases go to the database url's server.
    project
        .flotilla()
        .args(["revision", "--autogenerate", "-m", "initial"])
        .assert_success();
    assert_eq!(n_revisions(&project), 1);
    project.flotilla().args(["upgrade", "head"]).assert_success();
    project.flotilla().arg("check").assert_code(0);
    project.flotilla().args(["downgrade", "base"]).assert_success();
}

#[test]
fn a_drop_and_an_add_of_the_same_type_suggest_rename() {
    let project = project("");
    project.write(
        "schema/schema.sql",
        "CREATE TABLE items (id int PRIMARY KEY, title text, price int DEFAULT 0);\nCREATE INDEX items_name ON items (title);\n",
    );
    let out = project
        .flotilla()
        .args(["revision", "--autogenerate", "-m", "maybe renamed"])
        .assert_success();
    assert!(
        out.stdout.contains(
            "Hint: column items.name was dropped and items.title added with the same type (text): if it was renamed, \
             rerun with --rename items.name=title"
        ),
        "{}",
        out.report()
    );
    // A hint naming nothing at the head is a usage error, and no revision is written.
    let out = project
        .flotilla()
        .args([
            "revision",
            "--autogenerate",
            "-m",
            "x",
            "--rename",
            "items.nosuch=title",
        ])
        .assert_code(2);
    assert!(
        out.stderr
            .contains("--rename items.nosuch=title does not apply to the schema at the head"),
        "{}",
        out.report()
    );
    let out = project
        .flotilla()
        .args(["revision", "--autogenerate", "-m", "x", "--rename", "a.b=c.d"])
        .assert_code(2);
    assert!(out.stderr.contains("bad --rename a.b=c.d"), "{}", out.report());
    assert_eq!(n_revisions(&project), 3);
}
