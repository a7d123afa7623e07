//! Every single-database command through the real binary: init, revision, merge, heads, branches, show,
//! history, current, stamp, validate, resolve, plan, edit and ensure-version, with their text and JSON output,
//! and global options on either side of the subcommand.

use serde_json::json;

use crate::harness::{flotilla, TempProject, TestDb};
use crate::single_support::{
    all_tables, applied_up, assert_contains, example, example_project, file_containing, fl, fl_offline, history, rows,
    strings, user_tables,
};

#[test]
fn init_creates_the_directory_template_and_config_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = flotilla()
        .current_dir(dir.path())
        .args(["init", "db/revisions"])
        .assert_success();
    assert_contains(&out.stdout, &["db/revisions", "flotilla.toml"], &out.report());
    let config = std::fs::read_to_string(dir.path().join("flotilla.toml")).unwrap();
    assert!(config.contains("script_location = \"db/revisions\""), "{config}");
    let template = dir.path().join("db/revisions/script.sql.tmpl");
    assert!(template.is_file());

    // A revision made from the template parses, and is the single head.
    flotilla()
        .current_dir(dir.path())
        .args(["revision", "-m", "first one", "--rev-id", "aaa000000001"])
        .assert_success();
    let out = flotilla()
        .current_dir(dir.path())
        .args(["heads", "--format", "json"])
        .assert_success();
    assert_eq!(
        out.json()["revisions"][0]["revision"],
        "aaa000000001",
        "{}",
        out.report()
    );

    // A second init touches nothing.
    std::fs::write(dir.path().join("flotilla.toml"), "# mine\n").unwrap();
    let out = flotilla()
        .current_dir(dir.path())
        .args(["init", "other"])
        .assert_code(2);
    assert_contains(&out.stderr, &["flotilla.toml already exists"], &out.report());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("flotilla.toml")).unwrap(),
        "# mine\n"
    );
    assert!(!dir.path().join("other").exists());

    // Nor does init into a directory that holds files.
    std::fs::remove_file(dir.path().join("flotilla.toml")).unwrap();
    let out = flotilla()
        .current_dir(dir.path())
        .args(["init", "db/revisions"])
        .assert_code(2);
    assert_contains(&out.stderr, &["not empty"], &out.report());
    assert!(!dir.path().join("flotilla.toml").exists());
}

