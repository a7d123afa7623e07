//! `fleet rollback --run ID`, the deciding part: from one run's ledger records, which tenants that run changed and
//! the version rows each goes back to; for each, the downgrade back and the revisions on it whose downgrade does not
//! undo their upgrade; and whether a tenant moved since the run (so going back would undo more than the run did).
//!
//! Pure: the CLI reads the ledger and the tenants' rows, refuses on what this module finds, and runs the rollback as
//! an ordinary fleet downgrade whose tenants each have their target pinned to their rows before the run.

use std::collections::BTreeMap;

use crate::graph::{Plan, RevisionGraph};
use crate::ledger::{rows_of, TenantRecord, TenantStatus};
use crate::revision::RevisionId;
use crate::script::Script;

/// A tenant the run changed: its version rows before and after the run, each sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub tenant_id: String,
    /// Where the rollback takes it back to (empty: base).
    pub from: Vec<RevisionId>,
    /// Where the run left it.
    pub to: Vec<RevisionId>,
    /// The run ended without this tenant's outcome (its process died while the tenant ran): the ledger does not
    /// know what committed, and `to` is only where its plan started.
    pub is_unsure: bool,
}

fn sorted_rows(text: Option<&str>) -> Vec<RevisionId> {
    // The ledger leaves both sides empty for a tenant at base; a tenant that got no further than its connection
    // has neither side either, and so compares as unchanged.
    let mut rows: Vec<RevisionId> = text
        .map(rows_of)
        .unwrap_or_default()
        .into_iter()
        .map(RevisionId::from)
        .collect();
    rows.sort();
    rows
}

/// The tenants of a run whose recorded rows after the run differ from those before it, in the order given.
///
/// The status does not matter: a tenant that failed or was interrupted part way, after some of its revisions
/// committed, was changed by the run as much as one that succeeded, and goes back too. A tenant that failed,
/// was skipped or was interrupted without a committed revision, or never started, has equal rows and is left out.
///
/// A tenant still recorded as running, or, in a run whose process died (`is_abandoned`), recorded as pending but
/// claimed by a runner, may have committed revisions the ledger never heard of: it is included as unsure, whatever
/// its rows.
pub fn changed(records: &[TenantRecord], is_abandoned: bool) -> Vec<Changed> {
    records
        .iter()
        .filter_map(|t| {
            let from = sorted_rows(t.from_revision.as_deref());
            let to = sorted_rows(t.to_revision.as_deref());
            let is_claimed = t.status == TenantStatus::Pending && t.runner.is_some();
            let is_unsure = t.status == TenantStatus::Running || (is_abandoned && is_claimed);
            (from != to || is_unsure).then(|| Changed {
                tenant_id: t.tenant_id.clone(),
                from,
                to,
                is_unsure,
            })
        })
        .collect()
}

/// Why a revision's downgrade does not undo its upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Irreversible {
    /// The upgrade backfills data, the backfill does not say `reverse=none`, and the downgrade has no backfill.
    Backfill,
    /// The upgrade runs SQL and the downgrade section is missing or holds no statement.
    NoDowngrade,
}

impl Irreversible {
    /// Why `script`'s downgrade does not undo its upgrade, or `None` when it does (as far as the file says).
    pub fn of(script: &Script) -> Option<Irreversible> {
        if !script.is_data_reversible() {
            Some(Irreversible::Backfill)
        } else if script.downgrade.statements.is_empty() && !script.upgrade.statements.is_empty() {
            Some(Irreversible::NoDowngrade)
        } else {
            None
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Irreversible::Backfill => "its backfill has no reverse",
            Irreversible::NoDowngrade => "it has no downgrade SQL (missing or empty downgrade section)",
        }
    }
}

/// One tenant's way back: the downgrade from `at` to exactly `changed.from`, and its irreversible revisions.
#[derive(Debug, Clone)]
pub struct WayBack {
    pub plan: Plan,
    /// The plan's revisions whose downgrade does not undo their upgrade, in plan order.
    pub irreversible: Vec<(RevisionId, Irreversible)>,
}

