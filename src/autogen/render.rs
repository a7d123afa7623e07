//! Rendering operations as revision SQL through a registry of [`Renderer`]s.
//!
//! The registry is the one place renderers are registered: [`Registry::standard`] holds the built-in ones
//! (the online renderer when `--online` is asked for, then the default renderer). A user renderer pushed with
//! [`Registry::push`] is asked first and may handle any operation (or leave it to the next by returning `None`),
//! for example to always create indexes `CONCURRENTLY`. User operation kinds come in through
//! [`Registry::comparators`] and [`super::CustomOp`].

use std::collections::BTreeSet;

use super::model::{Column, Composite, Domain, IdentityOptions, Policy, QName, Sequence};
use super::ops::{needs_cast, Comparator, Op};
use crate::executor::quote_literal;

/// How the revision is rendered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// Write destructive operations as SQL; otherwise they are written commented out.
    pub allow_destructive: bool,
    /// Online-safe forms: concurrent index builds in a separate no-transaction revision, NOT NULL columns added
    /// nullable then backfilled, foreign keys and checks added `NOT VALID` then validated.
    pub online: bool,
}

/// What a renderer knows besides the operation.
#[derive(Debug, Clone, Copy)]
pub struct RenderContext {
    pub options: RenderOptions,
    /// The statements go into a no-transaction revision (where `CONCURRENTLY` is allowed).
    pub is_no_transaction: bool,
}

/// Renders operations as SQL statements (without trailing semicolons; a line starting with `--` is a comment).
/// Returns `None` to leave the operation to the next renderer of the registry.
pub trait Renderer: Send + Sync {
    fn render(&self, op: &Op, ctx: &RenderContext) -> Option<Vec<String>>;
}

/// One rendered statement or comment line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub is_comment: bool,
}

/// A revision's SQL: the main (transactional) part, and with `--online` the concurrent index builds that go into
/// a second, no-transaction revision after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderedRevision {
    pub upgrade: String,
    pub downgrade: String,
    pub concurrent: Option<(String, String)>,
    /// Destructive operations written commented out.
    pub n_skipped: usize,
}

/// Renderers, asked in order, and the comparators whose operations join every diff.
pub struct Registry {
    renderers: Vec<Box<dyn Renderer>>,
    pub comparators: Vec<Box<dyn Comparator>>,
}

impl Registry {
    /// The built-in renderers: [`OnlineRenderer`] when `options.online`, then [`DefaultRenderer`].
    pub fn standard(options: &RenderOptions) -> Registry {
        let mut renderers: Vec<Box<dyn Renderer>> = Vec::new();
        if options.online {
            renderers.push(Box::new(OnlineRenderer));
        }
        renderers.push(Box::new(DefaultRenderer));
        Registry {
            renderers,
            comparators: Vec::new(),
        }
    }

    /// Add a renderer asked before every one already registered.
    pub fn push(&mut self, renderer: Box<dyn Renderer>) {
        self.renderers.insert(0, renderer);
    }

    pub fn render_op(&self, op: &Op, ctx: &RenderContext) -> Vec<String> {
        self.renderers
            .iter()
            .find_map(|r| r.render(op, ctx))
            .unwrap_or_else(|| vec![format!("-- flotilla: no renderer for {}", op.summary().1)])
    }
}

fn identity_options(o: &IdentityOptions, prefix: &str) -> String {
    [
        format!("{prefix}INCREMENT BY {}", o.increment),
        format!("{prefix}MINVALUE {}", o.min),
        format!("{prefix}MAXVALUE {}", o.max),
        format!("{prefix}START WITH {}", o.start),
        format!("{prefix}CACHE {}", o.cache),
        format!("{prefix}{}", if o.is_cycle { "CYCLE" } else { "NO CYCLE" }),
    ]
    .join(" ")
}

fn identity_clause(kind: char, options: Option<&IdentityOptions>) -> String {
    let mut out = format!("GENERATED {} AS IDENTITY", identity_words(kind));
    if let Some(o) = options {
        out.push_str(&format!(" ({})", identity_options(o, "")));
    }
    out
}

