//! Signals during a single-database upgrade (issue 14 §6): the first SIGINT or SIGTERM lets the revision in
//! progress commit and stops, the second cancels its statement, and either way the process exits 130 with the
//! migration lock released. And reads (`current`, `validate`, `history`, `plan`) never wait for that lock.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::fleet_support::wait_for;
use crate::harness::{child_env, TempProject, TestDb};
use crate::single_support::{assert_contains, exists, fl, history, query, rows};

const FIRST: &str = "g10000000001";
const SLOW: &str = "g20000000002";
const AFTER: &str = "g30000000003";

/// Three revisions; the middle one creates `sig_slow`, then sleeps `sleep_secs` (outside a transaction unless
/// `is_transactional`).
fn signal_project(sleep_secs: u32, is_transactional: bool, config: &str) -> TempProject {
    let transaction = if is_transactional {
        ""
    } else {
        "-- transaction: false\n"
    };
    TempProject::with_revisions(
        config,
        &[
            (
                "0001_first.sql",
                &format!(
                    "-- revision: {FIRST}\n-- down_revision:\n-- message: first\n\n-- flotilla:upgrade\n\
                     CREATE TABLE sig_first (id int);\n\n-- flotilla:downgrade\nDROP TABLE sig_first;\n"
                ),
            ),
            (
                "0002_slow.sql",
                &format!(
                    "-- revision: {SLOW}\n-- down_revision: {FIRST}\n-- message: slow\n{transaction}\n\
                     -- flotilla:upgrade\nCREATE TABLE sig_slow (id int);\nSELECT pg_sleep({sleep_secs});\n\n\
                     -- flotilla:downgrade\nDROP TABLE sig_slow;\n"
                ),
            ),
            (
                "0003_after.sql",
                &format!(
                    "-- revision: {AFTER}\n-- down_revision: {SLOW}\n-- message: after\n\n-- flotilla:upgrade\n\
                     CREATE TABLE sig_after (id int);\n\n-- flotilla:downgrade\nDROP TABLE sig_after;\n"
                ),
            ),
        ],
    )
}

