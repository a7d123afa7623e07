//! Reading a [`Catalog`] from `pg_catalog` in one read-only snapshot.
//!
//! Runs with `search_path` set to the home schema (then the shared schemas), so `format_type`, `pg_get_expr`, `pg_get_viewdef` and
//! `pg_get_constraintdef` leave home-schema names unqualified; the definitions that always qualify
//! (`pg_get_indexdef`, `pg_get_functiondef`, `pg_get_triggerdef`) have the home schema's prefix removed. That is
//! what makes a schema tenant's schema compare equal to `public` of a scratch database. Objects that belong to
//! an extension are left out (the extension stands for them).

use std::collections::{BTreeSet, HashMap};

use tokio_postgres::{Client, Row};

use super::error::AutogenError;
use super::model::{
    Catalog, Column, Composite, Constraint, DefaultGrant, DepKey, Domain, Enum, Extension, Function, Grant,
    IdentityOptions, Index, Partition, Policy, QName, Range, Sequence, Table, Trigger, View,
};
use crate::executor::{db_message, search_path};

/// Which part of a database to read.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The home schema (unquoted): called `public` in the catalog.
    pub home: String,
    /// Read only the home schema (schema tenants); otherwise every user schema and the extensions.
    pub is_home_only: bool,
    /// Bare table names to leave out wherever they are (Flotilla's version and history tables), with their
    /// sequences, indexes, constraints and triggers.
    pub ignore_tables: Vec<String>,
    /// Schemas on `search_path` after the home schema (`shared_schemas`), so that types and operator classes of
    /// extensions living there print unqualified on both sides of a comparison, as the revisions wrote them.
    pub shared_schemas: Vec<String>,
}

impl Scope {
    /// Every user schema of a database whose home schema is `public`.
    pub fn database(ignore_tables: Vec<String>) -> Scope {
        Scope {
            home: "public".into(),
            is_home_only: false,
            ignore_tables,
            shared_schemas: Vec::new(),
        }
    }

    /// One schema only, compared as if it were `public`.
    pub fn schema(name: &str, ignore_tables: Vec<String>) -> Scope {
        Scope {
            home: name.into(),
            is_home_only: true,
            ignore_tables,
            shared_schemas: Vec::new(),
        }
    }

    /// The same scope with `shared` on `search_path` after the home schema.
    pub fn with_shared(mut self, shared: &[String]) -> Scope {
        self.shared_schemas = shared.to_vec();
        self
    }
}

fn fail(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> AutogenError {
    move |e| AutogenError::Introspect {
        what,
        message: db_message(&e),
    }
}

/// The text with every `home.` qualification removed (only where a name starts, not inside another name).
fn strip_home(text: &str, home_quoted: &str) -> String {
    let pattern = format!("{home_quoted}.");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&pattern) {
        let prev = if at > 0 {
            rest[..at].chars().last()
        } else {
            out.chars().last()
        };
        let is_start = prev.is_none_or(|c| !(c.is_alphanumeric() || matches!(c, '_' | '$' | '"' | '.')));
        out.push_str(&rest[..at]);
        if !is_start {
            out.push_str(&pattern);
        }
        rest = &rest[at + pattern.len()..];
    }
    out.push_str(rest);
    out
}

struct Names {
    home: String,
    home_quoted: String,
}

impl Names {
    fn schema(&self, raw: &str, quoted: &str) -> String {
        if raw == self.home {
            "public".into()
        } else {
            quoted.into()
        }
    }

    fn qname(&self, row: &Row, raw: usize, quoted: usize, name: usize) -> QName {
        QName::new(self.schema(row.get(raw), row.get(quoted)), row.get::<_, String>(name))
    }

    fn def(&self, text: &str) -> String {
        strip_home(text, &self.home_quoted)
    }
}

/// Read the catalog of `scope` through `client`. Runs in its own read-only transaction and leaves the session's
/// settings as they were, so a pooled connection can be reused afterwards.
pub async fn introspect(client: &Client, scope: &Scope) -> Result<Catalog, AutogenError> {
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL search_path = {}",
            search_path(&scope.home, &scope.shared_schemas)
        ))
        .await
        .map_err(fail("begin"))?;
    let result = read(client, scope).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = client.batch_execute(end).await.map_err(fail("end"));
    let catalog = result?;
    ended?;
    Ok(catalog)
}

const NOT_EXTENSION_MEMBER: &str = "NOT EXISTS (SELECT 1 FROM pg_depend dep WHERE dep.objid = {oid} \
     AND dep.classid = '{class}'::regclass AND dep.deptype = 'e')";

/// A function PostgreSQL made as part of another object (a range type's constructors) stands with it.
const NOT_INTERNAL_FUNCTION: &str = "NOT EXISTS (SELECT 1 FROM pg_depend i WHERE i.classid = 'pg_proc'::regclass \
     AND i.objid = p.oid AND i.deptype = 'i')";

fn not_member(oid: &str, class: &str) -> String {
    NOT_EXTENSION_MEMBER.replace("{oid}", oid).replace("{class}", class)
}

