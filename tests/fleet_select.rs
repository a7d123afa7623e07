//! Tenant selection: `--tenant`, `--tag`, `--exclude`, `--only-failed` and `--dry-run` touch exactly the tenants
//! they name, as PostgreSQL and the ledger show.

use std::collections::BTreeSet;

use crate::fleet_support::{Fleet, Revisions, REPO_HEAD, REPO_REVISIONS};

/// The tenants whose version table is at the repository's head.
async fn at_head(fleet: &Fleet) -> BTreeSet<String> {
    fleet
        .versions()
        .await
        .into_iter()
        .filter(|(_, rows)| *rows == [REPO_HEAD])
        .map(|(id, _)| id)
        .collect()
}

/// The tenants of the latest run in the ledger.
fn last_run_tenants(fleet: &Fleet) -> BTreeSet<String> {
    Fleet::status_tenants(&fleet.status(None)).into_keys().collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn fleet_selectors_touch_only_the_chosen_tenants() {
    // Tenants: db_01 (odd), db_02 (even), tenant_0001..tenant_0006 (odd/even alternating).
    let fleet = Fleet::new("fleet_select", 6, 2, Revisions::Repo, 4);

    fleet
        .upgrade(&["--tenant", "tenant_0001", "--tenant", "db_02"])
        .assert_success();
    assert_eq!(last_run_tenants(&fleet), set(&["db_02", "tenant_0001"]));
    assert_eq!(at_head(&fleet).await, set(&["db_02", "tenant_0001"]));

    fleet
        .upgrade(&["--tag", "parity=even", "--exclude", "tenant_0004"])
        .assert_success();
    assert_eq!(last_run_tenants(&fleet), set(&["db_02", "tenant_0002", "tenant_0006"]));
    let status = Fleet::status_tenants(&fleet.status(None));
    assert_eq!(status["db_02"]["status"], "skipped");
    assert_eq!(status["tenant_0002"]["status"], "succeeded");
    assert_eq!(
        at_head(&fleet).await,
        set(&["db_02", "tenant_0001", "tenant_0002", "tenant_0006"])
    );

    // Tags combine: every one must match.
    fleet
        .upgrade(&["--tag", "parity=odd", "--tag", "kind=database"])
        .assert_success();
    assert_eq!(last_run_tenants(&fleet), set(&["db_01"]));

    // An unknown --tenant is a usage error, and nothing runs.
    let before = fleet.status(None)["run"]["id"].clone();
    let out = fleet.upgrade(&["--tenant", "tenant_9999"]).assert_code(2);
    assert!(out.stderr.contains("tenant_9999"), "{}", out.report());
    assert_eq!(fleet.status(None)["run"]["id"], before);
}

#[tokio::test]
async fn fleet_dry_run_prints_plans_and_changes_nothing() {
    let fleet = Fleet::new("fleet_dry_run", 3, 1, Revisions::Repo, 4);
    fleet.upgrade(&["--tenant", "tenant_0002"]).assert_success();
    let run_before = fleet.status(None)["run"]["id"].clone();

    let out = fleet.upgrade(&["--dry-run"]).assert_success();
    // One line per distinct plan, with its tenant count; the tenants only with -v.
    assert!(
        out.stdout
            .contains(&format!("3 tenants from base to {REPO_HEAD}: {REPO_REVISIONS} steps")),
        "{}",
        out.report()
    );
    assert!(!out.stdout.contains("tenant tenant_0001"), "{}", out.report());
    assert!(
        out.stdout.contains("          up 4c2d8e1f9a07 create users"),
        "{}",
        out.report()
    );
    assert!(
        out.stdout
            .contains("Dry run: would change 3 tenants / at target 1; nothing was changed"),
        "{}",
        out.report()
    );
    // The run summary, which would call every tenant skipped, is not printed.
    assert!(
        !out.stdout.contains("skipped") && !out.stderr.contains("skipped"),
        "{}",
        out.report()
    );
    let verbose = fleet.upgrade(&["--dry-run", "-v"]).assert_success();
    for id in ["db_01", "tenant_0001", "tenant_0003"] {
        assert!(
            verbose.stdout.contains(&format!("tenant {id}\n")),
            "{}",
            verbose.report()
        );
    }
    assert!(!verbose.stdout.contains("tenant tenant_0002"), "{}", verbose.report());

    // The plan is stdout's only document (regression: the run summary used to precede it there).
    let plan = fleet
        .upgrade(&["--dry-run", "--format", "json"])
        .assert_success()
        .json();
    assert_eq!(plan["dry_run"], true, "{plan:#}");
    assert_eq!(plan["n_would_change"], 3, "{plan:#}");
    assert_eq!(plan["n_at_target"], 1, "{plan:#}");
    assert_eq!(plan["plans"].as_array().map(Vec::len), Some(1), "{plan:#}");
    assert_eq!(plan["plans"][0]["n_tenants"], 3, "{plan:#}");
    let planned: BTreeSet<String> = plan["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(planned, set(&["db_01", "tenant_0001", "tenant_0003"]));
    for t in plan["tenants"].as_array().unwrap() {
        assert_eq!(t["steps"].as_array().unwrap().len(), REPO_REVISIONS, "{t}");
        assert_eq!(t["steps"][0]["revision"], "4c2d8e1f9a07", "{t}");
    }

    // Nothing changed: no version table anywhere new, no run in the ledger.
    let versions = fleet.versions().await;
    for (id, rows) in &versions {
        let expected: Vec<String> = if id == "tenant_0002" {
            vec![REPO_HEAD.into()]
        } else {
            vec![]
        };
        assert_eq!(rows, &expected, "{id}");
    }
    let main = fleet.db.client().await;
    for schema in ["tenant_0001", "tenant_0003"] {
        assert_eq!(
            crate::harness::tables(&main, schema).await,
            Vec::<String>::new(),
            "{schema}"
        );
    }
    assert_eq!(fleet.status(None)["run"]["id"], run_before);
}

#[tokio::test]
async fn fleet_only_failed_reruns_the_failed_tenants() {
    let fleet = Fleet::new("fleet_only_failed", 5, 0, Revisions::Repo, 4);
    fleet.db.execute("CREATE TABLE tenant_0003.orders (id int)");
    fleet.upgrade(&[]).assert_code(1);
    fleet.db.execute("DROP TABLE tenant_0003.orders");

    fleet.upgrade(&["--only-failed"]).assert_success();
    assert_eq!(last_run_tenants(&fleet), set(&["tenant_0003"]));
    assert_eq!(at_head(&fleet).await, fleet.ids().into_iter().collect());

    // Nothing failed in the last run: --only-failed has nothing to do and says so.
    let out = fleet.upgrade(&["--only-failed"]).assert_success();
    assert!(out.stdout.contains("Nothing to do"), "{}", out.report());
}

/// Two heads above one base: `-1` cannot say which to take down.
const TWO_HEADS: [(&str, &str); 3] = [
    (
        "a_base.sql",
        "-- revision: aaaa00000001\n-- down_revision:\n\n-- flotilla:upgrade\nCREATE TABLE base_t (id int);\n\n\
         -- flotilla:downgrade\nDROP TABLE base_t;\n",
    ),
    (
        "b_left.sql",
        "-- revision: bbbb00000002\n-- down_revision: aaaa00000001\n\n-- flotilla:upgrade\nCREATE TABLE left_t (id int);\n\n\
         -- flotilla:downgrade\nDROP TABLE left_t;\n",
    ),
    (
        "c_right.sql",
        "-- revision: cccc00000003\n-- down_revision: aaaa00000001\n\n-- flotilla:upgrade\nCREATE TABLE right_t (id int);\n\n\
         -- flotilla:downgrade\nDROP TABLE right_t;\n",
    ),
];

#[tokio::test]
async fn downgrade_minus_one_with_several_heads_is_refused_with_targets_that_work() {
    let db = crate::harness::TestDb::new("two_heads");
    let project = crate::harness::TempProject::with_revisions(&format!("url = \"{}\"\n", db.url()), &TWO_HEADS);
    project.flotilla().args(["upgrade", "heads"]).assert_success();

    let out = project.flotilla().args(["downgrade", "-1"]).assert_code(2);
    assert!(
        out.stderr.contains("several heads (bbbb00000002, cccc00000003)")
            && out.stderr.contains("`bbbb00000002@-1` or `cccc00000003@-1`"),
        "{}",
        out.report()
    );
    let client = db.client().await;
    let rows = crate::harness::version_rows(&client, "flotilla_version").await;
    assert_eq!(rows, ["bbbb00000002", "cccc00000003"], "nothing changed");

    // The hint works.
    project
        .flotilla()
        .args(["downgrade", "cccc00000003@-1"])
        .assert_success();
    let rows = crate::harness::version_rows(&client, "flotilla_version").await;
    assert_eq!(rows, ["bbbb00000002"]);
}

#[test]
fn fleet_exclude_of_an_unknown_tenant_is_refused() {
    let fleet = Fleet::new("fleet_exclude_typo", 2, 0, Revisions::Repo, 2);
    let out = fleet.upgrade(&["--exclude", "tenant_9999"]).assert_code(2);
    assert!(
        out.stderr
            .contains("unknown tenant id(s) given with --exclude: tenant_9999"),
        "{}",
        out.report()
    );
    let mut status = fleet.project.flotilla();
    status.args(["fleet", "status", "--ledger"]).arg(&fleet.ledger);
    assert!(status.output().code() != Some(0), "no run was recorded");
}

/// The tenant ids a `fleet status --format json` document shows.
fn shown_ids(status: &serde_json::Value) -> Vec<&str> {
    status["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| t["id"].as_str().expect("id"))
        .collect()
}

#[test]
fn fleet_status_and_current_take_the_selectors() {
    let fleet = Fleet::new("fleet_status_select", 4, 0, Revisions::Repo, 4);
    fleet.upgrade(&[]).assert_success();
    let mut status = fleet.project.flotilla();
    status
        .args([
            "fleet",
            "status",
            "--format",
            "json",
            "--tenant",
            "tenant_0002",
            "--ledger",
        ])
        .arg(&fleet.ledger);
    let shown = status.assert_success().json();
    assert_eq!(shown_ids(&shown), ["tenant_0002"]);

    let mut tagged = fleet.project.flotilla();
    tagged
        .args([
            "fleet",
            "status",
            "--format",
            "json",
            "--tag",
            "parity=even",
            "--exclude",
            "tenant_0004",
        ])
        .arg("--tenants")
        .arg(&fleet.tenants_file)
        .arg("--ledger")
        .arg(&fleet.ledger);
    let shown = tagged.assert_success().json();
    assert_eq!(shown_ids(&shown), ["tenant_0002"]);

    let mut typo = fleet.project.flotilla();
    typo.args(["fleet", "status", "--exclude", "nope", "--ledger"])
        .arg(&fleet.ledger);
    typo.assert_code(2);

    let current = fleet
        .fleet(&["current", "--format", "json", "--tag", "parity=odd"])
        .assert_success()
        .json();
    assert_eq!(current["n_tenants"], 2, "{current:#}");
}
