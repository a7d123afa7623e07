//! The revision graph of loaded scripts, with every graph problem reported at the header line behind it.
//!
//! `graph` checks revisions (parents exist, no cycles, labels unique) without knowing about files, so it stays
//! pure; this is the loading edge, where each of its findings gets the path and line of the `revision`,
//! `down_revision`, `branch_labels` or `depends_on` line that causes it.

use std::collections::HashMap;
use std::path::Path;

use crate::graph::{GraphError, RevisionGraph};
use crate::revision::RevisionId;

use super::parse::{HeaderLines, Script};
use super::problem::{Problem, ProblemKind, ScriptError};

/// Build the graph of `scripts`, given in load order.
///
/// Errors: every graph problem as one [`Problem`] at a header line, in file order and then line order: an
/// unknown `down_revision` at that line, a cycle at the `down_revision` line of each revision on it, an
/// unknown or ambiguous `depends_on` entry, or a dependency cycle, at the `depends_on` line, a branch label
/// used twice at the later `branch_labels` line, and a duplicate or invalid id at the `revision` line.
pub fn build_graph(scripts: &[Script]) -> Result<RevisionGraph, ScriptError> {
    RevisionGraph::new(scripts.iter().map(|s| s.meta.clone()).collect()).map_err(|error| {
        let mut located = Located {
            scripts,
            problems: Vec::new(),
            n_duplicates: HashMap::new(),
        };
        located.add(error);
        // Stable, so the problems of one line keep the graph's order.
        located.problems.sort_by_key(|(index, problem)| (*index, problem.line));
        ScriptError {
            problems: located.problems.into_iter().map(|(_, p)| p).collect(),
        }
    })
}

/// Graph problems being placed, each with the load index of its script for sorting.
struct Located<'a> {
    scripts: &'a [Script],
    problems: Vec<(usize, Problem)>,
    /// How many duplicates of each id are placed so far, so each goes to its own file.
    n_duplicates: HashMap<RevisionId, usize>,
}

