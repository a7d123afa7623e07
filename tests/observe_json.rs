//! Every JSON output of a fleet run parses and tells the same story as the ledger and the databases: the
//! `--format json` summary, `fleet status --format json`, `fleet current --format json` and the NDJSON events.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::fleet_support::{read_events, Fleet, Revisions, REPO_HEAD, REPO_REVISIONS};

/// A ledger revision column (`a,b` or null) as sorted revision ids.
fn split(revisions: &Value) -> Vec<String> {
    let mut out: Vec<String> = revisions
        .as_str()
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// An event's revision list as sorted ids.
fn list(revisions: &Value) -> Vec<String> {
    let mut out: Vec<String> = revisions
        .as_array()
        .expect("a revision list")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn observe_json_outputs_agree_with_the_ledger() {
    let fleet = Fleet::new("observe_json", 6, 2, Revisions::Repo, 4);
    let broken = "tenant_0003";
    fleet.db.execute("CREATE TABLE tenant_0003.orders (id int)");
    let events_path = fleet.project.path().join("events.ndjson");

    let run = fleet
        .upgrade(&["--format", "json", "--events"])
        .arg(&events_path)
        .assert_code(1);
    let summary = run.json();

    let status = fleet.status(None);
    let ledger_run = &status["run"];
    let ledger = Fleet::status_tenants(&status);
    let run_id = ledger_run["id"].as_str().unwrap();
    assert_eq!(ledger_run["n_tenants"], 8);
    assert_eq!(ledger_run["exit_code"], 1);
    assert_eq!(ledger_run["command"], "upgrade");
    assert_eq!(ledger_run["target"], "head");

    // The summary printed by the run.
    assert_eq!(summary["v"], 1, "{summary:#}");
    assert_eq!(summary["run_id"], run_id, "{summary:#}");
    assert_eq!(summary["exit_code"], 1, "{summary:#}");
    for state in ["succeeded", "failed", "skipped", "interrupted"] {
        assert_eq!(
            summary["counts"][state], ledger_run["counts"][state],
            "{state}: {summary:#}"
        );
    }
    assert_eq!(ledger_run["counts"]["succeeded"], 7);
    assert_eq!(summary["failures"][0]["sqlstate"], "42P07", "{summary:#}");
    assert_eq!(summary["failures"][0]["examples"], json!([broken]), "{summary:#}");
    assert!(
        summary["retry_command"]
            .as_str()
            .unwrap_or("")
            .contains("fleet retry --ledger"),
        "{summary:#}"
    );

    // The ledger against the databases.
    let versions = fleet.versions().await;
    for (id, t) in &ledger {
        assert_eq!(split(&t["to_revision"]), versions[id], "{id}: {t}");
        let expected = if id == broken { "failed" } else { "succeeded" };
        assert_eq!(t["status"], expected, "{id}: {t}");
    }

    // The event stream: every line versioned and named, tenant events name a tenant of the run.
    let events = read_events(&events_path);
    assert!(events.len() > 8 * 3, "{events:#?}");
    let tenant_events = [
        "tenant_started",
        "tenant_planned",
        "revision_started",
        "revision_applied",
        "tenant_retrying",
        "tenant_succeeded",
        "tenant_skipped",
        "tenant_failed",
        "tenant_interrupted",
    ];
    for e in &events {
        assert_eq!(e["v"], 1, "{e}");
        assert!(e["ts"].is_string(), "{e}");
        let name = e["event"].as_str().unwrap_or_else(|| panic!("no event name: {e}"));
        if tenant_events.contains(&name) {
            let tenant = e["tenant"].as_str().unwrap_or_else(|| panic!("no tenant: {e}"));
            assert!(ledger.contains_key(tenant), "unknown tenant in {e}");
        }
    }
    let first = &events[0];
    assert_eq!(first["event"], "run_started", "{first}");
    assert_eq!((&first["run_id"], &first["n_tenants"]), (&json!(run_id), &json!(8)));
    let last = events.last().unwrap();
    assert_eq!(last["event"], "run_finished", "{last}");
    assert_eq!(last["run_id"], run_id);
    assert_eq!(last["exit_code"], 1);
    for state in ["succeeded", "failed", "skipped", "interrupted"] {
        assert_eq!(last[state], ledger_run["counts"][state], "{state}: {last}");
    }
    let mut outcome: BTreeMap<String, &Value> = BTreeMap::new();
    for e in &events {
        if ["tenant_succeeded", "tenant_failed", "tenant_skipped"].contains(&e["event"].as_str().unwrap()) {
            let previous = outcome.insert(e["tenant"].as_str().unwrap().to_string(), e);
            assert!(previous.is_none(), "two outcomes for one tenant: {e}");
        }
    }
    assert_eq!(outcome.len(), 8);
    for (id, e) in &outcome {
        let t = &ledger[id];
        assert_eq!(format!("tenant_{}", t["status"].as_str().unwrap()), e["event"], "{id}");
        assert_eq!(list(&e["to"]), split(&t["to_revision"]), "{id}");
        assert_eq!(e["attempts"], t["attempts"], "{id}");
    }
    assert_eq!(outcome[broken]["sqlstate"], "42P07");
    assert_eq!(outcome[broken]["failed_revision"], ledger[broken]["failed_revision"]);
    let applied = events.iter().filter(|e| e["event"] == "revision_applied").count();
    let applied_by_broken = applied_before_failure(&events, broken);
    // users and products come before orders on every path through the graph.
    assert!(applied_by_broken >= 2, "{events:#?}");
    // Every revision on each of the 7 tenants that succeeded, and those the broken one applied before it failed.
    assert_eq!(applied, 7 * REPO_REVISIONS + applied_by_broken);

    // `fleet current` reads the databases and agrees with all of the above.
    let current = fleet
        .fleet(&["current", "--format", "json", "--verbose"])
        .assert_success()
        .json();
    assert_eq!(current["n_tenants"], 8, "{current:#}");
    let broken_at = versions[broken].join(",");
    assert_eq!(
        current["at"],
        json!({ REPO_HEAD: 7, broken_at.clone(): 1 }),
        "{current:#}"
    );
    assert_eq!(
        current["behind"],
        json!([{ "id": broken, "revisions": versions[broken] }]),
        "{current:#}"
    );
    assert_eq!(current["unreachable"], json!([]));
    for t in current["tenants"].as_array().expect("--verbose lists tenants") {
        let id = t["id"].as_str().unwrap();
        assert_eq!(list(&t["revisions"]), versions[id], "{id}");
    }
}

/// How many revisions `tenant` applied before it failed, by its own events.
fn applied_before_failure(events: &[Value], tenant: &str) -> usize {
    events
        .iter()
        .filter(|e| e["event"] == "revision_applied" && e["tenant"] == tenant)
        .count()
}
