//! Upgrades and downgrades of one database with the example set and small fixtures: whole-graph runs, branches
//! and merges, depends_on ordering, relative targets, Alembic's version table, and the flotilla.toml settings
//! that change how a run behaves (environments, hooks, transaction_per, version_table_schema).

use crate::harness::TestDb;
use crate::single_support::{
    applied_up, assert_contains, example, example_project, exists, fixture_project, fl, history, history_of, query,
    rows, rows_of, strings, user_tables,
};

#[test]
fn example_set_upgrades_to_head_and_downgrades_to_base() {
    let project = example_project("");
    let db = TestDb::new("example_roundtrip");
    let n = example::UPGRADE_ORDER.len();
    let out = fl(&project, &db, &["upgrade", "head"]).assert_success();
    assert_contains(
        &out.stdout,
        &[
            "Running upgrade 4c2d8e1f9a07, create users",
            &format!("Done: {n} step(s); now at {}", example::HEAD),
        ],
        &out.report(),
    );
    assert_eq!(user_tables(&db, "public"), example::TABLES);
    assert_eq!(rows(&db), [example::HEAD]);
    assert!(exists(&db, "orders_user_id_created_at_idx"));
    assert_eq!(applied_up(&db).len(), n);

    let out = fl(&project, &db, &["upgrade", "head"]).assert_success();
    assert_contains(&out.stdout, &["Nothing to do"], &out.report());

    let out = fl(&project, &db, &["downgrade", "base"]).assert_success();
    assert_contains(
        &out.stdout,
        &[&format!("Running downgrade {}", example::HEAD), "now at base"],
        &out.report(),
    );
    assert_eq!(user_tables(&db, "public"), Vec::<String>::new());
    assert_eq!(rows(&db), Vec::<String>::new());
    assert!(query(&db, "SELECT proname FROM pg_proc WHERE proname = 'audit_row_change'").is_empty());
    let downs: Vec<String> = history(&db)
        .into_iter()
        .filter(|(_, d, s)| d == "down" && s == "applied")
        .map(|(r, _, _)| r)
        .collect();
    assert_eq!(downs.len(), n);
    assert_eq!(downs[0], example::HEAD);
    assert_eq!(downs[n - 1], example::USERS);
}

#[test]
fn upgrade_json_reports_steps_and_current() {
    let project = example_project("");
    let db = TestDb::new("upgrade_json");
    let out = fl(&project, &db, &["upgrade", example::PRODUCTS, "--format", "json"]).assert_success();
    let v = out.json();
    assert_eq!(v["direction"], "upgrade");
    assert_eq!(v["current"], serde_json::json!([example::PRODUCTS]));
    let steps: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["revision"].as_str().unwrap())
        .collect();
    assert_eq!(steps, [example::USERS, example::PRODUCTS]);
}

#[test]
fn branches_upgrade_separately_then_merge_and_downgrade_back_to_two_heads() {
    let project = example_project("");
    let db = TestDb::new("branch_merge");
    fl(&project, &db, &["upgrade", example::ORDERS]).assert_success();
    assert_eq!(rows(&db), [example::ORDERS]);
    assert_eq!(
        user_tables(&db, "public"),
        ["order_items", "orders", "products", "users"]
    );

    // The audit branch by label: both branch heads become version rows.
    fl(&project, &db, &["upgrade", "audit@+2"]).assert_success();
    assert_eq!(rows(&db), [example::ACTOR, example::ORDERS]);
    let out = fl(&project, &db, &["current"]).assert_success();
    assert_contains(&out.stdout, &["8a4c7e0b3f61", "e5f0a9c3b284"], &out.report());

    // The merge replaces both rows with one.
    fl(&project, &db, &["upgrade", example::MERGE]).assert_success();
    assert_eq!(rows(&db), [example::MERGE]);
    assert_eq!(
        query(&db, "SELECT tgname FROM pg_trigger WHERE tgname = 'orders_audit'").len(),
        1
    );

    // One step down from a merge point is ambiguous, as in Alembic: nothing runs.
    let out = fl(&project, &db, &["downgrade", "-1"]).assert_code(2);
    assert_contains(&out.stderr, &["ambiguous"], &out.report());
    assert_eq!(rows(&db), [example::MERGE]);
    // Back below the merge: both branch heads again.
    fl(&project, &db, &["downgrade", example::ACTOR]).assert_success();
    assert_eq!(rows(&db), [example::ACTOR, example::ORDERS]);
    assert!(query(&db, "SELECT tgname FROM pg_trigger WHERE tgname = 'orders_audit'").is_empty());

    // Downgrading one branch leaves the other alone.
    fl(&project, &db, &["downgrade", example::PRODUCTS]).assert_success();
    assert_eq!(rows(&db), [example::PRODUCTS]);
    assert_eq!(user_tables(&db, "public"), ["products", "users"]);
}

