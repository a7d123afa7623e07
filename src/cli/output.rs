//! Rendering helpers shared by the commands: the one shape of `--format json` documents and one-line revision
//! descriptions.

use serde_json::{json, Value};

use crate::graph::RevisionGraph;
use crate::revision::RevisionId;
use crate::script::Script;

/// The format version of every `--format json` document, its `"v"` field (docs/json.md). It changes when a
/// field changes meaning or goes away, not when one is added.
pub const JSON_VERSION: u64 = 1;

/// Prints `value` as the command's one JSON document (pretty, then a newline), in the shape every command
/// shares: an object with `"v"`. A list (heads, branches, history: revisions) becomes `{"v": 1, "revisions":
/// [...]}`; an object keeps a `"v"` it has and gets [`JSON_VERSION`] otherwise.
pub fn print_json(value: &Value) {
    println!("{}", json_document(value));
}

/// The text [`print_json`] prints, without the final newline.
pub fn json_document(value: &Value) -> String {
    let document = match value {
        Value::Object(map) => {
            let mut map = map.clone();
            map.entry("v").or_insert(JSON_VERSION.into());
            Value::Object(map)
        }
        list => json!({ "v": JSON_VERSION, "revisions": list }),
    };
    serde_json::to_string_pretty(&document).unwrap_or_else(|_| document.to_string())
}

/// `<down> -> <rev> (head) (label), message`, as Alembic's history lines.
pub fn revision_line(graph: &RevisionGraph, script: &Script) -> String {
    let meta = &script.meta;
    let down = match meta.down_revisions.as_slice() {
        [] => "<base>".to_string(),
        [one] => one.to_string(),
        many => format!("({})", many.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")),
    };
    format!(
        "{down} -> {}{}, {}",
        meta.id,
        tags(graph, &meta.id, script),
        meta.message
    )
}

/// ` (head)`, ` (branchpoint)`, ` (mergepoint)` and ` (label)` markers.
pub fn tags(graph: &RevisionGraph, id: &RevisionId, script: &Script) -> String {
    let mut out = String::new();
    if graph.heads().contains(id) {
        out.push_str(" (head)");
    }
    if graph.children(id).is_some_and(|c| c.len() > 1) {
        out.push_str(" (branchpoint)");
    }
    if script.meta.down_revisions.len() > 1 {
        out.push_str(" (mergepoint)");
    }
    for label in &script.meta.branch_labels {
        out.push_str(&format!(" ({label})"));
    }
    out
}

/// The JSON object describing one revision.
pub fn revision_json(graph: &RevisionGraph, script: &Script) -> Value {
    let meta = &script.meta;
    json!({
        "revision": meta.id,
        "down_revisions": meta.down_revisions,
        "branch_labels": meta.branch_labels,
        "depends_on": meta.depends_on,
        "message": meta.message,
        "create_date": script.create_date,
        "is_head": graph.heads().contains(&meta.id),
        "is_transactional": script.is_transactional,
        "path": script.path.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_document_is_an_object_with_a_version() {
        let doc = |v: Value| serde_json::from_str::<Value>(&json_document(&v)).unwrap();
        assert_eq!(doc(json!({"current": []})), json!({"v": 1, "current": []}));
        assert_eq!(
            doc(json!([{"revision": "a"}])),
            json!({"v": 1, "revisions": [{"revision": "a"}]})
        );
        assert_eq!(doc(json!([])), json!({"v": 1, "revisions": []}));
        // A document with its own version keeps it.
        assert_eq!(doc(json!({"v": 2, "x": 1})), json!({"v": 2, "x": 1}));
        assert!(
            json_document(&json!({"a": 1})).contains("\n  \"a\": 1"),
            "pretty-printed"
        );
    }
}
