//! How the binary finds its configuration: flotilla.toml in the current directory or a parent (up to a
//! repository root), `--config`, and the `FLOTILLA_*` environment variables under their flags.

use crate::harness::{flotilla, TempProject};
use crate::single_support::assert_contains;

const REVISION_A: &str = "-- revision: aaa000000001\n-- down_revision:\n-- message: a\n-- flotilla:upgrade\nSELECT 1;\n-- flotilla:downgrade\nSELECT 1;\n";

/// The single head `heads --format json` prints.
fn head(out: &crate::harness::CmdOutput) -> String {
    out.json()[0]["revision"].as_str().unwrap_or_default().to_string()
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
