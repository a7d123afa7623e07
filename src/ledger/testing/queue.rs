//! The rules of a shared run (see `ledger/queue.rs`), over any backend.

use std::time::Duration;

use serde_json::json;

use super::Store;
use crate::ledger::*;

fn new_run() -> NewRun {
    NewRun {
        command: "upgrade".to_string(),
        target: "head".to_string(),
        options: json!({}),
        user: "ops".to_string(),
        host: "host-a".to_string(),
    }
}

fn open(name: Option<&str>, placement: Placement, lease: Duration) -> OpenRun {
    OpenRun {
        run: new_run(),
        name: name.map(str::to_string),
        runner: RunnerInfo::this_process("host-a", placement, lease),
    }
}

const LONG: Duration = Duration::from_secs(300);

/// Tenants t00..tNN with their tags: `region` eu when even and us when odd (and on servers a and b likewise).
fn tenant_rows(n: usize) -> (Vec<String>, Vec<String>) {
    let ids = (0..n).map(|i| format!("t{i:02}")).collect();
    let tags = (0..n)
        .map(|i| json!({"region": if i % 2 == 0 { "eu" } else { "us" }}).to_string())
        .collect();
    (ids, tags)
}

fn new_tenants<'a>(ids: &'a [String], tags: &'a [String], n_canaries: usize) -> Vec<NewTenant<'a>> {
    ids.iter()
        .zip(tags)
        .enumerate()
        .map(|(i, (id, tags))| NewTenant {
            tenant_id: id,
            server: if i % 2 == 0 { "a" } else { "b" },
            kind: "schema",
            target: None,
            canary: i < n_canaries,
            tags: Some(tags),
            at_target: None,
        })
        .collect()
}

fn claimed_ids(claim: &Claim) -> Vec<&str> {
    claim.tenants.iter().map(|t| t.tenant_id.as_str()).collect()
}

fn done(id: &str) -> TenantUpdate {
    TenantUpdate {
        attempts: 1,
        ..TenantUpdate::new(id, TenantStatus::Succeeded)
    }
}

/// Claims come in dispatch order, never twice, and a runner that took the last one is told it is done.
pub fn check_claims_in_order_once(store: &impl Store) {
    let (ids, tags) = tenant_rows(5);
    let mut a = store.connect();
    let joined = a
        .open_run(&open(None, Placement::default(), LONG), &new_tenants(&ids, &tags, 0))
        .unwrap();
    assert!(joined.is_new);
    let first = a.claim(&joined.run, 2).unwrap();
    assert_eq!(claimed_ids(&first), ["t00", "t01"]);
    assert_eq!(first.state, ClaimState::More);
    let rest = a.claim(&joined.run, 10).unwrap();
    assert_eq!(claimed_ids(&rest), ["t02", "t03", "t04"]);
    // Everything is held by this runner: nothing left for it to wait for.
    assert_eq!(rest.state, ClaimState::Done);
    let none = a.claim(&joined.run, 10).unwrap();
    assert!(none.tenants.is_empty());
    let updates: Vec<TenantUpdate> = ids.iter().map(|id| done(id)).collect();
    a.record(&joined.run, &updates).unwrap();
    a.finish_run(&joined.run, 0).unwrap();
    let run = a.run(&RunSelector::Id(joined.run.to_string())).unwrap().unwrap();
    assert!(run.is_finished());
    assert_eq!(run.runners.len(), 1);
    let tenants = a.tenants(&joined.run, None).unwrap();
    assert!(tenants
        .iter()
        .all(|t| t.runner.as_deref() == Some(run.runners[0].id.as_str())));
}

