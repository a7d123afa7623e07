//! Deciding, from what another tool recorded as applied, which Flotilla version rows a database gets.
//! Pure: the rows come from `table.rs`, the graph from the imported revision files.

use std::collections::BTreeSet;

use super::error::AdoptError;
use super::format::revision_id;
use super::source::flyway_version_key;
use crate::graph::RevisionGraph;
use crate::revision::RevisionId;

/// What the other tool's bookkeeping table says is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// One row per applied version (sqlx, diesel, Flyway, dbmate). `baseline` is Flyway's baseline version:
    /// every revision up to it counts as applied.
    Versions {
        versions: Vec<String>,
        baseline: Option<String>,
    },
    /// The one current version (golang-migrate; `None`: nothing applied).
    Current(Option<String>),
    /// The version rows themselves, heads of the graph (Alembic).
    Heads(Vec<String>),
}

/// What to stamp, and what the table said besides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    /// The Flotilla version rows: the heads of the applied set, sorted (empty: nothing applied).
    pub rows: Vec<RevisionId>,
    /// How many revisions the rows stand for.
    pub n_applied: usize,
}

fn known(graph: &RevisionGraph, table: &str, version: &str) -> Result<RevisionId, AdoptError> {
    let unknown = |id: RevisionId| AdoptError::Unknown {
        table: table.to_string(),
        version: version.to_string(),
        id,
    };
    let id = revision_id(version).map_err(|_| unknown(RevisionId::new(version)))?;
    match graph.get(&id) {
        Some(_) => Ok(id),
        None => Err(unknown(id)),
    }
}

/// The version rows that say exactly `applied` is applied: the applied set must be closed under ancestors (a
/// prefix of the imported order for a linear history), every version must be an imported revision.
pub fn adopt(graph: &RevisionGraph, table: &str, applied: &Applied) -> Result<Adoption, AdoptError> {
    let ancestors = |id: &RevisionId| -> BTreeSet<RevisionId> {
        graph.ancestors_of(id, true).unwrap_or_default().into_iter().collect()
    };
    let set: BTreeSet<RevisionId> = match applied {
        Applied::Heads(rows) => {
            let mut set = BTreeSet::new();
            for row in rows {
                let id = known(graph, table, row)?;
                set.extend(ancestors(&id));
                set.insert(id);
            }
            set
        }
        Applied::Current(None) => BTreeSet::new(),
        Applied::Current(Some(version)) => {
            let id = known(graph, table, version)?;
            let mut set = ancestors(&id);
            set.insert(id);
            set
        }
        Applied::Versions { versions, baseline } => {
            let mut set = BTreeSet::new();
            for v in versions {
                set.insert(known(graph, table, v)?);
            }
            if let Some(key) = baseline.as_deref().and_then(flyway_version_key) {
                set.extend(
                    graph
                        .revisions()
                        .filter(|m| flyway_version_key(m.id.as_str()).is_some_and(|k| k <= key))
                        .map(|m| m.id.clone()),
                );
            }
            // Every applied revision's ancestors must be applied too.
            for id in &set {
                let missing: Vec<RevisionId> = ancestors(id).difference(&set).cloned().collect();
                if !missing.is_empty() {
                    return Err(AdoptError::Gap {
                        table: table.to_string(),
                        top: id.clone(),
                        missing,
                    });
                }
            }
            set
        }
    };
    let mut rows: Vec<RevisionId> = set
        .iter()
        .filter(|id| !set.iter().any(|other| other != *id && ancestors(other).contains(*id)))
        .cloned()
        .collect();
    rows.sort();
    Ok(Adoption {
        rows,
        n_applied: set.len(),
    })
}

