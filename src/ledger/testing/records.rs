//! What the ledger records and reads back for the fleet's runs, over any backend.

use serde_json::json;

use super::Store;
use crate::ledger::*;

fn new_run(target: &str) -> NewRun {
    NewRun {
        command: "upgrade".to_string(),
        target: target.to_string(),
        options: json!({"concurrency": 8, "servers": ["a", "b"]}),
        user: "ops".to_string(),
        host: "build-1".to_string(),
    }
}

fn new_tenants<'a>(ids: &[&'a str]) -> Vec<NewTenant<'a>> {
    ids.iter()
        .map(|id| NewTenant {
            tenant_id: id,
            server: "pg-1",
            kind: "schema",
            target: None,
            canary: false,
            tags: None,
            at_target: None,
        })
        .collect()
}

/// A ledger holding one begun run of these tenants.
fn begun<S: Store>(store: &S, ids: &[&str]) -> (S::L, RunId) {
    let mut ledger = store.connect();
    let run = ledger.begin_run(&new_run("head"), &new_tenants(ids)).unwrap();
    (ledger, run)
}

fn update(id: &str, status: TenantStatus) -> TenantUpdate {
    TenantUpdate {
        attempts: 1,
        ..TenantUpdate::new(id, status)
    }
}

fn statuses(ledger: &impl Ledger, run: &RunId) -> Vec<(String, TenantStatus)> {
    let tenants = ledger.tenants(run, None).unwrap();
    tenants.into_iter().map(|t| (t.tenant_id, t.status)).collect()
}

fn check_statuses(ledger: &impl Ledger, run: &RunId, expected: &[(&str, TenantStatus)]) {
    let expected: Vec<(String, TenantStatus)> = expected.iter().map(|(id, s)| (id.to_string(), *s)).collect();
    assert_eq!(statuses(ledger, run), expected);
}

fn latest(ledger: &impl Ledger) -> RunRecord {
    ledger.run(&RunSelector::Latest).unwrap().unwrap()
}

use TenantStatus::{Failed, Interrupted, Pending, Running, Skipped, Succeeded};

pub fn check_lifecycle_from_begin_to_finish(store: &impl Store) {
    let (mut ledger, run) = begun(store, &["t2", "t1", "t3"]);

    let record = latest(&ledger);
    assert_eq!(record.id, run);
    assert_eq!(record.command, "upgrade");
    assert_eq!(record.target, "head");
    assert_eq!(record.options, json!({"concurrency": 8, "servers": ["a", "b"]}));
    assert_eq!((record.user.as_str(), record.host.as_str()), ("ops", "build-1"));
    assert_eq!(record.pid, std::process::id());
    assert_eq!((record.finished_at, record.exit_code), (None, None));
    assert_eq!(record.n_tenants, 3);
    assert_eq!(record.counts.pending, 3);
    assert!(record.started_at.ends_with('Z'), "{}", record.started_at);
    assert!(chrono::DateTime::parse_from_rfc3339(&record.started_at).is_ok());
    check_statuses(&ledger, &run, &[("t1", Pending), ("t2", Pending), ("t3", Pending)]);

    let mut t1 = update("t1", Running);
    t1.from_revision = Some("aaa".to_string());
    t1.to_revision = Some("ccc".to_string());
    ledger.record(&run, &[t1.clone()]).unwrap();
    check_statuses(&ledger, &run, &[("t1", Running), ("t2", Pending), ("t3", Pending)]);

    t1.status = Succeeded;
    t1.duration_ms = Some(1234);
    let t2 = TenantUpdate {
        from_revision: Some("aaa".to_string()),
        to_revision: Some("ccc".to_string()),
        failed_revision: Some("bbb".to_string()),
        attempts: 3,
        duration_ms: Some(80),
        error: Some("relation \"users\" already exists".to_string()),
        error_kind: Some("sql_error".to_string()),
        sqlstate: Some("42P07".to_string()),
        ..TenantUpdate::new("t2", Failed)
    };
    ledger.record(&run, &[t1, t2, update("t3", Skipped)]).unwrap();
    ledger.finish_run(&run, 1).unwrap();

    let record = latest(&ledger);
    assert!(record.is_finished());
    assert_eq!(record.exit_code, Some(1));
    assert_eq!(record.state("build-1"), RunState::Finished);
    assert_eq!(
        (record.counts.succeeded, record.counts.failed, record.counts.skipped),
        (1, 1, 1)
    );
    assert_eq!(
        record.counts.pending + record.counts.running + record.counts.interrupted,
        0
    );

    let tenants = ledger.tenants(&run, None).unwrap();
    let t2 = &tenants[1];
    assert_eq!(t2.tenant_id, "t2");
    assert_eq!((t2.server.as_str(), t2.kind.as_str()), ("pg-1", "schema"));
    assert_eq!(t2.status, Failed);
    assert_eq!(t2.from_revision.as_deref(), Some("aaa"));
    assert_eq!(t2.to_revision.as_deref(), Some("ccc"));
    assert_eq!(t2.failed_revision.as_deref(), Some("bbb"));
    assert_eq!(t2.attempts, 3);
    assert_eq!(t2.duration_ms, Some(80));
    assert_eq!(t2.error.as_deref(), Some("relation \"users\" already exists"));
    assert_eq!(t2.sqlstate.as_deref(), Some("42P07"));
    assert_eq!(t2.error_kind.as_deref(), Some("sql_error"));
    assert_eq!(tenants[0].duration_ms, Some(1234));
    assert_eq!(ledger.retry_set(&run).unwrap(), vec!["t2"]);
}