/// Tenants known at their target when the run opens are recorded skipped with their version rows, never
/// claimed, and do not keep a canary phase open; the run finishes when the others are done.
pub fn check_tenants_at_target_are_recorded_skipped_and_never_claimed(store: &impl Store) {
    let (ids, tags) = tenant_rows(5);
    let mut tenants = new_tenants(&ids, &tags, 2);
    tenants[0].at_target = Some("aaa,bbb");
    tenants[2].at_target = Some("aaa");
    // At base: at the target, with no version rows.
    tenants[3].at_target = Some("");
    let mut a = store.connect();
    let joined = a.open_run(&open(None, Placement::default(), LONG), &tenants).unwrap();
    let stored = a.tenants(&joined.run, None).unwrap();
    let row = |id: &str| stored.iter().find(|t| t.tenant_id == id).unwrap();
    assert_eq!(row("t00").status, TenantStatus::Skipped);
    assert_eq!(row("t00").from_revision.as_deref(), Some("aaa,bbb"));
    assert_eq!(row("t00").to_revision.as_deref(), Some("aaa,bbb"));
    assert_eq!(row("t03").status, TenantStatus::Skipped);
    assert_eq!(row("t03").from_revision, None);
    assert_eq!(row("t01").status, TenantStatus::Pending);
    assert_eq!(row("t01").from_revision, None);
    // The canary t00 is finished, so only the canary t01 is claimable until it finishes.
    let first = a.claim(&joined.run, 10).unwrap();
    assert_eq!(claimed_ids(&first), ["t01"]);
    a.record(&joined.run, &[done("t01")]).unwrap();
    let rest = a.claim(&joined.run, 10).unwrap();
    assert_eq!(claimed_ids(&rest), ["t04"]);
    assert_eq!(rest.state, ClaimState::Done);
    a.record(&joined.run, &[done("t04")]).unwrap();
    a.finish_run(&joined.run, 0).unwrap();
    let run = a.run(&RunSelector::Id(joined.run.to_string())).unwrap().unwrap();
    assert!(run.is_finished());
    assert_eq!(run.n_tenants, 5);
    assert_eq!(
        a.tenants(&joined.run, Some(&[TenantStatus::Skipped])).unwrap().len(),
        3,
        "the skipped rows stay skipped"
    );
}

/// Runners giving one name share one run; the second sees the first's tenants, and neither gets a tenant the
/// other holds. A runner with another target is refused.
pub fn check_named_run_is_shared(store: &impl Store) {
    let (ids, tags) = tenant_rows(6);
    let mut a = store.connect();
    let mut b = store.connect();
    let ja = a
        .open_run(
            &open(Some("rollout-1"), Placement::default(), LONG),
            &new_tenants(&ids, &tags, 0),
        )
        .unwrap();
    let jb = b
        .open_run(&open(Some("rollout-1"), Placement::default(), LONG), &[])
        .unwrap();
    assert!(ja.is_new && !jb.is_new);
    assert_eq!(ja.run, jb.run);
    let ca = a.claim(&ja.run, 4).unwrap();
    let cb = b.claim(&jb.run, 4).unwrap();
    assert_eq!(claimed_ids(&ca), ["t00", "t01", "t02", "t03"]);
    assert_eq!(claimed_ids(&cb), ["t04", "t05"]);
    // b has nothing more to take, but a still holds live work: b must wait, not leave.
    let cb2 = b.claim(&jb.run, 4).unwrap();
    assert!(cb2.tenants.is_empty());
    assert_eq!(cb2.state, ClaimState::Wait);
    // a cannot write a tenant b holds.
    let err = a.record(&ja.run, &[done("t04")]).unwrap_err();
    assert!(matches!(err, LedgerError::LostClaim { .. }), "{err}");
    let mut other = open(Some("rollout-1"), Placement::default(), LONG);
    other.run.target = "abc123".to_string();
    let err = store.connect().open_run(&other, &[]).unwrap_err();
    assert!(matches!(err, LedgerError::RunMismatch { .. }), "{err}");
}