/// A `flotilla upgrade head` child whose stderr is collected as it arrives, so a test can wait for a line.
struct Running {
    child: Child,
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr: Arc<Mutex<String>>,
    stderr_done: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn upgrade(project: &TempProject, db: &TestDb) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["--url", db.url(), "upgrade", "head"])
            .current_dir(project.path())
            .env_clear()
            .envs(child_env(std::env::vars_os(), &[]))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start flotilla");
        let mut out = child.stdout.take().expect("piped stdout");
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (mut err, sink) = (child.stderr.take().expect("piped stderr"), stderr.clone());
        let stderr_done = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Running {
            child,
            stdout: Some(stdout),
            stderr,
            stderr_done: Some(stderr_done),
        }
    }

    /// Sends `signal` to the flotilla process itself.
    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped yet.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    fn wait_for_stderr(&self, needle: &str) {
        wait_for(&format!("`{needle}` on stderr"), Duration::from_secs(30), || {
            self.stderr.lock().unwrap().contains(needle).then_some(())
        });
    }

    /// The exit code, stdout and stderr, failing the test unless it exits within a minute.
    fn finish(mut self) -> (Option<i32>, String, String) {
        let status = wait_for("flotilla to exit", Duration::from_secs(60), || {
            self.child.try_wait().expect("wait for flotilla")
        });
        if let Some(done) = self.stderr_done.take() {
            let _ = done.join();
        }
        let stderr = self.stderr.lock().unwrap().clone();
        let stdout = self.stdout.take().and_then(|h| h.join().ok()).unwrap_or_default();
        (status.code(), stdout, stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A test that failed before `finish` must not leave a sleeping flotilla behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls until the slow revision's `pg_sleep` runs on `db`.
fn wait_for_sleep(db: &TestDb) {
    let sql = format!(
        "SELECT count(*)::text FROM pg_stat_activity WHERE datname = '{}' AND query LIKE 'SELECT pg_sleep(%' \
         AND state = 'active'",
        db.name()
    );
    wait_for("the slow revision's pg_sleep", Duration::from_secs(30), || {
        (query(db, &sql)[0][0] != "0").then_some(())
    });
}

/// Flotilla's advisory locks on `db` (held or waited for).
fn migration_locks(db: &TestDb) -> String {
    let sql = format!(
        "SELECT count(*)::text FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
         WHERE l.locktype = 'advisory' AND l.classid = {} AND d.datname = '{}'",
        0x666c_6f74,
        db.name()
    );
    query(db, &sql)[0][0].clone()
}

#[test]
fn sigterm_lets_the_running_revision_commit_then_exits_130() {
    let project = signal_project(3, true, "");
    let db = TestDb::new("sigterm_stops");
    let run = Running::upgrade(&project, &db);
    wait_for_sleep(&db);
    run.signal(libc::SIGTERM);
    let (code, stdout, stderr) = run.finish();
    let report = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(code, Some(130), "{report}");
    assert_contains(
        &stderr,
        &[&format!(
            "interrupted: stopped after revision {SLOW}; the database is at {SLOW}"
        )],
        &report,
    );
    // The revision in progress committed whole; the next one never started.
    assert_eq!(rows(&db), [SLOW]);
    assert!(exists(&db, "sig_slow") && !exists(&db, "sig_after"), "{report}");
    assert!(!history(&db).iter().any(|(rev, _, _)| rev == AFTER), "{report}");
    assert_eq!(migration_locks(&db), "0", "{report}");
}

#[test]
fn second_sigint_cancels_the_running_revision_and_rolls_it_back() {
    // A sleep far longer than the test's deadline: only the cancel can end it in time.
    let project = signal_project(600, true, "");
    let db = TestDb::new("sigint_cancels");
    let run = Running::upgrade(&project, &db);
    wait_for_sleep(&db);
    run.signal(libc::SIGINT);
    // Signals sent back to back may arrive as one, so the second waits until the first was seen.
    run.wait_for_stderr("signal again to cancel");
    run.signal(libc::SIGINT);
    let (code, stdout, stderr) = run.finish();
    let report = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(code, Some(130), "{report}");
    assert_contains(
        &stderr,
        &[&format!(
            "cancelled revision {SLOW} (rolled back); the database is at {FIRST}"
        )],
        &report,
    );
    assert_eq!(rows(&db), [FIRST]);
    assert!(exists(&db, "sig_first"), "{report}");
    assert!(!exists(&db, "sig_slow") && !exists(&db, "sig_after"), "{report}");
    assert_eq!(migration_locks(&db), "0", "{report}");
    // Nothing is left to resolve.
    let out = fl(&project, &db, &["current"]).assert_success();
    assert_contains(&out.stdout, &[FIRST], &out.report());
}

#[test]
fn second_signal_cancels_a_no_transaction_revision_and_blocks_until_resolved() {
    let project = signal_project(600, false, "");
    let db = TestDb::new("sigint_cancels_notx");
    let run = Running::upgrade(&project, &db);
    wait_for_sleep(&db);
    run.signal(libc::SIGTERM);
    run.wait_for_stderr("signal again to cancel");
    run.signal(libc::SIGINT);
    let (code, stdout, stderr) = run.finish();
    let report = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(code, Some(130), "{report}");
    assert_contains(
        &stderr,
        &[
            &format!("cancelled no-transaction revision {SLOW} part way"),
            &format!("the database is at {FIRST}"),
            "flotilla resolve",
        ],
        &report,
    );
    // Statements before the cancelled one committed on their own, and the history says so.
    assert_eq!(rows(&db), [FIRST]);
    assert!(exists(&db, "sig_slow") && !exists(&db, "sig_after"), "{report}");
    let last = history(&db).last().cloned().expect("history rows");
    assert_eq!(
        (last.0.as_str(), last.2.as_str()),
        (SLOW, "failed"),
        "{:?}",
        history(&db)
    );
    assert_eq!(migration_locks(&db), "0", "{report}");
    // The existing machinery takes over: blocked until resolved.
    let out = fl(&project, &db, &["current"]).assert_code(5);
    assert_contains(&out.stdout, &["BLOCKED", SLOW], &out.report());
    fl(&project, &db, &["upgrade", "head"]).assert_code(5);
}

#[tokio::test]
async fn reads_do_not_wait_for_the_migration_lock() {
    // A lock_wait far beyond the commands' deadline: a read that waited for the lock would time out the test.
    let project = signal_project(0, true, "lock_wait = \"30min\"\n");
    let db = TestDb::new("reads_unlocked");
    fl(&project, &db, &["upgrade", FIRST]).assert_success();
    let holder = db.client().await;
    // The key Flotilla's default store locks (see `TableStore::lock_key_sql`).
    holder
        .batch_execute(&format!(
            "SELECT pg_advisory_lock({}, hashtext('public.flotilla_version'))",
            0x666c_6f74
        ))
        .await
        .unwrap();
    assert_eq!(migration_locks(&db), "1");
    let deadline = Duration::from_secs(60);

    let out = fl(&project, &db, &["current"]).timeout(deadline).assert_success();
    assert_contains(&out.stdout, &[FIRST], &out.report());
    let out = fl(&project, &db, &["--format", "json", "current"])
        .timeout(deadline)
        .assert_success();
    assert_eq!(out.json()["current"][0]["revision"], FIRST, "{}", out.report());
    let out = fl(&project, &db, &["validate"]).timeout(deadline).assert_success();
    assert_contains(&out.stdout, &["OK"], &out.report());
    let out = fl(&project, &db, &["history", "--indicate-current"])
        .timeout(deadline)
        .assert_success();
    assert_contains(&out.stdout, &[&format!("-> {FIRST}, first (current)")], &out.report());
    let out = fl(&project, &db, &["plan", "upgrade", "head"])
        .timeout(deadline)
        .assert_success();
    assert_contains(&out.stdout, &[SLOW, AFTER], &out.report());
    // The reads left the test's lock alone and took none of their own.
    assert_eq!(migration_locks(&db), "1");
    drop(holder);
}