#[test]
fn revision_writes_files_named_by_the_template_with_every_header() {
    let project = TempProject::new("file_template = \"%(rev)s_%(slug)s\"\n");
    let migrations = project.migrations_dir();
    fl_offline(
        &project,
        &["revision", "-m", "Create Users!", "--rev-id", "a00000000001"],
    )
    .assert_success();
    assert!(migrations.join("a00000000001_create_users.sql").is_file());

    fl_offline(&project, &["revision", "-m", "next", "--rev-id", "a00000000002"]).assert_success();
    fl_offline(
        &project,
        &[
            "revision",
            "-m",
            "billing root",
            "--rev-id",
            "b00000000001",
            "--head",
            "base",
            "--branch-label",
            "billing",
            "--depends-on",
            "a00000000001",
            "--no-transaction",
        ],
    )
    .assert_success();
    let text = std::fs::read_to_string(migrations.join("b00000000001_billing_root.sql")).unwrap();
    for line in [
        "-- revision: b00000000001",
        "-- branch_labels: billing",
        "-- depends_on: a00000000001",
        "-- message: billing root",
        "-- transaction: false",
        "-- flotilla:upgrade",
        "-- flotilla:downgrade",
    ] {
        assert!(
            text.lines().any(|l| l.trim_end() == line),
            "{line:?} missing from:\n{text}"
        );
    }
    let down = text.lines().find(|l| l.starts_with("-- down_revision:")).unwrap();
    assert_eq!(down.trim_end(), "-- down_revision:");

    // Two heads now: building on `head` needs a choice.
    let out = fl_offline(&project, &["revision", "-m", "ambiguous", "--rev-id", "c00000000001"]).assert_code(2);
    assert_contains(
        &out.stderr,
        &["multiple heads", "--head", "flotilla merge"],
        &out.report(),
    );
    assert!(!migrations.join("c00000000001_ambiguous.sql").exists());

    // Dependencies must exist.
    let out = fl_offline(
        &project,
        &[
            "revision",
            "-m",
            "dep",
            "--head",
            "billing@head",
            "--depends-on",
            "nope",
        ],
    )
    .assert_code(2);
    assert_contains(&out.stderr, &["nope"], &out.report());
    // A label picks the head; a non-head needs --splice.
    fl_offline(
        &project,
        &[
            "revision",
            "-m",
            "on billing",
            "--rev-id",
            "b00000000002",
            "--head",
            "billing@head",
        ],
    )
    .assert_success();
    let out = fl_offline(&project, &["revision", "-m", "from old", "--head", "a00000000001"]).assert_code(2);
    assert_contains(&out.stderr, &["not a head", "--splice"], &out.report());
    fl_offline(
        &project,
        &[
            "revision",
            "-m",
            "from old",
            "--rev-id",
            "a00000000003",
            "--head",
            "a00000000001",
            "--splice",
        ],
    )
    .assert_success();

    // Every file parses, and the graph is what the flags asked for.
    let out = fl_offline(&project, &["show", "a00000000003", "--format", "json"]).assert_success();
    assert_eq!(
        out.json()["down_revisions"],
        json!(["a00000000001"]),
        "{}",
        out.report()
    );
    let out = fl_offline(&project, &["show", "b00000000001", "--format", "json"]).assert_success();
    let v = out.json();
    assert_eq!(v["depends_on"], json!(["a00000000001"]));
    assert_eq!(v["branch_labels"], json!(["billing"]));
    assert_eq!(v["is_transactional"], json!(false));
    let out = fl_offline(&project, &["heads", "--format", "json"]).assert_success();
    let mut heads: Vec<String> = out.json()["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["revision"].to_string())
        .collect();
    heads.sort();
    assert_eq!(heads, ["\"a00000000002\"", "\"a00000000003\"", "\"b00000000002\""]);
}

#[test]
fn revision_file_name_follows_the_default_template() {
    let project = TempProject::new("");
    fl_offline(
        &project,
        &["revision", "-m", "add orders table", "--rev-id", "d00000000001"],
    )
    .assert_success();
    let path = file_containing(&project.migrations_dir(), "d00000000001");
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    // YYYYMMDD_HHMMSS_<rev>_<slug>.sql
    let (stamp, rest) = name.split_at(16);
    assert!(
        stamp[..8].bytes().all(|b| b.is_ascii_digit())
            && &stamp[8..9] == "_"
            && stamp[9..15].bytes().all(|b| b.is_ascii_digit())
            && &stamp[15..] == "_",
        "{name}"
    );
    assert_eq!(rest, "d00000000001_add_orders_table.sql", "{name}");
}

#[test]
fn merge_heads_writes_one_revision_with_both_parents_and_upgrades_through_it() {
    let project = TempProject::new("file_template = \"%(rev)s\"\n");
    for (rev, head) in [("e00000000001", None), ("e00000000002", Some("base"))] {
        let mut args = vec!["revision", "-m", "root", "--rev-id", rev];
        if let Some(head) = head {
            args.extend(["--head", head]);
        }
        fl_offline(&project, &args).assert_success();
    }
    let out = fl_offline(&project, &["merge", "-m", "join", "--rev-id", "e00000000003", "heads"]).assert_success();
    assert_contains(&out.stdout, &["e00000000003"], &out.report());
    let out = fl_offline(&project, &["heads", "--format", "json"]).assert_success();
    let heads = out.json()["revisions"].clone();
    assert_eq!(heads.as_array().unwrap().len(), 1, "{}", out.report());
    assert_eq!(heads[0]["revision"], "e00000000003");
    let mut parents: Vec<String> = heads[0]["down_revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    parents.sort();
    assert_eq!(parents, ["e00000000001", "e00000000002"]);

    let db = TestDb::new("merge_upgrade");
    fl(&project, &db, &["upgrade", "head"]).assert_success();
    assert_eq!(rows(&db), ["e00000000003"]);
    assert_eq!(applied_up(&db).last().map(String::as_str), Some("e00000000003"));
    let out = fl_offline(&project, &["merge", "-m", "alone", "heads"]).assert_code(2);
    assert_contains(&out.stderr, &["at least two"], &out.report());
}

#[test]
fn heads_json_lists_revision_objects_with_revision_and_message() {
    let project = example_project("");
    for args in [
        &["heads", "--format", "json"][..],
        &["--format", "json", "heads"][..],
        &["heads", "--format=json"][..],
    ] {
        let out = fl_offline(&project, args).assert_success();
        let heads = out.json()["revisions"].clone();
        let heads = heads
            .as_array()
            .unwrap_or_else(|| panic!("not an array\n{}", out.report()));
        assert_eq!(heads.len(), 1, "{}", out.report());
        assert_eq!(heads[0]["revision"], example::HEAD);
        assert_eq!(heads[0]["message"], "backfill order item count");
    }
    let out = fl_offline(&project, &["heads"]).assert_success();
    assert_eq!(out.stdout.trim(), format!("{} (head)", example::HEAD));
    let out = fl_offline(&project, &["heads", "--verbose"]).assert_success();
    assert_contains(
        &out.stdout,
        &[
            &format!("Rev: {} (head)", example::HEAD),
            &format!("Parent: {}", example::ACTIVE),
        ],
        &out.report(),
    );
}

#[test]
fn branches_and_show_describe_the_example_graph() {
    let project = example_project("");
    let out = fl_offline(&project, &["branches"]).assert_success();
    assert_contains(
        &out.stdout,
        &[
            "4c2d8e1f9a07 -> b71e3a5c0d92 (branchpoint), create products",
            "    -> b71e3a5c0d92 -> e5f0a9c3b284, create orders",
            "    -> b71e3a5c0d92 -> 1d9b6f2e7c35 (audit), add audit log",
        ],
        &out.report(),
    );
    let out = fl_offline(&project, &["branches", "--format", "json"]).assert_success();
    let points = out.json()["revisions"].clone();
    assert_eq!(points.as_array().unwrap().len(), 1, "{}", out.report());
    assert_eq!(points[0]["revision"], example::PRODUCTS);

    let out = fl_offline(&project, &["show", "c3e8"]).assert_success();
    assert_contains(
        &out.stdout,
        &[
            "Rev: c3e8d1a6b950 (mergepoint)",
            "merge orders and audit",
            "CREATE TRIGGER orders_audit",
            "DROP TRIGGER orders_audit ON orders",
        ],
        &out.report(),
    );
    // As in Alembic, a label's head is the head its branch leads to, here past the merge.
    let out = fl_offline(&project, &["show", "audit@head", "--format", "json"]).assert_success();
    let v = out.json();
    assert_eq!(v["revision"], example::HEAD);
    assert!(
        v["upgrade_checksum"].as_str().unwrap().starts_with("v1:"),
        "{}",
        out.report()
    );
    let out = fl_offline(&project, &["show", "nope"]).assert_code(2);
    assert_contains(&out.stderr, &["no such revision or branch `nope`"], &out.report());
}

#[test]
fn history_ranges_and_indicate_current() {
    let project = example_project("");
    let out = fl_offline(&project, &["history"]).assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), example::UPGRADE_ORDER.len(), "{}", out.report());
    assert_eq!(
        lines[0],
        format!(
            "{} -> {} (head), backfill order item count",
            example::ACTIVE,
            example::HEAD
        )
    );
    assert_eq!(lines[1], "2f7a0e4d9c18 -> 9d5b2c7f1e46, add user active flag");
    assert_eq!(lines[lines.len() - 1], "<base> -> 4c2d8e1f9a07, create users");
    assert!(lines.contains(&"(e5f0a9c3b284, 8a4c7e0b3f61) -> c3e8d1a6b950 (mergepoint), merge orders and audit"));

    let ids = |args: &[&str]| -> Vec<String> {
        let out = fl_offline(&project, args).assert_success();
        out.json()["revisions"]
            .as_array()
            .unwrap_or_else(|| panic!("not an array\n{}", out.report()))
            .iter()
            .map(|v| v["revision"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(&["history", "-r", "c3e8:head", "--format", "json"]),
        strings(&[example::BACKFILL, example::ACTIVE, example::INDEX, example::MERGE])
    );
    assert_eq!(
        ids(&["history", "-r", ":b71e", "--format", "json"]),
        strings(&[example::PRODUCTS, example::USERS])
    );
    assert_eq!(
        ids(&["history", "--rev-range", "-2:", "--format", "json"]).len(),
        3,
        "-2: is the head and the two before it"
    );
    let out = fl_offline(&project, &["history", "-r", "nonsense"]).assert_code(2);
    assert!(!out.stderr.is_empty(), "{}", out.report());

    let db = TestDb::new("history_current");
    fl(&project, &db, &["upgrade", example::ACTOR]).assert_success();
    let out = fl(&project, &db, &["history", "--indicate-current"]).assert_success();
    let marked: Vec<&str> = out.stdout.lines().filter(|l| l.ends_with(" (current)")).collect();
    assert_eq!(
        marked,
        ["1d9b6f2e7c35 -> 8a4c7e0b3f61, record audit actor (current)"],
        "{}",
        out.report()
    );
    let out = fl(&project, &db, &["history", "-i", "--format", "json"]).assert_success();
    let current: Vec<serde_json::Value> = out.json()["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["is_current"] == json!(true))
        .map(|v| v["revision"].clone())
        .collect();
    assert_eq!(current, [json!(example::ACTOR)]);
    // `current` in a range reads the database.
    assert_eq!(
        ids(&["--url", db.url(), "history", "-r", "current:head", "--format", "json"]),
        strings(&[
            example::BACKFILL,
            example::ACTIVE,
            example::INDEX,
            example::MERGE,
            example::ACTOR
        ])
    );
}

#[test]
fn current_text_json_and_verbose() {
    let project = example_project("");
    let db = TestDb::new("current");
    let out = fl(&project, &db, &["current"]).assert_success();
    assert_eq!(out.stdout.trim(), "base (no revision applied)");

    fl(&project, &db, &["upgrade", "heads"]).assert_success();
    let out = fl(&project, &db, &["current"]).assert_success();
    assert_eq!(out.stdout.trim(), format!("{} (head)", example::HEAD));
    let out = fl(&project, &db, &["current", "--verbose"]).assert_success();
    assert_contains(
        &out.stdout,
        &[
            &format!("Rev: {} (head)", example::HEAD),
            "Message: backfill order item count",
            &format!("up      applied  {}", example::HEAD),
        ],
        &out.report(),
    );
    let out = fl(&project, &db, &["current", "--format", "json", "--verbose"]).assert_success();
    let v = out.json();
    assert_eq!(
        v["current"],
        json!([{"revision": example::HEAD, "message": "backfill order item count", "is_head": true, "is_known": true}])
    );
    assert_eq!(v["blocked"], json!(null));
    // One row per revision, plus the `started` row of the no-transaction one.
    assert_eq!(
        v["history"].as_array().unwrap().len(),
        example::UPGRADE_ORDER.len() + 1,
        "{}",
        out.report()
    );
    assert_eq!(v["history"][0]["revision"], example::HEAD);
    assert_eq!(v["history"][0]["status"], "applied");

    // A version row no file knows about is shown, not an error.
    db.execute("UPDATE flotilla_version SET version_num = 'feedfacecafe'");
    let out = fl(&project, &db, &["current"]).assert_success();
    assert_contains(&out.stdout, &["feedfacecafe (unknown"], &out.report());
}

#[test]
fn stamp_sets_rows_without_running_sql_and_purge_and_base() {
    let project = example_project("");
    let db = TestDb::new("stamp");
    let out = fl(&project, &db, &["stamp", example::MERGE]).assert_success();
    assert_contains(&out.stdout, &["Stamped: now at c3e8d1a6b950"], &out.report());
    assert_eq!(rows(&db), [example::MERGE]);
    assert_eq!(
        user_tables(&db, "public"),
        Vec::<String>::new(),
        "stamp runs no revision SQL"
    );
    assert_eq!(
        history(&db),
        [(example::MERGE.into(), "stamp".into(), "applied".into())]
    );

    // Two branch heads at once, then one of them moved back.
    fl(&project, &db, &["stamp", "base"]).assert_success();
    assert_eq!(rows(&db), Vec::<String>::new());
    fl(&project, &db, &["stamp", example::ORDERS, example::AUDIT]).assert_success();
    assert_eq!(rows(&db), [example::AUDIT, example::ORDERS]);

    // A row the graph does not know blocks a plain stamp; --purge replaces whatever is there.
    db.execute("DELETE FROM flotilla_version; INSERT INTO flotilla_version VALUES ('feedfacecafe')");
    let out = fl(&project, &db, &["stamp", "head"]).output();
    assert_ne!(out.code(), Some(0), "{}", out.report());
    assert_eq!(rows(&db), ["feedfacecafe"]);
    fl(&project, &db, &["stamp", "--purge", "head"]).assert_success();
    assert_eq!(rows(&db), [example::HEAD]);
    let out = fl(&project, &db, &["stamp", "head", "--format", "json"]).assert_success();
    assert_eq!(out.json(), json!({"v": 1, "current": [example::HEAD]}));

    // Unknown revisions are refused without a change.
    let out = fl(&project, &db, &["stamp", "nope"]).assert_code(2);
    assert_contains(&out.stderr, &["nope"], &out.report());
    assert_eq!(rows(&db), [example::HEAD]);
}

#[test]
fn validate_reports_an_edited_applied_script() {
    let project = example_project("");
    let db = TestDb::new("validate");
    let out = fl(&project, &db, &["validate"]).assert_success();
    assert_contains(&out.stdout, &["OK"], &out.report());
    fl(&project, &db, &["upgrade", example::ORDERS]).assert_success();
    fl(&project, &db, &["validate"]).assert_success();

    // Whitespace at line ends and a header edit are not changes.
    let orders = file_containing(&project.migrations_dir(), example::ORDERS);
    let text = std::fs::read_to_string(&orders).unwrap();
    let cosmetic = text
        .replace("-- message: create orders", "-- message: create the orders")
        .replace("ON DELETE CASCADE,", "ON DELETE CASCADE,   ");
    std::fs::write(&orders, &cosmetic).unwrap();
    fl(&project, &db, &["validate"]).assert_success();

    // An edit of the downgrade section of an applied revision is not reported either: only upgrades ran.
    let users = file_containing(&project.migrations_dir(), example::USERS);
    let text = std::fs::read_to_string(&users).unwrap();
    std::fs::write(&users, text.replace("DROP TABLE users;", "DROP TABLE users CASCADE;")).unwrap();
    fl(&project, &db, &["validate"]).assert_success();

    std::fs::write(&orders, cosmetic.replace("DEFAULT 'pending'", "DEFAULT 'paid'")).unwrap();
    // An upgrade warns about it but goes on.
    let out = fl(&project, &db, &["upgrade", example::MERGE]).assert_success();
    assert_contains(&out.stderr, &["e5f0a9c3b284", "flotilla validate"], &out.report());
    let out = fl(&project, &db, &["validate"]).assert_code(1);
    assert_contains(
        &out.stdout,
        &["changed since applied: e5f0a9c3b284", "create_orders"],
        &out.report(),
    );
    let out = fl(&project, &db, &["validate", "--format", "json"]).assert_code(1);
    let changed = &out.json()["changed"];
    assert_eq!(changed.as_array().unwrap().len(), 1, "{}", out.report());
    assert_eq!(changed[0]["revision"], example::ORDERS);
    // An edited revision that was never applied is none of validate's business.
    let active = file_containing(&project.migrations_dir(), example::ACTIVE);
    let text = std::fs::read_to_string(&active).unwrap();
    std::fs::write(&active, text.replace("DEFAULT true", "DEFAULT false")).unwrap();
    let out = fl(&project, &db, &["validate", "--format", "json"]).assert_code(1);
    assert_eq!(out.json()["changed"].as_array().unwrap().len(), 1, "{}", out.report());
}

#[test]
fn resolve_with_nothing_to_resolve_says_so() {
    let project = example_project("");
    let db = TestDb::new("resolve_nothing");
    let out = fl(&project, &db, &["resolve"]).assert_success();
    assert_eq!(out.stdout.trim(), "Nothing to resolve");
    let out = fl(&project, &db, &["resolve", "--format", "json"]).assert_success();
    assert_eq!(out.json(), json!({"v": 1, "resolved": null, "current": []}));
}

#[test]
fn plan_json_lists_full_ids_in_order_without_a_database() {
    let project = example_project("");
    let out = fl_offline(
        &project,
        &["plan", "upgrade", "head", "--current", "", "--format", "json"],
    )
    .assert_success();
    let plan: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let order = example::UPGRADE_ORDER;
    let expected = json!({
        "v": 1,
        "direction": "upgrade",
        "steps": order.iter().map(|r| json!({"revision": r, "direction": "up"})).collect::<Vec<_>>(),
    });
    assert_eq!(plan, expected, "{}", out.report());

    let out = fl_offline(
        &project,
        &[
            "plan",
            "downgrade",
            example::PRODUCTS,
            "--current",
            "c3e8",
            "--format",
            "json",
        ],
    )
    .output();
    // A prefix is not a row: rows are full ids, so the plan is checked against them as given.
    assert!(out.code() == Some(0) || out.code() == Some(2), "{}", out.report());

    let out = fl_offline(
        &project,
        &[
            "plan",
            "downgrade",
            example::PRODUCTS,
            "--current",
            example::MERGE,
            "--format",
            "json",
        ],
    )
    .assert_success();
    let steps: Vec<(String, String)> = out.json()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["revision"].as_str().unwrap().into(),
                s["direction"].as_str().unwrap().into(),
            )
        })
        .collect();
    let reverted: Vec<&str> = steps.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(reverted[0], example::MERGE, "{}", out.report());
    assert!(steps.iter().all(|(_, d)| d == "down"));
    let mut sorted = reverted.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [example::AUDIT, example::ACTOR, example::MERGE, example::ORDERS]
    );

    let out = fl_offline(&project, &["plan", "upgrade", "head", "--current", ""]).assert_success();
    assert_eq!(out.stdout.lines().count(), order.len(), "{}", out.report());
    assert_contains(&out.stdout, &["up 4c2d8e1f9a07, create users"], &out.report());

    let out = fl_offline(&project, &["plan", "upgrade", "head", "--current", "feedfacecafe"]).assert_code(2);
    assert_contains(&out.stderr, &["feedfacecafe"], &out.report());
    for (target, message) in [("nope", "no such revision or branch `nope`"), ("+99", "+99")] {
        let out = fl_offline(&project, &["plan", "upgrade", target, "--current", ""]).assert_code(2);
        assert_eq!(out.stdout, "", "{}", out.report());
        assert_contains(&out.stderr, &[message], &out.report());
    }
}

