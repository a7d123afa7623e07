//! Fleet runs end to end on real databases: a mixed fleet of a couple of hundred tenants, a broken tenant and
//! `fleet retry`, and the halting rules (failure threshold, canaries).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::fleet_support::{repo_tables_at_head, Fleet, Revisions, REPO_HEAD};

fn statuses(status: &Value) -> BTreeMap<String, String> {
    Fleet::status_tenants(status)
        .into_iter()
        .map(|(id, t)| (id, t["status"].as_str().unwrap_or("?").to_string()))
        .collect()
}

fn all(ids: &[String], status: &str) -> BTreeMap<String, String> {
    ids.iter().map(|id| (id.clone(), status.to_string())).collect()
}

#[tokio::test]
async fn fleet_of_220_mixed_tenants_reaches_head_then_skips() {
    let fleet = Fleet::new("fleet_scale", 200, 20, Revisions::Repo, 10);
    let ids = fleet.ids();
    assert_eq!(ids.len(), 220);

    fleet.upgrade(&["--concurrency", "16"]).assert_success();

    let head = vec![REPO_HEAD.to_string()];
    let versions = fleet.versions().await;
    let at_head: BTreeMap<String, Vec<String>> = ids.iter().map(|id| (id.clone(), head.clone())).collect();
    assert_eq!(versions, at_head);
    let tables = fleet.user_tables().await;
    let expected_tables: BTreeMap<String, Vec<String>> =
        ids.iter().map(|id| (id.clone(), repo_tables_at_head())).collect();
    assert_eq!(tables, expected_tables);
    // Schema tenants got their tables in their own schema, not in the server database's public schema.
    let main = fleet.db.client().await;
    assert_eq!(crate::harness::tables(&main, "public").await, Vec::<String>::new());

    let status = fleet.status(None);
    assert_eq!(status["run"]["exit_code"], 0, "{status:#}");
    assert_eq!(status["run"]["state"], "finished");
    assert_eq!(status["run"]["n_tenants"], 220);
    assert_eq!(status["run"]["counts"]["succeeded"], 220, "{status:#}");
    assert_eq!(statuses(&status), all(&ids, "succeeded"));
    for (id, t) in Fleet::status_tenants(&status) {
        // A fresh tenant starts at base, which the ledger records as no revision.
        assert_eq!(t["from_revision"], Value::Null, "{id}: {t}");
        assert_eq!(t["to_revision"], REPO_HEAD, "{id}: {t}");
        assert_eq!(t["attempts"], 1, "{id}: {t}");
        let kind = if id.starts_with("db_") { "database" } else { "schema" };
        assert_eq!(t["kind"], kind, "{id}: {t}");
    }

    // Second run: nothing to do anywhere.
    fleet.upgrade(&["--concurrency", "16"]).assert_success();
    let second = fleet.status(None);
    assert_ne!(second["run"]["id"], status["run"]["id"]);
    assert_eq!(statuses(&second), all(&ids, "skipped"));
    for (id, t) in Fleet::status_tenants(&second) {
        assert_eq!(
            (&t["from_revision"], &t["to_revision"]),
            (&Value::from(REPO_HEAD), &Value::from(REPO_HEAD)),
            "{id}"
        );
    }
    assert_eq!(fleet.versions().await, at_head);

    let current = fleet.fleet(&["current", "--format", "json"]).assert_success().json();
    assert_eq!(current["n_tenants"], 220, "{current:#}");
    assert_eq!(current["heads"], serde_json::json!([REPO_HEAD]));
    assert_eq!(current["at"], serde_json::json!({ REPO_HEAD: 220 }), "{current:#}");
    assert_eq!(current["behind"], serde_json::json!([]));
    assert_eq!(current["unreachable"], serde_json::json!([]));
}

/// The revision that creates `orders`, which a pre-existing `orders` table makes fail with 42P07.
const CREATE_ORDERS: &str = "e5f0a9c3b284";

#[tokio::test]
async fn fleet_broken_tenant_fails_alone_and_retry_fixes_only_it() {
    let fleet = Fleet::new("fleet_broken", 12, 3, Revisions::Repo, 6);
    let broken = "tenant_0005";
    fleet
        .db
        .execute("CREATE TABLE tenant_0005.orders (legacy_code text PRIMARY KEY, note text)");

    fleet.upgrade(&["--concurrency", "6"]).assert_code(1);

    let status = fleet.status(None);
    assert_eq!(status["run"]["exit_code"], 1);
    let tenants = Fleet::status_tenants(&status);
    let mut expected = all(&fleet.ids(), "succeeded");
    expected.insert(broken.into(), "failed".into());
    assert_eq!(statuses(&status), expected);
    let failed = &tenants[broken];
    assert_eq!(failed["sqlstate"], "42P07", "{failed}");
    assert_eq!(failed["failed_revision"], CREATE_ORDERS, "{failed}");
    assert!(failed["error"].as_str().unwrap_or("").contains("orders"), "{failed}");
    let versions = fleet.versions().await;
    for (id, rows) in &versions {
        if id == broken {
            assert!(!rows.contains(&REPO_HEAD.to_string()), "{id}: {rows:?}");
            assert!(!rows.contains(&CREATE_ORDERS.to_string()), "{id}: {rows:?}");
        } else {
            assert_eq!(rows, &vec![REPO_HEAD.to_string()], "{id}");
        }
    }
    // The failed revision rolled back: the tenant still has its own `orders`, untouched.
    let main = fleet.db.client().await;
    let columns: Vec<String> = main
        .query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = 'tenant_0005' AND table_name = 'orders' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(columns, ["legacy_code", "note"]);

    fleet.db.execute("DROP TABLE tenant_0005.orders");
    let first_run = status["run"]["id"].clone();
    fleet.retry(&[]).assert_success();

    let retried = fleet.status(None);
    assert_ne!(retried["run"]["id"], first_run);
    assert_eq!(retried["run"]["n_tenants"], 1, "{retried:#}");
    assert_eq!(statuses(&retried), all(&[broken.to_string()], "succeeded"));
    let head = vec![REPO_HEAD.to_string()];
    let versions = fleet.versions().await;
    assert!(versions.values().all(|rows| *rows == head), "{versions:?}");
    assert_eq!(fleet.user_tables().await[broken], repo_tables_at_head());
    // The first run's record is unchanged by the retry.
    assert_eq!(statuses(&fleet.status(first_run.as_str())), expected);
}

