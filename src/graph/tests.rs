//! Unit tests and proptest over random revision graphs.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::revision::{RevisionId, RevisionMeta};

fn rev(id: &str, down: &[&str]) -> RevisionMeta {
    RevisionMeta {
        id: RevisionId::new(id),
        down_revisions: down.iter().map(|d| RevisionId::new(*d)).collect(),
        ..Default::default()
    }
}

fn with(mut m: RevisionMeta, labels: &[&str], deps: &[&str]) -> RevisionMeta {
    m.branch_labels = labels.iter().map(|s| s.to_string()).collect();
    m.depends_on = deps.iter().map(|s| s.to_string()).collect();
    m
}

fn ids(v: &[&str]) -> Vec<RevisionId> {
    v.iter().map(|s| RevisionId::new(*s)).collect()
}

/// a1 - b2 - c3 (branch point at a1) and a1 - d4 (label `side`); e5 merges c3 and d4.
fn sample() -> RevisionGraph {
    RevisionGraph::new(vec![
        rev("aaaa1", &[]),
        rev("bbbb2", &["aaaa1"]),
        rev("cccc3", &["bbbb2"]),
        with(rev("dddd4", &["aaaa1"]), &["side"], &[]),
    ])
    .unwrap()
}

fn check<T: PartialEq + std::fmt::Debug>(got: Result<T, GraphError>, want: Result<T, &str>) {
    match (got, want) {
        (Ok(g), Ok(w)) => assert_eq!(g, w),
        (Err(g), Err(w)) => assert!(g.to_string().contains(w), "error `{g}` does not contain `{w}`"),
        (g, w) => panic!("got {g:?}, want {w:?}"),
    }
}

#[test]
fn construction_collects_every_problem() {
    let err = RevisionGraph::new(vec![
        rev("a1", &[]),
        rev("a1", &[]),
        rev("b@2", &["a1"]),
        rev("c3", &["nope"]),
        with(rev("d4", &["a1"]), &["x"], &["missing"]),
        with(rev("e5", &["a1"]), &["x"], &[]),
    ])
    .unwrap_err();
    let GraphError::Invalid { problems } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(problems.len(), 5, "{err}");
    assert!(problems.contains(&GraphError::DuplicateRevision {
        revision: RevisionId::new("a1")
    }));
    assert!(problems.contains(&GraphError::UnknownDownRevision {
        revision: RevisionId::new("c3"),
        down_revision: RevisionId::new("nope")
    }));
    assert!(problems.contains(&GraphError::DuplicateBranchLabel {
        label: "x".into(),
        revision: RevisionId::new("e5"),
        other: RevisionId::new("d4")
    }));
}

#[test]
fn construction_names_cycles() {
    check(
        RevisionGraph::new(vec![
            rev("a1", &["c3"]),
            rev("b2", &["a1"]),
            rev("c3", &["b2"]),
            rev("d4", &[]),
        ])
        .map(|_| ()),
        Err("cycle among revisions (a1, b2, c3)"),
    );
    check(
        RevisionGraph::new(vec![
            rev("a1", &[]),
            with(rev("b2", &["a1"]), &[], &["c3"]),
            rev("c3", &["b2"]),
        ])
        .map(|_| ()),
        Err("dependency cycle among revisions (b2, c3)"),
    );
    check(
        RevisionGraph::new(vec![rev("a1", &["a1"])]).map(|_| ()),
        Err("cycle among revisions (a1)"),
    );
}

#[test]
fn depends_on_accepts_label_and_prefix() {
    let g = RevisionGraph::new(vec![
        with(rev("aaaa1", &[]), &["core"], &[]),
        with(rev("bbbb1", &[]), &[], &["core"]),
        with(rev("cccc1", &[]), &[], &["bbb"]),
    ])
    .unwrap();
    assert_eq!(
        g.resolved_dependencies(&RevisionId::new("bbbb1")),
        Some(ids(&["aaaa1"]))
    );
    assert_eq!(
        g.resolved_dependencies(&RevisionId::new("cccc1")),
        Some(ids(&["bbbb1"]))
    );
    assert_eq!(g.heads(), ids(&["aaaa1", "bbbb1", "cccc1"]));
    assert_eq!(g.real_heads(), ids(&["cccc1"]));
    assert_eq!(g.real_bases(), ids(&["aaaa1"]));
}

#[test]
fn queries() {
    let g = sample();
    assert_eq!(g.heads(), ids(&["cccc3", "dddd4"]));
    assert_eq!(g.bases(), ids(&["aaaa1"]));
    assert_eq!(g.branch_points(), ids(&["aaaa1"]));
    assert_eq!(g.children(&RevisionId::new("aaaa1")), Some(ids(&["bbbb2", "dddd4"])));
    assert_eq!(
        g.ancestors_of(&RevisionId::new("cccc3"), true),
        Some(ids(&["aaaa1", "bbbb2"]))
    );
    assert_eq!(
        g.branch_labels_of(&RevisionId::new("dddd4")),
        Some(vec!["side".to_string()])
    );
    assert_eq!(g.label_revision("side"), Some(&RevisionId::new("dddd4")));
}