pub fn check_update_replaces_the_whole_tenant_state(store: &impl Store) {
    let (mut ledger, run) = begun(store, &["t1"]);
    let failed = TenantUpdate {
        error: Some("connection reset".to_string()),
        sqlstate: Some("08006".to_string()),
        ..update("t1", Running)
    };
    ledger.record(&run, &[failed]).unwrap();
    let retried = TenantUpdate {
        attempts: 2,
        ..update("t1", Succeeded)
    };
    ledger.record(&run, &[retried]).unwrap();
    let tenant = &ledger.tenants(&run, None).unwrap()[0];
    assert_eq!((tenant.status, tenant.attempts), (Succeeded, 2));
    assert_eq!((tenant.error.as_deref(), tenant.sqlstate.as_deref()), (None, None));
}

pub fn check_batch_with_an_unknown_tenant_is_rolled_back_whole(store: &impl Store) {
    let (mut ledger, run) = begun(store, &["t1", "t2"]);
    let err = ledger
        .record(
            &run,
            &[update("t1", Succeeded), update("nope", Failed), update("t2", Failed)],
        )
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::UnknownTenant { run: r, tenant, .. } if r == run.as_str() && tenant == "nope"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("ledger {}: run {run} has no tenant nope", store.location())
    );
    check_statuses(&ledger, &run, &[("t1", Pending), ("t2", Pending)]);
    ledger.record(&run, &[]).unwrap();
}

pub fn check_finish_run_interrupts_running_tenants_and_leaves_unstarted_ones_pending(store: &impl Store) {
    let (mut ledger, run) = begun(store, &["t1", "t2", "t3", "t4"]);
    ledger
        .record(
            &run,
            &[update("t1", Succeeded), update("t2", Running), update("t3", Failed)],
        )
        .unwrap();
    ledger.finish_run(&run, 130).unwrap();
    check_statuses(
        &ledger,
        &run,
        &[("t1", Succeeded), ("t2", Interrupted), ("t3", Failed), ("t4", Pending)],
    );
    let record = latest(&ledger);
    assert_eq!(record.exit_code, Some(130));
    assert_eq!(record.counts.interrupted, 1);
    assert_eq!(record.counts.pending, 1);
    let tenants = ledger.tenants(&run, None).unwrap();
    assert_eq!(tenants[3].status_label(RunState::Finished), "not_started");
    assert_eq!(ledger.retry_set(&run).unwrap(), vec!["t2", "t3", "t4"]);
}

pub fn check_finished_run_refuses_further_writes(store: &impl Store) {
    let (mut ledger, run) = begun(store, &["t1"]);
    ledger.finish_run(&run, 0).unwrap();
    let again = ledger.finish_run(&run, 0).unwrap_err();
    assert!(matches!(again, LedgerError::RunFinished { .. }), "{again:?}");
    let late = ledger.record(&run, &[update("t1", Succeeded)]).unwrap_err();
    assert!(matches!(late, LedgerError::RunFinished { .. }), "{late:?}");
    assert_eq!(latest(&ledger).exit_code, Some(0));
}

