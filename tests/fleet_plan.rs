//! `fleet plan` and the bulk read of schema tenants' version rows (`fleet current` and `fleet plan` read a
//! server database's schema tenants in a few statements, not a session per tenant): checked against reading
//! each tenant on its own, on a fleet with mixed revisions, a tenant without a version table and a missing
//! schema.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::fleet_support::{Fleet, Revisions, REPO_HEAD, REPO_REVISIONS};
use crate::single_support::example::UPGRADE_ORDER;

/// 8 schema tenants and 2 database tenants: 0001-0003 and db_01 at head, 0004-0005 at the first revision,
/// 0006-0008 and db_02 untouched (no version table), and 0008's schema dropped.
fn mixed_fleet() -> Fleet {
    let fleet = Fleet::new("fleet_plan", 8, 2, Revisions::Repo, 8);
    let first = UPGRADE_ORDER[0];
    fleet
        .upgrade(&[
            "--tenant",
            "tenant_0001",
            "--tenant",
            "tenant_0002",
            "--tenant",
            "tenant_0003",
            "--tenant",
            "db_01",
        ])
        .assert_success();
    let mut to_first = fleet.fleet(&["upgrade", first, "--progress", "none"]);
    to_first.args(["--tenant", "tenant_0004", "--tenant", "tenant_0005"]);
    to_first.assert_success();
    fleet.db.execute("DROP SCHEMA tenant_0008 CASCADE;");
    fleet
}

/// Each tenant's version rows as `fleet current --format json --verbose` read them.
fn rows_read(current: &Value) -> BTreeMap<String, Vec<String>> {
    current["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let rows = t["revisions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_string());
            (t["id"].as_str().unwrap().to_string(), rows.collect())
        })
        .collect()
}

#[tokio::test]
async fn bulk_reads_agree_with_reading_each_tenant() {
    let fleet = mixed_fleet();
    let current = fleet
        .fleet(&["current", "--format", "json", "--verbose"])
        .assert_code(1)
        .json();
    let read = rows_read(&current);
    let mut direct = fleet.versions().await;
    direct.remove("tenant_0008");
    assert_eq!(read, direct, "fleet current's bulk read equals per-tenant reads");
    let missing: Vec<&str> = current["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(missing, ["tenant_0008"]);
    assert_eq!(read["tenant_0001"], [REPO_HEAD]);
    assert_eq!(read["tenant_0004"], [UPGRADE_ORDER[0]]);
    assert!(read["tenant_0006"].is_empty() && read["db_02"].is_empty());
}

fn plan_groups(plan: &Value) -> BTreeMap<String, (u64, usize)> {
    plan["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let from: Vec<&str> = g["from"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            let key = if from.is_empty() {
                "base".to_string()
            } else {
                from.join(",")
            };
            (
                key,
                (g["n_tenants"].as_u64().unwrap(), g["steps"].as_array().unwrap().len()),
            )
        })
        .collect()
}

