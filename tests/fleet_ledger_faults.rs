//! A ledger fault is never silent: a write that fails during a run stops the run with exit 6, a ledger that cannot
//! be opened is a usage error naming it, and a run whose process died reads back as abandoned.

use std::time::Duration;

use crate::fleet_support::{finish, wait_for, Fleet, Revisions, SLOW_REVISIONS};

/// How many tenants the ledger shows running: read straight from SQLite (without creating the file), or through
/// `fleet status` on a PostgreSQL ledger.
fn running_tenants(fleet: &Fleet) -> Option<usize> {
    if fleet.test_ledger.is_postgres() {
        let mut cmd = fleet.project.flotilla();
        cmd.args(["fleet", "status", "--format", "json", "--ledger"])
            .arg(&fleet.ledger);
        let out = cmd.output();
        let n = if out.code() == Some(0) {
            out.json()["run"]["counts"]["running"].as_u64().unwrap_or(0)
        } else {
            0
        };
        return (n > 0).then_some(n as usize);
    }
    let conn = rusqlite::Connection::open_with_flags(&fleet.ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    conn.query_row(
        "SELECT count(*) FROM flotilla_run_tenants WHERE status = 'running'",
        [],
        |row| row.get::<_, i64>(0),
    )
    .ok()
    .filter(|n| *n > 0)
    .map(|n| n as usize)
}

#[tokio::test]
async fn fleet_ledger_write_failure_stops_the_run_with_exit_6() {
    let fleet = Fleet::new("ledger_fault", 6, 0, Revisions::Fixture("fleet_slow"), 1);
    if fleet.test_ledger.is_postgres() {
        eprintln!("skipped with FLOTILLA_TEST_LEDGER=postgres: this test damages the SQLite ledger file");
        return;
    }
    let mut child = fleet.spawn_upgrade(&["--concurrency", "1"]);
    let mut has_exited = false;
    wait_for("a tenant to run", Duration::from_secs(30), || {
        has_exited = child.try_wait().expect("poll").is_some();
        if has_exited {
            return Some(0);
        }
        running_tenants(&fleet)
    });
    if has_exited {
        let (code, stdout, stderr) = finish(child, Duration::from_secs(1));
        panic!("flotilla exited early ({code:?}):\n{stdout}\n{stderr}");
    }
    // Damage the ledger under the running process: its next tenant update has no row to land in.
    let conn = rusqlite::Connection::open(&fleet.ledger).expect("open the ledger");
    conn.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    conn.execute("DELETE FROM flotilla_run_tenants", [])
        .expect("delete the tenant rows");
    drop(conn);

    let (code, stdout, stderr) = finish(child, Duration::from_secs(60));
    assert_eq!(code, Some(6), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("the ledger could not be written"), "{stderr}");
    // The run stopped starting tenants: with one tenant at a time, most never started.
    let versions = fleet.versions().await;
    let n_at_head = versions.values().filter(|v| **v == [SLOW_REVISIONS[2]]).count();
    assert!(n_at_head < 6, "the run went on after the ledger failed: {versions:?}");
    // Whatever ran, ran whole: every tenant is at a revision of the set, or at base.
    for (id, rows) in &versions {
        assert!(rows.len() <= 1, "{id}: {rows:?}");
    }
}

#[tokio::test]
async fn fleet_unreadable_ledger_is_a_usage_error_naming_it() {
    let fleet = Fleet::new("ledger_damaged", 1, 0, Revisions::Fixture("fleet_slow"), 1);
    if fleet.test_ledger.is_postgres() {
        eprintln!("skipped with FLOTILLA_TEST_LEDGER=postgres: this test damages the SQLite ledger file");
        return;
    }
    std::fs::create_dir_all(fleet.ledger.parent().expect("parent")).unwrap();
    std::fs::write(
        &fleet.ledger,
        b"this is not an SQLite database, it is a damaged ledger file of some length",
    )
    .unwrap();
    let out = fleet.upgrade(&[]).assert_code(2);
    assert!(
        out.stderr.contains(&fleet.ledger.display().to_string()),
        "{}",
        out.report()
    );
    let versions = fleet.versions().await;
    assert!(versions.values().all(Vec::is_empty), "nothing ran: {versions:?}");
}

#[test]
fn fleet_status_says_a_run_whose_process_died_was_abandoned() {
    let fleet = Fleet::new("ledger_abandoned", 4, 0, Revisions::Fixture("fleet_slow"), 1);
    let mut child = fleet.spawn_upgrade(&["--concurrency", "1"]);
    wait_for("a tenant to run", Duration::from_secs(30), || running_tenants(&fleet));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();

    let mut cmd = fleet.project.flotilla();
    cmd.args(["fleet", "status", "--ledger"]).arg(&fleet.ledger);
    let out = cmd.assert_success();
    assert!(
        out.stdout.contains("abandoned") && out.stdout.contains("died"),
        "{}",
        out.report()
    );
    assert_eq!(fleet.status(None)["run"]["state"], "abandoned");
}