fn column_def(c: &Column) -> String {
    let mut out = format!("{} {}", c.name, c.data_type);
    if let Some(collation) = &c.collation {
        out.push_str(&format!(" COLLATE {collation}"));
    }
    if let Some(expr) = &c.generated {
        out.push_str(&format!(" GENERATED ALWAYS AS ({expr}) STORED"));
    }
    if let Some(kind) = c.identity {
        out.push_str(&format!(" {}", identity_clause(kind, c.identity_options.as_ref())));
    }
    if let Some(default) = &c.default {
        out.push_str(&format!(" DEFAULT {default}"));
    }
    if c.is_not_null {
        out.push_str(" NOT NULL");
    }
    out
}

fn domain_def(name: &QName, d: &Domain) -> String {
    let mut out = format!("CREATE DOMAIN {name} AS {}", d.base_type);
    if let Some(default) = &d.default {
        out.push_str(&format!(" DEFAULT {default}"));
    }
    if d.is_not_null {
        out.push_str(" NOT NULL");
    }
    for (constraint, definition) in &d.checks {
        out.push_str(&format!(" CONSTRAINT {constraint} {definition}"));
    }
    out
}

fn composite_def(name: &QName, c: &Composite) -> String {
    let attributes: Vec<String> = c.attributes.iter().map(|(a, t)| format!("{a} {t}")).collect();
    format!("CREATE TYPE {name} AS ({})", attributes.join(", "))
}

fn policy_def(table: &QName, name: &str, p: &Policy) -> String {
    let mut out = format!(
        "CREATE POLICY {name} ON {table} AS {} FOR {} TO {}",
        if p.is_permissive { "PERMISSIVE" } else { "RESTRICTIVE" },
        p.command,
        p.roles.join(", ")
    );
    if let Some(using) = &p.using {
        out.push_str(&format!(" USING ({using})"));
    }
    if let Some(check) = &p.with_check {
        out.push_str(&format!(" WITH CHECK ({check})"));
    }
    out
}

fn sequence_options(s: &Sequence) -> String {
    format!(
        "AS {} INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {} CACHE {} {}",
        s.data_type,
        s.increment,
        s.min,
        s.max,
        s.start,
        s.cache,
        if s.is_cycle { "CYCLE" } else { "NO CYCLE" }
    )
}

fn identity_words(kind: char) -> &'static str {
    if kind == 'a' {
        "ALWAYS"
    } else {
        "BY DEFAULT"
    }
}

/// The plain rendering of every built-in operation.
pub struct DefaultRenderer;

