//! Flotilla's one refusal on top of Alembic's downgrade: a bare relative target (`-1`) while the database has
//! several heads. Alembic walks down from whichever row comes first (and warns that it will refuse); Flotilla
//! refuses now and names targets that work.

use super::error::GraphError;
use super::map::RevisionGraph;
use super::plan::Plan;
use crate::revision::RevisionId;

impl RevisionGraph {
    /// [`RevisionGraph::plan_downgrade`], refusing a bare relative target (`-N`, no `label@`) when `current` holds
    /// several heads: the error lists them and the `<head>@-N` targets that plan.
    pub fn plan_downgrade_checked(&self, current: &[RevisionId], target: &str) -> Result<Plan, GraphError> {
        let is_bare_relative =
            target.starts_with('-') && target.len() > 1 && target[1..].chars().all(|c| c.is_ascii_digit());
        if is_bare_relative && current.len() > 1 {
            let hints = current
                .iter()
                .map(|head| format!("{head}@{target}"))
                .filter(|spec| self.plan_downgrade(current, spec).is_ok())
                .collect();
            return Err(GraphError::RelativeDowngradeOfSeveralHeads {
                spec: target.to_string(),
                heads: current.to_vec(),
                hints,
            });
        }
        match self.plan_downgrade(current, target) {
            Err(GraphError::AmbiguousWalk { spec }) if is_bare_relative => {
                let hints = self.downgrade_hints(current, &spec);
                Err(GraphError::AmbiguousWalkAt { spec, hints })
            }
            other => other,
        }
    }

    /// Absolute targets below `current` whose downgrade takes exactly as many steps as `-N` asks for, nearest
    /// first, at most three: what a walk that stopped at a merge or branch point could have meant.
    fn downgrade_hints(&self, current: &[RevisionId], spec: &str) -> Vec<String> {
        let Ok(n) = spec[1..].parse::<usize>() else {
            return Vec::new();
        };
        let Ok(applied) = self.applied(current) else {
            return Vec::new();
        };
        let mut hints = Vec::new();
        for candidate in applied.iter().filter(|r| !current.contains(r)) {
            if let Ok(plan) = self.plan_downgrade(current, candidate.as_str()) {
                if plan.steps.len() == n {
                    hints.push(candidate.to_string());
                }
            }
            if hints.len() == 3 {
                break;
            }
        }
        hints
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::{GraphError, RevisionGraph};
    use crate::revision::{RevisionId, RevisionMeta};

    fn meta(id: &str, down: &[&str]) -> RevisionMeta {
        RevisionMeta {
            id: RevisionId::from(id),
            down_revisions: down.iter().map(|d| RevisionId::from(*d)).collect(),
            ..RevisionMeta::default()
        }
    }

    #[test]
    fn bare_relative_downgrade_of_two_heads_is_refused_with_working_hints() {
        let graph = RevisionGraph::new(vec![meta("a", &[]), meta("b", &["a"]), meta("c", &["a"])]).unwrap();
        let rows = [RevisionId::from("b"), RevisionId::from("c")];
        match graph.plan_downgrade_checked(&rows, "-1") {
            Err(GraphError::RelativeDowngradeOfSeveralHeads { heads, hints, .. }) => {
                assert_eq!(heads, rows);
                assert_eq!(hints, ["b@-1", "c@-1"]);
                for hint in hints {
                    let plan = graph.plan_downgrade(&rows, &hint).expect("a hint plans");
                    assert_eq!(plan.steps.len(), 1, "{hint}");
                }
            }
            other => panic!("{other:?}"),
        }
        // One head, or an explicit target: as Alembic.
        assert!(graph.plan_downgrade_checked(&rows[..1], "-1").is_ok());
        assert!(graph.plan_downgrade_checked(&rows, "a").is_ok());
        assert!(graph.plan_downgrade_checked(&rows, "b@-1").is_ok());
    }

    #[test]
    fn relative_walk_stopping_at_a_merge_point_names_targets_that_work() {
        let graph = RevisionGraph::new(vec![
            meta("a", &[]),
            meta("b", &["a"]),
            meta("c", &["a"]),
            meta("m", &["b", "c"]),
            meta("n", &["m"]),
        ])
        .unwrap();
        let rows = [RevisionId::from("n")];
        match graph.plan_downgrade_checked(&rows, "-2") {
            Err(GraphError::AmbiguousWalkAt { hints, .. }) => {
                assert!(!hints.is_empty());
                for hint in &hints {
                    let plan = graph.plan_downgrade(&rows, hint).expect("a hint plans");
                    assert_eq!(plan.steps.len(), 2, "{hint}");
                }
            }
            other => panic!("{other:?}"),
        }
    }
}