#[test]
fn depends_on_applies_the_dependency_first() {
    let project = fixture_project("single_depends", "");
    let db = TestDb::new("depends_on");
    // Only the billing revision is named; its dependency on the accounts branch comes first.
    fl(&project, &db, &["upgrade", "bb1000000001"]).assert_success();
    assert_eq!(applied_up(&db), ["aa1000000001", "aa2000000002", "bb1000000001"]);
    assert!(exists(&db, "invoice_owners"));
    // As in Alembic, the dependent revision's row stands for its dependencies too.
    assert_eq!(rows(&db), ["bb1000000001"]);

    // Downgrading the dependency takes its dependent down first.
    fl(&project, &db, &["downgrade", "aa1000000001"]).assert_success();
    assert_eq!(rows(&db), ["aa1000000001"]);
    assert_eq!(user_tables(&db, "public"), ["accounts"]);
    let downs: Vec<String> = history(&db)
        .into_iter()
        .filter(|(_, d, _)| d == "down")
        .map(|(r, _, _)| r)
        .collect();
    assert_eq!(downs, ["bb1000000001", "aa2000000002"]);

    // `heads` from base orders it the same way.
    fl(&project, &db, &["downgrade", "base"]).assert_success();
    db.execute("TRUNCATE flotilla_history");
    fl(&project, &db, &["upgrade", "heads"]).assert_success();
    let order = applied_up(&db);
    let pos = |r: &str| order.iter().position(|x| x == r).unwrap();
    assert!(pos("aa2000000002") < pos("bb1000000001"), "{order:?}");
}

#[test]
fn relative_targets_move_by_steps() {
    let project = example_project("");
    let db = TestDb::new("relative");
    fl(&project, &db, &["upgrade", "+1"]).assert_success();
    assert_eq!(rows(&db), [example::USERS]);
    fl(&project, &db, &["upgrade", "+1"]).assert_success();
    assert_eq!(rows(&db), [example::PRODUCTS]);
    // At a branch point a bare +1 is ambiguous: nothing runs.
    let out = fl(&project, &db, &["upgrade", "+1"]).assert_code(2);
    assert_contains(&out.stderr, &["ambiguous"], &out.report());
    assert_eq!(rows(&db), [example::PRODUCTS]);
    fl(&project, &db, &["upgrade", &format!("{}+1", example::AUDIT)]).assert_success();
    assert_eq!(rows(&db), [example::ACTOR]);
    fl(&project, &db, &["downgrade", "-1"]).assert_success();
    assert_eq!(rows(&db), [example::AUDIT]);
    fl(&project, &db, &["upgrade", "audit@head"]).assert_success();
    assert_eq!(rows(&db), [example::HEAD]);
    fl(&project, &db, &["downgrade", "-2"]).assert_success();
    assert_eq!(rows(&db), [example::INDEX]);
    let out = fl(&project, &db, &["downgrade", "-99"]).assert_code(2);
    assert!(!out.stderr.is_empty(), "{}", out.report());
    assert_eq!(rows(&db), [example::INDEX]);
    let out = fl(&project, &db, &["upgrade", "+99"]).assert_code(2);
    assert!(!out.stderr.is_empty(), "{}", out.report());
    assert_eq!(rows(&db), [example::INDEX]);
}