pub fn check_unfinished_run_after_a_crash_retries_its_unfinished_tenants(store: &impl Store) {
    let run = {
        let mut ledger = store.connect();
        let run = ledger
            .begin_run(&new_run("head"), &new_tenants(&["t1", "t2", "t3", "t4", "t5"]))
            .unwrap();
        ledger
            .record(
                &run,
                &[
                    update("t1", Succeeded),
                    update("t2", Running),
                    update("t3", Failed),
                    update("t5", Skipped),
                ],
            )
            .unwrap();
        run
        // Dropped without finish_run, as after SIGKILL.
    };

    let ledger = store.connect();
    let record = latest(&ledger);
    assert_eq!(record.id, run);
    assert_eq!((record.finished_at.as_deref(), record.exit_code), (None, None));
    assert!(!record.is_finished());
    // Stored statuses stay as the dead process left them.
    check_statuses(
        &ledger,
        &run,
        &[
            ("t1", Succeeded),
            ("t2", Running),
            ("t3", Failed),
            ("t4", Pending),
            ("t5", Skipped),
        ],
    );
    assert_eq!(ledger.retry_set(&run).unwrap(), vec!["t2", "t3", "t4"]);

    // This test process wrote the run, so it is live here; a dead pid makes it abandoned.
    assert_eq!(record.state("build-1"), RunState::Live);
    let state = record.state_with("build-1", |_| false);
    assert_eq!(state, RunState::Abandoned);
    let shown: Vec<TenantStatus> = ledger
        .tenants(&run, None)
        .unwrap()
        .iter()
        .map(|t| t.effective_status(state))
        .collect();
    assert_eq!(shown, vec![Succeeded, Interrupted, Failed, Interrupted, Skipped]);
}

pub fn check_latest_is_the_run_begun_last(store: &impl Store) {
    let mut ledger = store.connect();
    assert_eq!(ledger.run(&RunSelector::Latest).unwrap(), None);
    // Several runs in the same second: ids may sort either way, insertion order decides.
    let ids: Vec<RunId> = ["r1", "r2", "r3", "r4"]
        .iter()
        .map(|target| ledger.begin_run(&new_run(target), &new_tenants(&["t1"])).unwrap())
        .collect();
    let record = latest(&ledger);
    assert_eq!(record.id, ids[3]);
    assert_eq!(record.target, "r4");
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len());
}

pub fn check_run_by_id_and_unknown_id(store: &impl Store) {
    let mut ledger = store.connect();
    let first = ledger.begin_run(&new_run("r1"), &new_tenants(&["t1", "t2"])).unwrap();
    let _second = ledger.begin_run(&new_run("r2"), &new_tenants(&["t1"])).unwrap();

    let record = ledger.run(&RunSelector::Id(first.to_string())).unwrap().unwrap();
    assert_eq!((record.id, record.target.as_str(), record.n_tenants), (first, "r1", 2));

    let missing = RunSelector::Id("20000101T000000Z-dead".to_string());
    assert_eq!(ledger.run(&missing).unwrap(), None);

    let unknown = RunId("20000101T000000Z-dead".to_string());
    for err in [
        ledger.tenants(&unknown, None).unwrap_err(),
        ledger.tenants(&unknown, Some(&[])).unwrap_err(),
        ledger.retry_set(&unknown).unwrap_err(),
        ledger.record(&unknown, &[update("t1", Failed)]).unwrap_err(),
        ledger.finish_run(&unknown, 0).unwrap_err(),
    ] {
        assert!(
            matches!(&err, LedgerError::UnknownRun { run, .. } if run == unknown.as_str()),
            "{err:?}"
        );
    }
}

