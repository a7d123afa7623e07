//! Rendering helpers shared by the commands: JSON printing and one-line revision descriptions.

use serde_json::{json, Value};

use crate::graph::RevisionGraph;
use crate::revision::RevisionId;
use crate::script::Script;

pub fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
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