async fn read(client: &Client, scope: &Scope) -> Result<Catalog, AutogenError> {
    let names = Names {
        home: scope.home.clone(),
        home_quoted: client
            .query_one("SELECT quote_ident($1)", &[&scope.home])
            .await
            .map_err(fail("quote"))?
            .get(0),
    };
    let mut catalog = Catalog::default();
    let schemas: Vec<String> = if scope.is_home_only {
        vec![scope.home.clone()]
    } else {
        let rows = client
            .query(
                &format!(
                    "SELECT n.nspname::text, quote_ident(n.nspname), obj_description(n.oid, 'pg_namespace') \
                     FROM pg_namespace n WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' \
                     AND {} ORDER BY 1",
                    not_member("n.oid", "pg_namespace")
                ),
                &[],
            )
            .await
            .map_err(fail("schemas"))?;
        for row in &rows {
            let raw: String = row.get(0);
            if raw != scope.home {
                catalog.schemas.insert(row.get(1), row.get(2));
            }
        }
        let extensions = client
            .query(
                "SELECT quote_ident(e.extname), n.nspname::text, quote_ident(n.nspname) FROM pg_extension e \
                 JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql'",
                &[],
            )
            .await
            .map_err(fail("extensions"))?;
        for row in &extensions {
            catalog.extensions.insert(
                row.get(0),
                Extension {
                    schema: names.schema(row.get(1), row.get(2)),
                },
            );
        }
        rows.iter().map(|r| r.get(0)).collect()
    };
    let ignored: BTreeSet<&str> = scope.ignore_tables.iter().map(String::as_str).collect();
    let is_ignored = |row: &Row, i: usize| ignored.contains(row.get::<_, String>(i).as_str());
    let sch = &schemas;

    // Tables.
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, quote_ident(n.nspname), quote_ident(c.relname), c.relname::text, \
                 obj_description(c.oid, 'pg_class'), c.relrowsecurity, c.relforcerowsecurity, \
                 CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END, \
                 pn.nspname::text, quote_ident(pn.nspname), quote_ident(pc.relname), \
                 pg_get_expr(c.relpartbound, c.oid), \
                 (SELECT count(*)::int4 - 1 FROM pg_partition_ancestors(c.oid)), \
                 ARRAY(SELECT o FROM unnest(c.reloptions) o ORDER BY o) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_inherits ih ON ih.inhrelid = c.oid AND c.relispartition \
                 LEFT JOIN pg_class pc ON pc.oid = ih.inhparent LEFT JOIN pg_namespace pn ON pn.oid = pc.relnamespace \
                 WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY($1) AND {}",
                not_member("c.oid", "pg_class")
            ),
            &[sch],
        )
        .await
        .map_err(fail("tables"))?;
    for row in &rows {
        if is_ignored(row, 3) {
            continue;
        }
        let partition_of = row.get::<_, Option<String>>(8).map(|_| Partition {
            parent: names.qname(row, 8, 9, 10),
            bound: names.def(&row.get::<_, Option<String>>(11).unwrap_or_default()),
            level: row.get(12),
        });
        catalog.tables.insert(
            names.qname(row, 0, 1, 2),
            Table {
                columns: Vec::new(),
                constraints: Default::default(),
                comment: row.get(4),
                is_rls_enabled: row.get(5),
                is_rls_forced: row.get(6),
                partition_key: row.get::<_, Option<String>>(7).map(|k| names.def(&k)),
                partition_of,
                options: row.get(13),
            },
        );
    }

    // Columns.
    let rows = client
        .query(
            "SELECT n.nspname::text, quote_ident(n.nspname), quote_ident(c.relname), quote_ident(a.attname), \
             format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid), \
             a.attidentity::text, a.attgenerated::text, col_description(c.oid, a.attnum), \
             CASE WHEN a.attcollation <> t.typcollation THEN CASE WHEN cn.nspname = 'pg_catalog' \
               THEN quote_ident(co.collname) ELSE quote_ident(cn.nspname) || '.' || quote_ident(co.collname) END END, \
             s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle, c.relispartition \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_collation co ON co.oid = a.attcollation LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace \
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             LEFT JOIN pg_depend sd ON a.attidentity <> '' AND sd.refclassid = 'pg_class'::regclass \
               AND sd.refobjid = c.oid AND sd.refobjsubid = a.attnum AND sd.classid = 'pg_class'::regclass \
               AND sd.deptype = 'i' \
             LEFT JOIN pg_sequence s ON s.seqrelid = sd.objid \
             WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p') AND n.nspname = ANY($1) \
             ORDER BY c.oid, a.attnum",
            &[sch],
        )
        .await
        .map_err(fail("columns"))?;
    for row in &rows {
        let Some(table) = catalog.tables.get_mut(&names.qname(row, 0, 1, 2)) else {
            continue;
        };
        // A partition's columns are its parent's.
        if row.get::<_, bool>(17) {
            continue;
        }
        let expr: Option<String> = row.get(6);
        let identity: String = row.get(7);
        let generated: String = row.get(8);
        let is_generated = !generated.is_empty();
        table.columns.push(Column {
            name: row.get(3),
            data_type: names.def(row.get(4)),
            is_not_null: row.get(5),
            default: if is_generated { None } else { expr.clone() },
            identity: identity.chars().next(),
            generated: if is_generated { expr } else { None },
            comment: row.get(9),
            collation: row.get::<_, Option<String>>(10).map(|c| names.def(&c)),
            identity_options: row.get::<_, Option<i64>>(11).map(|start| IdentityOptions {
                start,
                increment: row.get(12),
                min: row.get(13),
                max: row.get(14),
                cache: row.get(15),
                is_cycle: row.get(16),
            }),
        });
    }

    // Constraints (not NOT NULL, which the columns carry).
    let rows = client
        .query(
            "SELECT n.nspname::text, quote_ident(n.nspname), quote_ident(c.relname), quote_ident(co.conname), \
             co.contype::text, pg_get_constraintdef(co.oid) \
             FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE co.contype IN ('p', 'u', 'c', 'x', 'f') AND n.nspname = ANY($1) AND co.conislocal \
             AND co.conparentid = 0",
            &[sch],
        )
        .await
        .map_err(fail("constraints"))?;
    for row in &rows {
        let Some(table) = catalog.tables.get_mut(&names.qname(row, 0, 1, 2)) else {
            continue;
        };
        let kind: String = row.get(4);
        table.constraints.insert(
            row.get(3),
            Constraint {
                kind: kind.chars().next().unwrap_or('c'),
                definition: names.def(row.get(5)),
            },
        );
    }

    // Indexes that do not back a primary key, unique or exclusion constraint.
    let rows = client
        .query(
            "SELECT n.nspname::text, quote_ident(n.nspname), quote_ident(ic.relname), quote_ident(t.relname), \
             t.relname::text, pg_get_indexdef(i.indexrelid), obj_description(ic.oid, 'pg_class') \
             FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid \
             JOIN pg_namespace n ON n.oid = ic.relnamespace \
             WHERE n.nspname = ANY($1) AND t.relkind IN ('r', 'p', 'm') \
             AND NOT EXISTS (SELECT 1 FROM pg_inherits ih WHERE ih.inhrelid = i.indexrelid) \
             AND NOT EXISTS (SELECT 1 FROM pg_constraint co \
             WHERE co.conindid = i.indexrelid AND co.conrelid = i.indrelid AND co.contype IN ('p', 'u', 'x'))",
            &[sch],
        )
        .await
        .map_err(fail("indexes"))?;
    for row in &rows {
        if is_ignored(row, 4) {
            continue;
        }
        let name = names.qname(row, 0, 1, 2);
        if let Some(comment) = row.get::<_, Option<String>>(6) {
            catalog.comments.insert(("INDEX".into(), name.to_string()), comment);
        }
        catalog.indexes.insert(
            name.clone(),
            Index {
                table: QName::new(name.schema.clone(), row.get::<_, String>(3)),
                // A partitioned table's index reads `ON ONLY`, which would not build it on the partitions.
                definition: names.def(row.get(5)).replacen(" ON ONLY ", " ON ", 1),
            },
        );
    }

    // Enum types.
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, quote_ident(n.nspname), quote_ident(t.typname), \
                 array_agg(e.enumlabel::text ORDER BY e.enumsortorder), obj_description(t.oid, 'pg_type'), \
                 t.oid::int8 \
                 FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid JOIN pg_namespace n ON n.oid = t.typnamespace \
                 WHERE n.nspname = ANY($1) AND {} GROUP BY 1, 2, 3, t.oid",
                not_member("t.oid", "pg_type")
            ),
            &[sch],
        )
        .await
        .map_err(fail("enums"))?;
    for row in &rows {
        let name = names.qname(row, 0, 1, 2);
        if let Some(comment) = row.get::<_, Option<String>>(4) {
            catalog.comments.insert(("TYPE".into(), name.to_string()), comment);
        }
        catalog.enums.insert(
            name,
            Enum {
                labels: row.get(3),
                order: row.get(5),
            },
        );
    }

    // Sequences, less identity columns' own.
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, quote_ident(n.nspname), quote_ident(c.relname), format_type(s.seqtypid, NULL), \
                 s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle, \
                 own_n.nspname::text, quote_ident(own_n.nspname), quote_ident(own_c.relname), own_c.relname::text, \
                 quote_ident(own_a.attname), obj_description(c.oid, 'pg_class') \
                 FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_depend own ON own.classid = 'pg_class'::regclass AND own.objid = c.oid \
                   AND own.refclassid = 'pg_class'::regclass AND own.deptype = 'a' AND own.refobjsubid > 0 \
                 LEFT JOIN pg_class own_c ON own_c.oid = own.refobjid \
                 LEFT JOIN pg_namespace own_n ON own_n.oid = own_c.relnamespace \
                 LEFT JOIN pg_attribute own_a ON own_a.attrelid = own.refobjid AND own_a.attnum = own.refobjsubid \
                 WHERE n.nspname = ANY($1) AND {} AND NOT EXISTS (SELECT 1 FROM pg_depend i WHERE i.objid = c.oid \
                 AND i.classid = 'pg_class'::regclass AND i.deptype = 'i')",
                not_member("c.oid", "pg_class")
            ),
            &[sch],
        )
        .await
        .map_err(fail("sequences"))?;
    for row in &rows {
        let owned_by = match row.get::<_, Option<String>>(10) {
            Some(_) => {
                if is_ignored(row, 13) {
                    continue;
                }
                Some((names.qname(row, 10, 11, 12), row.get::<_, String>(14)))
            }
            None => None,
        };
        let name = names.qname(row, 0, 1, 2);
        if let Some(comment) = row.get::<_, Option<String>>(15) {
            catalog.comments.insert(("SEQUENCE".into(), name.to_string()), comment);
        }
        catalog.sequences.insert(
            name,
            Sequence {
                data_type: row.get(3),
                start: row.get(4),
                increment: row.get(5),
                min: row.get(6),
                max: row.get(7),
                cache: row.get(8),
                is_cycle: row.get(9),
                owned_by,
            },
        );
    }

    // Views and materialized views.
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, quote_ident(n.nspname), quote_ident(c.relname), c.relkind = 'm', \
                 pg_get_viewdef(c.oid), obj_description(c.oid, 'pg_class'), c.oid::int8 \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('v', 'm') AND n.nspname = ANY($1) AND {}",
                not_member("c.oid", "pg_class")
            ),
            &[sch],
        )
        .await
        .map_err(fail("views"))?;
    for row in &rows {
        let name = names.qname(row, 0, 1, 2);
        let is_materialized: bool = row.get(3);
        if let Some(comment) = row.get::<_, Option<String>>(5) {
            let kind = if is_materialized { "MATERIALIZED VIEW" } else { "VIEW" };
            catalog.comments.insert((kind.into(), name.to_string()), comment);
        }
        catalog.views.insert(
            name,
            View {
                is_materialized,
                definition: names.def(row.get(4)),
                order: row.get(6),
            },
        );
    }

    // Functions and procedures (not aggregates or window functions).
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, quote_ident(n.nspname), quote_ident(p.proname), \
                 pg_get_function_identity_arguments(p.oid), p.prokind = 'p', pg_get_functiondef(p.oid), \
                 obj_description(p.oid, 'pg_proc') \
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE p.prokind IN ('f', 'p') AND n.nspname = ANY($1) AND {} AND {}",
                not_member("p.oid", "pg_proc"),
                NOT_INTERNAL_FUNCTION
            ),
            &[sch],
        )
        .await
        .map_err(fail("functions"))?;
    for row in &rows {
        let name = names.qname(row, 0, 1, 2);
        let identity_args: String = names.def(row.get(3));
        let key = format!("{name}({identity_args})");
        let is_procedure: bool = row.get(4);
        if let Some(comment) = row.get::<_, Option<String>>(6) {
            let kind = if is_procedure { "PROCEDURE" } else { "FUNCTION" };
            catalog.comments.insert((kind.into(), key.clone()), comment);
        }
        catalog.functions.insert(
            key,
            Function {
                name,
                identity_args,
                is_procedure,
                definition: names.def(row.get::<_, String>(5).trim_end()),
            },
        );
    }

    // Triggers written by users (not the internal ones behind foreign keys).
    let rows = client
        .query(
            "SELECT n.nspname::text, quote_ident(n.nspname), quote_ident(c.relname), quote_ident(tg.tgname), \
             pg_get_triggerdef(tg.oid), c.relname::text \
             FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE NOT tg.tgisinternal AND tg.tgparentid = 0 AND n.nspname = ANY($1)",
            &[sch],
        )
        .await
        .map_err(fail("triggers"))?;
    for row in &rows {
        if is_ignored(row, 5) {
            continue;
        }
        catalog.triggers.insert(
            (names.qname(row, 0, 1, 2), row.get(3)),
            Trigger {
                definition: names.def(row.get(4)),
            },
        );
    }

    // Domains, with their CHECK constraints (NOT NULL is `typnotnull`).
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, quote_ident(n.nspname), quote_ident(t.typname), \
                 format_type(t.typbasetype, t.typtypmod), pg_get_expr(t.typdefaultbin, 0), t.typnotnull, \
                 obj_description(t.oid, 'pg_type'), t.oid::int8, \
                 ARRAY(SELECT quote_ident(co.conname) FROM pg_constraint co WHERE co.contypid = t.oid \
                   AND co.contype = 'c' ORDER BY co.conname), \
                 ARRAY(SELECT pg_get_constraintdef(co.oid) FROM pg_constraint co WHERE co.contypid = t.oid \
                   AND co.contype = 'c' ORDER BY co.conname) \
                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
                 WHERE t.typtype = 'd' AND n.nspname = ANY($1) AND {}",
                not_member("t.oid", "pg_type")
            ),
            &[sch],
        )
        .await
        .map_err(fail("domains"))?;
    for row in &rows {
        let name = names.qname(row, 0, 1, 2);
        if let Some(comment) = row.get::<_, Option<String>>(6) {
            catalog.comments.insert(("DOMAIN".into(), name.to_string()), comment);
        }
        let check_names: Vec<String> = row.get(8);
        let check_defs: Vec<String> = row.get(9);
        catalog.domains.insert(
            name,
            Domain {
                base_type: names.def(row.get(3)),
                default: row.get::<_, Option<String>>(4).map(|d| names.def(&d)),
                is_not_null: row.get(5),
                checks: check_names
                    .into_iter()
                    .zip(check_defs.iter().map(|d| names.def(d)))
                    .collect(),
                order: row.get(7),
            },
        );
    }

    // Composite types (stand-alone ones: a table's row type has a relation of another kind).
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, quote_ident(n.nspname), quote_ident(t.typname), \
                 obj_description(t.oid, 'pg_type'), t.oid::int8, \
                 ARRAY(SELECT quote_ident(a.attname) FROM pg_attribute a WHERE a.attrelid = c.oid \
                   AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum), \
                 ARRAY(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = c.oid \
                   AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) \
                 FROM pg_type t JOIN pg_class c ON c.oid = t.typrelid JOIN pg_namespace n ON n.oid = t.typnamespace \
                 WHERE t.typtype = 'c' AND c.relkind = 'c' AND n.nspname = ANY($1) AND {}",
                not_member("t.oid", "pg_type")
            ),
            &[sch],
        )
        .await
        .map_err(fail("composite types"))?;
    for row in &rows {
        let name = names.qname(row, 0, 1, 2);
        if let Some(comment) = row.get::<_, Option<String>>(3) {
            catalog.comments.insert(("TYPE".into(), name.to_string()), comment);
        }
        let attr_names: Vec<String> = row.get(5);
        let attr_types: Vec<String> = row.get(6);
        catalog.composites.insert(
            name,
            Composite {
                attributes: attr_names
                    .into_iter()
                    .zip(attr_types.iter().map(|t| names.def(t)))
                    .collect(),
                order: row.get(4),
            },
        );
    }

    // Range types (their multirange types come with them).
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, quote_ident(n.nspname), quote_ident(t.typname), \
                 format_type(r.rngsubtype, NULL), CASE WHEN r.rngsubdiff <> 0 THEN r.rngsubdiff::regproc::text END, \
                 CASE WHEN r.rngcollation <> 0 AND r.rngcollation <> st.typcollation \
                   THEN quote_ident(co.collname) END, t.oid::int8, obj_description(t.oid, 'pg_type') \
                 FROM pg_range r JOIN pg_type t ON t.oid = r.rngtypid JOIN pg_namespace n ON n.oid = t.typnamespace \
                 JOIN pg_type st ON st.oid = r.rngsubtype LEFT JOIN pg_collation co ON co.oid = r.rngcollation \
                 WHERE n.nspname = ANY($1) AND {}",
                not_member("t.oid", "pg_type")
            ),
            &[sch],
        )
        .await
        .map_err(fail("range types"))?;
    for row in &rows {
        let name = names.qname(row, 0, 1, 2);
        if let Some(comment) = row.get::<_, Option<String>>(7) {
            catalog.comments.insert(("TYPE".into(), name.to_string()), comment);
        }
        catalog.ranges.insert(
            name,
            Range {
                subtype: names.def(row.get(3)),
                subtype_diff: row.get::<_, Option<String>>(4).map(|f| names.def(&f)),
                collation: row.get(5),
                order: row.get(6),
            },
        );
    }

    // Row-level security policies.
    let rows = client
        .query(
            "SELECT n.nspname::text, quote_ident(n.nspname), quote_ident(c.relname), quote_ident(p.polname), \
             p.polpermissive, CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' \
             WHEN 'd' THEN 'DELETE' ELSE 'ALL' END, \
             ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END \
               FROM unnest(p.polroles) r ORDER BY 1), \
             pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid), c.relname::text \
             FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = ANY($1)",
            &[sch],
        )
        .await
        .map_err(fail("policies"))?;
    for row in &rows {
        if is_ignored(row, 9) {
            continue;
        }
        catalog.policies.insert(
            (names.qname(row, 0, 1, 2), row.get(3)),
            Policy {
                is_permissive: row.get(4),
                command: row.get(5),
                roles: row.get(6),
                using: row.get::<_, Option<String>>(7).map(|e| names.def(&e)),
                with_check: row.get::<_, Option<String>>(8).map(|e| names.def(&e)),
            },
        );
    }

    let rows = client
        .query(&grants_sql(), &[sch, &scope.home])
        .await
        .map_err(fail("grants"))?;
    for row in &rows {
        if is_ignored(row, 4) {
            continue;
        }
        let kind: &str = row.get(3);
        let name = names.qname(row, 0, 1, 2);
        let on = match kind {
            "SCHEMA" => format!("SCHEMA {}", name.name),
            "FUNCTION" | "PROCEDURE" => format!("{kind} {name}({})", names.def(row.get::<_, &str>(8))),
            _ => format!("{kind} {name}"),
        };
        catalog.grants.insert(
            Grant {
                on,
                grantee: row.get(5),
                privilege: row.get(6),
            },
            row.get(7),
        );
    }
    let rows = client
        .query(&owners_sql(), &[sch, &scope.home])
        .await
        .map_err(fail("owners"))?;
    for row in &rows {
        if is_ignored(row, 5) {
            continue;
        }
        let kind: &str = row.get(3);
        let alter: &str = row.get(4);
        let name = names.qname(row, 0, 1, 2);
        let on = match kind {
            "SCHEMA" => format!("SCHEMA {}", name.name),
            "FUNCTION" | "PROCEDURE" => format!("{kind} {name}({})", names.def(row.get::<_, &str>(7))),
            _ => format!("{kind} {name}"),
        };
        catalog.owners.insert(on, (alter.to_string(), row.get(6)));
    }
    let rows = client
        .query(DEFAULT_PRIVILEGES_SQL, &[sch, &scope.is_home_only])
        .await
        .map_err(fail("default privileges"))?;
    for row in &rows {
        let schema = row
            .get::<_, Option<String>>(1)
            .map(|raw| names.schema(&raw, row.get::<_, &str>(2)));
        catalog.default_privileges.insert(
            DefaultGrant {
                role: row.get(0),
                schema,
                objects: row.get(3),
                grantee: row.get(4),
                privilege: row.get(5),
                is_revoked: row.get(7),
            },
            row.get(6),
        );
    }

    // Dependency links, joined here rather than in SQL: the planner cannot estimate the object list.
    let rows = client.query(DEPENDS_SQL, &[sch]).await.map_err(fail("dependencies"))?;
    // (class, oid) → (column number, or none for any), object.
    type Objects = HashMap<(i64, i64), Vec<(Option<i32>, DepKey)>>;
    let mut objects: Objects = HashMap::new();
    for row in &rows {
        let kind: &str = row.get(3);
        let name = names.qname(row, 4, 5, 6);
        let second = || row.get::<_, Option<String>>(7).unwrap_or_default();
        let key = match kind {
            "type" => DepKey::Type(name),
            "column" => DepKey::Column(name, second()),
            "default" => DepKey::Default(name, second()),
            "constraint" => DepKey::Constraint(name, second()),
            "index" => DepKey::Index(name),
            "view" => DepKey::View(name),
            "function" => DepKey::Function(format!("{name}({})", names.def(&second()))),
            "trigger" => DepKey::Trigger(name, second()),
            "policy" => DepKey::Policy(name, second()),
            _ => continue,
        };
        objects
            .entry((row.get(0), row.get(1)))
            .or_default()
            .push((row.get(2), key));
    }
    let find = |class: i64, oid: i64, sub: i32| {
        objects
            .get(&(class, oid))
            .and_then(|keys| keys.iter().find(|(s, _)| s.is_none_or(|s| s == sub)))
            .map(|(_, key)| key)
    };
    let rows = client
        .query(DEPEND_LINKS_SQL, &[])
        .await
        .map_err(fail("dependency links"))?;
    for row in &rows {
        let dependant = find(row.get(0), row.get(1), row.get(2));
        let referenced = find(row.get(3), row.get(4), row.get(5));
        if let (Some(dependant), Some(referenced)) = (dependant, referenced) {
            if dependant != referenced {
                catalog.depends.insert((dependant.clone(), referenced.clone()));
            }
        }
    }
    Ok(catalog)
}

