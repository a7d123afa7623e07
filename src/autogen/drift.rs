//! Fleet drift: each tenant's live schema against the schema its own recorded revisions should give.
//!
//! Every distinct set of version rows is built once in a scratch database; tenants are then read under the
//! fleet's concurrency limit and the servers' connection caps, and compared. Flotilla's own version and history
//! tables are left out.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};

use super::diff::diff;
use super::introspect::{introspect, Scope};
use super::model::Catalog;
use super::ops::Op;
use super::scratch::{build_as_schema_tenant, build_at, store_tables, DevServer};
use crate::error::error_chain;
use crate::fleet::{self, Engine, Place, Server, Tenant};
use crate::revision::RevisionId;

/// One way a tenant differs from its expected schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DriftDifference {
    /// `extra` (only in the tenant), `missing` (only in the expected schema) or `changed`.
    pub kind: &'static str,
    pub object: String,
}

/// One tenant's result: its version rows and its differences, or why it could not be compared.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DriftReport {
    pub tenant: String,
    pub revisions: Vec<RevisionId>,
    pub differences: Vec<DriftDifference>,
    pub error: Option<String>,
}

impl DriftReport {
    pub fn is_drifted(&self) -> bool {
        !self.differences.is_empty()
    }
}

/// Tenants that drifted the same way (the same differences, at the same revisions), or failed with the same
/// error: one block of the report however many tenants share it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DriftGroup {
    pub revisions: Vec<RevisionId>,
    pub differences: Vec<DriftDifference>,
    pub error: Option<String>,
    /// Tenant ids in report order.
    pub tenants: Vec<String>,
}

/// What makes two reports one group: revisions, differences, error.
type GroupKey<'a> = (Vec<RevisionId>, Vec<(&'a str, String)>, Option<String>);

/// Group the drifted and failed reports by identical outcome, largest group first (then in order of first
/// appearance); tenants without drift are left out.
pub fn group_drift(reports: &[DriftReport]) -> Vec<DriftGroup> {
    let mut groups: Vec<DriftGroup> = Vec::new();
    let mut index: BTreeMap<GroupKey, usize> = BTreeMap::new();
    for r in reports.iter().filter(|r| r.is_drifted() || r.error.is_some()) {
        let differences = r.differences.iter().map(|d| (d.kind, d.object.clone())).collect();
        let key = (r.revisions.clone(), differences, r.error.clone());
        let at = *index.entry(key).or_insert_with(|| {
            groups.push(DriftGroup {
                revisions: r.revisions.clone(),
                differences: r.differences.clone(),
                error: r.error.clone(),
                tenants: Vec::new(),
            });
            groups.len() - 1
        });
        groups[at].tenants.push(r.tenant.clone());
    }
    // A stable sort keeps first appearance among groups of the same size.
    groups.sort_by_key(|g| std::cmp::Reverse(g.tenants.len()));
    groups
}

/// What to compare tenants with.
pub struct DriftTarget<'a> {
    pub engine: &'a Engine,
    pub dev: &'a DevServer,
    pub concurrency: usize,
}

/// Describe the operations turning the expected schema into the live one as drift.
pub fn differences(ops: &[Op]) -> Vec<DriftDifference> {
    ops.iter()
        .map(|op| {
            let (verb, object) = op.summary();
            DriftDifference {
                kind: match verb {
                    "add" => "extra",
                    "drop" => "missing",
                    _ => "changed",
                },
                object,
            }
        })
        .collect()
}

/// Expected catalogs per version-row set: the whole database (for database tenants) and the home schema built
/// as a schema tenant (for schema tenants), each built only when a tenant needs it.
type Expected = BTreeMap<Vec<RevisionId>, (Result<Catalog, String>, Result<Catalog, String>)>;

