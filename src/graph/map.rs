//! Construction and structural queries of [`RevisionGraph`].

use std::collections::{BTreeSet, HashMap};

use super::error::GraphError;
use crate::revision::{RevisionId, RevisionMeta};

/// Characters Alembic forbids in revision ids, because the identifier syntax uses them.
const ILLEGAL_ID_CHARS: [char; 4] = ['@', '-', '+', ':'];
const RESERVED_IDS: [&str; 3] = ["head", "heads", "base"];

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) meta: RevisionMeta,
    /// Versioned parents (`down_revision`), in header order.
    pub(crate) down: Vec<usize>,
    /// `depends_on` resolved to revisions, in header order, deduplicated.
    pub(crate) resolved_deps: Vec<usize>,
    /// `resolved_deps` minus those already depended on by an ancestor (Alembic's normalised dependencies).
    pub(crate) normalized_deps: Vec<usize>,
    /// Versioned children, in input order.
    pub(crate) next: Vec<usize>,
    /// Children through `down_revision` or `depends_on`, in input order.
    pub(crate) all_next: Vec<usize>,
    /// Branch labels after propagation along the branch (declared labels included).
    pub(crate) labels: BTreeSet<String>,
}

impl Node {
    /// Alembic's `_normalized_down_revisions`: parents, then normalised dependencies.
    pub(crate) fn normalized_down(&self) -> Vec<usize> {
        let mut out = self.down.clone();
        for d in &self.normalized_deps {
            if !out.contains(d) {
                out.push(*d);
            }
        }
        out
    }
}

/// A validated revision graph with Alembic's `RevisionMap` semantics.
///
/// Ordering: every list this type returns follows the order in which revisions were given to [`RevisionGraph::new`]
/// (Alembic's revision-map insertion order), unless a method documents another order.
#[derive(Debug, Clone)]
pub struct RevisionGraph {
    pub(crate) nodes: Vec<Node>,
    /// Revision ids and branch labels to node index (Alembic keeps both in one map).
    pub(crate) keys: HashMap<String, usize>,
    /// All keys in insertion order (ids then labels as they were declared), for prefix matching.
    pub(crate) key_order: Vec<String>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && !id.contains(ILLEGAL_ID_CHARS) && !RESERVED_IDS.contains(&id)
}

