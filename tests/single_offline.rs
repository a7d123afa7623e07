//! Offline SQL (`--sql`): piped into psql, it leaves a database exactly as the online run would.

use crate::harness::{template, TempProject, TestDb};
use crate::single_support::{
    assert_contains, example, example_project, exists, fixture_project, fl, fl_offline, history, query, rows, snapshot,
};

/// A template database with the example set applied online up to head.
async fn example_at_head() -> String {
    template("single_example_head", |url| async move {
        let project = example_project("");
        let out = project.flotilla().args(["--url", &url, "upgrade", "head"]).output();
        anyhow::ensure!(out.code() == Some(0), "{}", out.report());
        Ok(())
    })
    .await
}

/// Revision, direction and status of each history row: what offline and online runs must agree on.
fn history_facts(db: &TestDb) -> Vec<(String, String, String)> {
    // Online, a no-transaction revision also writes a `started` row first; the offline script does the same.
    history(db)
}

#[test]
fn offline_upgrade_from_base_matches_the_online_upgrade() {
    let project = example_project("");
    let out = fl_offline(&project, &["upgrade", "head", "--sql"]).assert_success();
    let sql = out.stdout;
    assert_contains(
        &sql,
        &[
            "CREATE TABLE IF NOT EXISTS \"flotilla_version\"",
            "CREATE INDEX CONCURRENTLY",
            example::HEAD,
        ],
        &sql,
    );
    let offline = TestDb::new("offline_up_a");
    offline.psql().stdin(sql.clone()).assert_success();
    let online = TestDb::new("offline_up_b");
    fl(&project, &online, &["upgrade", "head"]).assert_success();

    assert_eq!(snapshot(&offline, "public"), snapshot(&online, "public"));
    assert_eq!(rows(&offline), [example::HEAD]);
    assert_eq!(rows(&offline), rows(&online));
    assert_eq!(history_facts(&offline), history_facts(&online));
    // The database made offline is one Flotilla carries on with.
    let out = fl(&project, &offline, &["upgrade", "head"]).assert_success();
    assert_contains(&out.stdout, &["Nothing to do"], &out.report());
    fl(&project, &offline, &["validate"]).assert_success();

    // `base:head` is the same script.
    let out = fl_offline(&project, &["upgrade", "base:head", "--sql"]).assert_success();
    assert_eq!(out.stdout, sql);
}

/// Runs the offline script of `upgrade TARGET --sql` on a fresh database where a table named `blocker`, which
/// the script creates, already exists: the script stops there, at the version rows `stopped_at`. Then the table
/// is dropped and the same file runs again to the end; the database must equal one upgraded online. Returns the
/// script and the database.
fn rerun_after_a_failure(project: &TempProject, target: &str, blocker: &str, stopped_at: &[&str]) -> (String, TestDb) {
    let sql = fl_offline(project, &["upgrade", target, "--sql"])
        .assert_success()
        .stdout;
    let offline = TestDb::new("offline_rerun_a");
    offline.execute(&format!("CREATE TABLE {blocker} (x int)"));
    let out = offline.psql().stdin(sql.clone()).output();
    assert_ne!(out.code(), Some(0), "{}", out.report());
    assert_eq!(rows(&offline), stopped_at);
    offline.execute(&format!("DROP TABLE {blocker}"));
    offline.psql().stdin(sql.clone()).assert_success();

    let online = TestDb::new("offline_rerun_b");
    fl(project, &online, &["upgrade", target]).assert_success();
    assert_eq!(snapshot(&offline, "public"), snapshot(&online, "public"));
    assert_eq!(rows(&offline), rows(&online));
    assert_eq!(history_facts(&offline), history_facts(&online));
    (sql, offline)
}

/// A script that failed part way is run again as it is, after the cause is removed: the steps that committed
/// are skipped (psql `\if` over the version rows) and the rest run; a third run changes nothing.
#[test]
fn offline_script_rerun_after_a_failure_finishes_the_rest() {
    let project = example_project("");
    // A table in the way of the orders revision stops the script there. The audit branch grew from products,
    // so its head replaced that row.
    let (sql, offline) = rerun_after_a_failure(&project, "head", "orders", &[example::ACTOR]);
    assert_eq!(rows(&offline), [example::HEAD]);
    let (snapshot_before, history_before) = (snapshot(&offline, "public"), history_facts(&offline));
    offline.psql().stdin(sql).assert_success();
    assert_eq!(snapshot(&offline, "public"), snapshot_before);
    assert_eq!(history_facts(&offline), history_before);
}

#[test]
fn offline_partial_upgrade_continues_an_online_database() {
    let project = example_project("");
    let offline = TestDb::new("offline_part_a");
    let online = TestDb::new("offline_part_b");
    for db in [&offline, &online] {
        fl(&project, db, &["upgrade", example::ORDERS]).assert_success();
    }
    let range = format!("{}:{}", example::ORDERS, example::MERGE);
    // From a single row of one branch, the merge needs the audit branch too.
    let out = fl_offline(&project, &["upgrade", &range, "--sql"]).assert_success();
    assert!(!out.stdout.contains("CREATE TABLE IF NOT EXISTS"), "{}", out.stdout);
    offline.psql().stdin(out.stdout).assert_success();
    fl(&project, &online, &["upgrade", example::MERGE]).assert_success();
    assert_eq!(snapshot(&offline, "public"), snapshot(&online, "public"));
    assert_eq!(rows(&offline), [example::MERGE]);
    assert_eq!(rows(&offline), rows(&online));
}