#[test]
fn plan_reads_the_current_rows_from_the_database_without_changing_it() {
    let project = example_project("");
    let db = TestDb::new("plan_db");
    fl(&project, &db, &["upgrade", example::MERGE]).assert_success();
    let out = fl(&project, &db, &["plan", "upgrade", "head", "--format", "json"]).assert_success();
    assert_eq!(
        out.json(),
        json!({"v": 1, "direction": "upgrade", "steps": [
            {"revision": example::INDEX, "direction": "up"},
            {"revision": example::ACTIVE, "direction": "up"},
            {"revision": example::BACKFILL, "direction": "up"},
        ]})
    );
    assert_eq!(rows(&db), [example::MERGE]);
}

#[test]
fn global_options_go_before_or_after_the_subcommand() {
    let project = example_project("");
    let db = TestDb::new("global_opts");
    let before = flotilla()
        .current_dir(project.path())
        .args(["--format", "json", "--url", db.url(), "current"])
        .assert_success();
    let after = flotilla()
        .current_dir(project.path())
        .args(["current", "--url", db.url(), "--format", "json"])
        .assert_success();
    assert_eq!(before.json(), after.json());
    assert_eq!(before.json()["current"], json!([]));

    let before = fl_offline(&project, &["--format", "json", "heads"]).assert_success();
    let after = fl_offline(&project, &["heads", "--format", "json"]).assert_success();
    assert_eq!(before.stdout, after.stdout);

    // --config works on either side too, and a missing explicit config is a usage error.
    let config = project.config_path();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = flotilla()
        .current_dir(elsewhere.path())
        .args(["heads", "--config"])
        .arg(&config)
        .assert_success();
    assert_eq!(out.stdout.trim(), format!("{} (head)", example::HEAD));
    let out = flotilla()
        .current_dir(elsewhere.path())
        .arg("--config")
        .arg(&config)
        .arg("heads")
        .assert_success();
    assert_eq!(out.stdout.trim(), format!("{} (head)", example::HEAD));
    let out = flotilla()
        .current_dir(elsewhere.path())
        .args(["heads", "--config", "missing.toml"])
        .assert_code(2);
    assert_contains(&out.stderr, &["missing.toml"], &out.report());
    // A usage error from clap is exit 2 as well.
    let out = fl_offline(&project, &["upgrade"]).assert_code(2);
    assert!(!out.stderr.is_empty());
}