#[test]
fn resolution() {
    let g = sample();
    let none: &[RevisionId] = &[];
    check(
        g.resolve("head", none),
        Err("multiple heads (cccc3, dddd4) for `head`: use `heads` or name one"),
    );
    check(g.resolve("heads", none), Ok(ids(&["cccc3", "dddd4"])));
    check(g.resolve("base", none), Ok(vec![]));
    check(g.resolve("side@head", none), Ok(ids(&["dddd4"])));
    check(g.resolve("cc", none), Ok(ids(&["cccc3"])));
    check(g.resolve("zz", none), Err("no such revision or branch `zz`"));
    check(g.resolve("+1", none), Ok(ids(&["aaaa1"])));
    check(g.resolve("+2", none), Err("ambiguous"));
    check(g.resolve("side@+2", none), Ok(ids(&["dddd4"])));
    check(g.resolve("+1", &ids(&["bbbb2"])), Ok(ids(&["cccc3"])));
    check(g.resolve("-1", &ids(&["bbbb2"])), Ok(ids(&["aaaa1"])));
    check(g.resolve("-3", &ids(&["bbbb2"])), Err("goes past the end"));
    check(g.resolve("cccc3-2", none), Ok(ids(&["aaaa1"])));
    check(g.resolve("cccc3@head", none), Ok(ids(&["cccc3"])));
}

#[test]
fn plans_and_rows() {
    let g = sample();
    let up = g.plan_upgrade(&[], "heads").unwrap();
    let order: Vec<_> = up.steps.iter().map(|s| s.revision.0.as_str()).collect();
    assert_eq!(order, ["aaaa1", "dddd4", "bbbb2", "cccc3"]);
    assert_eq!(up.steps[2].insert_rows, ids(&["bbbb2"]));
    assert!(up.steps[2].delete_rows.is_empty(), "a new branch inserts a row");
    let rows = up.apply_rows(&[]);
    assert_eq!(
        rows.iter().collect::<BTreeSet<_>>(),
        ids(&["cccc3", "dddd4"]).iter().collect()
    );
    // As in Alembic, `<label>@base` only isolates a branch that has its own root; here both share aaaa1.
    let down = g.plan_downgrade(&rows, "side@base").unwrap();
    assert_eq!(
        down.steps.iter().map(|s| s.revision.0.as_str()).collect::<Vec<_>>(),
        ["cccc3", "bbbb2", "dddd4", "aaaa1"]
    );
    let down = g.plan_downgrade(&rows, "side@-1").unwrap();
    assert_eq!(
        down.steps.iter().map(|s| s.revision.0.as_str()).collect::<Vec<_>>(),
        ["dddd4"]
    );
    let down = g.plan_downgrade(&rows, "bbbb2").unwrap();
    assert_eq!(
        down.apply_rows(&rows).iter().collect::<BTreeSet<_>>(),
        ids(&["bbbb2", "dddd4"]).iter().collect()
    );
    check(
        g.plan_downgrade(&ids(&["bbbb2"]), "cccc3").map(|_| ()),
        Err("is not an ancestor"),
    );
    check(
        g.plan_upgrade(&ids(&["nope"]), "heads").map(|_| ()),
        Err("no such revision"),
    );
}

#[test]
fn stamp_and_history() {
    let g = sample();
    check(g.stamp(&[], &["heads"], false), Ok(ids(&["cccc3", "dddd4"])));
    check(
        g.stamp(&ids(&["cccc3", "dddd4"]), &["bbbb2"], false),
        Ok(ids(&["dddd4", "bbbb2"])),
    );
    check(g.stamp(&ids(&["cccc3", "dddd4"]), &["base"], false), Ok(vec![]));
    check(g.stamp(&ids(&["cccc3"]), &["aaaa1"], true), Ok(ids(&["aaaa1"])));
    check(
        g.walk("base:heads", &[]),
        Ok(ids(&["cccc3", "bbbb2", "dddd4", "aaaa1"])),
    );
    check(g.walk("current:", &ids(&["bbbb2"])), Ok(ids(&["cccc3", "bbbb2"])));
    check(g.walk("nocolon", &[]), Err("history range"));
}

