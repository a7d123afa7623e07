//! The JSON shape of `fleet status --json`, a contract that scripts rely on.
//!
//! Keys are never removed or renamed; new keys may be added inside the `run` and tenant objects.

use serde_json::{json, Value};

use super::record::{RunRecord, RunState, TenantRecord};

/// `{"run": {...}, "tenants": [{...}]}` for one run, with `null` for whatever is unknown.
///
/// `state` comes from [`RunRecord::state`]: for an abandoned run, pending and running tenants (and their
/// counts) are reported as interrupted, which is what `fleet retry` will rerun.
pub fn status_json(run: &RunRecord, tenants: &[TenantRecord], state: RunState) -> Value {
    let is_abandoned = state == RunState::Abandoned;
    let tenants: Vec<Value> = tenants
        .iter()
        .map(|t| {
            json!({
                "id": t.tenant_id,
                "status": t.status_label(state),
                "from_revision": t.from_revision,
                "to_revision": t.to_revision,
                "failed_revision": t.failed_revision,
                "attempts": t.attempts,
                "error": t.error,
                "error_kind": t.error_kind,
                "target_revision": t.target_revision,
                "sqlstate": t.sqlstate,
                "duration_ms": t.duration_ms,
                "server": t.server,
                "kind": t.kind,
                "runner": t.runner,
                "updated_at": t.updated_at,
            })
        })
        .collect();
    json!({
        "run": {
            "id": run.id,
            "target": run.target,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "command": run.command,
            "exit_code": run.exit_code,
            "state": state,
            "n_tenants": run.n_tenants,
            "counts": run.counts.settled(is_abandoned),
            // Pending tenants of a finished run never started.
            "n_not_started": if state == RunState::Finished { run.counts.pending } else { 0 },
            "name": run.name,
            "is_halted": run.is_halted,
            "runners": run.runners,
        },
        "tenants": tenants,
    })
}