/// Privileges (`aclexplode` of the object's ACL, PostgreSQL's default when it has none), less the owner's
/// own: (schema, quoted schema, quoted name, GRANT kind, bare name, grantee, privilege, grantable, function
/// arguments). The home schema's own privileges are left out: a schema tenant's schema and a scratch database's
/// `public` are made differently.
fn grants_sql() -> String {
    let grantee = "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END";
    format!(
        "SELECT n.nspname::text, quote_ident(n.nspname), quote_ident(c.relname), \
           CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, c.relname::text, {grantee}, a.privilege_type, \
           a.is_grantable, ''::text \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, \
           LATERAL aclexplode(coalesce(c.relacl, acldefault((CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END)::\"char\", c.relowner))) a \
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND NOT c.relispartition AND n.nspname = ANY($1) \
           AND a.grantee <> c.relowner AND {} \
           AND NOT EXISTS (SELECT 1 FROM pg_depend i WHERE i.objid = c.oid AND i.classid = 'pg_class'::regclass \
             AND i.deptype = 'i') \
         UNION ALL SELECT n.nspname::text, quote_ident(n.nspname), quote_ident(p.proname), \
           CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, '', {grantee}, a.privilege_type, \
           a.is_grantable, pg_get_function_identity_arguments(p.oid) \
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, \
           LATERAL aclexplode(coalesce(p.proacl, acldefault('f'::\"char\", p.proowner))) a \
         WHERE p.prokind IN ('f', 'p') AND n.nspname = ANY($1) AND a.grantee <> p.proowner AND {} AND {} \
         UNION ALL SELECT n.nspname::text, quote_ident(n.nspname), quote_ident(n.nspname), 'SCHEMA', '', {grantee}, \
           a.privilege_type, a.is_grantable, '' \
         FROM pg_namespace n, LATERAL aclexplode(coalesce(n.nspacl, acldefault('n'::\"char\", n.nspowner))) a \
         WHERE n.nspname = ANY($1) AND n.nspname <> $2 AND a.grantee <> n.nspowner AND {} \
         UNION ALL SELECT n.nspname::text, quote_ident(n.nspname), quote_ident(t.typname), 'TYPE', '', {grantee}, \
           a.privilege_type, a.is_grantable, '' \
         FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace, \
           LATERAL aclexplode(coalesce(t.typacl, acldefault('T'::\"char\", t.typowner))) a \
         WHERE n.nspname = ANY($1) AND a.grantee <> t.typowner AND {} AND (t.typtype IN ('e', 'd', 'r') \
           OR (t.typtype = 'c' AND EXISTS (SELECT 1 FROM pg_class rc WHERE rc.oid = t.typrelid AND rc.relkind = 'c')))",
        not_member("c.oid", "pg_class"),
        not_member("p.oid", "pg_proc"),
        NOT_INTERNAL_FUNCTION,
        not_member("n.oid", "pg_namespace"),
        not_member("t.oid", "pg_type"),
    )
}

