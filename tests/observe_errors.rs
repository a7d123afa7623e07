//! Errors of the observation flags carry the operating system's reason, and a failed tenant's SQLSTATE is
//! shown once in the summary.

use std::net::TcpListener;

use crate::fleet_support::{Fleet, Revisions};

#[tokio::test]
async fn observe_errors_name_the_os_reason() {
    let fleet = Fleet::new("observe_errors", 2, 0, Revisions::Repo, 2);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let busy = fleet.upgrade(&["--metrics-addr", &addr]).assert_code(2);
    assert!(
        busy.stderr.contains(&format!(
            "error: cannot listen for /metrics on {addr}: address already in use\n"
        )),
        "{}",
        busy.report()
    );

    let missing = fleet.project.path().join("no-such-dir/flotilla.prom");
    let out = fleet
        .upgrade(&["--metrics-textfile", &Fleet::path_arg(&missing)])
        .assert_code(2);
    assert!(
        out.stderr.contains(&format!(
            "error: cannot write the metrics textfile {}: no such file or directory\n",
            missing.display()
        )),
        "{}",
        out.report()
    );

    let events = fleet.project.path().join("no-such-dir/events.ndjson");
    let out = fleet.upgrade(&["--events", &Fleet::path_arg(&events)]).assert_code(2);
    assert!(
        out.stderr.contains(&format!(
            "error: cannot open the event stream {}: no such file or directory\n",
            events.display()
        )),
        "{}",
        out.report()
    );
    drop(taken);
}

#[tokio::test]
async fn observe_summary_shows_a_sqlstate_once() {
    let fleet = Fleet::new("observe_sqlstate", 2, 0, Revisions::Repo, 2);
    // A revision creates this table; it exists already in one tenant, so that tenant fails with 42P07.
    fleet.db.execute("CREATE TABLE tenant_0002.orders (id int)");
    let out = fleet.upgrade(&[]).assert_code(1);
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains(" x SQLSTATE "))
        .unwrap_or_else(|| panic!("no failure group\n{}", out.report()));
    assert!(line.starts_with("  1 x SQLSTATE 42P07: "), "{}", out.report());
    assert_eq!(line.matches("42P07").count(), 1, "{}", out.report());
}