#[tokio::test]
async fn offline_downgrade_range_matches_the_online_downgrade() {
    let project = example_project("");
    let head = example_at_head().await;
    let offline = TestDb::from_template(&head);
    let online = TestDb::from_template(&head);
    assert_eq!(rows(&offline), [example::HEAD]);
    let out = fl_offline(&project, &["downgrade", "head:base", "--sql"]).assert_success();
    assert_contains(
        &out.stdout,
        &["DROP INDEX CONCURRENTLY", "DROP TABLE users"],
        &out.stdout,
    );
    offline.psql().stdin(out.stdout).assert_success();
    fl(&project, &online, &["downgrade", "base"]).assert_success();

    assert_eq!(snapshot(&offline, "public"), snapshot(&online, "public"));
    assert_eq!(rows(&offline), Vec::<String>::new());
    assert_eq!(rows(&offline), rows(&online));
    assert_eq!(history_facts(&offline), history_facts(&online));

    // A partial range, to a revision below the merge.
    for db in [&offline, &online] {
        fl(&project, db, &["upgrade", "head"]).assert_success();
    }
    let range = format!("head:{}", example::ORDERS);
    let out = fl_offline(&project, &["downgrade", &range, "--sql"]).assert_success();
    offline.psql().stdin(out.stdout).assert_success();
    fl(&project, &online, &["downgrade", example::ORDERS]).assert_success();
    assert_eq!(snapshot(&offline, "public"), snapshot(&online, "public"));
    assert_eq!(rows(&offline), rows(&online));
}

#[test]
fn offline_needs_no_database_and_downgrade_needs_a_range() {
    let project = example_project("url = \"postgres://postgres@127.0.0.1:1/nowhere\"\n");
    fl_offline(&project, &["upgrade", "head", "--sql"]).assert_success();
    let out = fl_offline(&project, &["downgrade", "base", "--sql"]).assert_code(2);
    assert_contains(&out.stderr, &["FROM:TO", "head:base"], &out.report());
    let out = fl_offline(&project, &["upgrade", "base:head"]).assert_code(2);
    assert_contains(&out.stderr, &["only for --sql"], &out.report());
    let out = fl_offline(&project, &["stamp", "head", "--sql"]).assert_success();
    assert_contains(
        &out.stdout,
        &["INSERT INTO \"flotilla_version\"", example::HEAD],
        &out.report(),
    );
}

#[test]
fn offline_stamp_matches_an_online_stamp() {
    let project = example_project("");
    let offline = TestDb::new("offline_stamp_a");
    let online = TestDb::new("offline_stamp_b");
    let out = fl_offline(&project, &["stamp", example::ORDERS, example::AUDIT, "--sql"]).assert_success();
    offline.psql().stdin(out.stdout).assert_success();
    fl(&project, &online, &["stamp", example::ORDERS, example::AUDIT]).assert_success();
    assert_eq!(rows(&offline), rows(&online));
    assert_eq!(rows(&offline), [example::AUDIT, example::ORDERS]);
    // Both record the stamp in the history (the offline script once left it out).
    assert_eq!(history(&offline), history(&online));
    assert_eq!(history(&offline).len(), 1);
}