/// With the database's Flotilla rows `current`: `Ok(None)` when they already say the same, `Ok(Some(rows))` to
/// stamp, and an error when Flotilla has recorded something else (it owns the database from then on).
pub fn decide(table: &str, current: &[RevisionId], adoption: &Adoption) -> Result<Option<Vec<RevisionId>>, AdoptError> {
    let mut current = current.to_vec();
    current.sort();
    if current == adoption.rows {
        return Ok(None);
    }
    if !current.is_empty() {
        return Err(AdoptError::AlreadyStamped {
            table: table.to_string(),
            rows: current,
            target: adoption.rows.clone(),
        });
    }
    Ok(Some(adoption.rows.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revision::RevisionMeta;

    fn graph(edges: &[(&str, &[&str])]) -> RevisionGraph {
        RevisionGraph::new(
            edges
                .iter()
                .map(|(id, downs)| RevisionMeta {
                    id: RevisionId::new(*id),
                    down_revisions: downs.iter().map(|d| RevisionId::new(*d)).collect(),
                    ..RevisionMeta::default()
                })
                .collect(),
        )
        .expect("a valid graph")
    }

    fn linear() -> RevisionGraph {
        graph(&[("1", &[]), ("2", &["1"]), ("3", &["2"]), ("4", &["3"])])
    }

    fn versions(v: &[&str]) -> Applied {
        Applied::Versions {
            versions: v.iter().map(|s| s.to_string()).collect(),
            baseline: None,
        }
    }

    fn rows(r: &[&str]) -> Vec<RevisionId> {
        r.iter().map(|s| RevisionId::new(*s)).collect()
    }

    #[test]
    fn a_prefix_stamps_its_last_revision() {
        let g = linear();
        let a = adopt(&g, "t", &versions(&["1", "2"])).expect("a prefix");
        assert_eq!(a.rows, rows(&["2"]));
        assert_eq!(a.n_applied, 2);
        assert_eq!(adopt(&g, "t", &versions(&[])).expect("empty").rows, rows(&[]));
        assert_eq!(
            adopt(&g, "t", &Applied::Current(Some("3".into())))
                .expect("current")
                .rows,
            rows(&["3"])
        );
        assert_eq!(adopt(&g, "t", &Applied::Current(None)).expect("none").n_applied, 0);
    }

    #[test]
    fn a_gap_or_an_unknown_version_is_refused() {
        let g = linear();
        assert_eq!(
            adopt(&g, "t", &versions(&["1", "3"])),
            Err(AdoptError::Gap {
                table: "t".into(),
                top: RevisionId::new("3"),
                missing: rows(&["2"]),
            })
        );
        assert!(matches!(
            adopt(&g, "t", &versions(&["1", "9"])),
            Err(AdoptError::Unknown { version, .. }) if version == "9"
        ));
        assert!(matches!(
            adopt(&g, "t", &Applied::Current(Some("9".into()))),
            Err(AdoptError::Unknown { .. })
        ));
    }

    #[test]
    fn flyway_baseline_counts_every_version_up_to_it() {
        let g = graph(&[("1", &[]), ("1.1", &["1"]), ("2", &["1.1"]), ("3", &["2"])]);
        let applied = Applied::Versions {
            versions: vec!["3".into()],
            baseline: Some("2.0".into()),
        };
        assert_eq!(adopt(&g, "t", &applied).expect("baseline").rows, rows(&["3"]));
    }

    #[test]
    fn heads_of_a_branched_graph() {
        let g = graph(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])]);
        let a = adopt(&g, "t", &Applied::Heads(vec!["b".into(), "c".into()])).expect("heads");
        assert_eq!(a.rows, rows(&["b", "c"]));
        assert_eq!(a.n_applied, 3);
        let a = adopt(&g, "t", &versions(&["a", "b", "c", "d"])).expect("all");
        assert_eq!(a.rows, rows(&["d"]));
    }

    #[test]
    fn flotilla_rows_decide_between_stamp_skip_and_refuse() {
        let target = Adoption {
            rows: rows(&["2"]),
            n_applied: 2,
        };
        assert_eq!(decide("t", &[], &target), Ok(Some(rows(&["2"]))));
        assert_eq!(decide("t", &rows(&["2"]), &target), Ok(None));
        assert!(matches!(
            decide("t", &rows(&["3"]), &target),
            Err(AdoptError::AlreadyStamped { .. })
        ));
    }
}
