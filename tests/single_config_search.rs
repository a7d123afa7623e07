//! How the binary finds its configuration: flotilla.toml in the current directory or a parent (up to a
//! repository root), `--config`, and the `FLOTILLA_*` environment variables under their flags.

use crate::harness::{flotilla, TempProject};
use crate::single_support::assert_contains;

const REVISION_A: &str = "-- revision: aaa000000001\n-- down_revision:\n-- message: a\n-- flotilla:upgrade\nSELECT 1;\n-- flotilla:downgrade\nSELECT 1;\n";
const REVISION_B: &str = "-- revision: bbb000000001\n-- down_revision:\n-- message: b\n-- flotilla:upgrade\nSELECT 1;\n-- flotilla:downgrade\nSELECT 1;\n";

/// The single head `heads --format json` prints.
fn head(out: &crate::harness::CmdOutput) -> String {
    out.json()["revisions"][0]["revision"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_project_is_found_from_a_subdirectory_with_its_paths_relative_to_the_config() {
    let project = TempProject::new("script_location = \"db/revs\"\n");
    project.write(".git/HEAD", "ref: refs/heads/main\n");
    project.write("db/revs/a.sql", REVISION_A);
    for dir in ["db/revs", "db"] {
        let out = flotilla()
            .current_dir(project.path().join(dir))
            .args(["heads", "--format", "json"])
            .assert_success();
        assert_eq!(head(&out), "aaa000000001", "from {dir}: {}", out.report());
    }
}

#[test]
fn the_search_stops_at_a_repository_root_and_a_missing_config_names_init() {
    let outer = TempProject::new("script_location = \"db/revs\"\n");
    outer.write("db/revs/a.sql", REVISION_A);
    outer.write("repo/.git/HEAD", "ref: refs/heads/main\n");
    std::fs::create_dir_all(outer.path().join("repo/sub")).unwrap();
    for dir in ["repo", "repo/sub"] {
        let out = flotilla()
            .current_dir(outer.path().join(dir))
            .args(["heads"])
            .assert_code(2);
        assert_contains(&out.stderr, &["no flotilla.toml", "flotilla init"], &out.report());
    }
    // What needs no project still runs there.
    let repo = outer.path().join("repo");
    flotilla()
        .current_dir(&repo)
        .args(["completions", "bash"])
        .assert_success();
    flotilla().current_dir(&repo).args(["--help"]).assert_success();
    flotilla()
        .current_dir(&repo)
        .args(["init", "migrations"])
        .assert_success();
    assert!(repo.join("flotilla.toml").is_file());
}

#[test]
fn flotilla_config_and_flotilla_env_are_read_and_their_flags_win() {
    let project = TempProject::new("[env.alt]\nscript_location = \"alt\"\n");
    project.write("migrations/a.sql", REVISION_A);
    project.write("alt/b.sql", REVISION_B);
    project.write("other.toml", "script_location = \"alt\"\n");
    let heads = |envs: &[(&str, &str)], args: &[&str]| {
        let mut cmd = project.flotilla();
        for (key, value) in envs {
            cmd.env(key, value);
        }
        let out = cmd.args(["heads", "--format", "json"]).args(args).assert_success();
        head(&out)
    };
    assert_eq!(heads(&[("FLOTILLA_CONFIG", "other.toml")], &[]), "bbb000000001");
    assert_eq!(
        heads(&[("FLOTILLA_CONFIG", "other.toml")], &["--config", "flotilla.toml"]),
        "aaa000000001"
    );
    assert_eq!(heads(&[("FLOTILLA_ENV", "alt")], &[]), "bbb000000001");
    let out = project
        .flotilla()
        .env("FLOTILLA_ENV", "nosuch")
        .args(["heads"])
        .assert_code(2);
    assert_contains(&out.stderr, &["nosuch"], &out.report());
    assert_eq!(heads(&[("FLOTILLA_ENV", "nosuch")], &["--env", "alt"]), "bbb000000001");
}

/// Only that the variable is read: which format wins needs a log line, and `heads` writes none.
/// (clap checks a global option's variable even when the flag is given, so a bad value is an error either way.)
#[test]
fn flotilla_log_format_is_read() {
    let project = TempProject::with_revisions("", &[("a.sql", REVISION_A)]);
    let out = project
        .flotilla()
        .env("FLOTILLA_LOG_FORMAT", "yaml")
        .args(["heads"])
        .assert_code(2);
    assert_contains(&out.stderr, &["yaml", "--log-format"], &out.report());
    project
        .flotilla()
        .env("FLOTILLA_LOG_FORMAT", "json")
        .args(["heads"])
        .assert_success();
}

#[test]
fn flotilla_tenants_and_flotilla_ledger_are_read_by_fleet_commands_and_their_flags_win() {
    let project = TempProject::with_revisions("", &[("a.sql", REVISION_A)]);
    let run = |envs: &[(&str, &str)], args: &[&str], expected: &str| {
        let mut cmd = project.flotilla();
        for (key, value) in envs {
            cmd.env(key, value);
        }
        let out = cmd.args(args).assert_code(2);
        assert_contains(&out.stderr, &[expected], &out.report());
    };
    run(
        &[("FLOTILLA_TENANTS", "env-tenants.toml")],
        &["fleet", "current"],
        "env-tenants.toml",
    );
    run(
        &[("FLOTILLA_TENANTS", "env-tenants.toml")],
        &["fleet", "upgrade", "head", "--tenants", "flag-tenants.toml"],
        "flag-tenants.toml",
    );
    run(
        &[("FLOTILLA_LEDGER", "env-ledger.db")],
        &["fleet", "status"],
        "env-ledger.db",
    );
    run(
        &[("FLOTILLA_LEDGER", "env-ledger.db")],
        &["fleet", "status", "--ledger", "flag-ledger.db"],
        "flag-ledger.db",
    );
}

#[test]
fn help_shows_the_environment_variables_under_a_global_options_heading() {
    let out = flotilla().args(["fleet", "upgrade", "--help"]).assert_success();
    assert_contains(
        &out.stdout,
        &[
            "Global options:",
            "FLOTILLA_CONFIG",
            "FLOTILLA_ENV",
            "FLOTILLA_LOG_FORMAT",
            "FLOTILLA_TENANTS",
            "FLOTILLA_LEDGER",
        ],
        &out.report(),
    );
    // The command's own options come before the global ones.
    let own = out.stdout.find("--concurrency").unwrap_or(usize::MAX);
    let global = out.stdout.find("Global options:").unwrap_or(0);
    assert!(own < global, "{}", out.report());
    for args in [&["merge", "--help"][..], &["history", "--help"], &["plan", "--help"]] {
        let out = flotilla().args(args).assert_success();
        let bare = out
            .stdout
            .lines()
            .map(str::trim)
            // An option's line (`-m, --message <MESSAGE>` or `--rev-id <REV_ID>`), not a wrapped line of help.
            .filter(|l| l.starts_with("--") || (l.starts_with('-') && l.get(2..3) == Some(",")))
            .filter(|l| !l.contains("  "))
            .collect::<Vec<_>>();
        assert!(bare.is_empty(), "options without help text: {bare:?}\n{}", out.report());
    }
}

#[test]
fn url_is_refused_on_fleet_commands_it_would_not_change() {
    let project = TempProject::with_revisions("", &[("a.sql", REVISION_A)]);
    let out = project
        .flotilla()
        .args(["fleet", "current", "--url", "postgres://localhost/x"])
        .assert_code(2);
    assert_contains(&out.stderr, &["--url", "tenants file"], &out.report());
}