/// Owners that are not the current user: (schema, quoted schema, quoted name, GRANT kind, ALTER kind, bare name,
/// owner, function arguments), for the objects `grants_sql` reads.
fn owners_sql() -> String {
    let owner = "quote_ident(pg_get_userbyid(o.owner))";
    format!(
        "SELECT o.nsp, quote_ident(o.nsp), quote_ident(o.name), o.kind, o.alter_kind, o.name, {owner}, o.args FROM ( \
           SELECT n.nspname::text AS nsp, c.relname::text AS name, \
             CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind, \
             CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' \
               ELSE 'TABLE' END AS alter_kind, c.relowner AS owner, ''::text AS args \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
           WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND NOT c.relispartition AND n.nspname = ANY($1) AND {} \
             AND NOT EXISTS (SELECT 1 FROM pg_depend i WHERE i.objid = c.oid AND i.classid = 'pg_class'::regclass \
               AND i.deptype = 'i') \
           UNION ALL SELECT n.nspname::text, p.proname::text, \
             CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, \
             CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, p.proowner, \
             pg_get_function_identity_arguments(p.oid) \
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
           WHERE p.prokind IN ('f', 'p') AND n.nspname = ANY($1) AND {} AND {} \
           UNION ALL SELECT n.nspname::text, n.nspname::text, 'SCHEMA', 'SCHEMA', n.nspowner, '' FROM pg_namespace n \
           WHERE n.nspname = ANY($1) AND n.nspname <> $2 AND {} \
           UNION ALL SELECT n.nspname::text, t.typname::text, 'TYPE', CASE t.typtype WHEN 'd' THEN 'DOMAIN' \
             ELSE 'TYPE' END, t.typowner, '' \
           FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
           WHERE n.nspname = ANY($1) AND {} AND (t.typtype IN ('e', 'd', 'r') \
             OR (t.typtype = 'c' AND EXISTS (SELECT 1 FROM pg_class rc WHERE rc.oid = t.typrelid AND rc.relkind = 'c'))) \
         ) o WHERE o.owner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)",
        not_member("c.oid", "pg_class"),
        not_member("p.oid", "pg_proc"),
        NOT_INTERNAL_FUNCTION,
        not_member("n.oid", "pg_namespace"),
        not_member("t.oid", "pg_type"),
    )
}