/// A runner whose lease lapsed loses its unfinished tenants to another runner, its writes to them are
/// refused, and its heartbeat says the lease is gone.
pub fn check_lapsed_lease_hands_tenants_over(store: &impl Store) {
    let (ids, tags) = tenant_rows(3);
    let mut a = store.connect();
    let mut b = store.connect();
    let ja = a
        .open_run(
            &open(Some("lease"), Placement::default(), Duration::from_millis(150)),
            &new_tenants(&ids, &tags, 0),
        )
        .unwrap();
    b.open_run(&open(Some("lease"), Placement::default(), LONG), &[])
        .unwrap();
    let ca = a.claim(&ja.run, 2).unwrap();
    assert_eq!(claimed_ids(&ca), ["t00", "t01"]);
    a.record(&ja.run, &[TenantUpdate::new("t00", TenantStatus::Running)])
        .unwrap();
    let cb = b.claim(&ja.run, 5).unwrap();
    assert_eq!(claimed_ids(&cb), ["t02"]);
    std::thread::sleep(Duration::from_millis(400));
    let cb = b.claim(&ja.run, 5).unwrap();
    assert_eq!(
        claimed_ids(&cb),
        ["t00", "t01"],
        "a's running and claimed tenants go to b"
    );
    let err = a.record(&ja.run, &[done("t00")]).unwrap_err();
    assert!(matches!(err, LedgerError::LostClaim { .. }), "{err}");
    let err = a.heartbeat(&ja.run).unwrap_err();
    assert!(matches!(err, LedgerError::LeaseLost { .. }), "{err}");
    b.record(&ja.run, &[done("t00"), done("t01"), done("t02")]).unwrap();
    b.finish_run(&ja.run, 0).unwrap();
    let run = b.run(&RunSelector::Id(ja.run.to_string())).unwrap().unwrap();
    assert!(run.is_finished(), "a's lease lapsed, so b was the last live runner");
    assert_eq!(run.counts.succeeded, 3);
}

/// A runner only claims tenants of its placement (servers, tags).
pub fn check_placement(store: &impl Store) {
    let (ids, tags) = tenant_rows(6);
    let mut a = store.connect();
    let mut eu = store.connect();
    let mut on_b = store.connect();
    let ja = a
        .open_run(
            &open(
                Some("placed"),
                Placement {
                    servers: vec!["none".into()],
                    tags: vec![],
                },
                LONG,
            ),
            &new_tenants(&ids, &tags, 0),
        )
        .unwrap();
    let eu_placement = Placement {
        servers: vec![],
        tags: vec![("region".into(), "eu".into())],
    };
    eu.open_run(&open(Some("placed"), eu_placement, LONG), &[]).unwrap();
    let b_placement = Placement {
        servers: vec!["b".into()],
        tags: vec![],
    };
    on_b.open_run(&open(Some("placed"), b_placement, LONG), &[]).unwrap();
    assert_eq!(claimed_ids(&eu.claim(&ja.run, 10).unwrap()), ["t00", "t02", "t04"]);
    assert_eq!(claimed_ids(&on_b.claim(&ja.run, 10).unwrap()), ["t01", "t03", "t05"]);
    let none = a.claim(&ja.run, 10).unwrap();
    assert!(none.tenants.is_empty());
    assert_eq!(none.state, ClaimState::Done, "no tenant is on server `none`");
}

/// Canaries go first across runners, and a halted run hands out nothing.
pub fn check_canaries_and_halt(store: &impl Store) {
    let (ids, tags) = tenant_rows(4);
    let mut a = store.connect();
    let mut b = store.connect();
    let ja = a
        .open_run(
            &open(Some("canary"), Placement::default(), LONG),
            &new_tenants(&ids, &tags, 2),
        )
        .unwrap();
    b.open_run(&open(Some("canary"), Placement::default(), LONG), &[])
        .unwrap();
    assert_eq!(claimed_ids(&a.claim(&ja.run, 1).unwrap()), ["t00"]);
    assert_eq!(
        claimed_ids(&b.claim(&ja.run, 10).unwrap()),
        ["t01"],
        "only canaries during the canary phase"
    );
    assert_eq!(b.claim(&ja.run, 10).unwrap().state, ClaimState::Wait);
    a.record(&ja.run, &[done("t00")]).unwrap();
    b.record(&ja.run, &[done("t01")]).unwrap();
    assert_eq!(claimed_ids(&b.claim(&ja.run, 1).unwrap()), ["t02"]);
    a.halt(&ja.run).unwrap();
    let halted = a.claim(&ja.run, 10).unwrap();
    assert!(halted.tenants.is_empty());
    assert_eq!(halted.state, ClaimState::Halted);
    assert!(a.run(&RunSelector::Latest).unwrap().unwrap().is_halted);
}