impl Renderer for DefaultRenderer {
    fn render(&self, op: &Op, _ctx: &RenderContext) -> Option<Vec<String>> {
        let alter = |table: &dyn std::fmt::Display, column: &str, what: String| {
            format!("ALTER TABLE {table} ALTER COLUMN {column} {what}")
        };
        let labels = |values: &[String]| values.iter().map(|v| quote_literal(v)).collect::<Vec<_>>().join(", ");
        Some(match op {
            Op::CreateSchema { name } => vec![format!("CREATE SCHEMA {name}")],
            Op::DropSchema { name } => vec![format!("DROP SCHEMA {name}")],
            Op::CreateExtension { name, schema } => {
                vec![format!("CREATE EXTENSION IF NOT EXISTS {name} WITH SCHEMA {schema}")]
            }
            Op::DropExtension { name, .. } => vec![format!("DROP EXTENSION {name}")],
            Op::CreateEnum { name, values } => vec![format!("CREATE TYPE {name} AS ENUM ({})", labels(values))],
            Op::DropEnum { name, .. } => vec![format!("DROP TYPE {name}")],
            Op::AddEnumValue {
                name, value, before, ..
            } => vec![match before {
                Some(b) => format!(
                    "ALTER TYPE {name} ADD VALUE {} BEFORE {}",
                    quote_literal(value),
                    quote_literal(b)
                ),
                None => format!("ALTER TYPE {name} ADD VALUE {}", quote_literal(value)),
            }],
            Op::RecreateEnum {
                name,
                from,
                to,
                usages,
                domains,
            } => {
                let old = super::model::QName::new(name.schema.clone(), "flotilla_old_enum");
                let mut out = Vec::new();
                let removed: Vec<&String> = from.iter().filter(|v| !to.contains(v)).collect();
                if !removed.is_empty() {
                    out.push(format!(
                        "-- flotilla: labels {} are removed: rows holding them make the conversion fail",
                        removed.iter().map(|v| quote_literal(v)).collect::<Vec<_>>().join(", ")
                    ));
                }
                out.push(format!("ALTER TYPE {name} RENAME TO flotilla_old_enum"));
                out.push(format!("CREATE TYPE {name} AS ENUM ({})", labels(to)));
                for u in usages {
                    if u.default.is_some() {
                        out.push(alter(&u.table, &u.column, "DROP DEFAULT".into()));
                    }
                    let array = if u.is_array { "[]" } else { "" };
                    out.push(alter(
                        &u.table,
                        &u.column,
                        format!("TYPE {name}{array} USING {}::text{array}::{name}{array}", u.column),
                    ));
                    if let Some(d) = &u.default {
                        out.push(alter(&u.table, &u.column, format!("SET DEFAULT {d}")));
                    }
                }
                for d in domains {
                    let old_domain = QName::new(d.name.schema.clone(), "flotilla_old_domain");
                    out.push(format!("ALTER DOMAIN {} RENAME TO flotilla_old_domain", d.name));
                    out.push(domain_def(&d.name, &d.to));
                    for u in &d.usages {
                        if u.default.is_some() {
                            out.push(alter(&u.table, &u.column, "DROP DEFAULT".into()));
                        }
                        out.push(alter(
                            &u.table,
                            &u.column,
                            format!("TYPE {} USING {}::text::{name}::{}", d.name, u.column, d.name),
                        ));
                        if let Some(default) = &u.default {
                            out.push(alter(&u.table, &u.column, format!("SET DEFAULT {default}")));
                        }
                    }
                    out.push(format!("DROP DOMAIN {old_domain}"));
                }
                out.push(format!("DROP TYPE {old}"));
                out
            }
            Op::CreateDomain { name, domain } => vec![domain_def(name, domain)],
            Op::DropDomain { name, .. } => vec![format!("DROP DOMAIN {name}")],
            Op::RecreateDomain { name, from, to, usages } => {
                let old = QName::new(name.schema.clone(), "flotilla_old_domain");
                let mut out = Vec::new();
                if needs_cast(&from.base_type, &to.base_type) {
                    out.push(format!(
                        "-- flotilla: {} to {} needs a cast: check the USING expressions",
                        from.base_type, to.base_type
                    ));
                }
                out.push(format!("ALTER DOMAIN {name} RENAME TO flotilla_old_domain"));
                out.push(domain_def(name, to));
                for u in usages {
                    if u.default.is_some() {
                        out.push(alter(&u.table, &u.column, "DROP DEFAULT".into()));
                    }
                    out.push(alter(
                        &u.table,
                        &u.column,
                        format!("TYPE {name} USING {}::{}::{name}", u.column, to.base_type),
                    ));
                    if let Some(d) = &u.default {
                        out.push(alter(&u.table, &u.column, format!("SET DEFAULT {d}")));
                    }
                }
                out.push(format!("DROP DOMAIN {old}"));
                out
            }
            Op::AlterDomainDefault { name, to, .. } => vec![match to {
                Some(d) => format!("ALTER DOMAIN {name} SET DEFAULT {d}"),
                None => format!("ALTER DOMAIN {name} DROP DEFAULT"),
            }],
            Op::AlterDomainNull { name, is_not_null } => vec![format!(
                "ALTER DOMAIN {name} {}",
                if *is_not_null { "SET NOT NULL" } else { "DROP NOT NULL" }
            )],
            Op::AddDomainConstraint {
                name,
                constraint,
                definition,
            } => vec![format!("ALTER DOMAIN {name} ADD CONSTRAINT {constraint} {definition}")],
            Op::DropDomainConstraint { name, constraint, .. } => {
                vec![format!("ALTER DOMAIN {name} DROP CONSTRAINT {constraint}")]
            }
            Op::CreateComposite { name, composite } => vec![composite_def(name, composite)],
            Op::DropComposite { name, .. } => vec![format!("DROP TYPE {name}")],
            Op::AddAttribute {
                name,
                attribute: (a, t),
            } => vec![format!("ALTER TYPE {name} ADD ATTRIBUTE {a} {t}")],
            Op::DropAttribute { name, attribute } => {
                vec![format!("ALTER TYPE {name} DROP ATTRIBUTE {}", attribute.0)]
            }
            Op::AlterAttributeType {
                name, attribute, to, ..
            } => vec![format!("ALTER TYPE {name} ALTER ATTRIBUTE {attribute} TYPE {to}")],
            Op::RecreateComposite { name, from, to, usages } => {
                let old = QName::new(name.schema.clone(), "flotilla_old_type");
                let mut out = Vec::new();
                if !usages.is_empty() {
                    out.push(
                        "-- flotilla: columns are converted attribute by attribute (a removed attribute is lost, \
                         a new one is NULL): check the USING expressions"
                            .to_string(),
                    );
                }
                out.push(format!("ALTER TYPE {name} RENAME TO flotilla_old_type"));
                out.push(composite_def(name, to));
                for u in usages {
                    let fields: Vec<String> = to
                        .attributes
                        .iter()
                        .map(|(a, t)| {
                            if from.attributes.iter().any(|(b, _)| b == a) {
                                format!("({}).{a}::{t}", u.column)
                            } else {
                                format!("NULL::{t}")
                            }
                        })
                        .collect();
                    if u.default.is_some() {
                        out.push(alter(&u.table, &u.column, "DROP DEFAULT".into()));
                    }
                    out.push(alter(
                        &u.table,
                        &u.column,
                        format!("TYPE {name} USING ROW({})::{name}", fields.join(", ")),
                    ));
                    if let Some(d) = &u.default {
                        out.push(alter(&u.table, &u.column, format!("SET DEFAULT {d}")));
                    }
                }
                out.push(format!("DROP TYPE {old}"));
                out
            }
            Op::CreateSequence { name, sequence } => {
                vec![format!("CREATE SEQUENCE {name} {}", sequence_options(sequence))]
            }
            Op::DropSequence { name, .. } => vec![format!("DROP SEQUENCE {name}")],
            Op::AlterSequence { name, to, .. } => vec![format!("ALTER SEQUENCE {name} {}", sequence_options(to))],
            Op::SetSequenceOwner { name, to, .. } => vec![match to {
                Some((table, column)) => format!("ALTER SEQUENCE {name} OWNED BY {table}.{column}"),
                None => format!("ALTER SEQUENCE {name} OWNED BY NONE"),
            }],
            Op::CreateTable { name, table } => {
                let mut items: Vec<String> = table.columns.iter().map(column_def).collect();
                for (cname, c) in &table.constraints {
                    if c.kind != 'f' {
                        items.push(format!("CONSTRAINT {cname} {}", c.definition));
                    }
                }
                let body = if items.is_empty() {
                    String::new()
                } else {
                    format!(" (\n    {}\n)", items.join(",\n    "))
                };
                let mut sql = match &table.partition_of {
                    Some(p) => format!("CREATE TABLE {name} PARTITION OF {}{body} {}", p.parent, p.bound),
                    None => format!(
                        "CREATE TABLE {name}{}",
                        if body.is_empty() { " ()".into() } else { body }
                    ),
                };
                if let Some(key) = &table.partition_key {
                    sql.push_str(&format!(" PARTITION BY {key}"));
                }
                if !table.options.is_empty() {
                    sql.push_str(&format!(" WITH ({})", table.options.join(", ")));
                }
                let mut out = vec![sql];
                if table.is_rls_enabled {
                    out.push(format!("ALTER TABLE {name} ENABLE ROW LEVEL SECURITY"));
                }
                if table.is_rls_forced {
                    out.push(format!("ALTER TABLE {name} FORCE ROW LEVEL SECURITY"));
                }
                out
            }
            Op::DropTable { name, .. } => vec![format!("DROP TABLE {name}")],
            Op::AddColumn { table, column } => vec![format!("ALTER TABLE {table} ADD COLUMN {}", column_def(column))],
            Op::DropColumn { table, column } => vec![format!("ALTER TABLE {table} DROP COLUMN {}", column.name)],
            Op::AlterColumnType {
                table,
                column,
                from,
                to,
            } => {
                if needs_cast(from, to) {
                    vec![
                        format!("-- flotilla: {from} to {to} needs a cast: check the USING expression"),
                        alter(table, column, format!("TYPE {to} USING {column}::{to}")),
                    ]
                } else {
                    vec![alter(table, column, format!("TYPE {to}"))]
                }
            }
            Op::AlterColumnNull {
                table,
                column,
                is_not_null,
            } => vec![alter(
                table,
                column,
                if *is_not_null { "SET NOT NULL" } else { "DROP NOT NULL" }.into(),
            )],
            Op::AlterColumnDefault { table, column, to, .. } => vec![alter(
                table,
                column,
                match to {
                    Some(d) => format!("SET DEFAULT {d}"),
                    None => "DROP DEFAULT".into(),
                },
            )],
            Op::AlterColumnIdentity {
                table,
                column,
                from,
                to,
                options,
            } => vec![alter(
                table,
                column,
                match (from, to) {
                    (None, Some(k)) => format!("ADD {}", identity_clause(*k, options.as_ref())),
                    (Some(_), None) => "DROP IDENTITY".into(),
                    (_, Some(k)) => format!("SET GENERATED {}", identity_words(*k)),
                    (None, None) => return None,
                },
            )],
            Op::AddConstraint {
                table,
                name,
                constraint,
                ..
            } => vec![format!(
                "ALTER TABLE {table} ADD CONSTRAINT {name} {}",
                constraint.definition
            )],
            Op::DropConstraint { table, name, .. } => vec![format!("ALTER TABLE {table} DROP CONSTRAINT {name}")],
            Op::CreateIndex { index, .. } => vec![index.definition.clone()],
            Op::DropIndex { name, .. } => vec![format!("DROP INDEX {name}")],
            Op::CreateView { name, view } => vec![format!(
                "CREATE {}VIEW {name} AS\n{}",
                if view.is_materialized { "MATERIALIZED " } else { "" },
                view.definition.trim().trim_end_matches(';')
            )],
            Op::DropView { name, view } => vec![format!(
                "DROP {}VIEW {name}",
                if view.is_materialized { "MATERIALIZED " } else { "" }
            )],
            Op::CreateFunction { function } | Op::ReplaceFunction { to: function, .. } => {
                vec![function.definition.clone()]
            }
            Op::DropFunction { function } => vec![format!(
                "DROP {} {}({})",
                if function.is_procedure { "PROCEDURE" } else { "FUNCTION" },
                function.name,
                function.identity_args
            )],
            Op::CreateTrigger { trigger, .. } => vec![trigger.definition.clone()],
            Op::DropTrigger { table, name, .. } => vec![format!("DROP TRIGGER {name} ON {table}")],
            Op::SetRowSecurity { table, is_enabled } => vec![format!(
                "ALTER TABLE {table} {} ROW LEVEL SECURITY",
                if *is_enabled { "ENABLE" } else { "DISABLE" }
            )],
            Op::SetForceRowSecurity { table, is_forced } => vec![format!(
                "ALTER TABLE {table} {} ROW LEVEL SECURITY",
                if *is_forced { "FORCE" } else { "NO FORCE" }
            )],
            Op::CreatePolicy { table, name, policy } => vec![policy_def(table, name, policy)],
            Op::DropPolicy { table, name, .. } => vec![format!("DROP POLICY {name} ON {table}")],
            Op::AlterPolicy { table, name, from, to } => {
                let mut out = format!("ALTER POLICY {name} ON {table}");
                if from.roles != to.roles {
                    out.push_str(&format!(" TO {}", to.roles.join(", ")));
                }
                match (&from.using, &to.using) {
                    (a, Some(u)) if a.as_ref() != Some(u) => out.push_str(&format!(" USING ({u})")),
                    _ => {}
                }
                match (&from.with_check, &to.with_check) {
                    (a, Some(c)) if a.as_ref() != Some(c) => out.push_str(&format!(" WITH CHECK ({c})")),
                    _ => {}
                }
                vec![out]
            }
            Op::SetComment { target, to, .. } => vec![format!(
                "COMMENT ON {} {} IS {}",
                target.kind,
                target.name,
                to.as_deref().map(quote_literal).unwrap_or_else(|| "NULL".into())
            )],
            Op::CreateRange { name, range } => {
                let mut options = vec![format!("SUBTYPE = {}", range.subtype)];
                if let Some(collation) = &range.collation {
                    options.push(format!("COLLATION = {collation}"));
                }
                if let Some(f) = &range.subtype_diff {
                    options.push(format!("SUBTYPE_DIFF = {f}"));
                }
                vec![format!("CREATE TYPE {name} AS RANGE ({})", options.join(", "))]
            }
            Op::DropRange { name, .. } => vec![format!("DROP TYPE {name}")],
            Op::SetTableOptions { table, from, to } => {
                let key = |o: &String| o.split('=').next().unwrap_or(o).to_string();
                let reset: Vec<String> = from
                    .iter()
                    .map(key)
                    .filter(|k| !to.iter().any(|o| &key(o) == k))
                    .collect();
                let set: Vec<String> = to.iter().filter(|o| !from.contains(o)).cloned().collect();
                let mut out = Vec::new();
                if !reset.is_empty() {
                    out.push(format!("ALTER TABLE {table} RESET ({})", reset.join(", ")));
                }
                if !set.is_empty() {
                    out.push(format!("ALTER TABLE {table} SET ({})", set.join(", ")));
                }
                out
            }
            Op::ChangePartitionKey { table, from, to } => vec![format!(
                "-- flotilla: the partition key of {table} changes ({} to {}): PostgreSQL cannot change it in place; \
                 recreate the table and its partitions here by hand",
                from.as_deref().unwrap_or("none"),
                to.as_deref().unwrap_or("none")
            )],
            Op::AttachPartition { table, partition } => vec![format!(
                "ALTER TABLE {} ATTACH PARTITION {table} {}",
                partition.parent, partition.bound
            )],
            Op::DetachPartition { table, partition } => {
                vec![format!("ALTER TABLE {} DETACH PARTITION {table}", partition.parent)]
            }
            Op::AlterColumnCollation {
                table,
                column,
                data_type,
                to,
                ..
            } => vec![alter(
                table,
                column,
                format!("TYPE {data_type} COLLATE {}", to.as_deref().unwrap_or("\"default\"")),
            )],
            Op::AlterIdentityOptions { table, column, to, .. } => {
                vec![alter(table, column, identity_options(to, "SET "))]
            }
            Op::SetOwner { on, alter, to, .. } => {
                let name = on.split_once(' ').map(|(_, n)| n).unwrap_or(on);
                vec![format!(
                    "ALTER {alter} {name} OWNER TO {}",
                    to.as_deref().unwrap_or("CURRENT_USER")
                )]
            }
            Op::Grant {
                grant,
                is_grantable,
                is_revoke,
            } => vec![if *is_revoke {
                format!("REVOKE {} ON {} FROM {}", grant.privilege, grant.on, grant.grantee)
            } else {
                format!(
                    "GRANT {} ON {} TO {}{}",
                    grant.privilege,
                    grant.on,
                    grant.grantee,
                    if *is_grantable { " WITH GRANT OPTION" } else { "" }
                )
            }],
            Op::DefaultPrivilege {
                grant,
                is_grantable,
                is_revoke,
            } => {
                let mut out = format!("ALTER DEFAULT PRIVILEGES FOR ROLE {}", grant.role);
                if let Some(schema) = &grant.schema {
                    out.push_str(&format!(" IN SCHEMA {schema}"));
                }
                // Removing a revoked default grants it again.
                if *is_revoke != grant.is_revoked {
                    out.push_str(&format!(
                        " REVOKE {} ON {} FROM {}",
                        grant.privilege, grant.objects, grant.grantee
                    ));
                } else {
                    out.push_str(&format!(
                        " GRANT {} ON {} TO {}{}",
                        grant.privilege,
                        grant.objects,
                        grant.grantee,
                        if *is_grantable { " WITH GRANT OPTION" } else { "" }
                    ));
                }
                vec![out]
            }
            Op::RenameTable { name, to } => vec![format!("ALTER TABLE {name} RENAME TO {to}")],
            Op::RenameColumn { table, from, to } => vec![format!("ALTER TABLE {table} RENAME COLUMN {from} TO {to}")],
            Op::Custom(custom) => custom.upgrade_sql(),
        })
    }
}