impl RevisionGraph {
    /// Builds and validates the graph.
    ///
    /// Errors: [`GraphError::Invalid`] listing every problem found (duplicate ids, invalid ids, unknown
    /// down_revisions or depends_on, duplicate branch labels), or a single [`GraphError::Cycle`] /
    /// [`GraphError::DependencyCycle`] naming the revisions on the cycles.
    pub fn new(revisions: Vec<RevisionMeta>) -> Result<Self, GraphError> {
        let mut problems = Vec::new();
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut metas: Vec<RevisionMeta> = Vec::new();
        for meta in revisions {
            if !valid_id(meta.id.as_str()) {
                problems.push(GraphError::InvalidRevisionId {
                    revision: meta.id.clone(),
                });
            }
            if ids.contains_key(meta.id.as_str()) {
                problems.push(GraphError::DuplicateRevision {
                    revision: meta.id.clone(),
                });
                continue;
            }
            ids.insert(meta.id.0.clone(), metas.len());
            metas.push(meta);
        }
        let mut keys = ids.clone();
        let mut key_order: Vec<String> = metas.iter().map(|m| m.id.0.clone()).collect();
        for (i, meta) in metas.iter().enumerate() {
            for label in &meta.branch_labels {
                if let Some(&other) = keys.get(label) {
                    problems.push(GraphError::DuplicateBranchLabel {
                        label: label.clone(),
                        revision: meta.id.clone(),
                        other: metas[other].id.clone(),
                    });
                } else {
                    keys.insert(label.clone(), i);
                    key_order.push(label.clone());
                }
            }
        }
        let mut nodes: Vec<Node> = Vec::with_capacity(metas.len());
        for meta in &metas {
            let mut down = Vec::new();
            for d in &meta.down_revisions {
                match ids.get(d.as_str()) {
                    Some(&i) if !down.contains(&i) => down.push(i),
                    Some(_) => {}
                    None => problems.push(GraphError::UnknownDownRevision {
                        revision: meta.id.clone(),
                        down_revision: d.clone(),
                    }),
                }
            }
            let mut resolved_deps = Vec::new();
            for dep in &meta.depends_on {
                let found = match keys.get(dep.as_str()) {
                    Some(&i) => Some(i),
                    None => {
                        // Flotilla also accepts a unique id prefix here; Alembic requires an exact id or label.
                        let candidates: Vec<usize> = metas
                            .iter()
                            .enumerate()
                            .filter(|(_, m)| m.id.0.starts_with(dep.as_str()))
                            .map(|(i, _)| i)
                            .collect();
                        match candidates.len() {
                            1 if !dep.is_empty() => Some(candidates[0]),
                            0 | 1 => {
                                problems.push(GraphError::UnknownDependency {
                                    revision: meta.id.clone(),
                                    dependency: dep.clone(),
                                });
                                None
                            }
                            _ => {
                                problems.push(GraphError::AmbiguousDependency {
                                    revision: meta.id.clone(),
                                    dependency: dep.clone(),
                                    candidates: candidates.iter().map(|&i| metas[i].id.clone()).collect(),
                                });
                                None
                            }
                        }
                    }
                };
                if let Some(i) = found {
                    if !resolved_deps.contains(&i) {
                        resolved_deps.push(i);
                    }
                }
            }
            nodes.push(Node {
                meta: meta.clone(),
                down,
                resolved_deps,
                normalized_deps: Vec::new(),
                next: Vec::new(),
                all_next: Vec::new(),
                labels: meta.branch_labels.iter().cloned().collect(),
            });
        }
        if !problems.is_empty() {
            return Err(GraphError::Invalid { problems });
        }
        for i in 0..nodes.len() {
            let (down, deps) = (nodes[i].down.clone(), nodes[i].resolved_deps.clone());
            for d in &down {
                nodes[*d].next.push(i);
                nodes[*d].all_next.push(i);
            }
            for d in deps {
                if !nodes[d].all_next.contains(&i) {
                    nodes[d].all_next.push(i);
                }
            }
        }
        for n in &mut nodes {
            n.next.sort_unstable();
            n.next.dedup();
            n.all_next.sort_unstable();
        }
        let versioned = cycles(&nodes, |n| n.down.clone());
        if !versioned.is_empty() {
            return Err(GraphError::Cycle {
                revisions: versioned.iter().map(|&i| nodes[i].meta.id.clone()).collect(),
            });
        }
        let all = cycles(&nodes, |n| {
            let mut v = n.down.clone();
            v.extend(&n.resolved_deps);
            v
        });
        if !all.is_empty() {
            return Err(GraphError::DependencyCycle {
                revisions: all.iter().map(|&i| nodes[i].meta.id.clone()).collect(),
            });
        }
        let mut graph = RevisionGraph { nodes, keys, key_order };
        graph.normalize_depends_on();
        graph.add_branches();
        Ok(graph)
    }