impl Located<'_> {
    fn add(&mut self, error: GraphError) {
        let down = |l: &HeaderLines| l.down_revision;
        let deps = |l: &HeaderLines| {
            if l.depends_on == 0 {
                l.down_revision
            } else {
                l.depends_on
            }
        };
        match &error {
            GraphError::Invalid { problems } => {
                for problem in problems {
                    self.add(problem.clone());
                }
            }
            GraphError::DuplicateRevision { revision } => self.duplicate(revision),
            GraphError::InvalidRevisionId { revision } => self.at(revision, |l| l.revision, error.clone()),
            GraphError::UnknownDownRevision { revision, .. } => self.at(revision, down, error.clone()),
            GraphError::UnknownDependency { revision, .. } | GraphError::AmbiguousDependency { revision, .. } => {
                self.at(revision, |l| l.depends_on, error.clone())
            }
            GraphError::DuplicateBranchLabel { revision, .. } => self.at(revision, |l| l.branch_labels, error.clone()),
            GraphError::Cycle { revisions } => {
                for revision in revisions {
                    self.at(revision, down, error.clone());
                }
            }
            GraphError::DependencyCycle { revisions } => {
                for revision in revisions {
                    self.at(revision, deps, error.clone());
                }
            }
            // Resolution and planning errors, which building a graph does not return.
            _ => self.unplaced(error),
        }
    }

    /// `error` at the line `line` picks from the header of revision `id` (the first file defining it, as the
    /// graph keeps the first of duplicate ids).
    fn at(&mut self, id: &RevisionId, line: impl Fn(&HeaderLines) -> usize, error: GraphError) {
        match self.scripts.iter().position(|s| &s.meta.id == id) {
            Some(index) => {
                let script = &self.scripts[index];
                let problem = Problem::new(&script.path, line(&script.header_lines), ProblemKind::Graph { error });
                self.problems.push((index, problem));
            }
            None => self.unplaced(error),
        }
    }

    /// The graph reports each repeat of an id once; the n-th report goes to the (n+1)-th file defining it,
    /// naming the first. Loading files already reports these, but a source that builds scripts itself may not.
    fn duplicate(&mut self, id: &RevisionId) {
        let count = self.n_duplicates.entry(id.clone()).or_default();
        *count += 1;
        let mut defining = self.scripts.iter().enumerate().filter(|(_, s)| &s.meta.id == id);
        let (Some((_, first)), Some((index, repeat))) = (defining.next(), defining.nth(*count - 1)) else {
            return self.unplaced(GraphError::DuplicateRevision { revision: id.clone() });
        };
        let kind = ProblemKind::DuplicateRevision {
            id: id.clone(),
            other_path: first.path.clone(),
            other_line: first.header_lines.revision,
        };
        self.problems
            .push((index, Problem::new(&repeat.path, repeat.header_lines.revision, kind)));
    }

    /// An error that names no loaded revision, which the graph does not produce; kept rather than lost.
    fn unplaced(&mut self, error: GraphError) {
        let problem = Problem::new(Path::new(""), 0, ProblemKind::Graph { error });
        self.problems.push((usize::MAX, problem));
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::script::parse_script;

    /// Parses each `(file name, text)`, builds the graph, and compares every problem as `file:line: message`.
    fn check(files: &[(&str, &str)], expected: &[&str]) {
        let scripts: Vec<Script> = files
            .iter()
            .map(|(name, text)| parse_script(Path::new(name), text).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let got: Vec<String> = match build_graph(&scripts) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
        };
        assert_eq!(got, expected);
    }

    fn rev(id: &str, header: &str) -> String {
        format!("-- revision: {id}\n{header}\n-- flotilla:upgrade\nSELECT 1;\n")
    }

    #[test]
    fn a_valid_graph_builds() {
        check(
            &[
                ("a.sql", &rev("a", "")),
                ("b.sql", &rev("b", "-- down_revision: a\n-- branch_labels: x")),
                ("c.sql", &rev("c", "-- down_revision: a\n-- depends_on: x")),
            ],
            &[],
        );
    }

    #[test]
    fn unknown_parents_and_dependencies_name_their_header_line() {
        check(
            &[
                ("a.sql", &rev("a", "")),
                ("b.sql", &rev("b", "-- message: m\n-- down_revision: a, zzz")),
                ("c.sql", &rev("c", "-- down_revision: b\n-- depends_on: nope")),
            ],
            &[
                "b.sql:3: revision b names down_revision zzz, which does not exist",
                "c.sql:3: revision c depends on `nope`, which names no revision or branch label",
            ],
        );
        check(
            &[
                ("ab1.sql", &rev("ab1", "")),
                ("ab2.sql", &rev("ab2", "-- down_revision: ab1")),
                ("c.sql", &rev("c", "-- down_revision: ab2\n\n-- depends_on: ab")),
            ],
            &["c.sql:4: revision c depends on `ab`, which matches several revisions (ab1, ab2): use a longer prefix"],
        );
    }

    #[test]
    fn problems_come_in_file_then_line_order() {
        check(
            &[
                ("a.sql", &rev("a", "-- down_revision: gone\n-- depends_on: lost")),
                ("b.sql", &rev("b", "-- branch_labels: x")),
                ("c.sql", &rev("c", "-- branch_labels: x")),
            ],
            &[
                "a.sql:2: revision a names down_revision gone, which does not exist",
                "a.sql:3: revision a depends on `lost`, which names no revision or branch label",
                "c.sql:2: branch label `x` of revision c is already used by b",
            ],
        );
    }

    #[test]
    fn cycles_name_every_revision_on_them() {
        check(
            &[
                ("root.sql", &rev("root", "")),
                ("a.sql", &rev("a", "-- down_revision: b")),
                ("b.sql", &rev("b", "-- message: m\n-- down_revision: a")),
            ],
            &[
                "a.sql:2: cycle among revisions (a, b)",
                "b.sql:3: cycle among revisions (a, b)",
            ],
        );
        check(
            &[
                ("a.sql", &rev("a", "-- depends_on: b")),
                ("b.sql", &rev("b", "-- down_revision: a")),
            ],
            &[
                "a.sql:2: dependency cycle among revisions (a, b): check their depends_on",
                "b.sql:2: dependency cycle among revisions (a, b): check their depends_on",
            ],
        );
    }

    #[test]
    fn duplicate_ids_from_a_source_that_skips_the_loader_name_both_files() {
        check(
            &[
                ("one.sql", &rev("a", "")),
                ("two.sql", &format!("-- note\n{}", rev("a", ""))),
                ("three.sql", &rev("a", "")),
            ],
            &[
                "two.sql:2: duplicate revision id `a`, also defined at one.sql:1",
                "three.sql:1: duplicate revision id `a`, also defined at one.sql:1",
            ],
        );
    }

    #[test]
    fn scripts_built_without_a_file_keep_their_path() {
        let mut script = parse_script(Path::new("x.sql"), &rev("a", "-- down_revision: b")).unwrap();
        script.path = PathBuf::from("embedded/a");
        script.header_lines = HeaderLines::default();
        let e = build_graph(&[script]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "embedded/a: revision a names down_revision b, which does not exist"
        );
    }
}
