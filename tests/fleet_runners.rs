//! Several runner processes on one shared run (`--run-name`): every tenant is migrated exactly once, a runner
//! killed part way loses its tenants to the others when its lease lapses, placement splits the run, and a
//! runner that comes after the end finds nothing to do.
//!
//! The fixture `fleet_runners` has one latency-bound revision that logs its application into `public.runner_log`
//! in the same transaction as the version row, so a tenant migrated twice would show two rows.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::fleet_support::{finish, read_events, wait_for, Fleet, Revisions};
use crate::harness::{cluster, connect};

fn runner_fleet(hint: &str, n: usize, max_connections: usize) -> Fleet {
    let fleet = Fleet::new(hint, n, 0, Revisions::Fixture("fleet_runners"), max_connections);
    fleet
        .db
        .execute("CREATE TABLE public.runner_log (tenant text NOT NULL, at timestamptz DEFAULT now());");
    fleet
}

/// Tenant -> how many times the revision was applied to it.
async fn applications(fleet: &Fleet) -> BTreeMap<String, i64> {
    let client = connect(fleet.db.url()).await.unwrap();
    client
        .query("SELECT tenant, count(*) FROM public.runner_log GROUP BY tenant", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1)))
        .collect()
}

fn tenants_by_id(status: &Value) -> BTreeMap<String, Value> {
    Fleet::status_tenants(status)
}

