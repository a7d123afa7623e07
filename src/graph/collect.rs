//! Upgrade and downgrade plans, stamp, history ranges: ports of Alembic's `_collect_upgrade_revisions`,
//! `_collect_downgrade_revisions`, `_topological_sort`, `HeadMaintainer` and `ScriptDirectory._stamp_revs`.

use std::collections::BTreeSet;

use super::error::{GraphError, RowsProblem};
use super::map::RevisionGraph;
use super::plan::{Direction, Plan, Step};
use super::resolve::{pos_rev, Pos};
use crate::revision::RevisionId;

/// Version rows during planning, with Alembic's `HeadMaintainer` checks.
struct Rows<'g> {
    graph: &'g RevisionGraph,
    set: BTreeSet<usize>,
    revision: usize,
    deleted: Vec<usize>,
    inserted: Vec<usize>,
}

impl Rows<'_> {
    fn problem(&self, problem: RowsProblem) -> GraphError {
        GraphError::RowsConflict {
            revision: self.graph.id(self.revision).clone(),
            problem,
        }
    }

    fn delete(&mut self, r: usize) -> Result<(), GraphError> {
        if !self.set.remove(&r) {
            return Err(self.problem(RowsProblem::Missing(self.graph.id(r).clone())));
        }
        self.deleted.push(r);
        Ok(())
    }

    fn insert(&mut self, r: usize) -> Result<(), GraphError> {
        if !self.set.insert(r) {
            return Err(self.problem(RowsProblem::AlreadyPresent(self.graph.id(r).clone())));
        }
        self.inserted.push(r);
        Ok(())
    }

    /// Alembic's `_update_version`: the target must be absent before the source is removed.
    fn update(&mut self, from: usize, to: usize) -> Result<(), GraphError> {
        if self.set.contains(&to) {
            return Err(self.problem(RowsProblem::AlreadyPresent(self.graph.id(to).clone())));
        }
        self.delete(from)?;
        self.insert(to)
    }

    /// Takes the recorded effect, netting out a row deleted and re-inserted by the same step.
    fn take(&mut self) -> (Vec<RevisionId>, Vec<RevisionId>) {
        let mut del: Vec<usize> = self.deleted.drain(..).collect();
        let mut ins: Vec<usize> = self.inserted.drain(..).collect();
        let both: Vec<usize> = del.iter().copied().filter(|d| ins.contains(d)).collect();
        del.retain(|d| !both.contains(d));
        ins.retain(|i| !both.contains(i));
        del.sort_unstable();
        ins.sort_unstable();
        (self.graph.ids(del), self.graph.ids(ins))
    }
}

impl RevisionGraph {
    fn row_indices(&self, rows: &[RevisionId]) -> Result<BTreeSet<usize>, GraphError> {
        rows.iter()
            .map(|r| {
                self.index(r)
                    .ok_or_else(|| GraphError::UnknownRevision { spec: r.0.clone() })
            })
            .collect()
    }