#[test]
fn validate_ignores_a_script_edited_after_its_revision_was_downgraded() {
    let project = example_project("");
    let db = TestDb::new("validate_downgraded");
    fl(&project, &db, &["upgrade", example::ORDERS]).assert_success();
    fl(&project, &db, &["downgrade", example::PRODUCTS]).assert_success();
    let orders = file_containing(&project.migrations_dir(), example::ORDERS);
    let text = std::fs::read_to_string(&orders).unwrap();
    std::fs::write(&orders, text.replace("DEFAULT 'pending'", "DEFAULT 'paid'")).unwrap();
    // The revision is not applied any more, so its script is free to change before it is applied again.
    let out = fl(&project, &db, &["validate"]).assert_success();
    assert_contains(&out.stdout, &["OK"], &out.report());
    fl(&project, &db, &["upgrade", example::ORDERS]).assert_success();
    fl(&project, &db, &["validate"]).assert_success();
}

#[test]
fn validate_ignores_a_script_edited_after_its_revision_was_stamped_away() {
    let project = example_project("");
    let db = TestDb::new("validate_stamped_away");
    fl(&project, &db, &["upgrade", example::ORDERS]).assert_success();
    fl(&project, &db, &["stamp", example::PRODUCTS]).assert_success();
    let orders = file_containing(&project.migrations_dir(), example::ORDERS);
    let text = std::fs::read_to_string(&orders).unwrap();
    std::fs::write(&orders, text.replace("DEFAULT 'pending'", "DEFAULT 'paid'")).unwrap();
    let out = fl(&project, &db, &["validate"]).assert_success();
    assert_contains(&out.stdout, &["OK"], &out.report());
    // Stamped back to a row that includes the edited revision, the change counts again.
    fl(&project, &db, &["stamp", example::ORDERS]).assert_success();
    fl(&project, &db, &["validate"]).assert_code(1);
}