#[test]
fn alembic_version_table_is_adopted_and_advanced() {
    let project = example_project("version_table = \"alembic_version\"\n");
    // The schema at `products`, made by Flotilla in a scratch database, then copied as an Alembic database
    // would look: its own version table, no Flotilla history.
    let scratch = TestDb::new("alembic_scratch");
    fl(&project, &scratch, &["upgrade", example::PRODUCTS]).assert_success();
    assert_eq!(rows_of(&scratch, "alembic_version"), [example::PRODUCTS]);

    let db = TestDb::new("alembic_adopt");
    db.execute(
        "CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, \
         display_name text NOT NULL DEFAULT '', created_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE products (id bigserial PRIMARY KEY, sku text NOT NULL UNIQUE, name text NOT NULL, \
         price_cents bigint NOT NULL CHECK (price_cents >= 0), created_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, \
         CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num));
         INSERT INTO alembic_version VALUES ('b71e3a5c0d92');",
    );
    let out = fl(&project, &db, &["current"]).assert_success();
    assert_contains(&out.stdout, &["b71e3a5c0d92"], &out.report());
    let out = fl(&project, &db, &["upgrade", "head"]).assert_success();
    // Every revision but the two the adopted schema already has (users, products).
    let steps = format!("Done: {} step(s)", example::UPGRADE_ORDER.len() - 2);
    assert_contains(&out.stdout, &[&steps], &out.report());
    assert_eq!(rows_of(&db, "alembic_version"), [example::HEAD]);
    let mut tables = user_tables(&db, "public");
    tables.retain(|t| t != "alembic_version");
    assert_eq!(tables, example::TABLES);
    assert!(!exists(&db, "flotilla_version"));
    // Alembic's column type is kept as it was.
    let column = query(
        &db,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = 'alembic_version'::regclass AND attname = 'version_num'",
    );
    assert_eq!(column[0][0], "character varying(32)");
    fl(&project, &db, &["downgrade", example::PRODUCTS]).assert_success();
    assert_eq!(rows_of(&db, "alembic_version"), [example::PRODUCTS]);
}

#[test]
fn env_section_selects_its_url() {
    let db = TestDb::new("env_staging");
    let config = format!("[env.staging]\nurl = \"{}\"\n", db.url());
    let project = example_project(&config);
    let out = project
        .flotilla()
        .args(["upgrade", example::USERS, "--env", "staging"])
        .assert_success();
    assert_contains(&out.stdout, &["Done: 1 step(s)"], &out.report());
    assert_eq!(rows(&db), [example::USERS]);
    let out = project
        .flotilla()
        .args(["--env", "staging", "current"])
        .assert_success();
    assert_contains(&out.stdout, &[example::USERS], &out.report());
    // Without --env there is no url at all here.
    let out = project.flotilla().args(["current"]).output();
    assert_ne!(out.code(), Some(0), "{}", out.report());
    let out = project.flotilla().args(["current", "--env", "prod"]).assert_code(2);
    assert_contains(&out.stderr, &["prod", "staging"], &out.report());
    // ${VAR} in an environment's url reads the process environment; an unset one is named.
    let (base, name) = db.url().rsplit_once('/').unwrap();
    let config = format!("[env.staging]\nurl = \"{base}/${{FLOTILLA_TEST_DB_NAME}}\"\n");
    let project = example_project(&config);
    let out = project
        .flotilla()
        .args(["--env", "staging", "current"])
        .env("FLOTILLA_TEST_DB_NAME", name)
        .assert_success();
    assert_contains(&out.stdout, &[example::USERS], &out.report());
    let out = project.flotilla().args(["--env", "staging", "current"]).assert_code(2);
    assert_contains(
        &out.stderr,
        &["FLOTILLA_TEST_DB_NAME", "flotilla.toml:2"],
        &out.report(),
    );
}