    /// Alembic's `_collect_upgrade_revisions`: the revisions to apply and the resolved targets.
    pub(crate) fn collect_upgrade(
        &self,
        upper: &[String],
        lower: &[String],
        inclusive: bool,
        implicit_base: bool,
        assert_len: bool,
    ) -> Result<(BTreeSet<usize>, Vec<usize>), GraphError> {
        let spec = upper.join(",");
        let mut targets = Vec::new();
        for p in self.parse_upgrade_target(lower, upper, assert_len)? {
            match p {
                Pos::Rev(i) => targets.push(i),
                // Alembic fails an assertion here (for example `upgrade <base>-1`).
                _ => return Err(GraphError::RelativeOutOfRange { spec: spec.clone() }),
            }
        }
        if let [one] = lower {
            if let Some((branch, _)) = one.split_once('@') {
                let mut branch = branch.to_string();
                if let Some(r) = self.get_revision(Some(&branch))? {
                    if self.id(r).0 == branch {
                        let labels = &self.nodes[r].labels;
                        if labels.len() != 1 {
                            return Err(GraphError::UnknownBranch { label: branch });
                        }
                        branch = labels.iter().next().cloned().unwrap_or_default();
                    }
                }
                targets.retain(|&t| self.nodes[t].labels.contains(&branch));
            }
        }
        self.check_overlap(&targets, false, true)?;
        let required = self.ancestors(&targets, true);
        let mut current = self.get_revisions_all(lower)?;
        let mut lower = lower.to_vec();
        let range_err = || GraphError::RangeNotAncestor {
            lower: lower.join(","),
            upper: spec.clone(),
        };
        if !implicit_base
            && current
                .iter()
                .any(|p| matches!(p, Pos::Base) || pos_rev(*p).is_some_and(|r| !required.contains(&r)))
        {
            return Err(range_err());
        }
        if current.first() == Some(&Pos::Nil) {
            let (_, rev) = self.parse_downgrade_target(upper, lower.first().map(String::as_str), assert_len)?;
            match rev {
                Pos::Base => {
                    current = Vec::new();
                    lower = Vec::new();
                }
                Pos::Rev(r) => {
                    current = vec![Pos::Rev(r)];
                    lower = vec![self.id(r).0.clone()];
                }
                Pos::Nil => return Err(GraphError::RelativeOutOfRange { spec: lower.join(",") }),
            }
        }
        let mut cur = Vec::new();
        for p in &current {
            match p {
                Pos::Rev(r) => cur.push(*r),
                _ => return Err(GraphError::RelativeOutOfRange { spec: lower.join(",") }),
            }
        }
        self.check_overlap(&cur, false, true)?;
        let current_set = self.ancestors(&cur, true);
        let mut needs: BTreeSet<usize> = required.difference(&current_set).copied().collect();
        if inclusive {
            needs.extend(self.get_revisions_all(&lower)?.into_iter().filter_map(pos_rev));
        }
        if !cur.is_empty() && !implicit_base {
            self.check_overlap(&cur, true, false)?;
            let below = self.descendants(&cur, false);
            needs.retain(|n| below.contains(n));
        }
        Ok((needs, targets))
    }

    /// Alembic's `_collect_downgrade_revisions`: the revisions to revert and the current heads.
    pub(crate) fn collect_downgrade(
        &self,
        upper: &[String],
        lower: Option<&str>,
        inclusive: bool,
        implicit_base: bool,
        assert_len: bool,
    ) -> Result<(BTreeSet<usize>, Vec<usize>), GraphError> {
        let (label, target) = self.parse_downgrade_target(upper, lower, assert_len)?;
        let target = pos_rev(target);
        let mut roots: Vec<usize> = match target {
            None => self.bases_ix(),
            Some(t) if inclusive => vec![t],
            Some(t) => self.nodes[t].next.clone(),
        };
        if let Some(l) = label.as_deref().filter(|_| roots.len() > 1) {
            let anc = self.ancestors(&[self.resolve_branch(l)?], false);
            roots.retain(|r| anc.contains(r));
            if roots.is_empty() {
                return Err(GraphError::InvalidDowngradeTarget {
                    target: lower.unwrap_or("base").to_string(),
                });
            }
        }
        let heads: Vec<usize> = self.get_revisions_all(upper)?.into_iter().filter_map(pos_rev).collect();
        let active = self.ancestors(&heads, true);
        let mut revs: BTreeSet<usize> = self.descendants(&roots, true).intersection(&active).copied().collect();
        if implicit_base {
            let keep = self.ancestors(&roots, true);
            revs.extend(active.difference(&keep));
        }
        if let Some(t) = target {
            if revs.is_empty() && !heads.contains(&t) {
                return Err(GraphError::RangeNotAncestor {
                    lower: self.id(t).0.clone(),
                    upper: upper.join(","),
                });
            }
        }
        Ok((revs, heads))
    }