/// The run is finished by the last live runner; an earlier runner's stop gives its claimed tenants back and
/// leaves its interrupted ones for the others.
pub fn check_last_runner_finishes(store: &impl Store) {
    let (ids, tags) = tenant_rows(4);
    let mut a = store.connect();
    let mut b = store.connect();
    let ja = a
        .open_run(
            &open(Some("finish"), Placement::default(), LONG),
            &new_tenants(&ids, &tags, 0),
        )
        .unwrap();
    b.open_run(&open(Some("finish"), Placement::default(), LONG), &[])
        .unwrap();
    assert_eq!(claimed_ids(&a.claim(&ja.run, 3).unwrap()), ["t00", "t01", "t02"]);
    a.record(&ja.run, &[done("t00"), TenantUpdate::new("t01", TenantStatus::Running)])
        .unwrap();
    a.finish_run(&ja.run, 130).unwrap();
    let run = b.run(&RunSelector::Latest).unwrap().unwrap();
    assert!(!run.is_finished(), "b is still live");
    assert_eq!(run.state("host-a"), RunState::Live);
    // t01 was interrupted under a, t02 was only claimed: b takes both, then t03.
    assert_eq!(claimed_ids(&b.claim(&ja.run, 10).unwrap()), ["t01", "t02", "t03"]);
    b.record(&ja.run, &[done("t01"), done("t02"), done("t03")]).unwrap();
    b.finish_run(&ja.run, 0).unwrap();
    let run = b.run(&RunSelector::Latest).unwrap().unwrap();
    assert!(run.is_finished());
    assert_eq!(
        run.exit_code,
        Some(130),
        "the run keeps the worst exit code of its runners"
    );
    assert_eq!(run.counts.succeeded, 4);
    // A runner joining the finished run finds nothing to do.
    let late = store
        .connect()
        .open_run(&open(Some("finish"), Placement::default(), LONG), &[])
        .unwrap();
    assert!(late.is_finished);
}
/// Runners of one run share each server's connection budget: together never more than the cap, a fair part
/// each once the first lets go of what it does not use, and everything for the last one standing.
pub fn check_connection_shares(store: &impl Store) {
    let (ids, tags) = tenant_rows(2);
    let mut a = store.connect();
    let mut b = store.connect();
    let ja = a
        .open_run(
            &open(Some("shares"), Placement::default(), LONG),
            &new_tenants(&ids, &tags, 0),
        )
        .unwrap();
    b.open_run(&open(Some("shares"), Placement::default(), LONG), &[])
        .unwrap();
    let demand = |want, in_use| ServerDemand {
        server: "a".into(),
        cap: 4,
        want,
        in_use,
    };
    assert_eq!(a.share_connections(&ja.run, &[demand(4, 0)]).unwrap().connections, [4]);
    assert_eq!(
        b.share_connections(&ja.run, &[demand(4, 0)]).unwrap().connections,
        [0],
        "a holds the whole cap"
    );
    // a uses one connection now: it keeps its fair half, and b gets the rest.
    assert_eq!(a.share_connections(&ja.run, &[demand(4, 1)]).unwrap().connections, [2]);
    let b_shares = b.share_connections(&ja.run, &[demand(4, 0)]).unwrap();
    assert_eq!(b_shares.connections, [2]);
    assert_eq!(
        b_shares.n_busy_runners, 2,
        "both want connections: the rate is split in two"
    );
    // A runner with no work there gives its part back.
    assert_eq!(a.share_connections(&ja.run, &[demand(0, 0)]).unwrap().connections, [0]);
    assert_eq!(b.share_connections(&ja.run, &[demand(4, 2)]).unwrap().connections, [4]);
    a.share_connections(&ja.run, &[demand(4, 0)]).unwrap();
    b.finish_run(&ja.run, 0).unwrap();
    assert_eq!(
        a.share_connections(&ja.run, &[demand(4, 0)]).unwrap().connections,
        [4],
        "a finished runner holds nothing"
    );
}
