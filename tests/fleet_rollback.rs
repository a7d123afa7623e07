//! `fleet rollback --run ID` undoes exactly what one run changed: the tenants it moved go back to their rows before
//! it (also one that failed part way), every other tenant is untouched; irreversible revisions and tenants that moved
//! since are refused before anything changes; the rollback is a run of its own that `fleet status` shows and
//! `fleet retry` repeats to the same rows.

use std::collections::BTreeMap;

use crate::fleet_support::{Fleet, Revisions};

const A: &str = "a1a1a1a1a1a1";
const B: &str = "b2b2b2b2b2b2";
const C: &str = "c3c3c3c3c3c3";
const D: &str = "d4d4d4d4d4d4";
const E: &str = "e5e5e5e5e5e5";

fn fleet(hint: &str, n: usize) -> Fleet {
    Fleet::new(hint, n, 0, Revisions::Fixture("fleet_rollback"), 4)
}

fn rollback(fleet: &Fleet, run: &str, extra: &[&str]) -> crate::harness::Cmd {
    let mut cmd = fleet.fleet(&["rollback", "--run", run, "--progress", "none"]);
    cmd.args(extra);
    cmd
}

fn latest_run_id(fleet: &Fleet) -> String {
    fleet.status(None)["run"]["id"].as_str().expect("a run id").to_string()
}