/// `stamp FROM:TO --sql` (Alembic's offline stamp from a known revision) touches only the rows that move, so
/// the other branch's row stays, as an online stamp keeps it.
#[test]
fn offline_stamp_from_a_revision_keeps_the_other_branch() {
    let project = example_project("");
    let offline = TestDb::new("offline_stamp_from_a");
    let online = TestDb::new("offline_stamp_from_b");
    for db in [&offline, &online] {
        fl(&project, db, &["stamp", example::ORDERS, example::AUDIT]).assert_success();
    }
    let range = format!("{}:{}", example::AUDIT, example::ACTOR);
    let out = fl_offline(&project, &["stamp", &range, "--sql"]).assert_success();
    assert!(!out.stdout.contains("CREATE TABLE"), "{}", out.stdout);
    offline.psql().stdin(out.stdout).assert_success();
    fl(&project, &online, &["stamp", example::ACTOR]).assert_success();
    assert_eq!(rows(&offline), [example::ACTOR, example::ORDERS]);
    assert_eq!(rows(&offline), rows(&online));
    // Offline the history names the rows the script stamped; it cannot know the other branch's.
    let stamped = history(&offline).pop().unwrap();
    assert_eq!(stamped, (example::ACTOR.to_string(), "stamp".into(), "applied".into()));

    let out = fl(&project, &online, &["stamp", &range]).assert_code(2);
    assert_contains(&out.stderr, &["only for `stamp --sql`"], &out.report());
    // One starting revision may be repeated (as in Alembic), two different ones may not; nor --purge offline.
    let other = format!("{}:{}", example::ORDERS, example::MERGE);
    let out = fl_offline(&project, &["stamp", &range, &other, "--sql"]).assert_code(2);
    assert_contains(&out.stderr, &["one starting revision at a time"], &out.report());
    fl_offline(&project, &["stamp", &range, &range, "--sql"]).assert_success();
    let out = fl_offline(&project, &["stamp", &range, "--sql", "--purge"]).assert_code(2);
    assert_contains(&out.stderr, &["--purge cannot be used with --sql"], &out.report());
    // A starting revision with no rows (a label's base): the script creates the tables if missing and adds the
    // branch's row beside the other branch's, as an online stamp does.
    let out = fl_offline(&project, &["stamp", &format!("audit@base:{}", example::AUDIT), "--sql"]).assert_success();
    assert!(out.stdout.contains("CREATE TABLE IF NOT EXISTS"), "{}", out.stdout);
    let offline = TestDb::new("offline_stamp_from_c");
    let online = TestDb::new("offline_stamp_from_d");
    for db in [&offline, &online] {
        fl(&project, db, &["stamp", example::ORDERS]).assert_success();
    }
    offline.psql().stdin(out.stdout).assert_success();
    fl(&project, &online, &["stamp", example::AUDIT]).assert_success();
    assert_eq!(rows(&offline), [example::AUDIT, example::ORDERS]);
    assert_eq!(rows(&offline), rows(&online));
}

#[test]
fn offline_run_transaction_with_hooks_matches_online() {
    let config = "transaction_per = \"run\"\n[hooks]\nbefore_each = \"before.sql\"\nafter_each = \"after.sql\"\n";
    let project = fixture_project("single_depends", config);
    project.write(
        "before.sql",
        "CREATE TABLE IF NOT EXISTS trail (id serial PRIMARY KEY, entry text);\n\
         INSERT INTO trail (entry) VALUES ('before ' || current_setting('flotilla.revision'));\n",
    );
    project.write(
        "after.sql",
        "INSERT INTO trail (entry) VALUES ('after ' || current_setting('flotilla.direction'));\n",
    );
    let out = fl_offline(&project, &["upgrade", "heads", "--sql"]).assert_success();
    let begins = out.stdout.lines().filter(|l| l.trim() == "BEGIN;").count();
    assert_eq!(begins, 1, "one transaction for the whole run:\n{}", out.stdout);
    let offline = TestDb::new("offline_run_a");
    offline.psql().stdin(out.stdout).assert_success();
    let online = TestDb::new("offline_run_b");
    fl(&project, &online, &["upgrade", "heads"]).assert_success();
    assert_eq!(snapshot(&offline, "public"), snapshot(&online, "public"));
    assert_eq!(rows(&offline), rows(&online));
    let trail = |db: &TestDb| query(db, "SELECT entry FROM trail ORDER BY id");
    assert_eq!(trail(&offline), trail(&online));
    assert_eq!(trail(&online).len(), 6);
    assert_eq!(history(&offline), history(&online));
}

/// A step can remove the row of a revision it depends on (`bb1` depends on `aa2`, so its row replaces
/// `aa2`'s): a rerun after a later failure must still see `aa1` and `aa2` as done.
#[test]
fn offline_rerun_knows_a_row_replaced_through_depends_on() {
    let project = fixture_project("single_depends", "");
    project.write(
        "migrations/0009_late.sql",
        "-- revision: bb9000000009\n-- down_revision: bb1000000001\n-- message: late\n\n\
         -- flotilla:upgrade\nCREATE TABLE late (id int);\n\n-- flotilla:downgrade\nDROP TABLE late;\n",
    );
    rerun_after_a_failure(&project, "heads", "late", &["bb1000000001"]);
}

/// A no-transaction revision cut off part way blocks the database offline as online: running the script again
/// stops before any step and names `flotilla resolve`, instead of repeating the statements that ran.
#[test]
fn offline_rerun_stops_at_an_unresolved_no_transaction_revision() {
    let project = fixture_project("single_notx_failing", "");
    let sql = fl_offline(&project, &["upgrade", "head", "--sql"])
        .assert_success()
        .stdout;
    let db = TestDb::new("offline_notx_blocked");
    let out = db.psql().stdin(sql.clone()).output();
    assert_ne!(out.code(), Some(0), "{}", out.report());
    assert_eq!(rows(&db), ["n10000000001"]);
    let before = history(&db);
    assert_eq!(before.last().unwrap().2, "started");

    let out = db.psql().stdin(sql.clone()).output();
    assert_ne!(out.code(), Some(0), "{}", out.report());
    assert_contains(&out.stderr, &["n20000000002", "flotilla resolve"], &out.report());
    assert_eq!(history(&db), before, "nothing ran");
    assert!(!exists(&db, "after_notx"));
    // Online agrees that the database is blocked.
    fl(&project, &db, &["upgrade", "head"]).assert_code(5);
}