/// The `--online` forms. Leaves every other operation to the next renderer.
pub struct OnlineRenderer;

impl Renderer for OnlineRenderer {
    fn render(&self, op: &Op, ctx: &RenderContext) -> Option<Vec<String>> {
        match op {
            Op::CreateIndex { index, .. } if ctx.is_no_transaction => Some(vec![concurrently(&index.definition)]),
            Op::DropIndex { name, .. } if ctx.is_no_transaction => {
                Some(vec![format!("DROP INDEX CONCURRENTLY {name}")])
            }
            Op::AddColumn { table, column }
                if column.is_not_null && column.identity.is_none() && column.generated.is_none() =>
            {
                let mut nullable = column.clone();
                nullable.is_not_null = false;
                let backfill = match &column.default {
                    Some(d) => format!("UPDATE {table} SET {} = {d} WHERE {} IS NULL", column.name, column.name),
                    None => format!(
                        "-- flotilla: backfill {table}.{} here (it has no default) before SET NOT NULL",
                        column.name
                    ),
                };
                Some(vec![
                    format!("ALTER TABLE {table} ADD COLUMN {}", column_def(&nullable)),
                    backfill,
                    format!("ALTER TABLE {table} ALTER COLUMN {} SET NOT NULL", column.name),
                ])
            }
            Op::AddConstraint {
                table,
                name,
                constraint,
                is_new_table: false,
            } if matches!(constraint.kind, 'f' | 'c') => Some(vec![
                format!(
                    "ALTER TABLE {table} ADD CONSTRAINT {name} {} NOT VALID",
                    constraint.definition
                ),
                format!("ALTER TABLE {table} VALIDATE CONSTRAINT {name}"),
            ]),
            _ => None,
        }
    }
}