/// The downgrade from `at` (the tenant's rows now, or the run's `to` when they could not be read) to exactly `from`.
///
/// Errors: a text naming why no downgrade reaches `from` (an unknown revision, or rows a downgrade cannot leave
/// exactly), or naming a revision of the plan that `scripts` lacks.
pub fn way_back(
    graph: &RevisionGraph,
    scripts: &BTreeMap<RevisionId, Script>,
    at: &[RevisionId],
    from: &[RevisionId],
) -> Result<WayBack, String> {
    let plan = super::worker::plan_downgrade_to(graph, at, from)?;
    let mut irreversible = Vec::new();
    for step in &plan.steps {
        let script = scripts
            .get(&step.revision)
            .ok_or_else(|| format!("revision {} has no revision file", step.revision))?;
        if let Some(why) = Irreversible::of(script) {
            irreversible.push((step.revision.clone(), why));
        }
    }
    Ok(WayBack { plan, irreversible })
}

/// Whether a tenant now at `now` moved since the run: it is neither where the run left it, nor already back where
/// the run found it, nor part of the way back between the two (where an earlier rollback that failed part way left
/// it). Going back from anywhere else would undo what a later change did too.
pub fn has_moved(graph: &RevisionGraph, changed: &Changed, now: &[RevisionId]) -> bool {
    let mut now = now.to_vec();
    now.sort();
    if now == changed.to || now == changed.from {
        return false;
    }
    let Ok(plan) = super::worker::plan_downgrade_to(graph, &changed.to, &changed.from) else {
        return true;
    };
    let mut rows = changed.to.clone();
    for step in &plan.steps {
        rows.retain(|r| !step.delete_rows.contains(r));
        rows.extend(step.insert_rows.iter().cloned());
        let mut sorted = rows.clone();
        sorted.sort();
        if sorted == now {
            return false;
        }
    }
    true
}

/// What stops one tenant's rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// It moved since the run (see [`has_moved`]): now at these rows.
    Moved(Vec<RevisionId>),
    /// The run's process died under it (see [`Changed::is_unsure`]) and it is not where its plan started: now at
    /// these rows, or unreadable.
    Unsure(Option<Vec<RevisionId>>),
    /// No downgrade reaches its rows before the run exactly: why.
    NoWayBack(String),
    /// A revision on its way back whose downgrade does not undo its upgrade; the only problem `--force` overrides.
    Irreversible(RevisionId, Irreversible),
}

impl Problem {
    pub fn is_forcible(&self) -> bool {
        matches!(self, Problem::Irreversible(..))
    }
}

/// A rollback reviewed against where its tenants are now, before anything changes.
#[derive(Debug, Default)]
pub struct Review {
    /// The tenants to roll back: every changed one, less the unsure ones still where their plan started.
    pub kept: Vec<Changed>,
    /// Each problem with its tenant, in the order of the tenants.
    pub problems: Vec<(Changed, Problem)>,
    /// Kept tenants whose rows could not be read now; they were checked from where the run left them.
    pub n_unread: usize,
}

