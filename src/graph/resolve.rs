//! Identifier resolution with Alembic's syntax: full ids, unique prefixes, `head`, `heads`, `base`,
//! `<label>@head`, `<label>@base`, `<rev>@head`, relative `+N`/`-N`, `<rev>+N`, `<label>@-N`, `heads-1`.
//!
//! The functions mirror `alembic.script.revision.RevisionMap` closely (same names with the leading underscore
//! dropped) so that the two can be compared line by line.

use super::error::GraphError;
use super::map::RevisionGraph;
use crate::revision::RevisionId;

/// Alembic's loose result of resolving one symbol: nothing (`None`), the `base` marker, or a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pos {
    Nil,
    Base,
    Rev(usize),
}

/// A match of Alembic's `(?:(.+?)@)?(\w+)?((?:\+|-)\d+)` at the start of a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relative {
    pub(crate) label: Option<String>,
    pub(crate) symbol: Option<String>,
    pub(crate) relative: i64,
    /// The signed number as written (for messages).
    pub(crate) text: String,
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Matches `(\w+)?([+-]\d+)` at the start of `s` (Python `re.match` semantics: trailing text is ignored).
fn match_tail(s: &str) -> Option<(Option<String>, i64, String)> {
    let word_end = s.find(|c: char| !is_word(c)).unwrap_or(s.len());
    let symbol = &s[..word_end];
    let rest = &s[word_end..];
    let sign = rest.chars().next().filter(|c| *c == '+' || *c == '-')?;
    let digits: String = rest[1..].chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return None;
    }
    let text = format!("{sign}{digits}");
    let n: i64 = text.parse().unwrap_or(if sign == '-' { i64::MIN } else { i64::MAX });
    Some(((!symbol.is_empty()).then(|| symbol.to_string()), n, text))
}

pub(crate) fn parse_relative(spec: &str) -> Option<Relative> {
    // The lazy `(.+?)@` tries the shortest label first; a label never spans a newline.
    for (at, _) in spec.match_indices('@') {
        let label = &spec[..at];
        if label.is_empty() || label.contains('\n') {
            continue;
        }
        if let Some((symbol, relative, text)) = match_tail(&spec[at + 1..]) {
            return Some(Relative {
                label: Some(label.to_string()),
                symbol,
                relative,
                text,
            });
        }
    }
    match_tail(spec).map(|(symbol, relative, text)| Relative {
        label: None,
        symbol,
        relative,
        text,
    })
}