fn rows(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn statuses(status: &serde_json::Value) -> BTreeMap<String, String> {
    Fleet::status_tenants(status)
        .into_iter()
        .map(|(id, t)| (id, t["status"].as_str().unwrap_or_default().to_string()))
        .collect()
}

#[tokio::test]
async fn fleet_rollback_restores_exactly_the_tenants_a_run_changed() {
    let fleet = fleet("rollback_mixed", 5);
    // tenant_0001 and tenant_0005 start at base, tenant_0002 and tenant_0004 at a1, tenant_0003 at c3 already.
    for (id, target) in [("tenant_0002", A), ("tenant_0004", A), ("tenant_0003", C)] {
        fleet
            .fleet(&["upgrade", target, "--tenant", id, "--progress", "none"])
            .assert_success();
    }
    // tenant_0004 fails at c3 after b2 committed; tenant_0005 fails at its first revision.
    fleet.db.execute("CREATE TABLE tenant_0004.prices (id int)");
    fleet.db.execute("CREATE TABLE tenant_0005.items (id int)");
    let out = fleet.fleet(&["upgrade", C, "--progress", "none"]).assert_code(1);
    let run = latest_run_id(&fleet);
    let got = statuses(&fleet.status(Some(&run)));
    assert_eq!(got["tenant_0003"], "skipped", "{}", out.report());
    assert_eq!(got["tenant_0004"], "failed", "{}", out.report());
    assert_eq!(got["tenant_0005"], "failed", "{}", out.report());
    let before = fleet.versions().await;
    assert_eq!(before["tenant_0004"], rows(&[B]), "b2 committed before c3 failed");

    // A tenant the run did not change is not a rollback's to choose.
    let out = rollback(&fleet, &run, &["--tenant", "tenant_0005"]).assert_code(2);
    assert!(
        out.stderr.contains("did not change") && out.stderr.contains("tenant_0005"),
        "{}",
        out.report()
    );

    // The dry run shows the three tenants going back and changes nothing.
    let out = rollback(&fleet, &run, &["--dry-run", "-v"]).assert_success();
    assert!(out.stdout.contains("would change 3 tenants"), "{}", out.report());
    for id in ["tenant_0001", "tenant_0002", "tenant_0004"] {
        assert!(out.stdout.contains(&format!("tenant {id}")), "{id}\n{}", out.report());
    }
    assert_eq!(
        fleet.versions().await,
        fleet_versions_after_run(),
        "the dry run changed nothing"
    );
    assert_eq!(latest_run_id(&fleet), run, "a dry run records no run");

    // --tenant narrows the rollback to one of the tenants the run changed.
    let out = rollback(&fleet, &run, &["--tenant", "tenant_0002"]).assert_success();
    let mut want = fleet_versions_after_run();
    want.insert("tenant_0002".into(), rows(&[A]));
    assert_eq!(fleet.versions().await, want, "{}", out.report());

    // The whole rollback: tenant_0002 is back already and is skipped.
    let out = rollback(&fleet, &run, &[]).assert_success();
    assert!(
        out.stdout.contains(&format!("Rollback of run {run}")),
        "{}",
        out.report()
    );
    let after = fleet.versions().await;
    let want: BTreeMap<String, Vec<String>> = [
        ("tenant_0001", rows(&[])),
        ("tenant_0002", rows(&[A])),
        ("tenant_0003", rows(&[C])),
        ("tenant_0004", rows(&[A])),
        ("tenant_0005", rows(&[])),
    ]
    .into_iter()
    .map(|(id, r)| (id.to_string(), r))
    .collect();
    assert_eq!(after, want, "{}", out.report());
    let tables = fleet.user_tables().await;
    assert_eq!(tables["tenant_0001"], Vec::<String>::new());
    assert_eq!(tables["tenant_0002"], rows(&["items"]));
    assert_eq!(tables["tenant_0003"], rows(&["items", "notes", "prices"]));
    // tenant_0004 keeps the table that blocked it; tenant_0005 its own `items`.
    assert_eq!(tables["tenant_0004"], rows(&["items", "prices"]));
    assert_eq!(tables["tenant_0005"], rows(&["items"]));

    // The rollback is a run of its own: `rollback RUN`, with only the changed tenants, each to its old rows.
    let status = fleet.status(None);
    assert_eq!(status["run"]["command"], "rollback");
    assert_eq!(status["run"]["target"], run.as_str());
    let tenants = Fleet::status_tenants(&status);
    assert_eq!(
        tenants.keys().cloned().collect::<Vec<_>>(),
        rows(&["tenant_0001", "tenant_0002", "tenant_0004"])
    );
    assert_eq!(tenants["tenant_0001"]["target_revision"], "base");
    assert_eq!(tenants["tenant_0002"]["target_revision"], A);
    assert_eq!(tenants["tenant_0004"]["target_revision"], A);
    assert_eq!(tenants["tenant_0001"]["status"], "succeeded", "{status}");
    assert_eq!(tenants["tenant_0002"]["status"], "skipped", "{status}");
    assert_eq!(tenants["tenant_0004"]["status"], "succeeded", "{status}");
    let text = fleet.fleet(&["status"]).assert_success();
    assert!(text.stdout.contains(&format!("rollback {run}")), "{}", text.report());
}

/// What the mixed fleet holds after its run, before any rollback.
fn fleet_versions_after_run() -> BTreeMap<String, Vec<String>> {
    [
        ("tenant_0001", rows(&[C])),
        ("tenant_0002", rows(&[C])),
        ("tenant_0003", rows(&[C])),
        ("tenant_0004", rows(&[B])),
        ("tenant_0005", rows(&[])),
    ]
    .into_iter()
    .map(|(id, r)| (id.to_string(), r))
    .collect()
}

#[tokio::test]
async fn fleet_rollback_refuses_irreversible_revisions_by_name_until_forced() {
    let fleet = fleet("rollback_irreversible", 2);
    fleet.fleet(&["upgrade", C, "--progress", "none"]).assert_success();
    let first = latest_run_id(&fleet);
    fleet.db.execute("INSERT INTO tenant_0001.items VALUES (1, 'One')");
    fleet.upgrade(&[]).assert_success();
    let second = latest_run_id(&fleet);
    let at_head = fleet.versions().await;
    assert!(at_head.values().all(|r| *r == rows(&[E])), "{at_head:?}");

    let out = rollback(&fleet, &second, &[]).assert_code(2);
    for needle in [
        "nothing was changed",
        &format!("tenant_0001: revision {D}: its backfill has no reverse"),
        &format!("tenant_0002: revision {E}: it has no downgrade SQL"),
        "--force",
    ] {
        assert!(out.stderr.contains(needle), "{needle}\n{}", out.report());
    }
    assert_eq!(fleet.versions().await, at_head, "a refused rollback changes nothing");
    assert_eq!(latest_run_id(&fleet), second, "a refused rollback records no run");

    // The JSON document names the same revisions.
    let json = fleet.fleet(&["rollback", "--run", &second, "--format", "json"]);
    let doc = json.assert_code(2).json();
    assert_eq!(doc["refused"], true);
    let named: Vec<(String, String)> = doc["irreversible"]
        .as_array()
        .expect("irreversible list")
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap().to_string(),
                v["revision"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(named.len(), 4, "{doc}");
    assert!(named.contains(&("tenant_0002".to_string(), D.to_string())), "{doc}");

    // The earlier run cannot be rolled back while its tenants sit above where it left them, not even with --force.
    let out = rollback(&fleet, &first, &["--force"]).assert_code(2);
    assert!(
        out.stderr.contains("moved since the run") && out.stderr.contains(&format!("now at {E}")),
        "{}",
        out.report()
    );

    let out = rollback(&fleet, &second, &["--force"]).assert_success();
    let back = fleet.versions().await;
    assert!(back.values().all(|r| *r == rows(&[C])), "{back:?}\n{}", out.report());
    let client = fleet.db.client().await;
    let n_slug: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'tenant_0001' \
             AND table_name = 'items' AND column_name = 'slug'",
            &[],
        )
        .await
        .expect("read the catalog")
        .get(0);
    assert_eq!(n_slug, 0, "the backfilled column's downgrade ran");

    // Now the first run's tenants are where it left them: it rolls back to base.
    rollback(&fleet, &first, &[]).assert_success();
    let base = fleet.versions().await;
    assert!(base.values().all(|r| r.is_empty()), "{base:?}");
}

#[tokio::test]
async fn fleet_retry_of_a_rollback_goes_back_to_the_rows_before_the_run() {
    let fleet = fleet("rollback_retry", 3);
    fleet.fleet(&["upgrade", A, "--progress", "none"]).assert_success();
    fleet.fleet(&["upgrade", C, "--progress", "none"]).assert_success();
    let run = latest_run_id(&fleet);
    // tenant_0002 cannot drop `notes` while a view uses it: its rollback stops after c3's downgrade.
    fleet
        .db
        .execute("CREATE VIEW tenant_0002.notes_view AS SELECT * FROM tenant_0002.notes");
    let out = rollback(&fleet, &run, &[]).assert_code(1);
    let status = fleet.status(None);
    let rollback_run = status["run"]["id"].as_str().expect("run id").to_string();
    assert_eq!(status["run"]["command"], "rollback", "{}", out.report());
    assert!(
        out.stdout.contains(&format!(": rollback to before {run},")),
        "{}",
        out.report()
    );
    let tenants = Fleet::status_tenants(&status);
    assert_eq!(tenants["tenant_0002"]["status"], "failed");
    assert_eq!(tenants["tenant_0002"]["target_revision"], A);
    let versions = fleet.versions().await;
    assert_eq!(versions["tenant_0001"], rows(&[A]));
    assert_eq!(versions["tenant_0002"], rows(&[B]));
    assert_eq!(versions["tenant_0003"], rows(&[A]));

    // Part of the way back is not "moved since the run": rolling the run back again would be accepted.
    let again = rollback(&fleet, &run, &["--dry-run", "-v"]).assert_success();
    assert!(
        again.stdout.contains(&format!("1 tenant from {B} to {A}")) && again.stdout.contains("tenant tenant_0002"),
        "{}",
        again.report()
    );

    fleet.db.execute("DROP VIEW tenant_0002.notes_view");
    let out = fleet.retry(&[]).assert_success();
    assert!(out.stdout.contains("Retrying 1 tenant"), "{}", out.report());
    let versions = fleet.versions().await;
    for (id, r) in &versions {
        assert_eq!(r, &rows(&[A]), "{id}: back to a1, not base, not head\n{}", out.report());
    }
    // The retry is recorded as the same rollback, and `fleet status` reads both.
    let retried = fleet.status(None);
    assert_eq!(retried["run"]["command"], "rollback");
    assert_eq!(retried["run"]["target"], run.as_str());
    assert_eq!(statuses(&retried)["tenant_0002"], "succeeded");
    let shown = fleet.fleet(&["status", "--run", &rollback_run]).assert_success();
    assert!(shown.stdout.contains(&format!("rollback {run}")), "{}", shown.report());
}

#[test]
fn fleet_rollback_of_an_unknown_or_non_upgrade_run_is_refused() {
    let fleet = fleet("rollback_unknown", 1);
    let out = rollback(&fleet, "20260101T000000Z-0000", &[]).assert_code(2);
    assert!(
        out.stderr.contains("no run `20260101T000000Z-0000` in the ledger"),
        "{}",
        out.report()
    );
    fleet.fleet(&["upgrade", B, "--progress", "none"]).assert_success();
    fleet.fleet(&["downgrade", A, "--progress", "none"]).assert_success();
    let downgrade = latest_run_id(&fleet);
    let out = rollback(&fleet, &downgrade, &[]).assert_code(2);
    assert!(out.stderr.contains("undoes upgrade runs only"), "{}", out.report());
    let out = rollback(&fleet, &downgrade, &["--only-failed"]).assert_code(2);
    assert!(out.stderr.contains("--only-failed"), "{}", out.report());
}

#[tokio::test]
async fn fleet_rollback_refuses_a_tenant_an_abandoned_run_left_running_after_it_committed() {
    use crate::fleet_support::SLOW_REVISIONS;
    let fleet = Fleet::new("rollback_abandoned", 2, 0, Revisions::Fixture("fleet_slow"), 1);
    let mut child = fleet.spawn_upgrade(&["--concurrency", "1"]);
    // tenant_0001 has committed its first revision and sleeps in its second: the ledger still says running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while fleet.versions().await["tenant_0001"] != rows(&[SLOW_REVISIONS[0]]) {
        assert!(
            std::time::Instant::now() < deadline,
            "tenant_0001 never reached its first revision"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let status = fleet.status(None);
    assert_eq!(status["run"]["state"], "abandoned");
    let run = status["run"]["id"].as_str().expect("run id").to_string();

    let out = rollback(&fleet, &run, &[]).assert_code(2);
    assert!(
        out.stderr
            .contains("tenant_0001: the run's process died while this tenant ran")
            && out.stderr.contains(&format!("now at {}", SLOW_REVISIONS[0])),
        "{}",
        out.report()
    );
    assert_eq!(fleet.versions().await["tenant_0001"], rows(&[SLOW_REVISIONS[0]]));
    // Left out, nothing else was changed by that run.
    let out = rollback(&fleet, &run, &["--exclude", "tenant_0001"]).assert_success();
    assert!(out.stdout.contains("Nothing to roll back"), "{}", out.report());
}