    fn normalize_depends_on(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].resolved_deps.is_empty() {
                continue;
            }
            let mut covered = BTreeSet::new();
            for a in self.ancestors(&[i], false) {
                if a != i {
                    covered.extend(self.nodes[a].resolved_deps.iter().copied());
                }
            }
            let normalized = self.nodes[i]
                .resolved_deps
                .iter()
                .copied()
                .filter(|d| !covered.contains(d))
                .collect();
            self.nodes[i].normalized_deps = normalized;
        }
    }

    /// Alembic's `_add_branches`: a label spreads to every versioned descendant, then down from the last
    /// descendant visited until a branch point (counting dependants) or a merge point.
    fn add_branches(&mut self) {
        for i in 0..self.nodes.len() {
            let declared: Vec<String> = self.nodes[i].meta.branch_labels.clone();
            if declared.is_empty() {
                continue;
            }
            let order = self.related_order(&[i], |n| n.next.clone());
            for &d in &order {
                self.nodes[d].labels.extend(declared.iter().cloned());
            }
            let mut parent = *order.last().unwrap_or(&i);
            loop {
                let n = &self.nodes[parent];
                if n.all_next.len() > 1 || n.down.len() > 1 {
                    break;
                }
                self.nodes[parent].labels.extend(declared.iter().cloned());
                match self.nodes[parent].down.first() {
                    Some(&d) => parent = d,
                    None => break,
                }
            }
        }
    }

    /// Nodes reachable from `targets` through `f`, in Alembic's depth-first visiting order (targets included).
    pub(crate) fn related_order(&self, targets: &[usize], f: impl Fn(&Node) -> Vec<usize>) -> Vec<usize> {
        let mut seen = vec![false; self.nodes.len()];
        let mut out = Vec::new();
        for &t in targets {
            let mut todo = vec![t];
            while let Some(r) = todo.pop() {
                if seen[r] {
                    continue;
                }
                seen[r] = true;
                todo.extend(f(&self.nodes[r]));
                out.push(r);
            }
        }
        out
    }

    /// Ancestors of `targets`, targets included; with `include_deps` also through depends_on.
    pub(crate) fn ancestors(&self, targets: &[usize], include_deps: bool) -> BTreeSet<usize> {
        if include_deps {
            self.related_order(targets, |n| n.normalized_down())
                .into_iter()
                .collect()
        } else {
            self.related_order(targets, |n| n.down.clone()).into_iter().collect()
        }
    }

    /// Descendants of `targets`, targets included; with `include_deps` also through depends_on.
    pub(crate) fn descendants(&self, targets: &[usize], include_deps: bool) -> BTreeSet<usize> {
        if include_deps {
            self.related_order(targets, |n| n.all_next.clone())
                .into_iter()
                .collect()
        } else {
            self.related_order(targets, |n| n.next.clone()).into_iter().collect()
        }
    }

    /// Alembic's `check=True` traversal: fails when one target is reachable from another.
    pub(crate) fn check_overlap(&self, targets: &[usize], up: bool, include_deps: bool) -> Result<(), GraphError> {
        let set: BTreeSet<usize> = targets.iter().copied().collect();
        for &t in &set {
            let reach = if up {
                self.descendants(&[t], include_deps)
            } else {
                self.ancestors(&[t], include_deps)
            };
            let others: Vec<RevisionId> = reach
                .intersection(&set)
                .filter(|&&o| o != t)
                .map(|&o| self.id(o).clone())
                .collect();
            if !others.is_empty() {
                return Err(GraphError::Overlap {
                    revision: self.id(t).clone(),
                    others,
                });
            }
        }
        Ok(())
    }

    pub(crate) fn id(&self, i: usize) -> &RevisionId {
        &self.nodes[i].meta.id
    }

    pub(crate) fn ids(&self, set: impl IntoIterator<Item = usize>) -> Vec<RevisionId> {
        set.into_iter().map(|i| self.id(i).clone()).collect()
    }

    pub(crate) fn index(&self, id: &RevisionId) -> Option<usize> {
        self.keys
            .get(id.as_str())
            .copied()
            .filter(|&i| self.nodes[i].meta.id == *id)
    }

    pub(crate) fn heads_ix(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].next.is_empty())
            .collect()
    }

    pub(crate) fn real_heads_ix(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].all_next.is_empty())
            .collect()
    }

    pub(crate) fn bases_ix(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].down.is_empty())
            .collect()
    }

    /// Number of revisions.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// All revisions in input order.
    pub fn revisions(&self) -> impl Iterator<Item = &RevisionMeta> {
        self.nodes.iter().map(|n| &n.meta)
    }

    /// The revision with exactly this id (no prefixes or symbols; see [`RevisionGraph::resolve`] for those).
    pub fn get(&self, id: &RevisionId) -> Option<&RevisionMeta> {
        self.index(id).map(|i| &self.nodes[i].meta)
    }

    /// Alembic's `heads`: revisions no other revision names as down_revision. A revision that only others
    /// depend on is still a head here (it is what `head` and `<label>@heads` consider).
    pub fn heads(&self) -> Vec<RevisionId> {
        self.ids(self.heads_ix())
    }

    /// Heads that nothing depends on either (Alembic's `_real_heads`); the target named by `heads`.
    pub fn real_heads(&self) -> Vec<RevisionId> {
        self.ids(self.real_heads_ix())
    }

    /// Revisions without a down_revision (they may still have depends_on).
    pub fn bases(&self) -> Vec<RevisionId> {
        self.ids(self.bases_ix())
    }

    /// Bases that have no depends_on either (Alembic's `_real_bases`).
    pub fn real_bases(&self) -> Vec<RevisionId> {
        self.ids(
            (0..self.nodes.len()).filter(|&i| self.nodes[i].down.is_empty() && self.nodes[i].resolved_deps.is_empty()),
        )
    }

    /// Revisions named as down_revision by more than one revision.
    pub fn branch_points(&self) -> Vec<RevisionId> {
        self.ids((0..self.nodes.len()).filter(|&i| self.nodes[i].next.len() > 1))
    }

    /// Revisions with more than one down_revision.
    pub fn merge_points(&self) -> Vec<RevisionId> {
        self.ids((0..self.nodes.len()).filter(|&i| self.nodes[i].down.len() > 1))
    }

    /// Revisions naming `id` as down_revision (not dependants), or `None` for an unknown id.
    pub fn children(&self, id: &RevisionId) -> Option<Vec<RevisionId>> {
        self.index(id).map(|i| self.ids(self.nodes[i].next.clone()))
    }

    /// Revisions naming `id` in depends_on, resolved, or `None` for an unknown id.
    pub fn dependants(&self, id: &RevisionId) -> Option<Vec<RevisionId>> {
        self.index(id).map(|i| {
            self.ids(
                self.nodes[i]
                    .all_next
                    .iter()
                    .copied()
                    .filter(|c| !self.nodes[i].next.contains(c)),
            )
        })
    }

    /// Strict ancestors of `id` through down_revision and, if `include_deps`, depends_on; `None` for an unknown id.
    pub fn ancestors_of(&self, id: &RevisionId, include_deps: bool) -> Option<Vec<RevisionId>> {
        let i = self.index(id)?;
        Some(self.ids(self.ancestors(&[i], include_deps).into_iter().filter(|&a| a != i)))
    }

    /// Strict descendants of `id` through down_revision and, if `include_deps`, depends_on; `None` for an unknown id.
    pub fn descendants_of(&self, id: &RevisionId, include_deps: bool) -> Option<Vec<RevisionId>> {
        let i = self.index(id)?;
        Some(self.ids(self.descendants(&[i], include_deps).into_iter().filter(|&a| a != i)))
    }

    /// The branch labels a revision carries after propagation, sorted; `None` for an unknown id.
    pub fn branch_labels_of(&self, id: &RevisionId) -> Option<Vec<String>> {
        self.index(id).map(|i| self.nodes[i].labels.iter().cloned().collect())
    }

    /// The revision that declares `label`, if any.
    pub fn label_revision(&self, label: &str) -> Option<&RevisionId> {
        let &i = self.keys.get(label)?;
        self.nodes[i]
            .meta
            .branch_labels
            .iter()
            .any(|l| l == label)
            .then(|| self.id(i))
    }

    /// The depends_on of `id` resolved to full ids, in header order; `None` for an unknown id.
    pub fn resolved_dependencies(&self, id: &RevisionId) -> Option<Vec<RevisionId>> {
        self.index(id).map(|i| self.ids(self.nodes[i].resolved_deps.clone()))
    }
}

/// Nodes on cycles (strongly connected components of size > 1, or self-loops), sorted by input order.
fn cycles(nodes: &[Node], edges: impl Fn(&Node) -> Vec<usize>) -> Vec<usize> {
    // Iterative Tarjan, so deep linear histories cannot overflow the stack.
    let n = nodes.len();
    let adj: Vec<Vec<usize>> = nodes.iter().map(&edges).collect();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut counter = 0;
    let mut out = Vec::new();
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut call: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(&mut (v, ref mut pos)) = call.last_mut() {
            if *pos == 0 {
                index[v] = counter;
                low[v] = counter;
                counter += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if *pos < adj[v].len() {
                let w = adj[v][*pos];
                *pos += 1;
                if index[w] == usize::MAX {
                    call.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            call.pop();
            if let Some(&(parent, _)) = call.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut comp = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 || adj[v].contains(&v) {
                    out.extend(comp);
                }
            }
        }
    }
    out.sort_unstable();
    out
}
