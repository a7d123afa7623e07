//! The fleet under pressure: a backend terminated mid-revision, the per-server connection cap, and Ctrl-C.
//!
//! These use `tests/fixtures/fleet_slow`, whose middle revision sleeps a second, to get a window in which
//! revisions are running.

use std::time::Duration;

use crate::fleet_support::{finish, read_events, slow_tables_at, wait_for, Fleet, Revisions, SLOW_HEAD};
use crate::harness::{cluster, connect};

#[tokio::test]
async fn fleet_terminated_backend_is_retried_and_succeeds() {
    let fleet = Fleet::new("fleet_terminate", 3, 0, Revisions::Fixture("fleet_slow"), 3);
    let events = fleet.project.path().join("events.ndjson");
    let child = fleet.spawn_upgrade(&["--events", &Fleet::path_arg(&events), "--concurrency", "3"]);

    // Kill one backend while it is inside the sleeping revision.
    let admin = connect(cluster().url()).await.unwrap();
    let db_name = fleet.db.name().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let killed: i32 = loop {
        let row = admin
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'flotilla' AND datname = $1 \
                 AND state = 'active' AND query LIKE '%pg_sleep%' LIMIT 1",
                &[&db_name],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            let pid: i32 = row.get(0);
            let done: bool = admin
                .query_one("SELECT pg_terminate_backend($1)", &[&pid])
                .await
                .unwrap()
                .get(0);
            assert!(done, "could not terminate backend {pid}");
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no flotilla backend ever ran pg_sleep"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    let (code, stdout, stderr) = finish(child, Duration::from_secs(60));
    assert_eq!(
        code,
        Some(0),
        "backend {killed} terminated\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    let events = read_events(&events);
    let retrying: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "tenant_retrying").collect();
    assert_eq!(retrying.len(), 1, "{events:#?}");
    let victim = retrying[0]["tenant"].as_str().expect("tenant").to_string();
    assert_eq!(retrying[0]["attempt"], 1, "{:?}", retrying[0]);

    let status = fleet.status(None);
    let tenants = Fleet::status_tenants(&status);
    for (id, t) in &tenants {
        assert_eq!(t["status"], "succeeded", "{id}: {t}");
        assert_eq!(t["to_revision"], SLOW_HEAD, "{id}: {t}");
        let attempts = t["attempts"].as_u64().unwrap();
        if *id == victim {
            assert!(attempts >= 2, "{id}: {t}");
        } else {
            assert_eq!(attempts, 1, "{id}: {t}");
        }
    }
    let versions = fleet.versions().await;
    assert!(versions.values().all(|v| *v == [SLOW_HEAD]), "{versions:?}");
    let tables = fleet.user_tables().await;
    assert!(
        tables.values().all(|t| *t == slow_tables_at(Some(SLOW_HEAD))),
        "{tables:?}"
    );
}

#[tokio::test]
async fn fleet_connections_never_exceed_the_server_cap() {
    const CAP: i64 = 4;
    let fleet = Fleet::new("fleet_cap", 8, 4, Revisions::Fixture("fleet_slow"), CAP as usize);
    let mut databases: Vec<String> = fleet.dbs.iter().map(|d| d.name().to_string()).collect();
    databases.push(fleet.db.name().to_string());
    let mut child = fleet.spawn_upgrade(&["--concurrency", "16"]);

    let admin = connect(cluster().url()).await.unwrap();
    let mut samples = Vec::new();
    while child.try_wait().unwrap().is_none() {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'flotilla' AND datname = ANY($1)",
                &[&databases],
            )
            .await
            .unwrap()
            .get(0);
        samples.push(n);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, stdout, stderr) = finish(child, Duration::from_secs(10));
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");

    let max = samples.iter().copied().max().unwrap_or(0);
    assert!(
        max <= CAP,
        "{max} connections open at once (cap {CAP}); samples: {samples:?}"
    );
    assert!(
        max > 1,
        "the run never had two connections open, so the cap was not exercised: {samples:?}"
    );
    let versions = fleet.versions().await;
    assert!(versions.values().all(|v| *v == [SLOW_HEAD]), "{versions:?}");
}

#[tokio::test]
async fn fleet_sigint_stops_cleanly_and_retry_finishes() {
    let fleet = Fleet::new("fleet_sigint", 12, 0, Revisions::Fixture("fleet_slow"), 3);
    let events = fleet.project.path().join("events.ndjson");
    let child = fleet.spawn_upgrade(&["--events", &Fleet::path_arg(&events), "--concurrency", "3"]);

    wait_for("a tenant_succeeded event", Duration::from_secs(60), || {
        crate::fleet_support::read_events_so_far(&events)
            .iter()
            .any(|e| e["event"] == "tenant_succeeded")
            .then_some(())
    });
    let pid = child.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let (code, stdout, stderr) = finish(child, Duration::from_secs(60));
    assert_eq!(code, Some(130), "stdout:\n{stdout}\nstderr:\n{stderr}");

    let status = fleet.status(None);
    assert_eq!(status["run"]["exit_code"], 130, "{status:#}");
    let counts = &status["run"]["counts"];
    assert!(counts["succeeded"].as_u64().unwrap() >= 1, "{status:#}");
    // The signal stopped the run before its end: some tenants stopped part way or never started (which of the two
    // depends on where the in-flight tenants were when it came).
    assert!(
        counts["interrupted"].as_u64().unwrap() + counts["pending"].as_u64().unwrap() >= 1,
        "{status:#}"
    );
    assert_eq!(counts["failed"], 0, "{status:#}");
    // Tenants the signal kept from starting are "not started" (pending in a finished run), not interrupted.
    assert_eq!(status["run"]["n_not_started"], counts["pending"], "{status:#}");
    assert_eq!(counts["running"], 0, "{status:#}");

    // Nothing half-applied: each tenant is at base or at a revision whose tables all exist (and no more).
    let versions = fleet.versions().await;
    let tables = fleet.user_tables().await;
    for (id, rows) in &versions {
        assert!(rows.len() <= 1, "{id}: {rows:?}");
        let at = rows.first().map(String::as_str);
        assert_eq!(tables[id], slow_tables_at(at), "{id} at {at:?}");
    }
    let ledger_tenants = Fleet::status_tenants(&status);
    for (id, t) in &ledger_tenants {
        if t["status"] == "succeeded" {
            assert_eq!(versions[id], [SLOW_HEAD], "{id}");
        }
    }

    fleet.retry(&[]).assert_success();
    let versions = fleet.versions().await;
    assert!(versions.values().all(|v| *v == [SLOW_HEAD]), "{versions:?}");
    let tables = fleet.user_tables().await;
    assert!(
        tables.values().all(|t| *t == slow_tables_at(Some(SLOW_HEAD))),
        "{tables:?}"
    );
    let retried = fleet.status(None);
    assert_eq!(
        retried["run"]["n_tenants"].as_u64().unwrap(),
        counts["interrupted"].as_u64().unwrap() + counts["pending"].as_u64().unwrap(),
        "the retry reran exactly the interrupted and unstarted tenants: {retried:#}"
    );
}

/// Events written so far; a last line still being written is ignored.

#[test]
fn fleet_events_helper_parses_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.ndjson");
    std::fs::write(
        &path,
        "{\"event\":\"run_started\"}\n\n{\"event\":\"tenant_started\",\"tenant\":\"a\"}\n",
    )
    .unwrap();
    assert_eq!(read_events(&path).len(), 2);
    std::fs::write(&path, "{\"event\":\"run_started\"}\n{\"event\":\"ten").unwrap();
    assert_eq!(crate::fleet_support::read_events_so_far(&path).len(), 1);
}
