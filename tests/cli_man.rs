//! `flotilla man DIR`: one roff page per command, generated from the clap definitions, so the pages list the
//! same options as `--help`.

use crate::harness::flotilla;

#[test]
fn man_writes_one_page_per_command_with_its_options() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    let out = flotilla().arg("man").arg(&out_dir).assert_success();
    assert!(out.stdout.contains(&out_dir.display().to_string()), "{}", out.report());

    let page = |name: &str| {
        std::fs::read_to_string(out_dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}\n{}", out.report()))
    };
    let top = page("flotilla.1");
    assert!(top.starts_with(".ie \\n(.g .ds Aq"), "not roff: {top:.200}");
    assert!(top.contains(".TH flotilla 1"), "{top:.400}");
    // Global options, and the commands listed.
    for option in ["\\-\\-color", "\\-\\-log\\-format", "\\-\\-config"] {
        assert!(top.contains(option), "{option} missing from flotilla.1");
    }
    assert!(top.contains("flotilla\\-fleet(1)"), "no subcommand list in flotilla.1");

    let upgrade = page("flotilla-fleet-upgrade.1");
    for option in [
        "\\-\\-metrics\\-linger",
        "\\-\\-progress",
        "\\-\\-concurrency",
        "\\-\\-tenants",
    ] {
        assert!(
            upgrade.contains(option),
            "{option} missing from flotilla-fleet-upgrade.1"
        );
    }
    // Help text comes along with each option.
    assert!(
        upgrade.contains("so a scrape interval cannot miss a short run"),
        "{upgrade}"
    );
    for name in [
        "flotilla-upgrade.1",
        "flotilla-revision.1",
        "flotilla-fleet-status.1",
        "flotilla-man.1",
    ] {
        assert!(page(name).contains(".SH OPTIONS"), "{name}");
    }
    assert!(
        !out_dir.join("flotilla-help.1").exists(),
        "a page for the help subcommand"
    );

    // A file where the directory should be: a usage error with the OS reason, nothing written.
    let file = dir.path().join("taken");
    std::fs::write(&file, "").unwrap();
    let out = flotilla().arg("man").arg(&file).assert_code(2);
    assert!(
        out.stderr.contains(&format!(
            "error: cannot write man pages to {}: file exists",
            file.display()
        )),
        "{}",
        out.report()
    );
}