#[test]
fn before_and_after_each_run_inside_every_revisions_transaction() {
    let project = fixture_project(
        "single_failing",
        "[hooks]\nbefore_each = \"hooks/before.sql\"\nafter_each = [\"hooks/after.sql\"]\n",
    );
    project.write(
        "hooks/before.sql",
        "INSERT INTO audit_trail (revision, phase) VALUES (current_setting('flotilla.revision'), 'before');\n",
    );
    project.write(
        "hooks/after.sql",
        "INSERT INTO audit_trail (revision, phase) \
         VALUES (current_setting('flotilla.revision') || ':' || current_setting('flotilla.direction'), 'after');\n",
    );
    let db = TestDb::new("hooks");
    db.execute("CREATE TABLE audit_trail (id serial PRIMARY KEY, revision text, phase text)");
    fl(&project, &db, &["upgrade", "f20000000002"]).assert_success();
    let trail = query(&db, "SELECT revision, phase FROM audit_trail ORDER BY id");
    assert_eq!(
        trail,
        [
            strings(&["f10000000001", "before"]),
            strings(&["f10000000001:up", "after"]),
            strings(&["f20000000002", "before"]),
            strings(&["f20000000002:up", "after"]),
        ]
    );
    // The failing revision's hook rows roll back with it.
    fl(&project, &db, &["upgrade", "head"]).assert_code(1);
    assert_eq!(query(&db, "SELECT count(*)::text FROM audit_trail")[0][0], "4");
    fl(&project, &db, &["downgrade", "-1"]).assert_success();
    let last = query(&db, "SELECT revision, phase FROM audit_trail ORDER BY id DESC LIMIT 1");
    assert_eq!(last, [strings(&["f20000000002:down", "after"])]);
}

#[test]
fn transaction_per_run_rolls_everything_back_when_the_last_revision_fails() {
    let project = fixture_project("single_failing", "transaction_per = \"run\"\n");
    let db = TestDb::new("per_run");
    let out = fl(&project, &db, &["upgrade", "head"]).assert_code(1);
    assert_contains(&out.stderr, &["f30000000003"], &out.report());
    assert_eq!(user_tables(&db, "public"), Vec::<String>::new());
    assert_eq!(rows(&db), Vec::<String>::new());
    assert_eq!(applied_up(&db), Vec::<String>::new());

    // Up to the good revisions, the run commits as one.
    fl(&project, &db, &["upgrade", "f20000000002"]).assert_success();
    assert_eq!(user_tables(&db, "public"), ["fine_one", "fine_two"]);
    assert_eq!(rows(&db), ["f20000000002"]);

    // A no-transaction revision cannot be part of such a run: refused before anything runs.
    let example = example_project("transaction_per = \"run\"\n");
    let db = TestDb::new("per_run_notx");
    let out = fl(&example, &db, &["upgrade", "head"]).assert_code(2);
    assert_contains(&out.stderr, &["2f7a0e4d9c18", "transaction_per"], &out.report());
    assert_eq!(user_tables(&db, "public"), Vec::<String>::new());
}

#[test]
fn version_table_schema_holds_both_tables() {
    let project = example_project("version_table_schema = \"flotilla_meta\"\n");
    let db = TestDb::new("version_schema");
    db.execute("CREATE SCHEMA flotilla_meta");
    fl(&project, &db, &["upgrade", example::PRODUCTS]).assert_success();
    assert_eq!(rows_of(&db, "flotilla_meta.flotilla_version"), [example::PRODUCTS]);
    assert_eq!(history_of(&db, "flotilla_meta.flotilla_history").len(), 2);
    assert!(!exists(&db, "public.flotilla_version"));
    assert!(!exists(&db, "public.flotilla_history"));
    // The revisions' own tables stay where their SQL puts them.
    assert_eq!(user_tables(&db, "public"), ["products", "users"]);
    let out = fl(&project, &db, &["current"]).assert_success();
    assert_contains(&out.stdout, &[example::PRODUCTS], &out.report());
}
