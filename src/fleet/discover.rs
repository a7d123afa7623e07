//! Tenant discovery: turn a `[[sources]]` entry into tenants by asking the server, then check what the sources
//! found as the tenants file checks listed tenants, and put all of them together ([`merge`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_postgres::SimpleQueryMessage;

use super::error::{FleetError, TenantProblem};
use super::server::Server;
use super::tenant::{Place, Tenant};
use crate::config::{clashes, Source, SourceKind};
use crate::executor::{db_message, quote_literal};

fn describe(kind: &SourceKind) -> String {
    match kind {
        SourceKind::SchemasLike(p) => format!("schemas_like {p:?}"),
        SourceKind::DatabasesLike(p) => format!("databases_like {p:?}"),
        SourceKind::Query(_) => "query".to_string(),
    }
}

/// A source as messages name it: `the source at FILE:L:C (schemas_like "t_%" on server eu-1)`.
pub fn source_origin(source: &Source) -> String {
    format!(
        "the source at {} ({} on server {})",
        source.at,
        describe(&source.kind),
        source.server
    )
}

/// Where a tenant given to [`merge`] was defined: the index of its `[[tenants]]` entry or of its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Listed(usize),
    Source(usize),
}

/// The fleet's tenants, sorted by id: the listed ones (already checked by the tenants file) and what each source
/// found, checked the same way: a non-empty id, a schema or database name that is a valid PostgreSQL identifier
/// (at most 63 bytes), no id found twice, and no two tenants on one schema or database of a server once
/// PostgreSQL truncates names to 63 bytes. A listed tenant wins over a discovered one with its id (it may carry
/// tags or a different place); that is not a problem.
///
/// `found` holds `(source index, tenants)`; `describe` names an origin and `server_name` a server index, only
/// for messages.
///
/// Errors: [`FleetError::Tenants`] with every problem.
pub fn merge(
    listed: Vec<Tenant>,
    found: Vec<(usize, Vec<Tenant>)>,
    describe: &dyn Fn(Origin) -> String,
    server_name: &dyn Fn(usize) -> String,
) -> Result<Vec<Tenant>, FleetError> {
    let n_listed = listed.len();
    let mut tenants = listed;
    let mut origins: Vec<Origin> = (0..n_listed).map(Origin::Listed).collect();
    for (source, mut more) in found {
        origins.extend(std::iter::repeat_n(Origin::Source(source), more.len()));
        tenants.append(&mut more);
    }
    let mut problems = Vec::new();
    let mut keep = vec![true; tenants.len()];
    for (i, tenant) in tenants.iter().enumerate().skip(n_listed) {
        if tenant.id.is_empty() {
            problems.push(TenantProblem::EmptyId {
                origin: describe(origins[i]),
            });
            keep[i] = false;
        } else if let Err(reason) = tenant.place.check() {
            // Kept for the checks below, so two long names that truncate alike are reported together too.
            problems.push(TenantProblem::BadName {
                origin: describe(origins[i]),
                id: tenant.id.clone(),
                kind: tenant.place.kind(),
                name: tenant.place.name().to_string(),
                reason,
            });
        }
    }
    for (first, later) in clashes(tenants.len(), |i| keep[i].then(|| tenants[i].id.as_str())) {
        keep[later] = false;
        if first >= n_listed {
            problems.push(TenantProblem::DuplicateId {
                id: tenants[later].id.clone(),
                first: describe(origins[first]),
                second: describe(origins[later]),
            });
        }
    }
    let place = |i: usize| keep[i].then(|| (tenants[i].server, tenants[i].place.place_key()));
    for (first, later) in clashes(tenants.len(), place) {
        let (a, b) = (&tenants[first], &tenants[later]);
        problems.push(TenantProblem::SamePlace {
            id: b.id.clone(),
            origin: describe(origins[later]),
            first_id: a.id.clone(),
            first: describe(origins[first]),
            server: server_name(b.server),
            kind: b.place.kind(),
            names: [a.place.name().to_string(), b.place.name().to_string()],
        });
    }
    if !problems.is_empty() {
        return Err(FleetError::Tenants(problems));
    }
    let mut tenants: Vec<Tenant> = tenants
        .into_iter()
        .zip(keep)
        .filter_map(|(tenant, keep)| keep.then_some(tenant))
        .collect();
    tenants.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(tenants)
}

