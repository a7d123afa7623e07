//! Waves (`--waves`, `--waves-by`, `--wave-pause`, `--wave-gate`): each wave starts only after the one before it
//! finished under its failure gate and the gate command passed; a refused gate halts the run, and `fleet retry`
//! goes on from there with the same waves.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::fleet_support::{read_events, Fleet, Revisions};

/// The order events name tenants in: (event, tenant or wave) pairs of the kinds that matter here.
fn timeline(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e["event"].as_str()? {
            "wave_started" => Some(format!("wave {} {}", e["wave"], e["name"].as_str()?)),
            "tenant_started" => Some(format!("start {}", e["tenant"].as_str()?)),
            "tenant_succeeded" => Some(format!("ok {}", e["tenant"].as_str()?)),
            "run_halted" => Some(format!("halted {}", e["reason"].as_str()?)),
            _ => None,
        })
        .collect()
}

fn position(timeline: &[String], line: &str) -> usize {
    timeline
        .iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("{line} not in {timeline:#?}"))
}

#[tokio::test]
async fn waves_open_in_turn_after_the_gate_and_each_waits_for_the_last() {
    let fleet = Fleet::new("fleet_waves", 6, 0, Revisions::Repo, 8);
    let dir = fleet.project.path();
    let events = dir.join("events.ndjson");
    let gate_log = dir.join("gate.log");
    let gate = format!(
        "echo \"$FLOTILLA_RUN_ID $FLOTILLA_WAVE/$FLOTILLA_WAVES\" >> {}",
        gate_log.display()
    );
    let out = fleet
        .fleet(&[
            "upgrade",
            "head",
            "--progress",
            "plain",
            "--waves",
            "1,50%,100%",
            "--wave-gate",
            &gate,
            "--events",
            &Fleet::path_arg(&events),
        ])
        .assert_success();
    // The progress line names the open wave.
    let last_line = out.stderr.lines().rfind(|l| l.contains(" done: ")).unwrap_or_default();
    assert!(last_line.ends_with("; wave 3/3 (100%)"), "{}", out.stderr);
    let events = read_events(&events);
    let line = timeline(&events);
    let waves: Vec<&String> = line.iter().filter(|l| l.starts_with("wave")).collect();
    assert_eq!(waves, ["wave 1 1", "wave 2 50%", "wave 3 100%"], "{line:#?}");
    // Wave 1 is tenant_0001 alone; wave 2 (up to 50%: 3 tenants) starts only after it finished.
    assert!(position(&line, "ok tenant_0001") < position(&line, "wave 2 50%"));
    for later in ["tenant_0002", "tenant_0003"] {
        assert!(position(&line, "wave 2 50%") < position(&line, &format!("start {later}")));
        assert!(position(&line, &format!("ok {later}")) < position(&line, "wave 3 100%"));
    }
    let run_id = events[0]["run_id"].as_str().unwrap().to_string();
    let gate_calls = std::fs::read_to_string(&gate_log).unwrap();
    assert_eq!(gate_calls, format!("{run_id} 2/3\n{run_id} 3/3\n"));
    let versions = fleet.versions().await;
    assert!(
        versions.values().all(|rows| rows == &[crate::fleet_support::REPO_HEAD]),
        "{versions:?}"
    );
}

#[test]
fn a_refused_gate_halts_after_the_wave_and_retry_goes_on_from_there() {
    // parity=even (0002, 0004) is the first wave in natural order; the odd ones never start.
    let fleet = crate::fleet_error_paths::halted_by_the_gate(
        "fleet_waves_gate",
        "echo 'error rate too high' >&2; exit 7",
        &[],
        "failed (exit status: 7): error rate too high",
    );
    // The retry inherits the waves and the gate; a gate given again replaces the stored one.
    let out = fleet.retry(&["--wave-gate", "true"]).assert_success();
    assert!(out.stdout.contains("--waves-by tag=parity"), "{}", out.stdout);
    let status = Fleet::status_tenants(&fleet.status(None));
    assert!(status.values().all(|t| t["status"] == "succeeded"), "{status:?}");
}

/// Each tenant's wave (1-based) in `fleet status --format json`, by tenant id.
fn waves_of(status: &Value) -> BTreeMap<String, u64> {
    Fleet::status_tenants(status)
        .into_iter()
        .map(|(id, t)| {
            (
                id,
                t["wave"].as_u64().expect("a run in waves gives each tenant its wave"),
            )
        })
        .collect()
}

