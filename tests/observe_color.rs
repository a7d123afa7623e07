//! `--color` and `NO_COLOR` in logs, progress bars and the summary (the runner sets `NO_COLOR=1` for every child
//! unless a test removes it).

use std::net::TcpListener;

use crate::fleet_support::{Fleet, Revisions};
use crate::harness::Cmd;

/// An SGR colour sequence (`ESC [ 3x m` and friends), as opposed to the cursor movement bars always use.
fn has_color(text: &str) -> bool {
    [
        "\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[34m", "\x1b[36m", "\x1b[1m", "\x1b[2m", "\x1b[3m",
    ]
    .iter()
    .any(|sgr| text.contains(sgr))
}

fn free_addr() -> String {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("127.0.0.1:{port}")
}

#[tokio::test]
async fn observe_color_flag_beats_no_color() {
    let fleet = Fleet::new("observe_color", 2, 0, Revisions::Repo, 2);
    // With a log line (the metrics address) and the summary; stdout and stderr are pipes and NO_COLOR=1.
    let run = |color: Option<&str>| {
        let mut args = vec![
            "upgrade",
            "head",
            "--metrics-addr",
            "127.0.0.1:0",
            "--metrics-linger",
            "0s",
        ];
        if let Some(color) = color {
            args.extend(["--color", color]);
        }
        fleet.fleet(&args).assert_success()
    };
    let plain = run(None);
    assert!(
        plain.stderr.contains("serving Prometheus metrics"),
        "{}",
        plain.report()
    );
    assert!(
        !plain.stdout.contains('\x1b') && !plain.stderr.contains('\x1b'),
        "{}",
        plain.report()
    );

    // --color always colours pipes too, NO_COLOR notwithstanding: the log level and the summary's counts.
    let always = run(Some("always"));
    assert!(has_color(&always.stderr), "no colour in the logs\n{}", always.report());
    assert!(
        always.stdout.contains("\x1b[32msucceeded    0\x1b[0m") || always.stdout.contains("\x1b[1mrun "),
        "no colour in the summary\n{}",
        always.report()
    );

    let never = run(Some("never"));
    assert!(
        !never.stdout.contains('\x1b') && !never.stderr.contains('\x1b'),
        "{}",
        never.report()
    );
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The run under a pseudo-terminal (util-linux `script`), with `no_color` as NO_COLOR (None: unset) and `extra`
/// flags; returns what the terminal showed.
fn on_a_terminal(fleet: &Fleet, no_color: Option<&str>, extra: &[&str]) -> String {
    let mut words = vec![
        env!("CARGO_BIN_EXE_flotilla").to_string(),
        "fleet".into(),
        "upgrade".into(),
        "head".into(),
        "--progress".into(),
        "bar".into(),
        "--metrics-addr".into(),
        free_addr(),
        "--metrics-linger".into(),
        "0s".into(),
        "--tenants".into(),
        Fleet::path_arg(&fleet.tenants_file),
        "--ledger".into(),
        Fleet::path_arg(&fleet.ledger),
    ];
    words.extend(extra.iter().map(|s| s.to_string()));
    let line = words.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" ");
    let mut cmd = Cmd::new("script");
    cmd.args(["-qfec", &line, "/dev/null"])
        .current_dir(fleet.project.path())
        .env("TERM", "xterm-256color");
    match no_color {
        Some(value) => cmd.env("NO_COLOR", value),
        None => cmd.env_remove("NO_COLOR"),
    };
    let out = cmd.assert_success();
    out.stdout.replace('\r', "")
}

#[tokio::test]
async fn observe_color_on_a_terminal_follows_no_color() {
    let fleet = Fleet::new("observe_color_tty", 3, 0, Revisions::Repo, 2);
    let colored = on_a_terminal(&fleet, None, &[]);
    assert!(colored.contains("serving Prometheus metrics"), "{colored}");
    assert!(
        has_color(&colored),
        "no colour on a terminal without NO_COLOR\n{colored:?}"
    );

    // NO_COLOR set (to anything non-empty): bars, logs and summary without colour, cursor movement still there.
    let quiet = on_a_terminal(&fleet, Some("1"), &[]);
    assert!(quiet.contains("run ") && quiet.contains("\x1b["), "{quiet:?}");
    assert!(!has_color(&quiet), "colour despite NO_COLOR\n{quiet:?}");
    // An empty NO_COLOR does not count; --color never does.
    assert!(has_color(&on_a_terminal(&fleet, Some(""), &[])));
    assert!(!has_color(&on_a_terminal(&fleet, None, &["--color", "never"])));
}