    /// Alembic's `_topological_sort`: newest first, every revision before its down_revisions and dependencies;
    /// ties follow input order, walking one branch down as far as possible before the next.
    pub(crate) fn topological_sort(&self, revisions: &BTreeSet<usize>, heads: &[usize]) -> Vec<usize> {
        let mut todo = revisions.clone();
        let mut current: Vec<usize> = heads
            .iter()
            .copied()
            .filter(|h| todo.contains(h))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut ancestors: Vec<BTreeSet<usize>> = current.iter().map(|&h| self.ancestors(&[h], true)).collect();
        let mut out = Vec::new();
        let mut idx = 0;
        while !current.is_empty() {
            let candidate = current[idx];
            if let Some(j) = ancestors
                .iter()
                .enumerate()
                .position(|(j, a)| j != idx && a.contains(&candidate))
            {
                idx = j;
                continue;
            }
            if todo.remove(&candidate) {
                out.push(candidate);
            }
            let node = &self.nodes[candidate];
            let add: Vec<usize> = node
                .normalized_down()
                .into_iter()
                .filter(|r| todo.contains(r) && !current.contains(r))
                .collect();
            if add.is_empty() {
                current.remove(idx);
                ancestors.remove(idx);
                idx = idx.saturating_sub(1);
            } else if node.normalized_deps.is_empty() && node.down.len() == 1 {
                current[idx] = add[0];
                ancestors[idx].remove(&candidate);
            } else {
                current[idx] = add[0];
                ancestors[idx] = self.ancestors(&[add[0]], true);
                for &a in &add[1..] {
                    current.push(a);
                    ancestors.push(self.ancestors(&[a], true));
                }
            }
        }
        debug_assert!(todo.is_empty(), "topological sort left revisions behind");
        out.extend(todo);
        out
    }

    /// Alembic's `RevisionStep._unmerge_to_revisions`.
    fn unmerge_to(&self, heads: &BTreeSet<usize>, rev: usize) -> Vec<usize> {
        let to = self.nodes[rev].normalized_down();
        let others: Vec<usize> = heads.iter().copied().filter(|&h| h != rev).collect();
        if !others.is_empty() {
            let anc = self.ancestors(&others, true);
            to.into_iter().filter(|t| !anc.contains(t)).collect()
        } else {
            let mut anc = BTreeSet::new();
            for &t in &to {
                anc.extend(self.ancestors(&[t], true).into_iter().filter(|&a| a != t));
            }
            to.into_iter().filter(|t| !anc.contains(t)).collect()
        }
    }

    /// Alembic's `HeadMaintainer.update_to_step` for a `RevisionStep`.
    fn revision_step(&self, rows: &mut Rows<'_>, rev: usize, up: bool) -> Result<(), GraphError> {
        rows.revision = rev;
        let downs = self.nodes[rev].normalized_down();
        let in_rows = rows.set.contains(&rev);
        let present: Vec<usize> = downs.iter().copied().filter(|d| rows.set.contains(d)).collect();
        if !up && in_rows && (downs.is_empty() || self.unmerge_to(&rows.set, rev).is_empty()) {
            return rows.delete(rev);
        }
        if up && (downs.is_empty() || present.is_empty()) {
            return rows.insert(rev);
        }
        if up && downs.len() > 1 && present.len() > 1 {
            let others: Vec<usize> = rows.set.iter().copied().filter(|h| !downs.contains(h)).collect();
            let anc = if others.is_empty() {
                BTreeSet::new()
            } else {
                self.ancestors(&others, true)
            };
            // Alembic deletes every remaining down revision and fails (KeyError) when one has no row, which
            // happens when a merge also names an ancestor of another parent; deleting only present rows gives the
            // same result wherever Alembic succeeds.
            let from: Vec<usize> = downs
                .iter()
                .copied()
                .filter(|d| !anc.contains(d) && rows.set.contains(d))
                .collect();
            let Some((&last, rest)) = from.split_last() else {
                return Err(rows.problem(RowsProblem::Ambiguous));
            };
            for &d in rest {
                rows.delete(d)?;
            }
            return rows.update(last, rev);
        }
        if !up && in_rows && downs.len() > 1 {
            let to = self.unmerge_to(&rows.set, rev);
            let Some((&last, rest)) = to.split_last() else {
                return Err(rows.problem(RowsProblem::Ambiguous));
            };
            // Alembic asserts each row is new; skipping present ones only differs where Alembic would fail.
            for &t in rest {
                if !rows.set.contains(&t) {
                    rows.insert(t)?;
                }
            }
            return rows.update(rev, last);
        }
        let down = match (downs.as_slice(), present.as_slice()) {
            ([one], _) => *one,
            (_, [one]) => *one,
            _ => return Err(rows.problem(RowsProblem::Ambiguous)),
        };
        if up {
            rows.update(down, rev)
        } else {
            rows.update(rev, down)
        }
    }

