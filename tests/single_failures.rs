//! What goes wrong and what is left afterwards: a failing revision rolls back whole, a failed no-transaction
//! revision blocks until resolved, concurrent runs take turns (or give up with exit 4), bad input changes
//! nothing, and a password never reaches the output.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{child_env, TempProject, TestDb};
use crate::single_support::{
    all_tables, applied_up, assert_contains, example, example_project, exists, file_containing, fixture_project, fl,
    fl_offline, history, query, rows, state, user_tables,
};

#[test]
fn failing_statement_rolls_back_its_revision_and_keeps_earlier_ones() {
    let project = fixture_project("single_failing", "");
    let db = TestDb::new("failing_rollback");
    let out = fl(&project, &db, &["upgrade", "head"]).assert_code(1);
    // The failing `SELECT 1 / 0` is on line 9 of the file.
    assert_contains(
        &out.stderr,
        &[
            "f30000000003",
            "migrations/0003_broken.sql:9",
            "SQLSTATE 22012",
            "division by zero",
        ],
        &out.report(),
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.report());
    // The first statement of the broken revision is gone; the two revisions before it stay committed.
    assert_eq!(user_tables(&db, "public"), ["fine_one", "fine_two"]);
    assert_eq!(rows(&db), ["f20000000002"]);
    assert_eq!(applied_up(&db), ["f10000000001", "f20000000002"]);
    assert!(history(&db).iter().all(|(r, _, _)| r != "f30000000003"));
    // It fails the same way again, and a target below it still works.
    fl(&project, &db, &["upgrade", "head"]).assert_code(1);
    assert_eq!(rows(&db), ["f20000000002"]);
    fl(&project, &db, &["downgrade", "-1"]).assert_success();
    assert_eq!(rows(&db), ["f10000000001"]);
}

#[test]
fn failing_downgrade_names_its_revision_and_keeps_the_row() {
    let project = fixture_project("single_failing", "");
    let db = TestDb::new("failing_down");
    fl(&project, &db, &["upgrade", "f20000000002"]).assert_success();
    db.execute("INSERT INTO fine_two VALUES (1); CREATE VIEW keeps_fine_two AS SELECT * FROM fine_two");
    let out = fl(&project, &db, &["downgrade", "base"]).assert_code(1);
    assert_contains(
        &out.stderr,
        &["f20000000002", "0002_second.sql:9", "SQLSTATE 2BP01"],
        &out.report(),
    );
    assert_eq!(rows(&db), ["f20000000002"]);
    assert_eq!(user_tables(&db, "public"), ["fine_one", "fine_two"]);
}

#[test]
fn failed_no_transaction_revision_blocks_until_resolved() {
    let project = fixture_project("single_notx_failing", "");
    let db = TestDb::new("notx_blocked");
    let out = fl(&project, &db, &["upgrade", "head"]).assert_code(1);
    assert_contains(
        &out.stderr,
        &["n20000000002", "0002_notx.sql:8", "SQLSTATE 22012"],
        &out.report(),
    );
    // Its first statement ran outside a transaction and stays; the version row did not move.
    assert!(exists(&db, "items_name_idx"));
    assert_eq!(rows(&db), ["n10000000001"]);
    let statuses: Vec<String> = history(&db)
        .into_iter()
        .filter(|(r, _, _)| r == "n20000000002")
        .map(|(_, _, s)| s)
        .collect();
    assert_eq!(statuses, ["started", "failed"]);

    let out = fl(&project, &db, &["upgrade", "head"]).assert_code(5);
    assert_contains(&out.stderr, &["n20000000002", "flotilla resolve"], &out.report());
    assert_eq!(user_tables(&db, "public"), ["items"]);
    let out = fl(&project, &db, &["current"]).assert_code(5);
    assert_contains(
        &out.stdout,
        &["n10000000001", "BLOCKED", "n20000000002", "flotilla resolve"],
        &out.report(),
    );
    let out = fl(&project, &db, &["current", "--format", "json"]).assert_code(5);
    assert_eq!(out.json()["blocked"]["revision"], "n20000000002", "{}", out.report());
    // Downgrades are blocked as well: the database is in an unknown state.
    fl(&project, &db, &["downgrade", "base"]).assert_code(5);
    assert_eq!(rows(&db), ["n10000000001"]);

    // After fixing the script and resolving, the upgrade goes on from the recorded revision.
    let notx = file_containing(&project.migrations_dir(), "0002_notx");
    let text = std::fs::read_to_string(&notx).unwrap();
    std::fs::write(&notx, text.replace("SELECT 1 / 0;", "SELECT 1;")).unwrap();
    let out = fl(&project, &db, &["resolve"]).assert_success();
    assert_contains(
        &out.stdout,
        &["Resolved", "n20000000002", "n10000000001"],
        &out.report(),
    );
    assert_eq!(rows(&db), ["n10000000001"]);
    fl(&project, &db, &["current"]).assert_success();
    fl(&project, &db, &["upgrade", "head"]).assert_success();
    assert_eq!(rows(&db), ["n30000000003"]);
    assert_eq!(user_tables(&db, "public"), ["after_notx", "items"]);
}