/// Succeeded tenants of the latest run so far (0 before the run exists).
fn succeeded_count(fleet: &Fleet) -> u64 {
    let mut cmd = fleet.project.flotilla();
    cmd.args(["fleet", "status", "--format", "json", "--ledger"])
        .arg(&fleet.ledger);
    let out = cmd.output();
    if out.code() != Some(0) {
        return 0;
    }
    out.json()["run"]["counts"]["succeeded"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn three_runners_migrate_every_tenant_exactly_once() {
    let fleet = runner_fleet("runners_three", 600, 30);
    let runners: Vec<_> = (0..3)
        .map(|_| fleet.spawn_upgrade(&["--run-name", "rollout-1", "--concurrency", "4", "--lease", "10s"]))
        .collect();
    let mut outputs = Vec::new();
    for child in runners {
        let (code, stdout, stderr) = finish(child, Duration::from_secs(240));
        assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
        // A runner's summary counts its own tenants: the others' are neither unstarted nor to retry.
        assert!(
            !stdout.contains("retry the") && stdout.contains("not started  0"),
            "stdout:\n{stdout}"
        );
        outputs.push(stderr);
    }
    let applied = applications(&fleet).await;
    assert_eq!(applied.len(), 600, "every tenant migrated");
    assert!(applied.values().all(|n| *n == 1), "each exactly once: {applied:?}");
    assert!(
        outputs.iter().any(|e| e.contains("Joined run rollout-1")),
        "the later runners say they joined: {outputs:?}"
    );

    let status = fleet.status(None);
    assert_eq!(status["run"]["name"], "rollout-1");
    assert!(status["run"]["finished_at"].is_string(), "{}", status["run"]);
    assert_eq!(status["run"]["counts"]["succeeded"], 600);
    let runners = status["run"]["runners"].as_array().unwrap();
    assert_eq!(runners.len(), 3, "{runners:?}");
    let ids: BTreeSet<&str> = runners.iter().map(|r| r["id"].as_str().unwrap()).collect();
    for r in runners {
        assert!(r["heartbeat_at"].is_string() && r["finished_at"].is_string(), "{r}");
    }
    let by_runner: BTreeSet<&str> = tenants_by_id(&status)
        .values()
        .map(|t| {
            let runner = t["runner"].as_str().expect("every tenant names its runner");
            assert!(ids.contains(runner), "{t}");
            *ids.get(runner).unwrap()
        })
        .collect();
    assert!(by_runner.len() >= 2, "the work was shared: {by_runner:?}");

    // A runner coming after the end finds nothing to do.
    let late = fleet.upgrade(&["--run-name", "rollout-1"]).assert_success();
    assert!(late.stdout.contains("Nothing to do"), "{}", late.report());
    // A runner of another command or target cannot join it.
    let other = fleet
        .fleet(&["downgrade", "base", "--progress", "none", "--run-name", "rollout-1"])
        .assert_code(2);
    assert!(
        other.stderr.contains("rollout-1") && other.stderr.contains("upgrade head"),
        "{}",
        other.report()
    );
}

#[tokio::test]
async fn a_killed_runner_loses_its_tenants_to_the_others_when_its_lease_lapses() {
    let fleet = runner_fleet("runners_kill", 40, 20);
    let mut doomed = fleet.spawn_upgrade(&["--run-name", "kill", "--concurrency", "4", "--lease", "1s"]);
    // Let the doomed runner create the run and start work before the survivor joins.
    wait_for("the first runner to migrate a tenant", Duration::from_secs(60), || {
        (succeeded_count(&fleet) >= 2).then_some(())
    });
    let survivor = fleet.spawn_upgrade(&["--run-name", "kill", "--concurrency", "1", "--lease", "30s"]);
    wait_for("more progress", Duration::from_secs(60), || {
        (succeeded_count(&fleet) >= 6).then_some(())
    });
    doomed.kill().expect("SIGKILL the first runner");
    let _ = doomed.wait();

    let (code, stdout, stderr) = finish(survivor, Duration::from_secs(120));
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let applied = applications(&fleet).await;
    assert_eq!(applied.len(), 40, "every tenant migrated");
    assert!(applied.values().all(|n| *n == 1), "each exactly once: {applied:?}");

    let status = fleet.status(None);
    assert!(
        status["run"]["finished_at"].is_string(),
        "the survivor closed the run: {}",
        status["run"]
    );
    let runners = status["run"]["runners"].as_array().unwrap();
    assert_eq!(runners.len(), 2);
    let (dead, alive) = (&runners[0], &runners[1]);
    assert!(dead["finished_at"].is_null() && dead["is_live"] == false, "{dead}");
    let tenants = tenants_by_id(&status);
    for (id, t) in &tenants {
        // A tenant whose revision committed after its runner died is found at head by the survivor: skipped.
        assert!(t["status"] == "succeeded" || t["status"] == "skipped", "{id}: {t}");
    }
    let by_survivor = tenants.values().filter(|t| t["runner"] == alive["id"]).count();
    let by_dead = tenants.values().filter(|t| t["runner"] == dead["id"]).count();
    assert_eq!(by_survivor + by_dead, 40);
    assert!(
        by_dead >= 2 && by_survivor >= 1,
        "dead {by_dead}, survivor {by_survivor}"
    );
}

#[tokio::test]
async fn placement_by_tag_splits_a_run_between_runners() {
    let fleet = runner_fleet("runners_placed", 20, 10);
    let even = fleet.spawn_upgrade(&["--run-name", "placed", "--tag", "parity=even", "--concurrency", "2"]);
    let odd = fleet.spawn_upgrade(&["--run-name", "placed", "--tag", "parity=odd", "--concurrency", "2"]);
    for child in [even, odd] {
        let (code, stdout, stderr) = finish(child, Duration::from_secs(120));
        assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    }
    let status = fleet.status(None);
    assert_eq!(status["run"]["counts"]["succeeded"], 20, "{}", status["run"]);
    let runners = status["run"]["runners"].as_array().unwrap();
    let parity_of: BTreeMap<&str, &str> = runners
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap(),
                r["placement"]["tags"][0][1].as_str().unwrap(),
            )
        })
        .collect();
    let tags: BTreeMap<String, String> = fleet
        .tenants
        .iter()
        .map(|t| {
            (
                t.id.clone(),
                t.tags.iter().find(|(k, _)| k == "parity").unwrap().1.clone(),
            )
        })
        .collect();
    for (id, t) in tenants_by_id(&status) {
        let runner = t["runner"].as_str().unwrap();
        assert_eq!(parity_of[runner], tags[&id], "{id} went to the runner of its parity");
    }
    assert_eq!(applications(&fleet).await.len(), 20);
    let mut cmd = fleet.project.flotilla();
    cmd.args(["fleet", "status", "--ledger"]).arg(&fleet.ledger);
    let text = cmd.assert_success();
    assert!(
        text.stdout.contains("Shared run placed: 2 runners"),
        "{}",
        text.report()
    );
    assert!(
        text.stdout.contains("parity=even") && text.stdout.contains("parity=odd"),
        "{}",
        text.report()
    );
}