    fn plan_from(&self, current: &[RevisionId], order: Vec<usize>, direction: Direction) -> Result<Plan, GraphError> {
        let mut rows = Rows {
            graph: self,
            set: self.row_indices(current)?,
            revision: 0,
            deleted: Vec::new(),
            inserted: Vec::new(),
        };
        let mut steps = Vec::with_capacity(order.len());
        for rev in order {
            self.revision_step(&mut rows, rev, direction == Direction::Up)?;
            let (delete_rows, insert_rows) = rows.take();
            steps.push(Step {
                revision: self.id(rev).clone(),
                direction,
                delete_rows,
                insert_rows,
            });
        }
        Ok(Plan { direction, steps })
    }

    /// Plans `upgrade <target>` from the current version rows, as Alembic's `upgrade` does.
    ///
    /// Applies exactly the revisions the target needs that the rows do not already imply, each after all of its
    /// down_revisions and depends_on, in Alembic's order. Other branches present in the rows are left alone.
    ///
    /// Errors: any resolution error of [`RevisionGraph::resolve`]; [`GraphError::UnknownRevision`] for a row
    /// naming no revision; [`GraphError::Overlap`]; [`GraphError::RowsConflict`] where Alembic's version-row
    /// bookkeeping would fail too.
    pub fn plan_upgrade(&self, current: &[RevisionId], target: &str) -> Result<Plan, GraphError> {
        let rows: Vec<String> = current.iter().map(|r| r.0.clone()).collect();
        self.row_indices(current)?;
        let (needs, targets) = self.collect_upgrade(&[target.to_string()], &rows, false, true, true)?;
        let mut order = self.topological_sort(&needs, &targets);
        order.reverse();
        self.plan_from(current, order, Direction::Up)
    }

    /// Plans `downgrade <target>` from the current version rows, as Alembic's `downgrade` does.
    ///
    /// `base` reverts everything; `<label>@base` one branch; `<rev>` everything above `<rev>` (dependants
    /// included); `-N` walks down from the first current row; `<label>@-N` from that branch's row.
    ///
    /// Errors: resolution errors; [`GraphError::RangeNotAncestor`] when the target is not below the rows;
    /// [`GraphError::InvalidDowngradeTarget`]; [`GraphError::RowsConflict`].
    pub fn plan_downgrade(&self, current: &[RevisionId], target: &str) -> Result<Plan, GraphError> {
        let rows: Vec<String> = current.iter().map(|r| r.0.clone()).collect();
        self.row_indices(current)?;
        let (revs, heads) = self.collect_downgrade(&rows, Some(target), false, false, true)?;
        let order = self.topological_sort(&revs, &heads);
        self.plan_from(current, order, Direction::Down)
    }

    /// Every revision the version rows imply as applied (the rows, their ancestors and what they depend on).
    ///
    /// Errors: [`GraphError::UnknownRevision`] for a row naming no revision.
    pub fn applied(&self, current: &[RevisionId]) -> Result<BTreeSet<RevisionId>, GraphError> {
        let rows = self.row_indices(current)?;
        Ok(self
            .ancestors(&rows.into_iter().collect::<Vec<_>>(), true)
            .into_iter()
            .map(|i| self.id(i).clone())
            .collect())
    }