pub fn check_tenants_filtered_by_status(store: &impl Store) {
    let (mut ledger, run) = begun(store, &["t1", "t2", "t3", "t4"]);
    ledger
        .record(
            &run,
            &[update("t1", Failed), update("t3", Succeeded), update("t4", Failed)],
        )
        .unwrap();
    let ids = |filter: &[TenantStatus]| -> Vec<String> {
        let tenants = ledger.tenants(&run, Some(filter)).unwrap();
        tenants.into_iter().map(|t| t.tenant_id).collect()
    };
    assert_eq!(ids(&[Failed]), vec!["t1", "t4"]);
    assert_eq!(ids(&[Failed, Pending]), vec!["t1", "t2", "t4"]);
    assert_eq!(ids(&[Interrupted]), Vec::<String>::new());
    assert_eq!(ids(&[]), Vec::<String>::new());
}

pub fn check_duplicate_tenant_records_nothing(store: &impl Store) {
    let mut ledger = store.connect();
    let err = ledger
        .begin_run(&new_run("head"), &new_tenants(&["t1", "t2", "t1"]))
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::DuplicateTenant { tenant, .. } if tenant == "t1"),
        "{err:?}"
    );
    assert_eq!(ledger.run(&RunSelector::Latest).unwrap(), None);
}

pub fn check_ten_thousand_tenants_in_batches(store: &impl Store) {
    let ids: Vec<String> = (0..10_000).map(|i| format!("tenant_{i:05}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (mut ledger, run) = begun(store, &id_refs);
    assert_eq!(latest(&ledger).counts.pending, 10_000);

    let updates: Vec<TenantUpdate> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| match i % 10 {
            0 => update(id, Failed),
            1 => update(id, Running),
            _ => update(id, Succeeded),
        })
        .collect();
    for batch in updates.chunks(500) {
        ledger.record(&run, batch).unwrap();
    }
    let record = latest(&ledger);
    assert_eq!(
        (record.counts.succeeded, record.counts.failed, record.counts.running),
        (8_000, 1_000, 1_000)
    );

    ledger.finish_run(&run, 1).unwrap();
    let record = latest(&ledger);
    assert_eq!(record.n_tenants, 10_000);
    assert_eq!((record.counts.interrupted, record.counts.running), (1_000, 0));
    let retry = ledger.retry_set(&run).unwrap();
    assert_eq!(retry.len(), 2_000);
    assert!(retry.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(retry[0], "tenant_00000");
    assert_eq!(retry[1], "tenant_00001");
}

pub fn check_reader_in_another_thread_while_the_run_writes(store: &impl Store) {
    let ids: Vec<String> = (0..2_000).map(|i| format!("t{i:04}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut writer = store.connect();
    let run = writer.begin_run(&new_run("head"), &new_tenants(&id_refs)).unwrap();

    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let reader = store.connect();
            let mut last_done = 0;
            loop {
                let record = latest(&reader);
                // Each read is one snapshot: the counts always add up, and progress never goes backwards.
                assert_eq!(record.counts.total(), 2_000);
                assert!(record.counts.succeeded >= last_done);
                last_done = record.counts.succeeded;
                if record.is_finished() {
                    return last_done;
                }
            }
        });
        let updates: Vec<TenantUpdate> = ids.iter().map(|id| update(id, Succeeded)).collect();
        for batch in updates.chunks(100) {
            writer.record(&run, batch).unwrap();
        }
        writer.finish_run(&run, 0).unwrap();
        assert_eq!(reader.join().unwrap(), 2_000);
    });
}