/// Reviews each changed tenant against `now`, its rows read now in the same order (`None`: unreadable), planning
/// its way back from there (or from where the run left it, when unreadable).
pub fn review(
    changed: Vec<Changed>,
    now: &[Option<Vec<RevisionId>>],
    graph: &RevisionGraph,
    scripts: &BTreeMap<RevisionId, Script>,
) -> Review {
    let mut out = Review::default();
    for (c, now) in changed.into_iter().zip(now) {
        let now = now.clone().map(|mut rows| {
            rows.sort();
            rows
        });
        if c.is_unsure {
            // Still where its plan started: the run committed nothing there, and there is nothing to undo.
            if now.as_ref() != Some(&c.from) {
                out.problems.push((c, Problem::Unsure(now)));
            }
            continue;
        }
        let at = match now {
            Some(rows) if has_moved(graph, &c, &rows) => {
                out.problems.push((c, Problem::Moved(rows)));
                continue;
            }
            Some(rows) => rows,
            None => {
                out.n_unread += 1;
                c.to.clone()
            }
        };
        match way_back(graph, scripts, &at, &c.from) {
            Ok(back) => {
                for (revision, why) in back.irreversible {
                    out.problems.push((c.clone(), Problem::Irreversible(revision, why)));
                }
                out.kept.push(c);
            }
            Err(e) => out.problems.push((c, Problem::NoWayBack(e))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::script::parse_script;

    fn record(id: &str, status: TenantStatus, from: Option<&str>, to: Option<&str>) -> TenantRecord {
        TenantRecord {
            from_revision: from.map(str::to_string),
            to_revision: to.map(str::to_string),
            ..TenantRecord::example(id, status)
        }
    }

    fn ids(rows: &[&str]) -> Vec<RevisionId> {
        rows.iter().map(|r| RevisionId::from(*r)).collect()
    }

    #[test]
    fn only_tenants_whose_rows_moved_are_changed() {
        use TenantStatus::*;
        let records = [
            record("base_to_b", Succeeded, None, Some("b")),
            record("a_to_c", Succeeded, Some("a"), Some("c")),
            record("failed_after_b", Failed, Some("a"), Some("b")),
            record("failed_at_once", Failed, Some("a"), Some("a")),
            record("no_connection", Failed, None, None),
            record("skipped", Skipped, Some("c"), Some("c")),
            record("interrupted_part_way", Interrupted, None, Some("a")),
            record("interrupted_unchanged", Interrupted, Some("a"), Some("a")),
            record("never_started", Pending, None, None),
            record("two_heads", Succeeded, Some("y,x"), Some("x,z")),
            record("running_when_the_process_died", Running, Some("a"), Some("a")),
            TenantRecord {
                runner: Some("r1".into()),
                ..record("claimed_when_the_process_died", Pending, None, None)
            },
        ];
        let got: Vec<(String, Vec<RevisionId>, Vec<RevisionId>, bool)> = changed(&records, true)
            .into_iter()
            .map(|c| (c.tenant_id, c.from, c.to, c.is_unsure))
            .collect();
        assert_eq!(
            got,
            vec![
                ("base_to_b".to_string(), ids(&[]), ids(&["b"]), false),
                ("a_to_c".to_string(), ids(&["a"]), ids(&["c"]), false),
                ("failed_after_b".to_string(), ids(&["a"]), ids(&["b"]), false),
                ("interrupted_part_way".to_string(), ids(&[]), ids(&["a"]), false),
                ("two_heads".to_string(), ids(&["x", "y"]), ids(&["x", "z"]), false),
                (
                    "running_when_the_process_died".to_string(),
                    ids(&["a"]),
                    ids(&["a"]),
                    true
                ),
                ("claimed_when_the_process_died".to_string(), ids(&[]), ids(&[]), true),
            ]
        );
        // A finished run gave its claimed but unstarted tenants back: pending means never started.
        let finished = changed(&records, false);
        assert!(finished.iter().all(|c| c.tenant_id != "claimed_when_the_process_died"));
    }

    #[test]
    fn moved_means_off_the_way_between_where_the_run_found_and_left_it() {
        let (graph, _) = scripts(&[A, B_NO_DOWN, C_EMPTY_DOWN, D_BACKFILL]);
        let c = Changed {
            tenant_id: "t".into(),
            from: ids(&["a"]),
            to: ids(&["c"]),
            is_unsure: false,
        };
        assert!(!has_moved(&graph, &c, &ids(&["c"])), "where the run left it");
        assert!(!has_moved(&graph, &c, &ids(&["a"])), "back already");
        assert!(!has_moved(&graph, &c, &ids(&["b"])), "part of the way back");
        assert!(has_moved(&graph, &c, &ids(&["d"])), "a later upgrade");
        assert!(has_moved(&graph, &c, &ids(&[])), "below where the run found it");
        assert!(has_moved(&graph, &c, &ids(&["zz"])), "unknown rows");
    }

    #[test]
    fn review_keeps_what_can_go_back_and_names_every_problem() {
        let (graph, scripts) = scripts(&[A, B_NO_DOWN, C_EMPTY_DOWN, D_BACKFILL]);
        let c = |id: &str, from: &[&str], to: &[&str], is_unsure: bool| Changed {
            tenant_id: id.into(),
            from: ids(from),
            to: ids(to),
            is_unsure,
        };
        let changed = vec![
            c("fine", &[], &["a"], false),
            c("unread", &[], &["a"], false),
            c("moved", &["a"], &["b"], false),
            c("forcible", &["a"], &["c"], false),
            c("unsure_unchanged", &["a"], &["a"], true),
            c("unsure_moved", &["a"], &["a"], true),
            c("gone_revision", &["zz"], &["a"], false),
        ];
        let now = [
            Some(ids(&["a"])),
            None,
            Some(ids(&["d"])),
            Some(ids(&["c"])),
            Some(ids(&["a"])),
            Some(ids(&["b"])),
            Some(ids(&["a"])),
        ];
        let review = review(changed, &now, &graph, &scripts);
        let kept: Vec<&str> = review.kept.iter().map(|c| c.tenant_id.as_str()).collect();
        assert_eq!(kept, ["fine", "unread", "forcible"]);
        assert_eq!(review.n_unread, 1);
        let problems: Vec<(&str, &Problem)> = review.problems.iter().map(|(c, p)| (c.tenant_id.as_str(), p)).collect();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert_eq!(problems[0], ("moved", &Problem::Moved(ids(&["d"]))));
        assert_eq!(
            problems[1],
            (
                "forcible",
                &Problem::Irreversible("c".into(), Irreversible::NoDowngrade)
            )
        );
        assert_eq!(
            problems[2],
            (
                "forcible",
                &Problem::Irreversible("b".into(), Irreversible::NoDowngrade)
            )
        );
        assert_eq!(problems[3], ("unsure_moved", &Problem::Unsure(Some(ids(&["b"])))));
        assert!(
            matches!(problems[4], ("gone_revision", Problem::NoWayBack(_))),
            "{problems:?}"
        );
        assert!(problems[1].1.is_forcible() && !problems[0].1.is_forcible());
    }

    fn scripts(files: &[&str]) -> (RevisionGraph, BTreeMap<RevisionId, Script>) {
        let scripts: Vec<Script> = files
            .iter()
            .map(|text| parse_script(Path::new("x.sql"), text).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let graph = crate::script::build_graph(&scripts).unwrap_or_else(|e| panic!("{e}"));
        let by_id = scripts.into_iter().map(|s| (s.meta.id.clone(), s)).collect();
        (graph, by_id)
    }

    const A: &str = "-- revision: a\n-- down_revision:\n-- flotilla:upgrade\nCREATE TABLE t (id int);\n\
                     -- flotilla:downgrade\nDROP TABLE t;\n";
    const B_NO_DOWN: &str = "-- revision: b\n-- down_revision: a\n-- flotilla:upgrade\nCREATE INDEX ON t (id);\n";
    const C_EMPTY_DOWN: &str =
        "-- revision: c\n-- down_revision: b\n-- flotilla:upgrade\nINSERT INTO t VALUES (1);\n-- flotilla:downgrade\n";
    const D_BACKFILL: &str = "-- revision: d\n-- down_revision: c\n-- flotilla:upgrade\n\
                              -- flotilla:backfill table=t key=id\nUPDATE t SET id = id WHERE {{batch}};\n\
                              -- flotilla:downgrade\nSELECT 1;\n";
    const E_MERGE_LIKE: &str = "-- revision: e\n-- down_revision: d\n-- flotilla:upgrade\n";

    #[test]
    fn the_way_back_names_each_revision_that_cannot_be_undone() {
        let (graph, scripts) = scripts(&[A, B_NO_DOWN, C_EMPTY_DOWN, D_BACKFILL, E_MERGE_LIKE]);
        let back = way_back(&graph, &scripts, &ids(&["e"]), &ids(&["a"])).expect("a way back");
        let steps: Vec<&str> = back.plan.steps.iter().map(|s| s.revision.as_str()).collect();
        assert_eq!(steps, ["e", "d", "c", "b"]);
        assert_eq!(
            back.irreversible,
            vec![
                (RevisionId::from("d"), Irreversible::Backfill),
                (RevisionId::from("c"), Irreversible::NoDowngrade),
                (RevisionId::from("b"), Irreversible::NoDowngrade),
            ]
        );

        let to_base = way_back(&graph, &scripts, &ids(&["a"]), &[]).expect("down to base");
        assert_eq!(to_base.plan.steps.len(), 1);
        assert!(to_base.irreversible.is_empty());

        let err = way_back(&graph, &scripts, &ids(&["a"]), &ids(&["zz"])).expect_err("unknown revision");
        assert!(err.contains("zz"), "{err}");
    }
}
