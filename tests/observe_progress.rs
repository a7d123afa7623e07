//! The progress display of a fleet run: plain lines when stderr is not a terminal, bars under a pseudo-terminal,
//! and the final summary either way.

use crate::fleet_support::{Fleet, Revisions};
use crate::harness::Cmd;

#[tokio::test]
async fn observe_plain_progress_and_summary_without_a_terminal() {
    let fleet = Fleet::new("observe_plain", 4, 1, Revisions::Repo, 4);

    // `auto` must pick plain lines: the runner's stderr is a pipe.
    let out = fleet.fleet(&["upgrade", "head"]).assert_success();

    let lines: Vec<&str> = out.stderr.lines().filter(|l| l.contains(" done: ")).collect();
    let last = lines
        .last()
        .unwrap_or_else(|| panic!("no progress line\n{}", out.report()));
    assert!(last.starts_with('['), "{}", out.report());
    assert!(last.contains("] 5/5 done: 5 ok, 0 running; "), "{}", out.report());
    assert!(last.ends_with("eta 00:00"), "{}", out.report());
    assert!(
        !out.stderr.contains('\x1b'),
        "escape codes without a terminal\n{}",
        out.report()
    );

    let run_id = fleet.status(None)["run"]["id"].as_str().unwrap().to_string();
    assert!(
        out.stdout
            .starts_with(&format!("run {run_id}: upgrade to head, 5 tenants in ")),
        "{}",
        out.report()
    );
    assert!(out.stdout.contains("\n  succeeded    5\n"), "{}", out.report());
    assert!(out.stdout.contains("\n  failed       0\n"), "{}", out.report());

    // The explicit flag does the same.
    let again = fleet
        .fleet(&["upgrade", "head", "--progress", "plain"])
        .assert_success();
    assert!(
        again.stderr.contains("] 5/5 done: 0 ok, 5 skipped, 0 running; "),
        "{}",
        again.report()
    );
    assert!(!again.stderr.contains("note:"), "{}", again.report());

    // Bars asked for without a terminal: plain lines, after a one-line note.
    let bar = fleet.fleet(&["upgrade", "head", "--progress", "bar"]).assert_success();
    let first = bar.stderr.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        "note: --progress bar needs a terminal on stderr; showing plain lines instead",
        "{}",
        bar.report()
    );
    assert_eq!(bar.stderr.matches("note:").count(), 1, "{}", bar.report());
    assert!(bar.stderr.contains("] 5/5 done: "), "{}", bar.report());
    assert!(!bar.stderr.contains('\x1b'), "{}", bar.report());
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[tokio::test]
async fn observe_progress_bar_under_a_terminal() {
    let fleet = Fleet::new("observe_bar", 5, 0, Revisions::Repo, 4);
    let line = [
        env!("CARGO_BIN_EXE_flotilla"),
        "fleet",
        "upgrade",
        "head",
        "--progress",
        "bar",
        "--tenants",
        &Fleet::path_arg(&fleet.tenants_file),
        "--ledger",
        &Fleet::path_arg(&fleet.ledger),
    ]
    .map(shell_quote)
    .join(" ");

    // util-linux `script` runs the command on a pseudo-terminal and copies what it prints to our pipe.
    let mut cmd = Cmd::new("script");
    cmd.args(["-qfec", &line, "/dev/null"])
        .current_dir(fleet.project.path())
        .env("TERM", "xterm-256color")
        .env("COLUMNS", "120")
        .env("LINES", "40");
    let out = cmd.assert_success();
    let screen = out.stdout.replace('\r', "");

    // indicatif draws with cursor movement and line clearing, and the bar template shows the rate.
    assert!(
        screen.contains("\x1b["),
        "no terminal control sequences\n{}",
        out.report()
    );
    // `script` gives its terminal the size of ours, or 80 columns without one: the narrow bar either way.
    assert!(screen.contains("/s eta "), "no bar\n{}", out.report());
    // The bar is cleared when the run ends (the summary replaces it), so its last state is not asserted.
    assert!(screen.contains("] 0/5 "), "no fleet bar\n{}", out.report());
    assert!(
        screen.contains("eta --:--"),
        "an ETA before any tenant finished\n{}",
        out.report()
    );
    assert!(
        screen.contains("tenant_000"),
        "no line for a tenant in flight\n{}",
        out.report()
    );
    assert!(
        !screen.contains(" done: "),
        "plain progress lines on a terminal\n{}",
        out.report()
    );
    let run_id = fleet.status(None)["run"]["id"].as_str().unwrap().to_string();
    assert!(
        screen.contains(&format!("run {run_id}: upgrade to head, 5 tenants in ")),
        "no summary\n{}",
        out.report()
    );
    assert!(screen.contains("\n  succeeded    5\n"), "{}", out.report());
    let versions = fleet.versions().await;
    assert!(
        versions.values().all(|v| v == &[crate::fleet_support::REPO_HEAD]),
        "{versions:?}"
    );
}