/// `CREATE [UNIQUE] INDEX` made `CONCURRENTLY`.
pub fn concurrently(definition: &str) -> String {
    for head in ["CREATE UNIQUE INDEX ", "CREATE INDEX "] {
        if let Some(rest) = definition.strip_prefix(head) {
            return format!("{head}CONCURRENTLY {rest}");
        }
    }
    definition.to_string()
}

fn is_concurrent(op: &Op, online: bool, indexes: &BTreeSet<String>) -> bool {
    online
        && match op {
            Op::CreateIndex { is_new_table, .. } => !is_new_table,
            Op::SetComment { target, .. } => target.kind == "INDEX" && indexes.contains(&target.name),
            _ => false,
        }
}

fn render_list(ops: &[(Op, bool)], registry: &Registry, ctx: &RenderContext, out: &mut Vec<Statement>) {
    let has_functions = ops
        .iter()
        .any(|(op, _)| matches!(op, Op::CreateFunction { .. } | Op::ReplaceFunction { .. }));
    if has_functions && !ctx.is_no_transaction {
        // Function bodies may name tables created later in the same revision.
        out.push(Statement {
            sql: "SET LOCAL check_function_bodies = off".into(),
            is_comment: false,
        });
    }
    for (op, is_skipped) in ops {
        let (verb, object) = op.summary();
        if *is_skipped {
            out.push(Statement {
                sql: format!(
                    "-- flotilla: destructive ({verb} {object}): written commented out; pass --allow-destructive to keep it"
                ),
                is_comment: true,
            });
        } else if op.is_destructive() {
            out.push(Statement {
                sql: format!("-- flotilla: destructive: {verb} {object}"),
                is_comment: true,
            });
        }
        for sql in registry.render_op(op, ctx) {
            let is_comment = sql.starts_with("--");
            if *is_skipped && !is_comment {
                let commented: Vec<String> = format!("{sql};").lines().map(|l| format!("-- {l}")).collect();
                out.push(Statement {
                    sql: commented.join("\n"),
                    is_comment: true,
                });
            } else {
                out.push(Statement { sql, is_comment });
            }
        }
    }
}

