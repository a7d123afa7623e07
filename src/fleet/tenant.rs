//! Tenants as the fleet runs them, and the selectors that choose which ones a command touches.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Where a tenant's data lives on its server: a schema in the server URL's database (sessions put it first on
/// `search_path`) or a database of its own.
pub use crate::config::TenantTarget as Place;

/// `schema` or `database`, as the ledger records it.
pub fn place_kind(place: &Place) -> &'static str {
    match place {
        Place::Schema(_) => "schema",
        Place::Database(_) => "database",
    }
}

/// One tenant of the fleet. `server` indexes the run's server list.
///
/// `tags` is shared: every tenant a source discovers without extra columns points at that source's one map, so
/// a fleet of 10,000 tenants holds one copy of the tags instead of 10,000 (a cloned map costs over 500 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub server: usize,
    pub place: Place,
    pub tags: Arc<BTreeMap<String, String>>,
}

/// Which tenants a fleet command touches. Empty lists select everything; every non-empty filter must match.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `--tenant ID` (repeatable): only these.
    pub ids: BTreeSet<String>,
    /// `--tag key=value` (repeatable): tenants carrying every one of these tags.
    pub tags: Vec<(String, String)>,
    /// `--exclude ID` (repeatable).
    pub exclude: BTreeSet<String>,
    /// `--only-failed`: the failed and interrupted tenants of the last run, read from the ledger.
    pub only: Option<BTreeSet<String>>,
}

impl Selection {
    pub fn matches(&self, tenant: &Tenant) -> bool {
        (self.ids.is_empty() || self.ids.contains(&tenant.id))
            && self.tags.iter().all(|(k, v)| tenant.tags.get(k) == Some(v))
            && !self.exclude.contains(&tenant.id)
            && self.only.as_ref().is_none_or(|only| only.contains(&tenant.id))
    }

    /// `--tenant` ids, then `--exclude` ids, that name no tenant of the fleet (a typo the user should hear
    /// about: an `--exclude` typo would migrate the tenant it meant to leave out).
    pub fn unknown_ids<'a>(&'a self, tenants: &[Tenant]) -> (Vec<&'a str>, Vec<&'a str>) {
        let known: BTreeSet<&str> = tenants.iter().map(|t| t.id.as_str()).collect();
        let unknown = |ids: &'a BTreeSet<String>| {
            ids.iter()
                .map(String::as_str)
                .filter(|id| !known.contains(id))
                .collect()
        };
        (unknown(&self.ids), unknown(&self.exclude))
    }
}

/// Parse `key=value` for `--tag` and `--canary-tag`.
pub fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("`{text}`: expected key=value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str, tags: &[(&str, &str)]) -> Tenant {
        Tenant {
            id: id.into(),
            server: 0,
            place: Place::Schema(format!("tenant_{id}")),
            tags: Arc::new(tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        }
    }

    #[test]
    fn selection_filters_combine() {
        let all = [
            tenant("a", &[("tier", "gold")]),
            tenant("b", &[("tier", "free")]),
            tenant("c", &[("tier", "gold")]),
        ];
        let pick = |sel: &Selection| {
            all.iter()
                .filter(|t| sel.matches(t))
                .map(|t| t.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(pick(&Selection::default()), ["a", "b", "c"]);
        let gold = Selection {
            tags: vec![("tier".into(), "gold".into())],
            ..Default::default()
        };
        assert_eq!(pick(&gold), ["a", "c"]);
        let gold_not_c = Selection {
            exclude: ["c".to_string()].into(),
            ..gold.clone()
        };
        assert_eq!(pick(&gold_not_c), ["a"]);
        let only = Selection {
            only: Some(["b".to_string(), "c".to_string()].into()),
            ..Default::default()
        };
        assert_eq!(pick(&only), ["b", "c"]);
        let ids = Selection {
            ids: ["a".to_string(), "zz".to_string()].into(),
            ..Default::default()
        };
        assert_eq!(pick(&ids), ["a"]);
        assert_eq!(ids.unknown_ids(&all), (vec!["zz"], vec![]));
        let excluded = Selection {
            exclude: ["a".to_string(), "yy".to_string()].into(),
            ..Default::default()
        };
        assert_eq!(excluded.unknown_ids(&all), (vec![], vec!["yy"]));
    }

    #[test]
    fn tags_parse() {
        assert_eq!(parse_tag("tier=gold"), Ok(("tier".into(), "gold".into())));
        assert!(parse_tag("tier").is_err());
        assert!(parse_tag("=gold").is_err());
    }
}