#[test]
fn server_placement_names_a_known_server() {
    let fleet = runner_fleet("runners_bad_server", 1, 2);
    let out = fleet
        .upgrade(&["--run-name", "x", "--server", "nowhere"])
        .assert_code(2);
    assert!(out.stderr.contains("--server nowhere"), "{}", out.report());
}

#[tokio::test]
async fn runners_together_keep_the_server_connection_cap() {
    const CAP: i64 = 3;
    let fleet = runner_fleet("runners_cap", 60, CAP as usize);
    let runners: Vec<_> = (0..2)
        .map(|_| fleet.spawn_upgrade(&["--run-name", "capped", "--concurrency", "4"]))
        .collect();
    let admin = connect(cluster().url()).await.unwrap();
    let db = fleet.db.name().to_string();
    let mut samples = Vec::new();
    let mut runners: Vec<_> = runners.into_iter().map(Some).collect();
    while runners
        .iter_mut()
        .any(|r| r.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none()))
    {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'flotilla' AND datname = $1",
                &[&db],
            )
            .await
            .unwrap()
            .get(0);
        samples.push(n);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for child in runners.iter_mut().filter_map(Option::take) {
        let (code, stdout, stderr) = finish(child, Duration::from_secs(10));
        assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    }
    let max = samples.iter().copied().max().unwrap_or(0);
    assert!(
        max <= CAP,
        "{max} connections at once from two runners (cap {CAP}): {samples:?}"
    );
    assert!(max > 1, "the cap was never exercised: {samples:?}");
    let applied = applications(&fleet).await;
    assert_eq!(applied.len(), 60);
    // Both runners did work: the budget was shared, not held by one.
    let status = fleet.status(None);
    let runners: BTreeSet<String> = tenants_by_id(&status)
        .values()
        .filter_map(|t| t["runner"].as_str().map(str::to_string))
        .collect();
    assert_eq!(runners.len(), 2, "{runners:?}");
}

/// Tenants the runner that opens a shared run finds at their target are recorded skipped as it opens and
/// reported by it alone: a runner that joins neither reports nor starts them.
#[tokio::test]
async fn only_the_runner_that_opens_a_shared_run_reports_its_tenants_at_the_target() {
    let fleet = runner_fleet("runners_at_target", 40, 12);
    let at_head: Vec<String> = (1..=20).map(|i| format!("tenant_{i:04}")).collect();
    let mut first = vec!["--concurrency", "8"];
    for id in &at_head {
        first.extend(["--tenant", id.as_str()]);
    }
    fleet.upgrade(&first).assert_success();

    let events: Vec<_> = (0..2)
        .map(|i| fleet.project.path().join(format!("runner{i}.ndjson")))
        .collect();
    let runners: Vec<_> = events
        .iter()
        .map(|path| {
            let path = Fleet::path_arg(path);
            fleet.spawn_upgrade(&["--run-name", "half-done", "--concurrency", "2", "--events", &path])
        })
        .collect();
    let mut joined = Vec::new();
    for child in runners {
        let (code, stdout, stderr) = finish(child, Duration::from_secs(240));
        assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
        joined.push(stderr.contains("Joined run half-done"));
    }
    assert_eq!(
        joined.iter().filter(|j| **j).count(),
        1,
        "one runner opened the run, one joined"
    );
    let of = |i: usize, what: &str| -> BTreeSet<String> {
        read_events(&events[i])
            .iter()
            .filter(|e| e["event"] == what)
            .map(|e| e["tenant"].as_str().unwrap().to_string())
            .collect()
    };
    let opener = joined.iter().position(|j| !j).unwrap();
    let joiner = 1 - opener;
    assert_eq!(
        of(opener, "tenant_skipped"),
        at_head.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert!(
        of(joiner, "tenant_skipped").is_empty(),
        "{:?}",
        of(joiner, "tenant_skipped")
    );
    for i in [opener, joiner] {
        assert!(of(i, "tenant_started").is_disjoint(&of(opener, "tenant_skipped")));
    }
    let applied = applications(&fleet).await;
    assert_eq!(applied.len(), 40, "every tenant migrated");
    assert!(applied.values().all(|n| *n == 1), "each exactly once: {applied:?}");
    let status = fleet.status(None);
    assert_eq!(status["run"]["counts"]["skipped"], 20, "{}", status["run"]);
    assert_eq!(status["run"]["counts"]["succeeded"], 20, "{}", status["run"]);
}