#[tokio::test]
async fn fleet_failure_threshold_halts_before_the_rest_start() {
    let fleet = Fleet::new("fleet_threshold", 10, 0, Revisions::Repo, 2);
    for broken in ["tenant_0002", "tenant_0003", "tenant_0005"] {
        fleet.db.execute(&format!("CREATE TABLE {broken}.orders (id int)"));
    }

    let out = fleet
        .upgrade(&["--max-failures", "1", "--concurrency", "1"])
        .assert_code(3);

    let status = fleet.status(None);
    assert_eq!(status["run"]["exit_code"], 3, "{}", out.report());
    let got = statuses(&status);
    // One at a time, in id order: 0001 succeeds, 0002 fails (1 failure is allowed), 0003 fails and halts the run.
    assert_eq!(got["tenant_0001"], "succeeded");
    assert_eq!(got["tenant_0002"], "failed");
    assert_eq!(got["tenant_0003"], "failed");
    let never_started: Vec<&String> = got.keys().filter(|id| id.as_str() > "tenant_0003").collect();
    assert_eq!(never_started.len(), 7);
    for id in &never_started {
        assert_eq!(got[*id], "not_started", "{id}: {status:#}");
    }
    assert!(
        out.stdout.contains("halted by the failure threshold") && out.stdout.contains("after tenant_0003 failed"),
        "{}",
        out.report()
    );
    let versions = fleet.versions().await;
    for id in never_started {
        assert_eq!(versions[id], Vec::<String>::new(), "{id} was touched");
    }
}

/// A canary whose migration lock another run holds past `lock_wait` fails, and the run halts at once (it used to
/// wait for the canary forever).
#[tokio::test]
async fn fleet_canary_locked_past_lock_wait_halts_the_run() {
    let fleet = Fleet::new("fleet_canary_locked", 3, 0, Revisions::Repo, 4);
    fleet.project.write("flotilla.toml", "lock_wait = \"1s\"\n");
    let holder = fleet.db.client().await;
    // The key Flotilla takes for tenant_0001's version table ("flot", then the qualified table name).
    holder
        .batch_execute("SELECT pg_advisory_lock(1718382452, hashtext('tenant_0001.flotilla_version'))")
        .await
        .unwrap();

    let out = fleet
        .upgrade(&["--canary", "1"])
        .timeout(std::time::Duration::from_secs(60))
        .output();
    assert_eq!(out.code(), Some(3), "{}", out.report());
    let status = fleet.status(None);
    let got = statuses(&status);
    assert_eq!(got["tenant_0001"], "failed", "{status:#}");
    for id in ["tenant_0002", "tenant_0003"] {
        assert_eq!(got[id], "not_started", "{id}: {status:#}");
    }
    drop(holder);
}

#[tokio::test]
async fn fleet_failed_canary_halts_before_any_other_tenant() {
    let fleet = Fleet::new("fleet_canary", 8, 0, Revisions::Repo, 4);
    fleet.db.execute("CREATE TABLE tenant_0002.orders (id int)");

    let out = fleet.upgrade(&["--canary", "2", "--concurrency", "4"]).assert_code(3);
    assert!(
        out.stdout
            .contains("halted by the canary after tenant_0002 failed: 6 tenants did not start")
            && out.stdout.contains("relation \"orders\" already exists")
            && out.stdout.contains("keeps this run's canary"),
        "{}",
        out.report()
    );
    // `fleet status --exit-code` gates on the run: 1 while tenants failed or never started.
    let mut status_cmd = fleet.project.flotilla();
    status_cmd
        .args(["fleet", "status", "--exit-code", "--ledger"])
        .arg(&fleet.ledger);
    let shown = status_cmd.assert_code(1);
    assert!(
        shown
            .stdout
            .contains("total: 8 tenants, 1 succeeded, 1 failed, 6 not started"),
        "{}",
        shown.report()
    );

    let status = fleet.status(None);
    let got = statuses(&status);
    assert_eq!(got["tenant_0001"], "succeeded", "{status:#}");
    assert_eq!(got["tenant_0002"], "failed", "{status:#}");
    let versions = fleet.versions().await;
    for id in fleet.ids().iter().skip(2) {
        assert_eq!(got[id], "not_started", "{id}: {status:#}");
        assert_eq!(versions[id], Vec::<String>::new(), "{id} ran although a canary failed");
    }
}