#[test]
fn a_retry_continues_at_the_wave_where_the_run_stopped() {
    let fleet = Fleet::new("fleet_waves_retry", 6, 0, Revisions::Repo, 8);
    retry_continues_at_the_second_wave(&fleet, &[]);
}

/// The same when a tenant of the last wave was at the target before the run: it is recorded skipped as the run
/// opens, which must not count as the run having reached that wave.
#[test]
fn a_retry_continues_at_the_wave_where_the_run_stopped_past_tenants_at_the_target() {
    let fleet = Fleet::new("fleet_waves_retry_at_target", 6, 0, Revisions::Repo, 8);
    fleet.upgrade(&["--tenant", "tenant_0006"]).assert_success();
    retry_continues_at_the_second_wave(&fleet, &["tenant_0006"]);
}

/// Six tenants in waves 1, 50%, 100%; tenant_0003, in the second wave, fails and halts the run; the retry starts
/// at wave 2 and goes on to wave 3. `at_target` were at the head before the run, so neither run starts them.
fn retry_continues_at_the_second_wave(fleet: &Fleet, at_target: &[&str]) {
    // tenant_0003, in the second wave, cannot create `users`: that wave's failure gate halts the run.
    fleet.db.execute("CREATE TABLE tenant_0003.users (id int)");
    fleet.upgrade(&["--waves", "1,50%,100%"]).assert_code(3);
    let status = fleet.status(None);
    assert_eq!(status["run"]["waves"]["of"], 3, "{status}");
    let first_waves = waves_of(&status);
    let expected: BTreeMap<String, u64> = [1, 2, 2, 3, 3, 3]
        .iter()
        .enumerate()
        .map(|(i, w)| (format!("tenant_{:04}", i + 1), *w))
        .collect();
    assert_eq!(first_waves, expected);

    fleet.db.execute("DROP TABLE tenant_0003.users");
    let events = fleet.project.path().join("retry.ndjson");
    fleet.retry(&["--events", &Fleet::path_arg(&events)]).assert_success();
    let line = timeline(&read_events(&events));
    let waves: Vec<&String> = line.iter().filter(|l| l.starts_with("wave")).collect();
    // The retry starts at wave 2 (its failed tenant), then wave 3 (the tenants that never started).
    assert_eq!(waves, ["wave 2 50%", "wave 3 100%"], "{line:#?}");
    assert!(position(&line, "ok tenant_0003") < position(&line, "wave 3 100%"));
    assert!(!line
        .iter()
        .any(|l| l == "start tenant_0001" || l == "start tenant_0002"));
    for id in at_target {
        assert!(!line.iter().any(|l| l == &format!("start {id}")), "{line:#?}");
    }
    let status = fleet.status(None);
    let retry_waves = waves_of(&status);
    assert_eq!(
        retry_waves,
        expected
            .into_iter()
            .filter(|(id, _)| id.as_str() >= "tenant_0003" && !at_target.contains(&id.as_str()))
            .collect()
    );
    assert!(Fleet::status_tenants(&status)
        .values()
        .all(|t| t["status"] == "succeeded"));
}

#[tokio::test]
async fn bad_wave_flags_are_refused_before_anything_runs() {
    let fleet = Fleet::new("fleet_waves_bad", 2, 0, Revisions::Repo, 8);
    for (args, says) in [
        (vec!["--waves", "10,5"], "--waves `5` after 10: waves are cumulative"),
        (vec!["--waves", "0"], "--waves `0`"),
        (
            vec!["--wave-pause", "1s"],
            "--wave-pause and --wave-gate need --waves or --waves-by",
        ),
        (vec!["--waves-by", "tag="], "--waves-by"),
        (
            vec!["--waves", "1", "--run-name", "w"],
            "--waves with --run-name is not supported yet",
        ),
    ] {
        let out = fleet.upgrade(&args).assert_code(2);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
    let out = fleet.upgrade(&["--waves", "1", "--canary", "1"]).assert_code(2);
    assert!(out.stderr.contains("cannot be used with"), "{}", out.stderr);
    let versions = fleet.versions().await;
    assert!(versions.values().all(Vec::is_empty), "nothing ran: {versions:?}");
}