/// Alembic's `ensure_version`: the tables and nothing else, twice without harm; `--sql` prints the same DDL.
#[test]
fn ensure_version_creates_only_the_version_tables() {
    let project = example_project("");
    let db = TestDb::new("ensure_version");
    let out = fl(&project, &db, &["ensure-version"]).assert_success();
    assert_contains(&out.stdout, &["current: base"], &out.report());
    assert_eq!(all_tables(&db, "public"), ["flotilla_history", "flotilla_version"]);
    assert!(rows(&db).is_empty());
    fl(&project, &db, &["upgrade", example::USERS]).assert_success();
    let out = fl(&project, &db, &["ensure-version", "--format", "json"]).assert_success();
    assert_eq!(
        out.json(),
        json!({ "v": 1, "current": [example::USERS] }),
        "{}",
        out.report()
    );

    let sql = fl_offline(&project, &["ensure-version", "--sql"])
        .assert_success()
        .stdout;
    let offline = TestDb::new("ensure_version_sql");
    offline.psql().stdin(sql.clone()).assert_success();
    offline.psql().stdin(sql).assert_success();
    assert_eq!(all_tables(&offline, "public"), ["flotilla_history", "flotilla_version"]);
}

/// Alembic's `edit`: the one file REV names, opened with `$VISUAL`/`$EDITOR` (which may hold arguments).
#[test]
fn edit_opens_the_one_revision_file_in_the_editor() {
    let project = example_project("");
    let editor = |cmd: &mut crate::harness::Cmd, visual: Option<&str>, editor: Option<&str>| {
        cmd.env_remove("VISUAL").env_remove("EDITOR");
        if let Some(v) = visual {
            cmd.env("VISUAL", v);
        }
        if let Some(e) = editor {
            cmd.env("EDITOR", e);
        }
    };
    let path = file_containing(&project.migrations_dir(), example::USERS);
    let before = std::fs::read_to_string(&path).unwrap();
    let mut cmd = fl_offline(&project, &["edit", &example::USERS[..6]]);
    editor(&mut cmd, None, Some("sed -i -e '$a -- edited'"));
    cmd.assert_success();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{before}-- edited\n"));
    // VISUAL wins over EDITOR.
    let mut cmd = fl_offline(&project, &["edit", example::USERS]);
    editor(&mut cmd, Some("true"), Some("false"));
    cmd.assert_success();

    let mut cmd = fl_offline(&project, &["edit", "head"]);
    editor(&mut cmd, None, Some("false"));
    let out = cmd.assert_code(1);
    assert_contains(&out.stderr, &["editor `false` failed"], &out.report());
    let mut cmd = fl_offline(&project, &["edit", "head"]);
    editor(&mut cmd, None, None);
    let out = cmd.assert_code(2);
    assert_contains(&out.stderr, &["set VISUAL or EDITOR"], &out.report());
    // Several revisions, or none by that name: usage errors, the editor never starts.
    let two_heads = example_project("");
    two_heads.write(
        "migrations/0099_root.sql",
        "-- revision: cc9000000001\n-- down_revision:\n\n-- flotilla:upgrade\nSELECT 1;\n",
    );
    let mut cmd = fl_offline(&two_heads, &["edit", "heads"]);
    editor(&mut cmd, None, Some("touch edited-marker;"));
    let out = cmd.assert_code(2);
    assert_contains(&out.stderr, &["names 2 revisions"], &out.report());
    let mut cmd = fl_offline(&project, &["edit", "nope"]);
    editor(&mut cmd, None, Some("touch edited-marker;"));
    cmd.assert_code(2);
    assert!(!two_heads.path().join("edited-marker").exists());
    assert!(!project.path().join("edited-marker").exists());
}

