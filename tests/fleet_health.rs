//! Health throttling: a server whose `pause_query` number is over `pause_query_above` holds its tenants before
//! they start, and lets them go when the number is back under the resume fraction; the pause is reported as
//! events and counted in `flotilla_server_paused_seconds_total`.

use std::time::Duration;

use crate::fleet_support::{finish, read_events_so_far as events_so_far, wait_for, Fleet, Revisions, REPO_HEAD};

const HEALTH: &str = "pause_query = \"SELECT v FROM public.health_signal\"\npause_query_above = 10\n";

#[tokio::test]
async fn a_server_over_its_health_limit_holds_its_tenants_until_it_recovers() {
    let fleet = Fleet::new("fleet_health", 3, 0, Revisions::Repo, 4);
    fleet
        .db
        .execute("CREATE TABLE public.health_signal (v int); INSERT INTO public.health_signal VALUES (100);");
    fleet.write_tenants(4, HEALTH);
    let dir = fleet.project.path();
    let events = dir.join("events.ndjson");
    let textfile = dir.join("flotilla.prom");
    let child = fleet.spawn_upgrade(&[
        "--events",
        &Fleet::path_arg(&events),
        "--metrics-textfile",
        &Fleet::path_arg(&textfile),
    ]);
    let paused = wait_for("the server to pause", Duration::from_secs(30), || {
        events_so_far(&events)
            .into_iter()
            .find(|e| e["event"] == "server_paused")
    });
    assert_eq!(paused["server"], "local");
    assert!(
        paused["reason"].as_str().unwrap().contains("the health query gave 100"),
        "{paused}"
    );
    // Held: a second later still no tenant has started.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !events_so_far(&events).iter().any(|e| e["event"] == "tenant_started"),
        "no tenant starts while the server is over its limit"
    );
    // 9 is under the threshold but over 80% of it: still held (hysteresis).
    fleet.db.execute("UPDATE public.health_signal SET v = 9;");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!events_so_far(&events).iter().any(|e| e["event"] == "tenant_started"));
    fleet.db.execute("UPDATE public.health_signal SET v = 0;");
    let (code, stdout, stderr) = finish(child, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let events = events_so_far(&events);
    let resumed = events
        .iter()
        .find(|e| e["event"] == "server_resumed")
        .expect("a resume");
    assert!(resumed["paused_ms"].as_u64().unwrap() >= 3000, "{resumed}");
    let resumed_at = events.iter().position(|e| e["event"] == "server_resumed").unwrap();
    let first_start = events.iter().position(|e| e["event"] == "tenant_started").unwrap();
    assert!(resumed_at < first_start);
    let metrics = std::fs::read_to_string(&textfile).unwrap();
    let paused_total: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("flotilla_server_paused_seconds_total{server=\"local\"} "))
        .expect("the paused-time counter")
        .parse()
        .unwrap();
    assert!(paused_total >= 3.0, "{metrics}");
    let versions = fleet.versions().await;
    assert!(versions.values().all(|rows| rows == &[REPO_HEAD]), "{versions:?}");
}

#[test]
fn a_health_query_without_its_threshold_is_refused_with_its_line() {
    let fleet = Fleet::new("fleet_health_bad", 1, 0, Revisions::Repo, 4);
    fleet.write_tenants(4, "pause_query = \"SELECT 1\"\n");
    let out = fleet.upgrade(&[]).assert_code(2);
    assert!(out.stderr.contains("pause_query_above"), "{}", out.stderr);
    assert!(out.stderr.contains("tenants.toml:"), "{}", out.stderr);
}

/// The last `rows_done` a tenant's backfill reported.
fn rows_done(events: &[serde_json::Value]) -> u64 {
    events
        .iter()
        .filter(|e| e["event"] == "backfill_progress")
        .filter_map(|e| e["rows_done"].as_u64())
        .next_back()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_backfill_holds_its_batches_while_its_server_is_over_its_limit() {
    let fleet = Fleet::new(
        "fleet_health_backfill",
        1,
        0,
        Revisions::Fixture("fleet_backfill_slow"),
        1,
    );
    fleet
        .db
        .execute("CREATE TABLE public.health_signal (v int); INSERT INTO public.health_signal VALUES (0);");
    // One connection, held by the tenant's backfill while it waits: the signals are read on a connection of
    // their own, or the wait would never end.
    fleet.write_tenants(1, HEALTH);
    let events = fleet.project.path().join("events.ndjson");
    let child = fleet.spawn_upgrade(&["--events", &Fleet::path_arg(&events)]);
    wait_for("the backfill to start", Duration::from_secs(30), || {
        (rows_done(&events_so_far(&events)) >= 30).then_some(())
    });
    fleet.db.execute("UPDATE public.health_signal SET v = 100;");
    wait_for("the server to pause", Duration::from_secs(30), || {
        events_so_far(&events)
            .iter()
            .any(|e| e["event"] == "server_paused")
            .then_some(())
    });
    let held_at = rows_done(&events_so_far(&events));
    std::thread::sleep(Duration::from_millis(2000));
    // At most the batch already under way when the pause was decided commits meanwhile.
    let later = rows_done(&events_so_far(&events));
    assert!(later <= held_at + 10, "held at {held_at}, then {later}");
    assert!(later < 300, "the backfill did not finish while held");
    fleet.db.execute("UPDATE public.health_signal SET v = 0;");
    let (code, stdout, stderr) = finish(child, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let client = fleet.db.client().await;
    let wrong: i64 = client
        .query_one("SELECT count(*) FROM tenant_0001.counters WHERE n <> 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0, "every row backfilled exactly once across the pause");
    assert!(events_so_far(&events).iter().any(|e| e["event"] == "server_resumed"));
}
