//! The README's "One database" sequence, run as written (only the example url is swapped for a test
//! database's) in an empty directory against an empty database, so the README cannot drift from what works.

use crate::harness::{flotilla, repo_dir, Cmd, TestDb};

/// The first ```sh block after `heading` in README.md.
fn readme_block(heading: &str) -> String {
    let readme = std::fs::read_to_string(repo_dir().join("README.md")).expect("README.md");
    let section = &readme[readme
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in README.md"))..];
    let start = section.find("```sh\n").expect("a ```sh block") + "```sh\n".len();
    let end = start + section[start..].find("```").expect("the block's end");
    section[start..end].to_string()
}

#[test]
fn readme_one_database_sequence_runs_in_order() {
    let block = readme_block("## One database");
    let example_url = "postgres://app@localhost/app";
    assert!(block.contains(example_url), "{block}");
    let db = TestDb::new("readme_seq");
    let script = block.replace(example_url, db.url());

    let work = tempfile::tempdir().unwrap();
    let (dir, home, bin) = (
        work.path().join("project"),
        work.path().join("home"),
        work.path().join("bin"),
    );
    for d in [&dir, &home, &bin] {
        std::fs::create_dir_all(d).unwrap();
    }
    // The bare `flotilla` of the README is the binary under test.
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_flotilla"), bin.join("flotilla")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = Cmd::new("bash")
        .args(["-euo", "pipefail", "-xc", &script])
        .current_dir(&dir)
        .env("PATH", path)
        .env("HOME", &home)
        // `edit head` runs the editor; `true` leaves the file as it is.
        .env("EDITOR", "true")
        .env_remove("VISUAL")
        .assert_success();

    // Where the sequence leaves things: the database at the merge, the one head; the offline script, the
    // completions and the man pages.
    let current = flotilla()
        .args(["current", "--format", "json", "--url", db.url()])
        .current_dir(&dir)
        .assert_success()
        .json();
    let heads = flotilla()
        .args(["heads", "--format", "json"])
        .current_dir(&dir)
        .assert_success()
        .json();
    assert_eq!(
        heads["revisions"].as_array().map(Vec::len),
        Some(1),
        "one head after the merge: {heads}"
    );
    assert_eq!(
        heads["revisions"][0]["down_revisions"].as_array().map(Vec::len),
        Some(2),
        "{heads}"
    );
    let at: Vec<&serde_json::Value> = current["current"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["revision"])
        .collect();
    assert_eq!(at, [&heads["revisions"][0]["revision"]], "{current}\n{}", out.report());
    let upgrade_sql = std::fs::read_to_string(dir.join("upgrade.sql")).unwrap();
    assert!(upgrade_sql.contains("flotilla_version"), "{upgrade_sql}");
    assert!(
        home.join(".local/share/bash-completion/completions/flotilla")
            .metadata()
            .unwrap()
            .len()
            > 0
    );
    assert!(home.join(".local/share/man/man1/flotilla.1").exists());
}