/// Alembic's `version_locations`: revisions read from several directories (and below them when recursive); a
/// new revision goes beside its parent, a new root where `--version-path` says.
#[test]
fn version_locations_spread_revisions_over_directories() {
    let project = TempProject::new("version_locations = [\"migrations\", \"billing\"]\n");
    std::fs::create_dir_all(project.path().join("billing")).unwrap();
    std::fs::create_dir_all(project.path().join("elsewhere")).unwrap();
    let fl_here = |args: &[&str]| fl_offline(&project, args);
    let in_dir = |dir: &str, id: &str| {
        std::fs::read_dir(project.path().join(dir))
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().contains(id))
    };

    let out = fl_here(&["revision", "-m", "root", "--rev-id", "aa0000000001"]).assert_code(2);
    assert_contains(&out.stderr, &["--version-path", "migrations", "billing"], &out.report());
    let out = fl_here(&["revision", "-m", "x", "--version-path", "elsewhere"]).assert_code(2);
    assert_contains(&out.stderr, &["not one of version_locations"], &out.report());
    fl_here(&[
        "revision",
        "-m",
        "root",
        "--rev-id",
        "aa0000000001",
        "--version-path",
        "migrations",
    ])
    .assert_success();
    fl_here(&[
        "revision",
        "-m",
        "billing root",
        "--rev-id",
        "bb0000000001",
        "--head",
        "base",
        "--branch-label",
        "billing",
        "--version-path",
        "billing",
    ])
    .assert_success();
    // Beside its parent, without --version-path.
    fl_here(&[
        "revision",
        "-m",
        "invoices",
        "--rev-id",
        "bb0000000002",
        "--head",
        "billing@head",
    ])
    .assert_success();
    assert!(in_dir("migrations", "aa0000000001"));
    assert!(in_dir("billing", "bb0000000001") && in_dir("billing", "bb0000000002"));
    assert!(std::fs::read_dir(project.path().join("elsewhere"))
        .unwrap()
        .next()
        .is_none());

    let out = fl_here(&["heads", "--format", "json"]).assert_success();
    let mut heads: Vec<String> = out.json()["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["revision"].as_str().unwrap().to_string())
        .collect();
    heads.sort();
    assert_eq!(heads, ["aa0000000001", "bb0000000002"], "{}", out.report());
    let db = TestDb::new("version_locations");
    fl(&project, &db, &["upgrade", "heads"]).assert_success();
    assert_eq!(rows(&db), ["aa0000000001", "bb0000000002"]);

    // A merge goes beside its first parent.
    fl_here(&[
        "merge",
        "-m",
        "join",
        "--rev-id",
        "cc0000000001",
        "aa0000000001",
        "bb0000000002",
    ])
    .assert_success();
    assert!(in_dir("migrations", "cc0000000001"));

    // Recursive: a revision in a subdirectory is read only when the project says so.
    project.write(
        "billing/archive/0009_late.sql",
        "-- revision: dd0000000001\n-- down_revision: cc0000000001\n\n-- flotilla:upgrade\nSELECT 1;\n",
    );
    let out = fl_here(&["heads"]).assert_success();
    assert_contains(&out.stdout, &["cc0000000001"], &out.report());
    std::fs::write(
        project.config_path(),
        "version_locations = [\"migrations\", \"billing\"]\nrecursive_version_locations = true\n",
    )
    .unwrap();
    let out = fl_here(&["heads"]).assert_success();
    assert_contains(&out.stdout, &["dd0000000001"], &out.report());
    // Below a location is allowed then, but not a hidden directory the loader skips.
    std::fs::create_dir_all(project.path().join("billing/.drafts")).unwrap();
    let out = fl_here(&["revision", "-m", "d", "--version-path", "billing/.drafts"]).assert_code(2);
    assert_contains(&out.stderr, &["not one of version_locations"], &out.report());
    fl_here(&[
        "revision",
        "-m",
        "e",
        "--rev-id",
        "ee0000000001",
        "--version-path",
        "billing/archive",
    ])
    .assert_success();
    assert!(in_dir("billing/archive", "ee0000000001"));
}