/// Ask `server` for the tenants `kind` describes, each tagged with `tags` (plus a query's extra columns).
pub async fn discover(
    server: &Server,
    server_index: usize,
    kind: &SourceKind,
    tags: &BTreeMap<String, String>,
) -> Result<Vec<Tenant>, FleetError> {
    let fail = |message: String| FleetError::Discovery {
        server: server.name.clone(),
        source_desc: describe(kind),
        message,
    };
    let conn = server.pooled().await.map_err(|e| fail(e.to_string()))?;
    let sql = match kind {
        SourceKind::SchemasLike(pattern) => format!(
            "SELECT nspname AS id, nspname AS schema FROM pg_namespace WHERE nspname LIKE {} ORDER BY 1",
            quote_literal(pattern)
        ),
        SourceKind::DatabasesLike(pattern) => format!(
            "SELECT datname AS id, datname AS database FROM pg_database \
             WHERE datname LIKE {} AND datallowconn AND NOT datistemplate ORDER BY 1",
            quote_literal(pattern)
        ),
        SourceKind::Query(query) => query.clone(),
    };
    let messages = conn
        .client()
        .simple_query(&sql)
        .await
        .map_err(|e| fail(db_message(&e)))?;
    conn.release().await;
    // One row per message but the row description and the command tag: the list is built at its final size.
    let mut tenants = Vec::with_capacity(messages.len());
    // Rows without extra columns share the source's tags (see `Tenant::tags`).
    let source_tags = Arc::new(tags.clone());
    for message in messages {
        let SimpleQueryMessage::Row(row) = message else {
            continue;
        };
        let mut id = None;
        let mut place = None;
        let mut extra_tags: Option<BTreeMap<String, String>> = None;
        for (i, column) in row.columns().iter().enumerate() {
            let Some(value) = row.get(i) else { continue };
            match column.name() {
                "id" => id = Some(value.to_string()),
                "schema" => place = Some(Place::Schema(value.to_string())),
                "database" => place = Some(Place::Database(value.to_string())),
                other => {
                    extra_tags
                        .get_or_insert_with(|| tags.clone())
                        .insert(other.to_string(), value.to_string());
                }
            }
        }
        match (id, place) {
            (Some(id), Some(place)) => tenants.push(Tenant {
                id,
                server: server_index,
                place,
                tags: extra_tags.map_or_else(|| source_tags.clone(), Arc::new),
            }),
            _ => {
                return Err(fail(
                    "each row must have a non-null `id` column and a non-null `schema` or `database` column".into(),
                ))
            }
        }
    }
    Ok(tenants)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str, server: usize, place: Place) -> Tenant {
        Tenant {
            id: id.into(),
            server,
            place,
            tags: Arc::default(),
        }
    }

    fn schema(id: &str, name: &str) -> Tenant {
        tenant(id, 0, Place::Schema(name.into()))
    }

    /// Merges and renders the ids kept, or the problems one per line.
    fn check(listed: Vec<Tenant>, found: Vec<(usize, Vec<Tenant>)>, expected: &str) {
        let describe = |origin: Origin| match origin {
            Origin::Listed(i) => format!("listed #{i}"),
            Origin::Source(i) => format!("source #{i}"),
        };
        let got = match merge(listed, found, &describe, &|i| format!("s{i}")) {
            Ok(tenants) => tenants.iter().map(|t| t.id.as_str()).collect::<Vec<_>>().join(" "),
            Err(e) => e.to_string(),
        };
        assert_eq!(got, expected);
    }

    #[test]
    fn listed_wins_and_the_rest_is_sorted() {
        check(
            vec![schema("b", "tenant_b"), schema("a", "custom_a")],
            vec![(0, vec![schema("c", "tenant_c"), schema("b", "tenant_b")])],
            "a b c",
        );
        // The same names on another server or of another kind are other places.
        check(
            vec![schema("a", "x")],
            vec![(
                0,
                vec![
                    tenant("b", 1, Place::Schema("x".into())),
                    tenant("c", 0, Place::Database("x".into())),
                ],
            )],
            "a b c",
        );
    }

    #[test]
    fn discovered_twice_is_an_error() {
        check(
            vec![],
            vec![(0, vec![schema("a", "tenant_a")]), (1, vec![schema("a", "tenant_a")])],
            "tenant `a` is defined twice: by source #0 and by source #1",
        );
        // The listed tenant acme and the discovered tenant_acme are one schema.
        check(
            vec![schema("acme", "tenant_acme")],
            vec![(0, vec![schema("tenant_acme", "tenant_acme")])],
            "tenant `tenant_acme` (source #0) uses the same schema as tenant `acme` (listed #0) on server `s0`: \
             `tenant_acme`",
        );
    }

    #[test]
    fn discovered_names_are_checked() {
        let long = |tail: &str| format!("{}{tail}", "é".repeat(31));
        check(
            vec![],
            vec![(
                2,
                vec![
                    schema("", "x"),
                    schema("one", &long("a_one")),
                    schema("two", &long("a_two")),
                    tenant("nul", 0, Place::Database("a\0b".into())),
                ],
            )],
            &format!(
                "source #2 found a tenant with an empty id\n\
                 source #2 found tenant `one` whose schema `{0}` is not a valid PostgreSQL identifier: it is longer \
                 than 63 bytes\n\
                 source #2 found tenant `two` whose schema `{1}` is not a valid PostgreSQL identifier: it is longer \
                 than 63 bytes\n\
                 source #2 found tenant `nul` whose database `a\0b` is not a valid PostgreSQL identifier: it contains \
                 a NUL character\n\
                 tenant `two` (source #2) uses the same schema as tenant `one` (source #2) on server `s0`: `{0}` and \
                 `{1}` (one name once PostgreSQL truncates names to 63 bytes)",
                long("a_one"),
                long("a_two")
            ),
        );
    }
}