#[test]
fn fleet_plan_groups_tenants_by_plan_and_gates_on_its_exit_code() {
    let fleet = mixed_fleet();
    // The missing schema makes it exit 1 and is listed.
    let plan = fleet.fleet(&["plan", "head", "--format", "json"]).assert_code(1).json();
    assert_eq!(plan["missing"][0]["id"], "tenant_0008");

    let plan = fleet
        .fleet(&["plan", "head", "--format", "json", "-v", "--exclude", "tenant_0008"])
        .assert_code(10)
        .json();
    assert_eq!(plan["v"], 1);
    assert_eq!(plan["n_would_change"], 5);
    assert_eq!(plan["n_at_target"], 4);
    let groups = plan_groups(&plan);
    assert_eq!(groups[REPO_HEAD], (4, 0));
    assert_eq!(groups[UPGRADE_ORDER[0]], (2, REPO_REVISIONS - 1));
    assert_eq!(groups["base"], (3, REPO_REVISIONS));
    let at_head = plan["plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["steps"] == serde_json::json!([]))
        .unwrap();
    let mut members: Vec<&str> = at_head["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    members.sort();
    assert_eq!(members, ["db_01", "tenant_0001", "tenant_0002", "tenant_0003"]);
    // Nothing changed.
    let text = fleet
        .fleet(&["plan", "head", "--exclude", "tenant_0008"])
        .assert_code(10);
    assert!(
        text.stdout.contains("would change 5 tenants / at target 4"),
        "{}",
        text.report()
    );
    assert!(text.stdout.contains("3 tenants from base"), "{}", text.report());

    fleet.upgrade(&["--exclude", "tenant_0008"]).assert_success();
    let done = fleet
        .fleet(&["plan", "head", "--exclude", "tenant_0008"])
        .assert_success();
    assert!(
        done.stdout.contains("would change 0 tenants / at target 9"),
        "{}",
        done.report()
    );
}

/// `fleet upgrade` skips the schema tenants its bulk read finds at the target without a worker (no
/// `tenant_started`, no attempt), records them as skipped, and still runs every other tenant: the schema
/// tenants behind, the database tenants (read by their own workers), and the missing schema (which fails).
#[test]
fn upgrade_skips_schema_tenants_at_the_target_without_a_session() {
    let fleet = mixed_fleet();
    let events = fleet.project.path().join("events.ndjson");
    fleet
        .upgrade(&["--events", &crate::fleet_support::Fleet::path_arg(&events)])
        .assert_code(1);
    let events = crate::fleet_support::read_events(&events);
    let started: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| e["event"] == "tenant_started")
        .map(|e| e["tenant"].as_str().unwrap())
        .collect();
    let skipped: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| e["event"] == "tenant_skipped")
        .map(|e| e["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(
        skipped,
        ["db_01", "tenant_0001", "tenant_0002", "tenant_0003"].into(),
        "every tenant at head is skipped"
    );
    assert_eq!(
        started,
        [
            "db_01",
            "db_02",
            "tenant_0004",
            "tenant_0005",
            "tenant_0006",
            "tenant_0007",
            "tenant_0008"
        ]
        .into(),
        "schema tenants at head start no worker; database tenants and tenants behind do"
    );
    let status = crate::fleet_support::Fleet::status_tenants(&fleet.status(None));
    for id in ["tenant_0001", "tenant_0002", "tenant_0003"] {
        assert_eq!(status[id]["status"], "skipped", "{id}: {}", status[id]);
        assert_eq!(status[id]["attempts"], 0, "{id}: {}", status[id]);
    }
    assert_eq!(status["tenant_0004"]["status"], "succeeded");
    assert_eq!(status["tenant_0008"]["status"], "failed");
    let finished = events.iter().find(|e| e["event"] == "run_finished").unwrap();
    assert_eq!(
        (finished["skipped"].as_u64(), finished["failed"].as_u64()),
        (Some(4), Some(1))
    );
}

/// More schemas than one chunk of the bulk read holds (several chunks read in parallel, each read split into
/// several statements): 1,201 schema tenants at head, at the first revision, without a version table, or with
/// the schema dropped, set up in SQL; the bulk read equals reading each tenant on its own.
#[tokio::test]
async fn bulk_reads_of_many_chunks_agree_with_reading_each_tenant() {
    let fleet = Fleet::new("fleet_plan_many", 1201, 0, Revisions::Repo, 3);
    fleet.db.execute(&format!(
        "DO $$ BEGIN FOR i IN 1..1201 LOOP
           IF i % 3 <> 2 THEN
             EXECUTE format('CREATE TABLE tenant_%s.flotilla_version (version_num varchar(255) PRIMARY KEY);
                             INSERT INTO tenant_%s.flotilla_version VALUES (%L)',
                            lpad(i::text, 4, '0'), lpad(i::text, 4, '0'), CASE WHEN i % 3 = 0 THEN '{REPO_HEAD}' ELSE '{}' END);
           END IF;
           IF i % 100 = 7 THEN EXECUTE format('DROP SCHEMA tenant_%s CASCADE', lpad(i::text, 4, '0')); END IF;
         END LOOP; END $$;",
        UPGRADE_ORDER[0]
    ));
    let current = fleet
        .fleet(&["current", "--format", "json", "--verbose"])
        .assert_code(1)
        .json();
    let read = rows_read(&current);
    let dropped: Vec<String> = (1..=1201)
        .filter(|i| i % 100 == 7)
        .map(|i| format!("tenant_{i:04}"))
        .collect();
    let mut direct = fleet.versions().await;
    for id in &dropped {
        direct.remove(id);
    }
    assert_eq!(read.len(), 1201 - dropped.len());
    assert_eq!(read, direct, "fleet current's bulk read equals per-tenant reads");
    assert_eq!(read["tenant_0003"], [REPO_HEAD]);
    assert_eq!(read["tenant_0004"], [UPGRADE_ORDER[0]]);
    assert!(read["tenant_0005"].is_empty());
    let mut missing: Vec<&str> = current["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    missing.sort();
    assert_eq!(missing, dropped);
}