#[test]
fn stamp_also_clears_a_failed_no_transaction_revision() {
    let project = fixture_project("single_notx_failing", "");
    let db = TestDb::new("notx_stamp");
    fl(&project, &db, &["upgrade", "head"]).assert_code(1);
    fl(&project, &db, &["upgrade", "head"]).assert_code(5);
    // The operator finishes the work by hand and records where the database really is.
    fl(&project, &db, &["stamp", "n20000000002"]).assert_success();
    fl(&project, &db, &["current"]).assert_success();
    fl(&project, &db, &["upgrade", "head"]).assert_success();
    assert_eq!(rows(&db), ["n30000000003"]);
}

/// Starts `flotilla --url URL upgrade head` in the project without waiting for it.
fn spawn_upgrade(project: &TempProject, db: &TestDb) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["--url", db.url(), "upgrade", "head"])
        .current_dir(project.path())
        .env_clear()
        .envs(child_env(std::env::vars_os(), &[]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start flotilla")
}

/// Polls until a Flotilla advisory lock is held on `db` (the first run is inside its revision).
fn wait_for_migration_lock(db: &TestDb) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let sql = format!(
        "SELECT count(*)::text FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
         WHERE l.locktype = 'advisory' AND l.classid = {} AND l.granted AND d.datname = '{}'",
        0x666c_6f74,
        db.name()
    );
    while query(db, &sql)[0][0] == "0" {
        assert!(Instant::now() < deadline, "no migration lock appeared on {}", db.name());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(child: std::process::Child) -> (Option<i32>, String, String) {
    let out = child.wait_with_output().expect("wait for flotilla");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn concurrent_upgrades_apply_each_revision_once() {
    let project = fixture_project("single_slow", "");
    let db = TestDb::new("concurrent");
    let first = spawn_upgrade(&project, &db);
    wait_for_migration_lock(&db);
    let second = spawn_upgrade(&project, &db);
    let results = [finish(first), finish(second)];
    for (code, stdout, stderr) in &results {
        assert_eq!(*code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    }
    // The second waited for the lock, then found nothing left to do.
    assert_contains(&results[1].1, &["Nothing to do"], &format!("{results:?}"));
    assert_eq!(applied_up(&db), ["s10000000001", "s20000000002"]);
    assert_eq!(history(&db).len(), 2);
    assert_eq!(rows(&db), ["s20000000002"]);
}

#[test]
fn concurrent_upgrade_gives_up_with_exit_4_after_lock_wait() {
    let project = fixture_project("single_slow", "lock_wait = \"1s\"\n");
    let db = TestDb::new("concurrent_locked");
    let first = spawn_upgrade(&project, &db);
    wait_for_migration_lock(&db);
    let second = spawn_upgrade(&project, &db);
    let (code2, _, stderr2) = finish(second);
    let (code1, stdout1, stderr1) = finish(first);
    assert_eq!(code1, Some(0), "first:\n{stdout1}\n{stderr1}");
    assert_eq!(code2, Some(4), "second:\n{stderr2}");
    assert!(
        stderr2.contains("another run holds the migration lock") && stderr2.contains("lock_wait"),
        "{stderr2}"
    );
    assert_eq!(applied_up(&db), ["s10000000001", "s20000000002"]);
    assert_eq!(rows(&db), ["s20000000002"]);
}

/// Runs `args` against a fresh database, expects exit 2 with every needle on stderr, and checks that the
/// database was not touched (no version table either).
#[track_caller]
fn assert_refused(project: &TempProject, args: &[&str], needles: &[&str]) {
    let db = TestDb::new("refused");
    db.execute("CREATE TABLE bystander (id int)");
    let before = state(&db);
    let out = fl(project, &db, args).assert_code(2);
    assert_contains(&out.stderr, needles, &out.report());
    assert!(!out.stderr.contains("panicked"), "{}", out.report());
    assert_eq!(state(&db), before, "{}", out.report());
    assert_eq!(all_tables(&db, "public"), ["bystander"]);
}

#[test]
fn malformed_script_is_refused_with_file_and_line() {
    let project = example_project("");
    project.revision(
        "zz_bad.sql",
        &format!(
            "-- revision: 0badbadbad00\n-- down_revision: {}\n-- Note: oops\n-- colour: red\n\n\
             -- flotilla:upgrade\nSELECT 1;\n",
            example::HEAD
        ),
    );
    // Both problems are reported at once.
    assert_refused(
        &project,
        &["upgrade", "head"],
        &[
            "migrations/zz_bad.sql:3: unknown header key `Note`",
            "migrations/zz_bad.sql:4: unknown header key `colour`",
        ],
    );
    let out = fl_offline(&project, &["heads"]).assert_code(2);
    assert_contains(&out.stderr, &["migrations/zz_bad.sql:3"], &out.report());
    let out = fl_offline(&project, &["upgrade", "head", "--sql"]).assert_code(2);
    assert_eq!(out.stdout, "", "{}", out.report());
}

#[test]
fn misspelled_downgrade_marker_is_refused_not_run_as_upgrade() {
    // Issue 14: `-- flotila:downgrade` used to be an ordinary comment, so the upgrade created the table,
    // dropped it again and recorded success.
    for marker in [
        "-- flotila:downgrade",
        "-- Flotilla: downgrade",
        "-- flotilla downgrade",
    ] {
        let project = TempProject::with_revisions(
            "",
            &[(
                "0001_typo.sql",
                &format!(
                    "-- revision: 7e5700000001\n\n-- flotilla:upgrade\nCREATE TABLE typo_t (id int);\n\n\
                     {marker}\nDROP TABLE typo_t;\n"
                ),
            )],
        );
        assert_refused(
            &project,
            &["upgrade", "head"],
            &[&format!(
                "migrations/0001_typo.sql:6: misspelled section marker `{marker}` \
                 (did you mean `-- flotilla:downgrade`?)"
            )],
        );
    }
}

#[test]
fn revision_id_longer_than_the_version_column_is_refused_before_connecting() {
    // Issue 13: a 300-character id used to load, and failed only when its version row was written.
    let id = "a".repeat(300);
    let project = TempProject::with_revisions(
        "",
        &[(
            "0001_long.sql",
            &format!("-- revision: {id}\n\n-- flotilla:upgrade\nCREATE TABLE long_id (id int);\n"),
        )],
    );
    let needles = [
        "migrations/0001_long.sql:1: invalid revision id",
        "it is 300 characters long, and the version table's `version_num` column holds at most 255",
    ];
    // Nothing listens on port 1, so reaching the connect step would exit 1 with "could not connect".
    let out = fl_offline(
        &project,
        &["--url", "postgres://postgres@127.0.0.1:1/nowhere", "upgrade", "head"],
    )
    .assert_code(2);
    assert_contains(&out.stderr, &needles, &out.report());
    assert!(!out.stderr.contains("could not connect"), "{}", out.report());
    assert_refused(&project, &["upgrade", "head"], &needles);
}

#[test]
fn cyclic_graph_is_refused() {
    let project = TempProject::with_revisions(
        "",
        &[
            (
                "a.sql",
                "-- revision: cyc000000001\n-- down_revision: cyc000000002\n\n-- flotilla:upgrade\nSELECT 1;\n",
            ),
            (
                "b.sql",
                "-- revision: cyc000000002\n-- down_revision: cyc000000001\n\n-- flotilla:upgrade\nSELECT 1;\n",
            ),
        ],
    );
    assert_refused(
        &project,
        &["upgrade", "head"],
        &[
            "migrations/a.sql:2: cycle among revisions (cyc000000001, cyc000000002)",
            "migrations/b.sql:2: cycle among revisions (cyc000000001, cyc000000002)",
        ],
    );
}

#[test]
fn unknown_down_revision_names_its_file_and_line() {
    let project = example_project("");
    project.revision(
        "zz_orphan.sql",
        "-- revision: 0a0a0a0a0a0a\n-- message: lost parent\n-- down_revision: feedfacecafe\n\n\
         -- flotilla:upgrade\nCREATE TABLE orphan (id int);\n",
    );
    let needle =
        "migrations/zz_orphan.sql:3: revision 0a0a0a0a0a0a names down_revision feedfacecafe, which does not exist";
    assert_refused(&project, &["upgrade", "head"], &[needle]);
    let out = fl_offline(&project, &["history"]).assert_code(2);
    assert_contains(&out.stderr, &[needle], &out.report());
}

#[test]
fn unknown_target_is_refused() {
    let project = example_project("");
    assert_refused(
        &project,
        &["upgrade", "feedfacecafe"],
        &["no such revision or branch `feedfacecafe`"],
    );
    assert_refused(&project, &["upgrade", "nolabel@head"], &["nolabel"]);
}

#[test]
fn ambiguous_prefix_is_refused() {
    let project = fixture_project("single_ambiguous", "");
    assert_refused(
        &project,
        &["upgrade", "abc"],
        &["`abc` matches several revisions", "abc111111111", "abc222222222"],
    );
    // A longer prefix is fine.
    let db = TestDb::new("prefix_ok");
    fl(&project, &db, &["upgrade", "abc1"]).assert_success();
    assert_eq!(rows(&db), ["abc111111111"]);
}

#[test]
fn head_with_several_heads_is_refused() {
    let project = fixture_project("single_depends", "");
    assert_refused(&project, &["upgrade", "head"], &["use `heads` or name one"]);
    let project = example_project("");
    project.revision(
        "zz_second_head.sql",
        "-- revision: 5ec0dead0001\n-- down_revision: 4c2d8e1f9a07\n\n-- flotilla:upgrade\nSELECT 1;\n",
    );
    assert_refused(&project, &["upgrade", "head"], &["use `heads` or name one"]);
}

#[test]
fn wrong_password_never_reaches_the_output() {
    let project = example_project("");
    let url = "postgres://postgres:S3cretPw@127.0.0.1:1/x";
    for args in [
        &["--url", url, "upgrade", "head"][..],
        &["--url", url, "current", "--format", "json"][..],
        &["--url", url, "current", "--log-format", "json"][..],
    ] {
        let out = fl_offline(&project, args).assert_code(1);
        assert!(!out.stderr.is_empty(), "{}", out.report());
        assert!(
            !out.stderr.contains("S3cretPw") && !out.stdout.contains("S3cretPw"),
            "{}",
            out.report()
        );
        assert_contains(&out.stderr, &["127.0.0.1"], &out.report());
    }
    // The same url through DATABASE_URL and through flotilla.toml.
    let out = fl_offline(&project, &["current"])
        .env("DATABASE_URL", url)
        .assert_code(1);
    assert!(!out.stderr.contains("S3cretPw"), "{}", out.report());
    let project = example_project(&format!("url = \"{url}\"\n"));
    let out = fl_offline(&project, &["upgrade", "head"]).assert_code(1);
    assert!(!out.stderr.contains("S3cretPw"), "{}", out.report());
    // A libpq key=value string, and a password from PGPASSWORD.
    let out = fl_offline(
        &project,
        &[
            "--url",
            "host=127.0.0.1 port=1 user=postgres password=S3cretPw dbname=x",
            "current",
        ],
    )
    .assert_code(1);
    assert!(!out.stderr.contains("S3cretPw"), "{}", out.report());
    let out = fl_offline(&project, &["--url", "postgres://postgres@127.0.0.1:1/x", "current"])
        .env("PGPASSWORD", "S3cretPw")
        .assert_code(1);
    assert!(!out.stderr.contains("S3cretPw"), "{}", out.report());
    // A url that does not even parse is not echoed either.
    let out = fl_offline(
        &project,
        &["--url", "postgres://postgres:S3cretPw@127.0.0.1:notaport/x", "current"],
    )
    .output();
    assert!(matches!(out.code(), Some(1 | 2)), "{}", out.report());
    assert!(!out.stderr.contains("S3cretPw"), "{}", out.report());
}

#[test]
fn no_transaction_revision_that_never_finished_blocks_too() {
    // A process killed inside a no-transaction revision leaves only its `started` row behind.
    let project = fixture_project("single_notx_failing", "");
    let db = TestDb::new("notx_started");
    fl(&project, &db, &["upgrade", "n10000000001"]).assert_success();
    db.execute(
        "INSERT INTO flotilla_history (revision, direction, status, is_transactional, tool_version) \
         VALUES ('n20000000002', 'up', 'started', false, 'test')",
    );
    let out = fl(&project, &db, &["current"]).assert_code(5);
    assert_contains(&out.stdout, &["BLOCKED", "n20000000002", "started"], &out.report());
    let out = fl(&project, &db, &["upgrade", "head"]).assert_code(5);
    assert_contains(&out.stderr, &["flotilla resolve"], &out.report());
    assert_eq!(rows(&db), ["n10000000001"]);
    let out = fl(&project, &db, &["resolve", "--format", "json"]).assert_success();
    assert_eq!(out.json()["resolved"]["revision"], "n20000000002", "{}", out.report());
    fl(&project, &db, &["resolve"]).assert_success();
    // The fixture's revision still fails, but it is tried again rather than refused.
    fl(&project, &db, &["upgrade", "head"]).assert_code(1);
}

/// A port that answers with something other than PostgreSQL: the error says so, naming host and port.
#[test]
fn a_server_that_is_not_postgres_is_named_as_such() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        // Answer every connection like a web server would, then close it.
        for stream in listener.incoming().take(2) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 512];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let project = example_project("");
    let url = format!("postgres://someone@127.0.0.1:{port}/app?sslmode=disable");
    let out = project.flotilla().args(["current", "--url", &url]).assert_code(1);
    assert_contains(
        &out.stderr,
        &[&format!("the server at 127.0.0.1:{port} did not answer as PostgreSQL")],
        &out.report(),
    );
    drop(server);
}