/// Default privileges: (role, schema, quoted schema, objects, grantee, privilege, grantable, revoked). Entries
/// without a schema (only read for a whole database, `$2` false) are read as their difference from PostgreSQL's
/// built-in defaults: what they grant beyond them, and what of them they revoke.
const DEFAULT_PRIVILEGES_SQL: &str = "SELECT quote_ident(pg_get_userbyid(d.defaclrole)), n.nspname::text, \
    quote_ident(n.nspname), CASE d.defaclobjtype WHEN 'r' THEN 'TABLES' WHEN 'S' THEN 'SEQUENCES' \
      WHEN 'f' THEN 'FUNCTIONS' WHEN 'T' THEN 'TYPES' ELSE 'SCHEMAS' END, \
    CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, a.privilege_type, \
    a.is_grantable, a.is_revoked \
    FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace, \
      LATERAL (SELECT x.grantee, x.privilege_type, x.is_grantable, false AS is_revoked FROM ( \
          SELECT * FROM aclexplode(d.defaclacl) EXCEPT SELECT * FROM aclexplode(acldefault( \
            (CASE d.defaclobjtype WHEN 'S' THEN 's' ELSE d.defaclobjtype END)::\"char\", d.defaclrole)) \
          WHERE d.defaclnamespace = 0) x \
        UNION ALL SELECT y.grantee, y.privilege_type, y.is_grantable, true FROM ( \
          SELECT * FROM aclexplode(acldefault( \
            (CASE d.defaclobjtype WHEN 'S' THEN 's' ELSE d.defaclobjtype END)::\"char\", d.defaclrole)) \
          WHERE d.defaclnamespace = 0 EXCEPT SELECT * FROM aclexplode(d.defaclacl)) y) a \
    WHERE ((d.defaclnamespace = 0 AND NOT $2) OR n.nspname = ANY($1)) AND a.grantee <> d.defaclrole";