    /// The version rows after `stamp <targets...>` (Alembic's `stamp`), without running any revision.
    ///
    /// Each target moves the rows on its lineage up or down to it, or adds it as a new branch; `base` removes the
    /// rows (`<label>@base` only that branch's). With `purge` the rows are emptied first. Rows that survive keep
    /// their order; new rows are appended.
    ///
    /// Errors: resolution errors; [`GraphError::RowsConflict`] where Alembic's stamp would fail too.
    pub fn stamp(&self, current: &[RevisionId], targets: &[&str], purge: bool) -> Result<Vec<RevisionId>, GraphError> {
        let start: Vec<usize> = if purge {
            Vec::new()
        } else {
            self.row_indices(current)?.into_iter().collect()
        };
        let head_revs: Vec<usize> = if purge {
            Vec::new()
        } else {
            let mut seen = Vec::new();
            for r in current {
                if let Some(i) = self.index(r) {
                    if !seen.contains(&i) {
                        seen.push(i);
                    }
                }
            }
            seen
        };
        let targets: Vec<String> = if targets.is_empty() {
            vec!["base".into()]
        } else {
            targets.iter().map(|t| t.to_string()).collect()
        };
        let mut filtered: Vec<usize> = Vec::new();
        for t in targets.iter().filter(|t| !t.is_empty()) {
            for h in self.filter_for_lineage(&head_revs, Some(t), true)? {
                if !filtered.contains(&h) {
                    filtered.push(h);
                }
            }
        }
        let mut dests = self.get_revisions_all(&targets)?;
        if dests.is_empty() {
            dests.push(Pos::Nil);
        }
        let mut rows = Rows {
            graph: self,
            set: start.iter().copied().collect(),
            revision: 0,
            deleted: Vec::new(),
            inserted: Vec::new(),
        };
        for dest in dests {
            let Pos::Rev(d) = dest else {
                for &h in &filtered {
                    rows.revision = h;
                    rows.delete(h)?;
                }
                continue;
            };
            rows.revision = d;
            if filtered.contains(&d) {
                continue;
            }
            let below = self.descendants(&[d], true);
            let above = self.ancestors(&[d], true);
            let from: Vec<usize> = if filtered.iter().any(|h| below.contains(h) || above.contains(h)) {
                filtered.clone()
            } else {
                Vec::new()
            };
            let is_upgrade = !filtered.iter().any(|h| below.contains(h));
            let branch_move = from.is_empty();
            if is_upgrade && (branch_move || from.iter().any(|f| !rows.set.contains(f))) && !rows.set.contains(&d) {
                rows.insert(d)?;
            } else if from.len() > 1 {
                let (&last, rest) = from.split_last().unwrap_or((&d, &[]));
                for &f in rest {
                    rows.delete(f)?;
                }
                rows.update(last, d)?;
            } else if let [one] = from.as_slice() {
                rows.update(*one, d)?;
            } else {
                return Err(rows.problem(RowsProblem::Ambiguous));
            }
        }
        let mut out: Vec<usize> = current
            .iter()
            .filter_map(|r| self.index(r))
            .filter(|i| start.contains(i) && rows.set.contains(i))
            .collect();
        out.dedup();
        for &i in &rows.inserted {
            if rows.set.contains(&i) && !out.contains(&i) {
                out.push(i);
            }
        }
        Ok(self.ids(out))
    }

    /// Revisions in a history range, newest first, as `alembic history -r <range>` lists them.
    ///
    /// `range` is `start:end`, `start:` or `:end`; an empty start means `base`, an empty end `heads`, and `current`
    /// on either side means the given version rows. Ends may be any identifier [`RevisionGraph::resolve`]
    /// accepts, including `-N` (walking down from the heads) and `+N`.
    ///
    /// Errors: [`GraphError::BadRange`]; [`GraphError::RangeNotAncestor`] when start is not below end;
    /// resolution errors.
    pub fn walk(&self, range: &str, current: &[RevisionId]) -> Result<Vec<RevisionId>, GraphError> {
        let bad = || GraphError::BadRange {
            range: range.to_string(),
        };
        let parts: Vec<&str> = range.trim().split(':').collect();
        let [base, head] = parts.as_slice() else {
            return Err(bad());
        };
        let rows: Vec<String> = current.iter().map(|r| r.0.clone()).collect();
        let or = |s: &str, d: &str| vec![if s.is_empty() { d.to_string() } else { s.to_string() }];
        let (upper, lower) = if *head == "current" {
            (if rows.is_empty() { or("", "heads") } else { rows }, or(base, "base"))
        } else if *base == "current" {
            (or(head, "heads"), if rows.is_empty() { or("", "base") } else { rows })
        } else {
            (or(head, "heads"), or(base, "base"))
        };
        let (needs, targets) = self.collect_upgrade(&upper, &lower, true, false, false)?;
        Ok(self.ids(self.topological_sort(&needs, &targets)))
    }
}
