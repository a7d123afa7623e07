//! Differential tests: our answers against Alembic's, recorded by `tests/alembic/gen_fixtures.py` into
//! `tests/fixtures/alembic/*.json`.
//!
//! Comparison rules (where we knowingly differ, see also the module doc of `graph`):
//! - Version rows are compared as sets, step effects as sorted delete/insert lists.
//! - Errors compare by coarse kind (`multiple_heads`, `resolution`, `range`, `error`).
//! - Answers the generator marked unstable (they varied with Python's hash seed) compare as sets.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{GraphError, Plan, RevisionGraph};
use crate::revision::{RevisionId, RevisionMeta};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/alembic");

fn kind(e: &GraphError) -> &'static str {
    match e {
        GraphError::MultipleHeads { .. } => "multiple_heads",
        GraphError::UnknownRevision { .. }
        | GraphError::AmbiguousPrefix { .. }
        | GraphError::UnknownBranch { .. }
        | GraphError::NotOnBranch { .. } => "resolution",
        GraphError::RangeNotAncestor { .. } => "range",
        _ => "error",
    }
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default()
}

fn rows(v: &Value) -> Vec<RevisionId> {
    strs(v).into_iter().map(RevisionId).collect()
}

fn id_strs(ids: &[RevisionId]) -> Vec<String> {
    ids.iter().map(|i| i.0.clone()).collect()
}

fn plan_json(p: &Plan, start: &[RevisionId]) -> Value {
    let steps: Vec<Value> = p
        .steps
        .iter()
        .map(|s| {
            let mut d = id_strs(&s.delete_rows);
            let mut i = id_strs(&s.insert_rows);
            d.sort();
            i.sort();
            serde_json::json!({"revision": s.revision.0, "delete": d, "insert": i})
        })
        .collect();
    let mut after = id_strs(&p.apply_rows(start));
    after.sort();
    after.dedup();
    serde_json::json!({"steps": steps, "rows_after": after})
}

fn as_set(v: &Value) -> Value {
    match v {
        Value::Array(a) => {
            let set: BTreeSet<String> = a.iter().map(|x| x.to_string()).collect();
            Value::Array(set.into_iter().map(Value::String).collect())
        }
        Value::Object(o) => {
            let mut o = o.clone();
            if let Some(steps) = o.get("steps").cloned() {
                o.insert("steps".into(), as_set(&steps));
            }
            Value::Object(o)
        }
        other => other.clone(),
    }
}

fn ours(g: &RevisionGraph, q: &Value) -> Result<Value, GraphError> {
    let current = rows(&q["rows"]);
    match q["kind"].as_str().unwrap_or_default() {
        "resolve" => g
            .resolve(q["spec"].as_str().unwrap_or_default(), &current)
            .map(|r| Value::from(id_strs(&r))),
        "upgrade" => g
            .plan_upgrade(&current, q["target"].as_str().unwrap_or_default())
            .map(|p| plan_json(&p, &current)),
        "downgrade" => g
            .plan_downgrade(&current, q["target"].as_str().unwrap_or_default())
            .map(|p| plan_json(&p, &current)),
        "applied" => g
            .applied(&current)
            .map(|s| Value::from(s.into_iter().map(|r| r.0).collect::<Vec<_>>())),
        "stamp" => {
            let targets = strs(&q["targets"]);
            let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
            g.stamp(&current, &targets, q["purge"].as_bool().unwrap_or(false))
                .map(|r| {
                    let mut r = id_strs(&r);
                    r.sort();
                    Value::from(r)
                })
        }
        "history" => g
            .walk(q["range"].as_str().unwrap_or_default(), &current)
            .map(|r| Value::from(id_strs(&r))),
        other => panic!("unknown query kind {other}"),
    }
}

fn load(path: &std::path::Path) -> (Value, RevisionGraph) {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let metas = doc["graph"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| RevisionMeta {
            id: RevisionId(r["id"].as_str().unwrap().to_string()),
            down_revisions: rows(&r["down_revisions"]),
            branch_labels: strs(&r["branch_labels"]),
            depends_on: strs(&r["depends_on"]),
            message: String::new(),
        })
        .collect();
    let g = RevisionGraph::new(metas).unwrap();
    (doc, g)
}

#[test]
fn matches_recorded_alembic_answers() {
    let mut files: Vec<_> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no fixtures in {FIXTURES}: run tests/alembic/gen_fixtures.py"
    );
    let mut failures = Vec::new();
    let mut n = 0;
    for path in &files {
        let (doc, g) = load(path);
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let info = &doc["info"];
        for (key, got) in [
            ("heads", g.heads()),
            ("real_heads", g.real_heads()),
            ("bases", g.bases()),
            ("real_bases", g.real_bases()),
        ] {
            let got = Value::from(id_strs(&got));
            let want = &info[key];
            if as_set(&got) != as_set(want) {
                failures.push(format!("{name}: {key}: want {want}, got {got}"));
            }
        }
        for q in doc["queries"].as_array().unwrap() {
            n += 1;
            let result = &q["result"];
            let got = ours(&g, q);
            let ok = match (got.as_ref(), result.get("ok")) {
                (Ok(got), Some(want)) => {
                    if q["stable"].as_bool().unwrap_or(false) {
                        got == want
                    } else {
                        as_set(got) == as_set(want)
                    }
                }
                (Err(e), None) => kind(e) == result["error"].as_str().unwrap_or_default(),
                _ => false,
            };
            if !ok {
                let mut qq = q.clone();
                qq.as_object_mut().unwrap().remove("result");
                failures.push(format!("{name}: {qq}\n    alembic: {result}\n    ours:    {got:?}"));
            }
        }
    }
    assert!(n > 1000, "too few fixture queries: {n}");
    if !failures.is_empty() {
        let shown: Vec<_> = failures.iter().take(40).cloned().collect();
        panic!(
            "{} of {n} fixture queries differ from Alembic:\n{}",
            failures.len(),
            shown.join("\n")
        );
    }
}