/// Every object of the schemas `$1` a dependency link can name, as (class, oid, column number or NULL for any,
/// kind, schema, quoted schema, quoted name, second name): a column's, default's, constraint's, trigger's or policy's table and its own name; a
/// function's name and identity arguments. A view's links are its `pg_rewrite` rule's; a primary key's, unique
/// or exclusion constraint's are its index's (foreign keys depend on that); an array type stands for
/// its element type and a composite type's attributes for the type.
const DEPENDS_SQL: &str = "WITH objs (classid, objid, sub, kind, nsp, name, second) AS ( \
    SELECT 'pg_class'::regclass, c.oid, a.attnum::int, 'column', c.relnamespace, c.relname::text, a.attname::text \
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
      WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped \
    UNION ALL SELECT 'pg_class'::regclass, c.oid, NULL, CASE c.relkind WHEN 'c' THEN 'type' WHEN 'i' THEN 'index' \
      WHEN 'I' THEN 'index' ELSE 'view' END, c.relnamespace, c.relname::text, NULL FROM pg_class c \
      WHERE c.relkind IN ('v', 'm', 'c') OR (c.relkind IN ('i', 'I') AND NOT EXISTS (SELECT 1 FROM pg_constraint co \
        WHERE co.conindid = c.oid AND co.contype IN ('p', 'u', 'x'))) \
    UNION ALL SELECT 'pg_rewrite'::regclass, r.oid, NULL, 'view', c.relnamespace, c.relname::text, NULL \
      FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class WHERE c.relkind IN ('v', 'm') \
    UNION ALL SELECT 'pg_constraint'::regclass, co.oid, NULL, 'constraint', c.relnamespace, c.relname::text, \
      co.conname::text FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid WHERE co.contype IN ('c', 'f') \
    UNION ALL SELECT 'pg_class'::regclass, co.conindid, NULL, 'constraint', c.relnamespace, c.relname::text, \
      co.conname::text FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid \
      WHERE co.contype IN ('p', 'u', 'x') \
    UNION ALL SELECT 'pg_constraint'::regclass, co.oid, NULL, 'type', t.typnamespace, t.typname::text, NULL \
      FROM pg_constraint co JOIN pg_type t ON t.oid = co.contypid \
    UNION ALL SELECT 'pg_attrdef'::regclass, d.oid, NULL, 'default', c.relnamespace, c.relname::text, a.attname::text \
      FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid \
      JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum \
    UNION ALL SELECT 'pg_proc'::regclass, p.oid, NULL, 'function', p.pronamespace, p.proname::text, \
      pg_get_function_identity_arguments(p.oid) FROM pg_proc p WHERE p.prokind IN ('f', 'p') \
    UNION ALL SELECT 'pg_trigger'::regclass, tg.oid, NULL, 'trigger', c.relnamespace, c.relname::text, \
      tg.tgname::text FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid WHERE NOT tg.tgisinternal \
    UNION ALL SELECT 'pg_policy'::regclass, p.oid, NULL, 'policy', c.relnamespace, c.relname::text, \
      p.polname::text FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid \
    UNION ALL SELECT 'pg_type'::regclass, t.oid, NULL, 'type', e.typnamespace, e.typname::text, NULL \
      FROM pg_type t JOIN pg_type e ON e.oid = CASE WHEN t.typcategory = 'A' AND t.typelem <> 0 \
        THEN t.typelem ELSE t.oid END \
      WHERE e.typtype IN ('e', 'd') OR (e.typtype = 'c' AND EXISTS (SELECT 1 FROM pg_class rc \
        WHERE rc.oid = e.typrelid AND rc.relkind = 'c')) \
), named AS ( \
    SELECT o.classid, o.objid, o.sub, o.kind, n.nspname::text AS nsp, quote_ident(n.nspname) AS nspq, \
      quote_ident(o.name) AS name, CASE WHEN o.kind = 'function' THEN o.second ELSE quote_ident(o.second) END AS second \
    FROM objs o JOIN pg_namespace n ON n.oid = o.nsp WHERE n.nspname = ANY($1) \
) \
SELECT classid::int8, objid::int8, sub, kind, nsp, nspq, name, second FROM named";

/// The `pg_depend` links between user objects (PostgreSQL's own have oids below 16384).
const DEPEND_LINKS_SQL: &str = "SELECT classid::int8, objid::int8, objsubid, refclassid::int8, refobjid::int8, \
    refobjsubid FROM pg_depend WHERE deptype IN ('n', 'a') AND objid >= 16384 AND refobjid >= 16384";

#[cfg(test)]
mod tests {
    use super::strip_home;

    #[test]
    fn strips_only_whole_qualifiers() {
        assert_eq!(
            strip_home("CREATE INDEX i ON public.t USING btree (a)", "public"),
            "CREATE INDEX i ON t USING btree (a)"
        );
        assert_eq!(strip_home("x.public.t mypublic.t", "public"), "x.public.t mypublic.t");
        assert_eq!(strip_home("ON \"T a\".t", "\"T a\""), "ON t");
    }
}