#[test]
fn plan_json_shape() {
    let g = sample();
    let plan = g.plan_upgrade(&[], "side@head").unwrap();
    assert_eq!(
        plan.to_json(),
        r#"{"direction":"upgrade","steps":[{"revision":"aaaa1","direction":"up"},{"revision":"dddd4","direction":"up"}]}"#
    );
    let down = g.plan_downgrade(&ids(&["dddd4"]), "base").unwrap();
    assert_eq!(serde_json::to_string(&down).unwrap().matches("\"down\"").count(), 2);
    assert!(serde_json::to_string(&down)
        .unwrap()
        .starts_with(r#"{"direction":"downgrade","#));
}

/// Random DAGs: node i may name earlier nodes as down_revisions and depends_on, so there are no cycles.
fn arb_graph() -> impl Strategy<Value = Vec<RevisionMeta>> {
    (1usize..10)
        .prop_flat_map(|n| {
            proptest::collection::vec(
                (
                    proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
                    proptest::collection::vec(any::<prop::sample::Index>(), 0..2),
                    any::<bool>(),
                ),
                n,
            )
        })
        .prop_map(|nodes| {
            nodes
                .into_iter()
                .enumerate()
                .map(|(i, (downs, deps, label))| {
                    let pick = |v: &[prop::sample::Index]| -> Vec<String> {
                        let mut out: Vec<String> = if i == 0 {
                            Vec::new()
                        } else {
                            v.iter().map(|x| format!("rev{:03}", x.index(i))).collect()
                        };
                        out.sort();
                        out.dedup();
                        out
                    };
                    let down: Vec<String> = pick(&downs);
                    let deps: Vec<String> = pick(&deps).into_iter().filter(|d| !down.contains(d)).collect();
                    RevisionMeta {
                        id: RevisionId(format!("rev{i:03}")),
                        down_revisions: down.into_iter().map(RevisionId).collect(),
                        branch_labels: if label && i % 3 == 0 {
                            vec![format!("label{i}")]
                        } else {
                            vec![]
                        },
                        depends_on: deps,
                        message: String::new(),
                    }
                })
                .collect()
        })
}

/// Applies a plan step by step, checking every delete names a present row and every insert an absent one.
fn apply_checked(plan: &Plan, rows: &[RevisionId]) -> BTreeSet<RevisionId> {
    let mut set: BTreeSet<RevisionId> = rows.iter().cloned().collect();
    for s in &plan.steps {
        for d in &s.delete_rows {
            assert!(set.remove(d), "step {} deletes absent row {d}", s.revision);
        }
        for i in &s.insert_rows {
            assert!(set.insert(i.clone()), "step {} inserts present row {i}", s.revision);
        }
    }
    set
}

proptest! {
    #[test]
    fn upgrade_to_heads_respects_every_edge(metas in arb_graph()) {
        let g = RevisionGraph::new(metas.clone()).unwrap();
        let plan = g.plan_upgrade(&[], "heads").unwrap();
        let order: Vec<&RevisionId> = plan.steps.iter().map(|s| &s.revision).collect();
        prop_assert_eq!(order.len(), metas.len());
        prop_assert_eq!(order.iter().collect::<BTreeSet<_>>().len(), metas.len());
        for (pos, id) in order.iter().enumerate() {
            let m = g.get(id).unwrap();
            let needs = m.down_revisions.iter().cloned().chain(g.resolved_dependencies(id).unwrap());
            for need in needs {
                let at = order.iter().position(|o| **o == need).unwrap();
                prop_assert!(at < pos, "{} applied before its parent {}", id, need);
            }
        }
        let rows = apply_checked(&plan, &[]);
        let rows: Vec<RevisionId> = rows.into_iter().collect();
        let down = g.plan_downgrade(&rows, "base").unwrap();
        prop_assert!(apply_checked(&down, &rows).is_empty());
    }

    #[test]
    fn upgrade_then_downgrade_restores_rows(metas in arb_graph(), from in any::<prop::sample::Index>(), to in any::<prop::sample::Index>()) {
        let g = RevisionGraph::new(metas.clone()).unwrap();
        let from_id = metas[from.index(metas.len())].id.clone();
        let start_plan = g.plan_upgrade(&[], from_id.as_str()).unwrap();
        let start: Vec<RevisionId> = apply_checked(&start_plan, &[]).into_iter().collect();
        let target = metas[to.index(metas.len())].id.clone();
        let Ok(plan) = g.plan_upgrade(&start, target.as_str()) else { return Ok(()) };
        let after: Vec<RevisionId> = apply_checked(&plan, &start).into_iter().collect();
        // `downgrade <from>` takes back what sits above `from` through down_revision (and what depends on
        // that); revisions on other branches stay, as in Alembic.
        let above: BTreeSet<RevisionId> = g.descendants_of(&from_id, false).unwrap().into_iter().collect();
        if !plan.steps.is_empty() && plan.steps.iter().all(|s| above.contains(&s.revision)) {
            let back = g.plan_downgrade(&after, from_id.as_str()).unwrap();
            let restored = apply_checked(&back, &after);
            prop_assert_eq!(restored, start.iter().cloned().collect::<BTreeSet<_>>());
        }
    }
}
