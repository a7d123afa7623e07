//! Snapshots (insta) of what people and scripts read from a real run: the text summary, the plain progress line
//! and the JSON documents (docs/json.md). Run ids, timestamps, durations, rates and temporary paths are redacted
//! or normalised, so a snapshot changes only when the output does. A change is a diff to review: `cargo insta
//! review`, or compare the `.snap.new` file next to the snapshot in `tests/snapshots/`.

use insta::{assert_json_snapshot, assert_snapshot};

use crate::fleet_support::{Fleet, Revisions};
use crate::harness::TestDb;
use crate::single_support::{example_project, fl, fl_offline};

/// Snapshot settings: volatile parts of text replaced (run ids, clocks, durations, rates), and `project` (a
/// temporary directory) shown as `[project]`.
fn settings(project: &std::path::Path) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(&project.display().to_string()), "[project]");
    settings.add_filter(r"\d{8}T\d{6}Z-[0-9a-f]{4}", "[run-id]");
    // The ledger is a file in the project or a control database's url (FLOTILLA_TEST_LEDGER=postgres).
    settings.add_filter(r"--ledger \S+", "--ledger [ledger]");
    settings.add_filter(r"\[(\d+:)?\d{2}:\d{2}\]", "[clock]");
    settings.add_filter(r"\b\d+(\.\d)?(ms|s)\b|\b\d+m\d{2}s\b|\b\d+h\d{2}m\b", "[duration]");
    settings.add_filter(r"\d+\.\d(/s| tenants/s)", "[rate]$1");
    settings.add_filter(r"eta (\d+:)?\d{2}:\d{2}", "eta [clock]");
    settings.set_prepend_module_to_snapshot(false);
    settings
}

#[tokio::test]
async fn observe_snapshots_of_a_fleet_run() {
    let fleet = Fleet::new("observe_snap", 3, 0, Revisions::Repo, 2);
    // tenant_0002 fails with 42P07 in the revision that creates orders; the others reach head.
    fleet.db.execute("CREATE TABLE tenant_0002.orders (id int)");
    settings(fleet.project.path()).bind(|| {
        let run = fleet.upgrade(&["--format", "json"]).assert_code(1);
        // Three tenants finish in any order: the slowest list keeps only its length.
        assert_json_snapshot!("fleet_upgrade_summary_json", run.json(), {
            ".run_id" => "[run-id]",
            ".retry_command" => "[retry-command]",
            ".wall_time_ms" => "[ms]",
            ".tenants_per_second" => "[rate]",
            ".slowest[].tenant" => "[tenant]",
            ".slowest[].duration_ms" => "[ms]",
        });

        let status = fleet.fleet(&["status", "--format", "json"]).assert_success();
        assert_json_snapshot!("fleet_status_json", status.json(), {
            ".run.id" => "[run-id]",
            ".run.started_at" => "[time]",
            ".run.finished_at" => "[time]",
            ".tenants[].updated_at" => "[time]",
            ".tenants[].duration_ms" => "[ms]",
            ".tenants[].runner" => "[runner]",
            ".run.runners[].id" => "[runner]",
            ".run.runners[].host" => "[host]",
            ".run.runners[].pid" => "[pid]",
            ".run.runners[].started_at" => "[time]",
            ".run.runners[].heartbeat_at" => "[time]",
            ".run.runners[].finished_at" => "[time]",
            ".run.runners[].is_live" => "[bool]",
        });

        let current = fleet.fleet(&["current", "--format", "json"]).assert_success();
        assert_json_snapshot!("fleet_current_json", current.json());

        // The second run: the failed tenant fails again, the others are skipped; one tenant in the slowest list,
        // so the text summary's order is fixed.
        let again = fleet.fleet(&["upgrade", "head", "--progress", "plain"]).assert_code(1);
        assert_snapshot!("fleet_upgrade_summary_text", again.stdout);
        let lines: Vec<&str> = again.stderr.lines().filter(|l| l.contains(" done: ")).collect();
        assert_snapshot!(
            "fleet_upgrade_plain_progress_last_line",
            lines.last().copied().unwrap_or_default()
        );
    });
}

#[tokio::test]
async fn observe_snapshots_of_single_database_json() {
    let project = example_project("");
    let db = TestDb::new("observe_snap_single");
    settings(project.path()).bind(|| {
        let heads = fl_offline(&project, &["heads", "--format", "json"]).assert_success();
        assert_json_snapshot!("heads_json", heads.json());
        let history = fl_offline(&project, &["history", "-r", "-2:", "--format", "json"]).assert_success();
        assert_json_snapshot!("history_json", history.json());

        let upgrade = fl(
            &project,
            &db,
            &["upgrade", crate::single_support::example::PRODUCTS, "--format", "json"],
        )
        .assert_success();
        assert_json_snapshot!("upgrade_json", upgrade.json(), { ".steps[].duration_ms" => "[ms]" });
        let current = fl(&project, &db, &["current", "--format", "json"]).assert_success();
        assert_json_snapshot!("current_json", current.json());
    });
}

/// `text` as a regex matching itself.
fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$#&-~".contains(c);
            special.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}