/// Compare every tenant with the schema at its own revisions, in tenant order.
pub async fn drift(target: &DriftTarget<'_>, tenants: &[Tenant], servers: &[Arc<Server>]) -> Vec<DriftReport> {
    let engine = target.engine;
    let versions = fleet::read_versions(tenants, servers, engine.store.as_ref(), target.concurrency).await;
    let ignore = store_tables(engine);
    let shared = &engine.exec.shared_schemas;
    // Which kinds of tenant sit at each set of version rows.
    let mut needed: BTreeMap<&[RevisionId], (bool, bool)> = BTreeMap::new();
    for (tenant, rows) in tenants.iter().zip(&versions) {
        if let Some(rows) = rows.rows() {
            let entry = needed.entry(rows).or_default();
            match tenant.place {
                Place::Database(_) => entry.0 = true,
                Place::Schema(_) => entry.1 = true,
            }
        }
    }
    let not_built = || Err("no expected schema was built".to_string());
    let mut expected: Expected = BTreeMap::new();
    for (rows, (is_database, is_schema)) in needed {
        if let Some(unknown) = rows.iter().find(|r| !engine.scripts.contains_key(*r)) {
            let e = format!("revision {unknown} is not in this migration set");
            expected.insert(rows.to_vec(), (Err(e.clone()), Err(e)));
            continue;
        }
        let whole = if is_database {
            let scope = Scope::database(ignore.clone()).with_shared(shared);
            build_at(target.dev, engine, rows, std::slice::from_ref(&scope))
                .await
                .map_err(|e| error_chain(&e))
                .map(|mut c| c.pop().unwrap_or_default())
        } else {
            not_built()
        };
        let home = if is_schema {
            let scope = Scope::schema("public", ignore.clone()).with_shared(shared);
            build_as_schema_tenant(target.dev, engine, rows, std::slice::from_ref(&scope))
                .await
                .map_err(|e| error_chain(&e))
                .map(|mut c| c.pop().unwrap_or_default())
        } else {
            not_built()
        };
        expected.insert(rows.to_vec(), (whole, home));
    }
    let expected = &expected;
    let ignore = &ignore;
    stream::iter(tenants.iter().zip(versions).map(|(tenant, rows)| async move {
        let server = &servers[tenant.server];
        let mut report = DriftReport {
            tenant: tenant.id.clone(),
            revisions: Vec::new(),
            differences: Vec::new(),
            error: None,
        };
        let rows = match rows.into_result() {
            Ok(rows) => rows,
            Err(e) => {
                report.error = Some(e);
                return report;
            }
        };
        report.revisions = rows.clone();
        let Some((whole, home)) = expected.get(&rows) else {
            report.error = Some("no expected schema was built".into());
            return report;
        };
        let (conn, scope, want) = match &tenant.place {
            Place::Schema(schema) => (
                server.pooled().await,
                Scope::schema(schema, ignore.clone()).with_shared(&engine.exec.shared_schemas),
                home,
            ),
            Place::Database(db) => (
                server.direct(db).await,
                Scope::database(ignore.clone()).with_shared(&engine.exec.shared_schemas),
                whole,
            ),
        };
        let want = match want {
            Ok(want) => want,
            Err(e) => {
                report.error = Some(e.clone());
                return report;
            }
        };
        let conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                report.error = Some(e.to_string());
                return report;
            }
        };
        match introspect(conn.client(), &scope).await {
            Ok(live) => {
                conn.release().await;
                report.differences = differences(&diff(want, &live));
            }
            Err(e) => report.error = Some(error_chain(&e)),
        }
        report
    }))
    .buffered(target.concurrency.max(1))
    .collect()
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(tenant: &str, rev: &str, differences: &[&str], error: Option<&str>) -> DriftReport {
        DriftReport {
            tenant: tenant.into(),
            revisions: vec![RevisionId::new(rev)],
            differences: differences
                .iter()
                .map(|o| DriftDifference {
                    kind: "extra",
                    object: o.to_string(),
                })
                .collect(),
            error: error.map(String::from),
        }
    }

    fn check(reports: &[DriftReport], expected: &[(&[&str], &[&str])]) {
        let got: Vec<(Vec<String>, Vec<String>)> = group_drift(reports)
            .into_iter()
            .map(|g| (g.tenants, g.differences.into_iter().map(|d| d.object).collect()))
            .collect();
        let want: Vec<(Vec<String>, Vec<String>)> = expected
            .iter()
            .map(|(t, d)| {
                (
                    t.iter().map(|s| s.to_string()).collect(),
                    d.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn tenants_with_the_same_drift_share_one_group() {
        check(
            &[
                report("a", "1", &["index i on t"], None),
                report("b", "1", &[], None),
                report("c", "1", &["column t.x"], None),
                report("d", "1", &["index i on t"], None),
                report("e", "1", &["index i on t"], None),
                report("f", "1", &["column t.x"], None),
                // The same difference at another revision is another group.
                report("g", "2", &["index i on t"], None),
            ],
            &[
                (&["a", "d", "e"], &["index i on t"]),
                (&["c", "f"], &["column t.x"]),
                (&["g"], &["index i on t"]),
            ],
        );
        let failed = group_drift(&[
            report("a", "1", &[], Some("unreachable")),
            report("b", "1", &[], Some("unreachable")),
        ]);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].tenants, ["a", "b"]);
    }
}