/// `completions SHELL` prints a script the shell accepts, covering subcommands down to the fleet's.
#[test]
fn completions_print_a_script_the_shell_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = flotilla()
        .current_dir(dir.path())
        .args(["completions", "bash"])
        .assert_success();
    assert_contains(
        &out.stdout,
        &["ensure-version", "retry", "--version-path"],
        &out.report(),
    );
    let script = dir.path().join("flotilla.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    crate::harness::Cmd::new("bash").arg("-n").arg(&script).assert_success();
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = flotilla()
            .current_dir(dir.path())
            .args(["completions", shell])
            .assert_success();
        assert!(out.stdout.contains("flotilla"), "{shell}: {}", out.report());
    }
    flotilla().args(["completions", "tcsh"]).assert_code(2);
}

/// `post_write` hooks run on a new revision file, from the project directory, whatever the current directory:
/// a shell string and an argv array, with `{file}` replaced; a failing hook fails the command.
#[test]
fn post_write_hooks_run_on_the_new_file() {
    let project = TempProject::new(
        "[hooks]\npost_write = [\"sed -i -e '$a -- formatted' {file}\", [\"touch\", \"{file}.touched\"], \
         \"pwd > hook-dir.txt\"]\n",
    );
    // Run from the project's parent with a relative --config, so paths seen from there differ from the hook's.
    let config = project.config_path();
    let parent = project.path().parent().unwrap();
    let relative = config.strip_prefix(parent).unwrap();
    flotilla()
        .current_dir(parent)
        .args(["--config", relative.to_str().unwrap()])
        .args(["revision", "-m", "hooked", "--rev-id", "ab0000000001"])
        .assert_success();
    let file = std::fs::read_dir(project.migrations_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("_ab0000000001_hooked.sql"))
        .expect("the new revision file");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.ends_with("-- formatted\n"), "{text}");
    assert!(std::path::PathBuf::from(format!("{}.touched", file.display())).exists());
    let hook_dir = std::fs::read_to_string(project.path().join("hook-dir.txt")).unwrap();
    assert_eq!(
        std::fs::canonicalize(hook_dir.trim()).unwrap(),
        std::fs::canonicalize(project.path()).unwrap()
    );
    // The formatted file still loads.
    fl_offline(&project, &["heads"]).assert_success();

    std::fs::write(&config, "[hooks]\npost_write = [\"false\"]\n").unwrap();
    let out = fl_offline(&project, &["revision", "-m", "unhooked"]).assert_code(1);
    assert_contains(&out.stderr, &["post_write hook `sh -c false` failed"], &out.report());
}
