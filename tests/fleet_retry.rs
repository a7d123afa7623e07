//! `fleet retry` is the same run again: each tenant keeps the absolute target its first plan resolved, the run's
//! safety options (canary, thresholds, pace) carry over, an older run can be named, and a live run is refused.

use crate::fleet_support::{slow_tables_at, Fleet, Revisions, SLOW_REVISIONS};

fn statuses(fleet: &Fleet) -> std::collections::BTreeMap<String, String> {
    Fleet::status_tenants(&fleet.status(None))
        .into_iter()
        .map(|(id, t)| (id, t["status"].as_str().unwrap_or_default().to_string()))
        .collect()
}

#[tokio::test]
async fn fleet_retry_of_a_relative_downgrade_never_goes_further_than_the_run_meant() {
    let fleet = Fleet::new("retry_relative", 3, 0, Revisions::Fixture("fleet_slow"), 3);
    fleet.upgrade(&[]).assert_success();
    // tenant_0002 cannot drop `notes` while a view uses it: its downgrade -2 stops after the first step.
    fleet
        .db
        .execute("CREATE VIEW tenant_0002.notes_view AS SELECT * FROM tenant_0002.notes");
    let out = fleet.fleet(&["downgrade", "-2", "--progress", "none"]).assert_code(1);
    let status = Fleet::status_tenants(&fleet.status(None));
    assert_eq!(status["tenant_0002"]["status"], "failed", "{}", out.report());
    assert_eq!(status["tenant_0002"]["target_revision"], SLOW_REVISIONS[0]);

    fleet.db.execute("DROP VIEW tenant_0002.notes_view");
    let retried = fleet.retry(&[]).assert_success();
    let versions = fleet.versions().await;
    for (id, rows) in &versions {
        assert_eq!(
            rows,
            &[SLOW_REVISIONS[0]],
            "{id}: -2 from head, once\n{}",
            retried.report()
        );
    }
    let tables = fleet.user_tables().await;
    assert_eq!(tables["tenant_0002"], slow_tables_at(Some(SLOW_REVISIONS[0])));
}

#[tokio::test]
async fn fleet_retry_keeps_the_canary_and_names_what_it_inherited() {
    let fleet = Fleet::new("retry_canary", 4, 0, Revisions::Fixture("fleet_slow"), 4);
    // The first tenant, the canary, cannot create `items`.
    fleet.db.execute("CREATE TABLE tenant_0001.items (id int)");
    fleet.upgrade(&["--canary", "1", "--max-failures", "5"]).assert_code(3);

    let out = fleet.retry(&[]).assert_code(3);
    assert!(
        out.stdout.contains("inherited:")
            && out.stdout.contains("--canary 1")
            && out.stdout.contains("--max-failures 5"),
        "{}",
        out.report()
    );
    let versions = fleet.versions().await;
    for id in ["tenant_0002", "tenant_0003", "tenant_0004"] {
        assert!(
            versions[id].is_empty(),
            "{id} ran although the canary failed again\n{}",
            out.report()
        );
    }

    // An option given on the retry's command line wins over the inherited one.
    let out = fleet.retry(&["--canary", "0"]).assert_code(1);
    assert!(
        out.stdout.contains("overridden on this command line: --canary"),
        "{}",
        out.report()
    );
    let got = statuses(&fleet);
    assert_eq!(got["tenant_0001"], "failed");
    for id in ["tenant_0002", "tenant_0003", "tenant_0004"] {
        assert_eq!(got[id], "succeeded", "{id}");
    }
}

#[tokio::test]
async fn fleet_retry_names_an_older_run_and_notes_hidden_failures() {
    let fleet = Fleet::new("retry_older", 2, 0, Revisions::Fixture("fleet_slow"), 2);
    fleet.db.execute("CREATE TABLE tenant_0001.items (id int)");
    fleet.upgrade(&["--tenant", "tenant_0001"]).assert_code(1);
    let first = fleet.status(None)["run"]["id"].as_str().expect("run id").to_string();
    fleet.upgrade(&["--tenant", "tenant_0002"]).assert_success();

    // The latest run has nothing to retry, and says the earlier one still does.
    let out = fleet.retry(&[]).assert_success();
    assert!(out.stdout.contains("Nothing to retry"), "{}", out.report());
    assert!(
        out.stderr.contains(&format!("earlier run {first}")) && out.stderr.contains(&format!("--run {first}")),
        "{}",
        out.report()
    );

    fleet.db.execute("DROP TABLE tenant_0001.items");
    fleet.retry(&["--run", &first]).assert_success();
    let versions = fleet.versions().await;
    assert_eq!(versions["tenant_0001"], [SLOW_REVISIONS[2]]);

    fleet.retry(&["--run", "no-such-run"]).assert_code(2);
}

#[test]
fn fleet_retry_refuses_a_run_still_in_progress() {
    let fleet = Fleet::new("retry_live", 4, 0, Revisions::Fixture("fleet_slow"), 1);
    let child = fleet.spawn_upgrade(&["--concurrency", "1"]);
    crate::fleet_support::wait_for("the run to be recorded", std::time::Duration::from_secs(30), || {
        let mut status = fleet.project.flotilla();
        status
            .args(["fleet", "status", "--format", "json", "--ledger"])
            .arg(&fleet.ledger);
        status.output().check_code(0).ok()
    });
    let out = fleet.retry(&[]).assert_code(4);
    assert!(out.stderr.contains("still in progress"), "{}", out.report());
    let (code, stdout, stderr) = crate::fleet_support::finish(child, std::time::Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
}