fn to_text(statements: &[Statement]) -> String {
    let mut out = String::new();
    for s in statements {
        out.push_str(&s.sql);
        if !s.is_comment {
            out.push(';');
        }
        out.push('\n');
    }
    out
}

/// Render `ops` (in diff order) as upgrade and downgrade SQL. The downgrade reverses the operations; an
/// operation written commented out in the upgrade is commented out in the downgrade too.
pub fn render(ops: &[Op], registry: &Registry, options: &RenderOptions) -> RenderedRevision {
    let concurrent_indexes: BTreeSet<String> = ops
        .iter()
        .filter_map(|op| match op {
            Op::CreateIndex {
                name,
                is_new_table: false,
                ..
            } => Some(name.to_string()),
            _ => None,
        })
        .collect();
    let mut main = Vec::new();
    let mut concurrent = Vec::new();
    let mut n_skipped = 0;
    for op in ops {
        let is_skipped = op.is_destructive() && !options.allow_destructive;
        n_skipped += usize::from(is_skipped);
        if is_concurrent(op, options.online, &concurrent_indexes) {
            concurrent.push((op.clone(), is_skipped));
        } else {
            main.push((op.clone(), is_skipped));
        }
    }
    let side = |list: &[(Op, bool)], is_no_transaction: bool| {
        let ctx = RenderContext {
            options: *options,
            is_no_transaction,
        };
        let mut up = Vec::new();
        render_list(list, registry, &ctx, &mut up);
        let reversed: Vec<(Op, bool)> = list.iter().rev().map(|(op, s)| (op.reverse(), *s)).collect();
        let mut down = Vec::new();
        render_list(&reversed, registry, &ctx, &mut down);
        (to_text(&up), to_text(&down))
    };
    let (upgrade, downgrade) = side(&main, false);
    RenderedRevision {
        upgrade,
        downgrade,
        concurrent: (!concurrent.is_empty()).then(|| side(&concurrent, true)),
        n_skipped,
    }
}

