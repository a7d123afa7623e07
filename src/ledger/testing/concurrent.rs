//! Runners working at once, from threads: what a shared run must survive.

use std::collections::BTreeMap;
use std::sync::Barrier;
use std::time::Duration;

use serde_json::json;

use super::Store;
use crate::ledger::*;

fn open(name: &str) -> OpenRun {
    OpenRun {
        run: NewRun {
            command: "upgrade".to_string(),
            target: "head".to_string(),
            options: json!({}),
            user: "ops".to_string(),
            host: "host-a".to_string(),
        },
        name: Some(name.to_string()),
        runner: RunnerInfo::this_process("host-a", Placement::default(), Duration::from_secs(300)),
    }
}

fn tenants(ids: &[String]) -> Vec<NewTenant<'_>> {
    ids.iter()
        .map(|id| NewTenant {
            tenant_id: id,
            server: "a",
            kind: "schema",
            target: None,
            canary: false,
            tags: None,
            at_target: None,
        })
        .collect()
}

const N_RUNNERS: usize = 8;
const N_TENANTS: usize = 1_000;

/// Eight runners claim small batches of one run at once, each recording its tenants done: every tenant is
/// claimed exactly once, and the last runner to finish finishes the run.
pub fn check_concurrent_claims_take_each_tenant_once(store: &impl Store) {
    let ids: Vec<String> = (0..N_TENANTS).map(|i| format!("t{i:04}")).collect();
    let mut first = store.connect();
    let joined = first.open_run(&open("crowd"), &tenants(&ids)).unwrap();
    let barrier = Barrier::new(N_RUNNERS);
    let per_runner: Vec<Vec<String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..N_RUNNERS)
            .map(|_| {
                scope.spawn(|| {
                    let mut ledger = store.connect();
                    let run = ledger.open_run(&open("crowd"), &[]).unwrap().run;
                    barrier.wait();
                    let mut mine = Vec::new();
                    loop {
                        let claim = ledger.claim(&run, 7).unwrap();
                        let updates: Vec<TenantUpdate> = claim
                            .tenants
                            .iter()
                            .map(|t| TenantUpdate {
                                attempts: t.attempts + 1,
                                ..TenantUpdate::new(t.tenant_id.clone(), TenantStatus::Succeeded)
                            })
                            .collect();
                        ledger.record(&run, &updates).unwrap();
                        mine.extend(claim.tenants.into_iter().map(|t| t.tenant_id));
                        match claim.state {
                            ClaimState::More => {}
                            ClaimState::Wait => std::thread::sleep(Duration::from_millis(5)),
                            ClaimState::Done | ClaimState::Halted => break,
                        }
                    }
                    ledger.finish_run(&run, 0).unwrap();
                    mine
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut times_claimed: BTreeMap<&str, usize> = BTreeMap::new();
    for id in per_runner.iter().flatten() {
        *times_claimed.entry(id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = times_claimed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "claimed more than once: {twice:?}");
    assert_eq!(times_claimed.len(), N_TENANTS, "every tenant is claimed");
    // The creator never claimed; it finishes last.
    first.finish_run(&joined.run, 0).unwrap();
    let run = first.run(&RunSelector::Id(joined.run.to_string())).unwrap().unwrap();
    assert!(run.is_finished());
    assert_eq!(run.counts.succeeded, N_TENANTS);
    assert_eq!(run.runners.len(), N_RUNNERS + 1);
    let tenants = first.tenants(&joined.run, None).unwrap();
    assert!(
        tenants.iter().all(|t| t.attempts == 1),
        "no tenant was handed out twice"
    );
}

/// Runners opening one name at once end up in one run, created by exactly one of them.
pub fn check_concurrent_opens_of_one_name_make_one_run(store: &impl Store) {
    let ids: Vec<String> = (0..50).map(|i| format!("t{i:02}")).collect();
    let barrier = Barrier::new(N_RUNNERS);
    let joined: Vec<Joined> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..N_RUNNERS)
            .map(|_| {
                scope.spawn(|| {
                    let mut ledger = store.connect();
                    barrier.wait();
                    ledger.open_run(&open("together"), &tenants(&ids)).unwrap()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(joined.iter().filter(|j| j.is_new).count(), 1, "{joined:?}");
    assert!(joined.iter().all(|j| j.run == joined[0].run), "{joined:?}");
    let ledger = store.connect();
    let runs = ledger.runs(100).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].n_tenants, 50);
    assert_eq!(runs[0].runners.len(), N_RUNNERS);
}