fn parse_int(s: &str) -> Option<i64> {
    let t = s.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

impl RevisionGraph {
    /// Alembic's `_resolve_revision_number`: symbols to id strings plus the branch label before `@`.
    pub(crate) fn resolve_revision_number(
        &self,
        spec: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), GraphError> {
        let (label, id) = match spec {
            Some(s) => match s.split_once('@') {
                Some((l, r)) => (Some(l.to_string()), Some(r)),
                None => (None, Some(s)),
            },
            None => (None, None),
        };
        match id {
            Some("heads") => {
                let ids = match &label {
                    Some(l) => self.filter_for_lineage(&self.heads_ix(), Some(l), false)?,
                    None => self.real_heads_ix(),
                };
                Ok((ids.into_iter().map(|i| self.id(i).0.clone()).collect(), label))
            }
            Some("head") => {
                let head = self.current_head(label.as_deref())?;
                Ok((head.into_iter().map(|i| self.id(i).0.clone()).collect(), label))
            }
            Some("base") | None => Ok((Vec::new(), label)),
            Some(other) => Ok((vec![other.to_string()], label)),
        }
    }

    /// Alembic's `get_current_head`: the single versioned head, optionally within a branch.
    pub(crate) fn current_head(&self, label: Option<&str>) -> Result<Option<usize>, GraphError> {
        let mut heads = self.heads_ix();
        if let Some(l) = label.filter(|l| !l.is_empty()) {
            heads = self.filter_for_lineage(&heads, Some(l), false)?;
        }
        if heads.len() > 1 {
            let argument = match label.filter(|l| !l.is_empty()) {
                Some(l) => format!("{l}@head"),
                None => "head".to_string(),
            };
            return Err(GraphError::MultipleHeads {
                argument,
                heads: self.ids(heads),
            });
        }
        Ok(heads.first().copied())
    }

    /// Alembic's `filter_for_lineage`: keeps targets related (ancestor or descendant) to what `check_against` names.
    pub(crate) fn filter_for_lineage(
        &self,
        targets: &[usize],
        check_against: Option<&str>,
        include_deps: bool,
    ) -> Result<Vec<usize>, GraphError> {
        let (ids, label) = self.resolve_revision_number(check_against)?;
        let mut shares: Vec<String> = label.into_iter().filter(|l| !l.is_empty()).collect();
        shares.extend(ids);
        if shares.is_empty() {
            return Ok(targets.to_vec());
        }
        let mut against = Vec::new();
        for s in &shares {
            if let Some(i) = self.revision_for_ident(Some(s), None)? {
                against.push(i);
            }
        }
        Ok(targets
            .iter()
            .copied()
            .filter(|&t| self.shares_lineage(t, &against, include_deps))
            .collect())
    }

    pub(crate) fn shares_lineage(&self, target: usize, against: &[usize], include_deps: bool) -> bool {
        if against.is_empty() {
            return true;
        }
        let mut related = self.descendants(&[target], include_deps);
        related.extend(self.ancestors(&[target], include_deps));
        against.iter().any(|a| related.contains(a))
    }

    /// Alembic's `_resolve_branch`: a branch label, or any revision identifier used as one.
    pub(crate) fn resolve_branch(&self, label: &str) -> Result<usize, GraphError> {
        if let Some(&i) = self.keys.get(label) {
            return Ok(i);
        }
        match self.revision_for_ident(Some(label), None) {
            Ok(Some(i)) => Ok(i),
            Ok(None) | Err(_) => Err(GraphError::UnknownBranch {
                label: label.to_string(),
            }),
        }
    }

    /// Alembic's `_revision_for_ident`: exact key, else unique prefix among keys longer than three characters.
    pub(crate) fn revision_for_ident(
        &self,
        ident: Option<&str>,
        check_branch: Option<&str>,
    ) -> Result<Option<usize>, GraphError> {
        let check_branch = check_branch.filter(|b| !b.is_empty());
        let branch_rev = match check_branch {
            Some(b) => Some(self.resolve_branch(b)?),
            None => None,
        };
        let Some(ident) = ident else { return Ok(None) };
        let rev = match self.keys.get(ident) {
            Some(&i) => i,
            None => {
                let mut cands: Vec<usize> = Vec::new();
                let mut names: Vec<String> = Vec::new();
                for key in &self.key_order {
                    if key.chars().count() > 3 && key.starts_with(ident) {
                        cands.push(self.keys[key]);
                        names.push(key.clone());
                    }
                }
                if let (Some(b), Some(_)) = (check_branch, branch_rev) {
                    let keep = self.filter_for_lineage(&cands, Some(b), false)?;
                    let pairs: Vec<(usize, String)> =
                        cands.into_iter().zip(names).filter(|(c, _)| keep.contains(c)).collect();
                    cands = pairs.iter().map(|p| p.0).collect();
                    names = pairs.into_iter().map(|p| p.1).collect();
                }
                match cands.len() {
                    0 => {
                        return Err(GraphError::UnknownRevision {
                            spec: ident.to_string(),
                        })
                    }
                    1 => cands[0],
                    _ => {
                        return Err(GraphError::AmbiguousPrefix {
                            prefix: ident.to_string(),
                            candidates: names,
                        })
                    }
                }
            }
        };
        if let (Some(b), Some(br)) = (check_branch, branch_rev) {
            if !self.shares_lineage(rev, &[br], false) {
                return Err(GraphError::NotOnBranch {
                    revision: self.id(rev).clone(),
                    label: b.to_string(),
                });
            }
        }
        Ok(Some(rev))
    }

    /// Alembic's `get_revisions` for one identifier.
    pub(crate) fn get_revisions(&self, spec: Option<&str>) -> Result<Vec<Pos>, GraphError> {
        let (ids, label) = self.resolve_revision_number(spec)?;
        if ids.len() == 1 {
            if let Some(n) = parse_int(&ids[0]).filter(|n| *n < 0) {
                let mut heads = self.real_heads_ix();
                if let Some(l) = &label {
                    heads.retain(|&h| self.nodes[h].labels.contains(l));
                }
                let text = spec.unwrap_or_default();
                return heads
                    .into_iter()
                    .map(|h| self.walk_steps(Pos::Rev(h), n, None, true, text))
                    .collect();
            }
        }
        ids.iter()
            .map(|id| {
                Ok(self
                    .revision_for_ident(Some(id), label.as_deref())?
                    .map_or(Pos::Nil, Pos::Rev))
            })
            .collect()
    }

    /// `get_revisions` over a tuple of identifiers.
    pub(crate) fn get_revisions_all(&self, specs: &[String]) -> Result<Vec<Pos>, GraphError> {
        let mut out = Vec::new();
        for s in specs {
            out.extend(self.get_revisions(Some(s))?);
        }
        Ok(out)
    }

    /// Alembic's `get_revision`: exactly one revision, or `None` for base.
    pub(crate) fn get_revision(&self, spec: Option<&str>) -> Result<Option<usize>, GraphError> {
        let (ids, label) = self.resolve_revision_number(spec)?;
        if ids.len() > 1 {
            let heads = ids.iter().map(|s| RevisionId::new(s.clone())).collect();
            return Err(GraphError::MultipleHeads {
                argument: spec.unwrap_or("base").to_string(),
                heads,
            });
        }
        self.revision_for_ident(ids.first().map(String::as_str), label.as_deref())
    }

    /// Alembic's `_walk`: `steps` up (positive) or down (negative). `Ok(Pos::Nil)` means walked past the end when
    /// `no_overwalk` is set.
    pub(crate) fn walk_steps(
        &self,
        start: Pos,
        steps: i64,
        label: Option<&str>,
        no_overwalk: bool,
        spec: &str,
    ) -> Result<Pos, GraphError> {
        let mut initial = start;
        for _ in 0..steps.unsigned_abs() {
            let children: Vec<Pos> = if steps > 0 {
                let up = match initial {
                    Pos::Nil => self.bases_ix(),
                    Pos::Rev(i) => self.nodes[i].next.clone(),
                    // Alembic asserts here; walking up from the `base` marker starts at the bases.
                    Pos::Base => self.bases_ix(),
                };
                let up = match label {
                    Some(l) if !l.is_empty() => self.filter_for_lineage(&up, Some(l), false)?,
                    _ => up,
                };
                up.into_iter().map(Pos::Rev).collect()
            } else {
                match initial {
                    Pos::Base => Vec::new(),
                    Pos::Nil => self.heads_ix().into_iter().map(Pos::Rev).collect(),
                    Pos::Rev(i) => {
                        let down: Vec<Pos> = self.nodes[i].down.iter().map(|&d| Pos::Rev(d)).collect();
                        if down.is_empty() {
                            vec![Pos::Base]
                        } else {
                            down
                        }
                    }
                }
            };
            match children.len() {
                0 => return Ok(if no_overwalk { Pos::Nil } else { initial }),
                1 => initial = children[0],
                _ => return Err(GraphError::AmbiguousWalk { spec: spec.to_string() }),
            }
        }
        Ok(initial)
    }

    fn walk_from_spec(
        &self,
        start: &str,
        steps: i64,
        label: Option<&str>,
        no_overwalk: bool,
        spec: &str,
    ) -> Result<Pos, GraphError> {
        let start = self.get_revision(Some(start))?.map_or(Pos::Nil, Pos::Rev);
        self.walk_steps(start, steps, label, no_overwalk, spec)
    }

    /// Alembic's `_parse_upgrade_target`.
    pub(crate) fn parse_upgrade_target(
        &self,
        current: &[String],
        target: &[String],
        assert_len: bool,
    ) -> Result<Vec<Pos>, GraphError> {
        let rel = match target {
            [one] => parse_relative(one),
            _ => None,
        };
        let Some(rel) = rel else {
            return self.get_revisions_all(target);
        };
        let spec = target[0].as_str();
        let label = rel.label.as_deref();
        if rel.relative > 0 {
            let Some(symbol) = &rel.symbol else {
                let mut start: Vec<Pos> = if current.is_empty() {
                    vec![Pos::Nil]
                } else {
                    current
                        .iter()
                        .map(|c| self.get_revision(Some(c)).map(|r| r.map_or(Pos::Nil, Pos::Rev)))
                        .collect::<Result<_, _>>()?
                };
                if let Some(l) = label {
                    let cur: Vec<usize> = self
                        .get_revisions_all(current)?
                        .into_iter()
                        .filter_map(pos_rev)
                        .collect();
                    let on_branch = self.filter_for_lineage(&cur, Some(l), false)?;
                    start = on_branch.into_iter().map(Pos::Rev).collect();
                    if start.is_empty() {
                        let active: Vec<usize> = self.ancestors(&cur, true).into_iter().collect();
                        let active = self.filter_for_lineage(&active, Some(l), false)?;
                        let downs: std::collections::BTreeSet<usize> =
                            active.iter().flat_map(|&a| self.nodes[a].normalized_down()).collect();
                        start = active
                            .into_iter()
                            .filter(|a| !downs.contains(a))
                            .map(Pos::Rev)
                            .collect();
                        if start.is_empty() {
                            start = vec![Pos::Nil];
                        }
                    }
                }
                if start.len() > 1 {
                    let current = start
                        .iter()
                        .filter_map(|p| pos_rev(*p))
                        .map(|i| self.id(i).clone())
                        .collect();
                    return Err(GraphError::AmbiguousUpgrade { current });
                }
                let rev = self.walk_steps(start[0], rel.relative, label, assert_len, spec)?;
                if rev == Pos::Nil {
                    return Err(GraphError::RelativeOutOfRange { spec: spec.to_string() });
                }
                return Ok(vec![rev]);
            };
            return Ok(vec![self.walk_from_spec(
                symbol,
                rel.relative,
                label,
                assert_len,
                spec,
            )?]);
        }
        let Some(symbol) = &rel.symbol else {
            return Err(GraphError::RelativeOutOfRange { spec: spec.to_string() });
        };
        let start = match label {
            Some(l) => format!("{l}@{symbol}"),
            None => symbol.clone(),
        };
        Ok(vec![self.walk_from_spec(
            &start,
            rel.relative,
            None,
            assert_len,
            spec,
        )?])
    }

    /// Alembic's `_parse_downgrade_target`: the branch label in effect and the target (`Nil` or `Base` for base).
    pub(crate) fn parse_downgrade_target(
        &self,
        current: &[String],
        target: Option<&str>,
        assert_len: bool,
    ) -> Result<(Option<String>, Pos), GraphError> {
        let Some(target) = target else {
            return Ok((None, Pos::Nil));
        };
        if let Some(rel) = parse_relative(target) {
            let mut label = rel.label.clone();
            if rel.relative >= 0 {
                let Some(symbol) = &rel.symbol else {
                    return Err(GraphError::RelativeOutOfRange {
                        spec: target.to_string(),
                    });
                };
                let rev = self.walk_from_spec(symbol, rel.relative, label.as_deref(), assert_len, target)?;
                if rev == Pos::Nil {
                    return Err(GraphError::RelativeOutOfRange {
                        spec: target.to_string(),
                    });
                }
                return Ok((label, rev));
            }
            let symbol = match &rel.symbol {
                Some(s) => s.clone(),
                None => {
                    if let Some(l) = &label {
                        let cur: Vec<usize> = self
                            .get_revisions_all(current)?
                            .into_iter()
                            .filter_map(pos_rev)
                            .collect();
                        let mut list = self.filter_for_lineage(&cur, Some(l), false)?;
                        if list.is_empty() {
                            let all = self.all_current(current)?;
                            list = self.filter_for_lineage(&all, Some(l), false)?;
                        }
                        match list.as_slice() {
                            [one] => self.id(*one).0.clone(),
                            // Alembic asserts exactly one revision of the branch is current.
                            [] => {
                                return Err(GraphError::InvalidDowngradeTarget {
                                    target: target.to_string(),
                                })
                            }
                            _ => {
                                return Err(GraphError::MultipleHeads {
                                    argument: target.to_string(),
                                    heads: self.ids(list),
                                });
                            }
                        }
                    } else {
                        let Some(first) = current.first() else {
                            return Err(GraphError::RelativeOutOfRange {
                                spec: target.to_string(),
                            });
                        };
                        // Alembic picks the first current row and restricts the walk to its branch.
                        label = Some(first.clone());
                        first.clone()
                    }
                }
            };
            let start = match &label {
                Some(l) => format!("{l}@{symbol}"),
                None => symbol,
            };
            let rev = self.walk_from_spec(&start, rel.relative, None, assert_len, target)?;
            if rev == Pos::Nil {
                return Err(GraphError::RelativeOutOfRange {
                    spec: target.to_string(),
                });
            }
            return Ok((label, rev));
        }
        let (label, symbol) = match target.rsplit_once('@') {
            Some((l, s)) if !l.is_empty() => (Some(l.to_string()), s),
            Some((_, s)) => (None, s),
            None => (None, target),
        };
        Ok((label, self.get_revision(Some(symbol))?.map_or(Pos::Nil, Pos::Rev)))
    }

    /// Alembic's `_get_all_current`: the branch tips of everything the rows imply.
    pub(crate) fn all_current(&self, rows: &[String]) -> Result<Vec<usize>, GraphError> {
        let top: Vec<usize> = self.get_revisions_all(rows)?.into_iter().filter_map(pos_rev).collect();
        let all = self.ancestors(&top, true);
        Ok(all
            .iter()
            .copied()
            .filter(|&r| !self.descendants(&[r], false).iter().any(|d| *d != r && all.contains(d)))
            .collect())
    }

    /// Resolves a revision identifier to full ids, relative to the current version rows where the spec is relative.
    ///
    /// Accepts everything Alembic accepts for `upgrade`/`downgrade`/`show`: full ids, unique prefixes of ids (and
    /// branch labels) longer than three characters, `head`, `heads`, `base` (resolves to no revision),
    /// `<label>@head`, `<label>@heads`, `<label>@base`, `<rev>@head`, `+N`, `-N`, `<rev>+N`, `<rev>-N`,
    /// `<label>@+N`, `<label>@-N`, `head-N`, `heads+N` (when there is one head). Positive relative specs resolve
    /// as an upgrade target, negative ones as a downgrade target; `-N` without a symbol walks down from the first
    /// current row, `<label>@-N` from the current row on that branch.
    ///
    /// Errors: [`GraphError::UnknownRevision`], [`GraphError::AmbiguousPrefix`], [`GraphError::MultipleHeads`],
    /// [`GraphError::NotOnBranch`], [`GraphError::UnknownBranch`], [`GraphError::RelativeOutOfRange`],
    /// [`GraphError::AmbiguousWalk`], [`GraphError::AmbiguousUpgrade`].
    pub fn resolve(&self, spec: &str, current_rows: &[RevisionId]) -> Result<Vec<RevisionId>, GraphError> {
        let rows: Vec<String> = current_rows.iter().map(|r| r.0.clone()).collect();
        let found = match parse_relative(spec) {
            Some(rel) if rel.relative < 0 => {
                vec![self.parse_downgrade_target(&rows, Some(spec), true)?.1]
            }
            Some(_) => self.parse_upgrade_target(&rows, &[spec.to_string()], true)?,
            None => self.get_revisions(Some(spec))?,
        };
        let mut out = Vec::new();
        for p in found {
            match p {
                Pos::Rev(i) => out.push(self.id(i).clone()),
                Pos::Base => {}
                Pos::Nil if spec.contains("base") || spec.is_empty() => {}
                Pos::Nil => return Err(GraphError::RelativeOutOfRange { spec: spec.to_string() }),
            }
        }
        Ok(out)
    }
}

pub(crate) fn pos_rev(p: Pos) -> Option<usize> {
    match p {
        Pos::Rev(i) => Some(i),
        _ => None,
    }
}