/// The upgrade SQL of `ops` as `check` and drift print it.
pub fn upgrade_text(ops: &[Op]) -> String {
    let options = RenderOptions {
        allow_destructive: true,
        online: false,
    };
    render(ops, &Registry::standard(&options), &options).upgrade
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::autogen::model::{Index, QName};
    use crate::autogen::ops::CustomOp;

    fn index_op(is_new_table: bool) -> Op {
        Op::CreateIndex {
            name: QName::new("public", "t_a"),
            index: Index {
                table: QName::new("public", "t"),
                definition: "CREATE INDEX t_a ON t USING btree (a)".into(),
            },
            is_new_table,
        }
    }

    fn check(ops: &[Op], registry: &Registry, options: RenderOptions, upgrade: &str, downgrade: &str) {
        let rendered = render(ops, registry, &options);
        assert_eq!(rendered.upgrade, upgrade);
        assert_eq!(rendered.downgrade, downgrade);
    }

    #[test]
    fn default_rendering_and_reverse() {
        let options = RenderOptions::default();
        check(
            &[index_op(false)],
            &Registry::standard(&options),
            options,
            "CREATE INDEX t_a ON t USING btree (a);\n",
            "DROP INDEX t_a;\n",
        );
    }

    #[test]
    fn online_moves_indexes_on_existing_tables_to_a_concurrent_revision() {
        let options = RenderOptions {
            online: true,
            ..Default::default()
        };
        let rendered = render(&[index_op(false)], &Registry::standard(&options), &options);
        assert_eq!(rendered.upgrade, "");
        assert_eq!(
            rendered.concurrent,
            Some((
                "CREATE INDEX CONCURRENTLY t_a ON t USING btree (a);\n".into(),
                "DROP INDEX CONCURRENTLY t_a;\n".into()
            ))
        );
        // An index on a table created in the same revision is built in place.
        let rendered = render(&[index_op(true)], &Registry::standard(&options), &options);
        assert!(rendered.concurrent.is_none());
    }

    /// A user renderer asked first: always build indexes concurrently, even outside `--online`.
    struct AlwaysConcurrently;

    impl Renderer for AlwaysConcurrently {
        fn render(&self, op: &Op, _ctx: &RenderContext) -> Option<Vec<String>> {
            match op {
                Op::CreateIndex { index, .. } => Some(vec![concurrently(&index.definition)]),
                _ => None,
            }
        }
    }

    #[derive(Debug)]
    struct Grant {
        is_revoke: bool,
    }

    impl CustomOp for Grant {
        fn kind(&self) -> &str {
            "grant"
        }
        fn upgrade_sql(&self) -> Vec<String> {
            vec![if self.is_revoke {
                "REVOKE SELECT ON t FROM app"
            } else {
                "GRANT SELECT ON t TO app"
            }
            .into()]
        }
        fn reverse(&self) -> Op {
            Op::Custom(Arc::new(Grant {
                is_revoke: !self.is_revoke,
            }))
        }
    }

    #[test]
    fn user_renderers_and_operation_kinds() {
        let options = RenderOptions::default();
        let mut registry = Registry::standard(&options);
        registry.push(Box::new(AlwaysConcurrently));
        check(
            &[index_op(false), Op::Custom(Arc::new(Grant { is_revoke: false }))],
            &registry,
            options,
            "CREATE INDEX CONCURRENTLY t_a ON t USING btree (a);\nGRANT SELECT ON t TO app;\n",
            "REVOKE SELECT ON t FROM app;\nDROP INDEX t_a;\n",
        );
    }

    #[test]
    fn destructive_operations_are_commented_out_both_ways() {
        let options = RenderOptions::default();
        let drop = Op::DropSchema { name: "old".into() };
        check(
            &[drop],
            &Registry::standard(&options),
            options,
            "-- flotilla: destructive (drop schema old): written commented out; pass --allow-destructive to keep it\n\
             -- DROP SCHEMA old;\n",
            "-- flotilla: destructive (add schema old): written commented out; pass --allow-destructive to keep it\n\
             -- CREATE SCHEMA old;\n",
        );
    }
}