pub fn check_status_json_has_the_contract_shape(store: &impl Store) {
    let (mut ledger, run) = begun(store, &["t1", "t2"]);
    let failed = TenantUpdate {
        from_revision: Some("aaa".to_string()),
        to_revision: Some("ccc".to_string()),
        failed_revision: Some("bbb".to_string()),
        attempts: 2,
        duration_ms: Some(17),
        error: Some("boom".to_string()),
        sqlstate: Some("XX000".to_string()),
        ..TenantUpdate::new("t1", Failed)
    };
    ledger.record(&run, &[failed]).unwrap();
    let record = latest(&ledger);
    let tenants = ledger.tenants(&run, None).unwrap();
    let value = status_json(&record, &tenants, record.state("build-1"));

    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&value), vec!["run", "tenants"]);
    let run_keys = keys(&value["run"]);
    for key in [
        "id",
        "target",
        "started_at",
        "finished_at",
        "command",
        "exit_code",
        "counts",
    ] {
        assert!(run_keys.contains(&key.to_string()), "run lacks {key}: {run_keys:?}");
    }
    assert_eq!(value["run"]["id"], json!(run.as_str()));
    assert_eq!(value["run"]["target"], json!("head"));
    assert_eq!(value["run"]["started_at"], json!(record.started_at));
    assert_eq!(value["run"]["finished_at"], json!(null));
    assert_eq!(value["run"]["exit_code"], json!(null));
    assert_eq!(value["run"]["command"], json!("upgrade"));
    assert_eq!(value["run"]["state"], json!("live"));
    assert_eq!(
        value["run"]["counts"],
        json!({"pending": 1, "running": 0, "succeeded": 0, "failed": 1, "skipped": 0, "interrupted": 0})
    );

    let tenant_keys = [
        "id",
        "status",
        "from_revision",
        "to_revision",
        "failed_revision",
        "attempts",
        "error",
        "sqlstate",
        "duration_ms",
    ];
    let listed = value["tenants"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    for tenant in listed {
        let present = keys(tenant);
        for key in tenant_keys {
            assert!(present.contains(&key.to_string()), "tenant lacks {key}: {present:?}");
        }
    }
    let pick = |t: &serde_json::Value| -> serde_json::Value {
        tenant_keys.iter().map(|k| (k.to_string(), t[*k].clone())).collect()
    };
    assert_eq!(
        pick(&listed[0]),
        json!({"id": "t1", "status": "failed", "from_revision": "aaa", "to_revision": "ccc",
               "failed_revision": "bbb", "attempts": 2, "error": "boom", "sqlstate": "XX000", "duration_ms": 17})
    );
    assert_eq!(
        pick(&listed[1]),
        json!({"id": "t2", "status": "pending", "from_revision": null, "to_revision": null,
               "failed_revision": null, "attempts": 0, "error": null, "sqlstate": null, "duration_ms": null})
    );

    // An abandoned run shows its unfinished work as interrupted, in the tenants and in the counts.
    let abandoned = status_json(&record, &tenants, RunState::Abandoned);
    assert_eq!(abandoned["run"]["state"], json!("abandoned"));
    assert_eq!(abandoned["tenants"][1]["status"], json!("interrupted"));
    assert_eq!(abandoned["run"]["counts"]["pending"], json!(0));
    assert_eq!(abandoned["run"]["counts"]["interrupted"], json!(1));
}

pub fn check_target_revisions_are_kept_once_set(store: &impl Store) {
    let mut ledger = store.connect();
    let tenants = [
        NewTenant {
            tenant_id: "t1",
            server: "pg-1",
            kind: "schema",
            target: Some("aaa"),
            canary: false,
            tags: None,
            at_target: None,
        },
        NewTenant {
            tenant_id: "t2",
            server: "pg-1",
            kind: "schema",
            target: None,
            canary: false,
            tags: None,
            at_target: None,
        },
    ];
    let run = ledger.begin_run(&new_run("-1"), &tenants).unwrap();
    let planned = TenantUpdate {
        target_revision: Some("base".to_string()),
        ..TenantUpdate::new("t2", Running)
    };
    ledger.record(&run, &[update("t1", Running), planned]).unwrap();
    ledger
        .record(&run, &[update("t1", Failed), update("t2", Failed)])
        .unwrap();
    let stored = ledger.tenants(&run, None).unwrap();
    assert_eq!(stored[0].target_revision.as_deref(), Some("aaa"));
    assert_eq!(stored[1].target_revision.as_deref(), Some("base"));
    let runs = ledger.runs(10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].n_tenants, 2);
}

/// A batch that names a tenant twice stores its last update, keeping a target an earlier one set.
pub fn check_repeated_updates_in_one_batch(store: &impl Store) {
    let (mut ledger, run) = begun(store, &["t1", "t2"]);
    let planned = TenantUpdate {
        target_revision: Some("abc".to_string()),
        ..update("t1", Running)
    };
    ledger
        .record(&run, &[planned, update("t2", Running), update("t1", Succeeded)])
        .unwrap();
    check_statuses(&ledger, &run, &[("t1", Succeeded), ("t2", Running)]);
    let stored = ledger.tenants(&run, None).unwrap();
    assert_eq!(stored[0].target_revision.as_deref(), Some("abc"));
}
