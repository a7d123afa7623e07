//! The operations layer between the diff and the SQL, like Alembic's ops: each change is an [`Op`] value that
//! knows its reverse, whether it loses data, and how to describe itself. Rendering lives in `render`.
//!
//! An operation always carries what its reverse needs (a dropped table carries its columns), so the downgrade
//! is the upgrade's operations reversed, each one reversed.

use std::fmt;
use std::sync::Arc;

use super::model::{
    Catalog, Column, Composite, Constraint, DefaultGrant, Domain, Function, Grant, IdentityOptions, Index, Partition,
    Policy, QName, Range, Sequence, Table, Trigger, View,
};

/// An operation kind a user adds: renders its own SQL and names its reverse. Produced by a [`Comparator`].
pub trait CustomOp: fmt::Debug + Send + Sync {
    /// A short kind name renderers can match on, for example `grant`.
    fn kind(&self) -> &str;
    /// The upgrade statements, without trailing semicolons.
    fn upgrade_sql(&self) -> Vec<String>;
    /// The operation that undoes this one.
    fn reverse(&self) -> Op;
    fn is_destructive(&self) -> bool {
        false
    }
    fn summary(&self) -> String {
        self.kind().to_string()
    }
}

/// A user-supplied comparison that adds operations of its own to a diff (registered in `render::Registry`).
pub trait Comparator: Send + Sync {
    fn compare(&self, from: &Catalog, to: &Catalog) -> Vec<Op>;
}

/// The object a `COMMENT ON` names: `kind` is `TABLE`, `COLUMN`, `INDEX`, `VIEW`, `FUNCTION`, `TYPE`, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentTarget {
    pub kind: String,
    pub name: String,
}

/// One schema change. `table` fields name the table an operation works on.
#[derive(Debug, Clone)]
pub enum Op {
    CreateSchema {
        name: String,
    },
    DropSchema {
        name: String,
    },
    CreateExtension {
        name: String,
        schema: String,
    },
    DropExtension {
        name: String,
        schema: String,
    },
    CreateEnum {
        name: QName,
        values: Vec<String>,
    },
    DropEnum {
        name: QName,
        values: Vec<String>,
    },
    /// `ALTER TYPE ... ADD VALUE`; `before` is the label it goes in front of (`None` = at the end).
    AddEnumValue {
        name: QName,
        value: String,
        before: Option<String>,
        all_from: Vec<String>,
        usages: Vec<EnumUsage>,
        /// Domains over the type, recreated with it by the downgrade.
        domains: Vec<DomainUsage>,
    },
    /// Replace an enum type by one with other labels: PostgreSQL cannot drop a label, so the type is renamed,
    /// recreated, and every column using it is converted through text. Rows holding a removed label fail.
    RecreateEnum {
        name: QName,
        from: Vec<String>,
        to: Vec<String>,
        usages: Vec<EnumUsage>,
        /// Domains over the type: recreated over the new type (and their columns converted) before the old type
        /// is dropped.
        domains: Vec<DomainUsage>,
    },
    /// `CREATE DOMAIN` with its default, `NOT NULL` and CHECK constraints.
    CreateDomain {
        name: QName,
        domain: Domain,
    },
    DropDomain {
        name: QName,
        domain: Domain,
    },
    /// Replace a domain by one over another base type: PostgreSQL cannot change a domain's base type, so the
    /// domain is renamed, recreated, every column using it converted through the new base type, and the old
    /// one dropped.
    RecreateDomain {
        name: QName,
        from: Domain,
        to: Domain,
        usages: Vec<EnumUsage>,
    },
    AlterDomainDefault {
        name: QName,
        from: Option<String>,
        to: Option<String>,
    },
    AlterDomainNull {
        name: QName,
        is_not_null: bool,
    },
    /// `ALTER DOMAIN ... ADD CONSTRAINT name CHECK (...)`; `definition` is the `CHECK (...)` text.
    AddDomainConstraint {
        name: QName,
        constraint: String,
        definition: String,
    },
    DropDomainConstraint {
        name: QName,
        constraint: String,
        definition: String,
    },
    CreateComposite {
        name: QName,
        composite: Composite,
    },
    DropComposite {
        name: QName,
        composite: Composite,
    },
    /// `ALTER TYPE ... ADD ATTRIBUTE` (at the end): (name, type).
    AddAttribute {
        name: QName,
        attribute: (String, String),
    },
    DropAttribute {
        name: QName,
        attribute: (String, String),
    },
    /// `ALTER TYPE ... ALTER ATTRIBUTE ... TYPE`: only for a type no column uses (PostgreSQL refuses otherwise).
    AlterAttributeType {
        name: QName,
        attribute: String,
        from: String,
        to: String,
    },
    /// Replace a composite type whose attributes cannot be changed in place (reordered, or a retyped attribute
    /// of a type columns use): the type is renamed, recreated, every column using it converted attribute by
    /// attribute, and the old one dropped.
    RecreateComposite {
        name: QName,
        from: Composite,
        to: Composite,
        usages: Vec<EnumUsage>,
    },
    CreateSequence {
        name: QName,
        sequence: Sequence,
    },
    DropSequence {
        name: QName,
        sequence: Sequence,
    },
    AlterSequence {
        name: QName,
        from: Sequence,
        to: Sequence,
    },
    SetSequenceOwner {
        name: QName,
        from: Option<(QName, String)>,
        to: Option<(QName, String)>,
    },
    /// A table with its columns and its primary key, unique, check and exclusion constraints (foreign keys,
    /// comments and indexes are operations of their own).
    CreateTable {
        name: QName,
        table: Table,
    },
    DropTable {
        name: QName,
        table: Table,
    },
    AddColumn {
        table: QName,
        column: Column,
    },
    DropColumn {
        table: QName,
        column: Column,
    },
    AlterColumnType {
        table: QName,
        column: String,
        from: String,
        to: String,
    },
    AlterColumnNull {
        table: QName,
        column: String,
        is_not_null: bool,
    },
    AlterColumnDefault {
        table: QName,
        column: String,
        from: Option<String>,
        to: Option<String>,
    },
    AlterColumnIdentity {
        table: QName,
        column: String,
        from: Option<char>,
        to: Option<char>,
        /// The sequence options of the side that has the identity (for `ADD GENERATED ... AS IDENTITY`).
        options: Option<IdentityOptions>,
    },
    AddConstraint {
        table: QName,
        name: String,
        constraint: Constraint,
        is_new_table: bool,
    },
    DropConstraint {
        table: QName,
        name: String,
        constraint: Constraint,
        is_new_table: bool,
    },
    CreateIndex {
        name: QName,
        index: Index,
        is_new_table: bool,
    },
    DropIndex {
        name: QName,
        index: Index,
        is_new_table: bool,
    },
    CreateView {
        name: QName,
        view: View,
    },
    DropView {
        name: QName,
        view: View,
    },
    CreateFunction {
        function: Function,
    },
    DropFunction {
        function: Function,
    },
    ReplaceFunction {
        from: Function,
        to: Function,
    },
    CreateTrigger {
        table: QName,
        name: String,
        trigger: Trigger,
    },
    DropTrigger {
        table: QName,
        name: String,
        trigger: Trigger,
    },
    /// `ENABLE` or `DISABLE ROW LEVEL SECURITY`.
    SetRowSecurity {
        table: QName,
        is_enabled: bool,
    },
    /// `FORCE` or `NO FORCE ROW LEVEL SECURITY`.
    SetForceRowSecurity {
        table: QName,
        is_forced: bool,
    },
    CreatePolicy {
        table: QName,
        name: String,
        policy: Policy,
    },
    DropPolicy {
        table: QName,
        name: String,
        policy: Policy,
    },
    /// `ALTER POLICY`: the command and `PERMISSIVE`/`RESTRICTIVE` are the same, and an expression that changes
    /// is present on both sides (ALTER POLICY cannot remove one).
    AlterPolicy {
        table: QName,
        name: String,
        from: Policy,
        to: Policy,
    },
    SetComment {
        target: CommentTarget,
        from: Option<String>,
        to: Option<String>,
    },
    CreateRange {
        name: QName,
        range: Range,
    },
    DropRange {
        name: QName,
        range: Range,
    },
    /// `ALTER TABLE ... SET (...)` / `RESET (...)`: storage parameters, sorted `key=value` texts.
    SetTableOptions {
        table: QName,
        from: Vec<String>,
        to: Vec<String>,
    },
    /// A partitioned table whose partition key changes: PostgreSQL cannot change it in place, so the revision
    /// holds a comment asking to recreate the table by hand (and `check` and drift report it).
    ChangePartitionKey {
        table: QName,
        from: Option<String>,
        to: Option<String>,
    },
    /// `ALTER TABLE parent ATTACH PARTITION table ...`.
    AttachPartition {
        table: QName,
        partition: Partition,
    },
    /// `ALTER TABLE parent DETACH PARTITION table`.
    DetachPartition {
        table: QName,
        partition: Partition,
    },
    /// `ALTER COLUMN ... TYPE same_type COLLATE ...`.
    AlterColumnCollation {
        table: QName,
        column: String,
        data_type: String,
        from: Option<String>,
        to: Option<String>,
    },
    /// `ALTER COLUMN ... SET INCREMENT BY ...` and the other options of an identity column's sequence.
    AlterIdentityOptions {
        table: QName,
        column: String,
        from: IdentityOptions,
        to: IdentityOptions,
    },
    /// `ALTER kind name OWNER TO`: `on` as `GRANT ... ON` names the object, `alter` the `ALTER` word; `None`
    /// is the role running the revision (`CURRENT_USER`).
    SetOwner {
        on: String,
        alter: String,
        from: Option<String>,
        to: Option<String>,
    },
    /// `GRANT` or `REVOKE` one privilege on one object.
    Grant {
        grant: Grant,
        is_grantable: bool,
        is_revoke: bool,
    },
    /// `ALTER DEFAULT PRIVILEGES ... GRANT` or `REVOKE` one privilege.
    DefaultPrivilege {
        grant: DefaultGrant,
        is_grantable: bool,
        is_revoke: bool,
    },
    /// `ALTER TABLE ... RENAME TO` (a `--rename` hint); `to` is the bare new name, in the same schema.
    RenameTable {
        name: QName,
        to: String,
    },
    /// `ALTER TABLE ... RENAME COLUMN` (a `--rename` hint).
    RenameColumn {
        table: QName,
        from: String,
        to: String,
    },
    Custom(Arc<dyn CustomOp>),
}

/// A column whose type is an enum, a domain or a composite type, with its default (dropped and set again around a recreation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumUsage {
    pub table: QName,
    pub column: String,
    pub default: Option<String>,
    /// The column holds an array of the type (only enum recreations convert those).
    pub is_array: bool,
}

/// The roles (not `PUBLIC`) that operations grant to, revoke from or name in default privileges, sorted: they
/// must exist wherever the revision runs.
pub fn granted_roles(ops: &[Op]) -> Vec<String> {
    let mut roles = std::collections::BTreeSet::new();
    for op in ops {
        match op {
            Op::Grant { grant, .. } => {
                roles.insert(grant.grantee.clone());
            }
            Op::SetOwner { from, to, .. } => {
                roles.extend(from.iter().chain(to).cloned());
            }
            Op::DefaultPrivilege { grant, .. } => {
                roles.insert(grant.grantee.clone());
                roles.insert(grant.role.clone());
            }
            _ => {}
        }
    }
    roles.remove("PUBLIC");
    roles.into_iter().collect()
}

/// A domain over a recreated type, as it is before (`from`) and after (`to`), with the columns using it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainUsage {
    pub name: QName,
    pub from: Domain,
    pub to: Domain,
    pub usages: Vec<EnumUsage>,
}

impl DomainUsage {
    fn reverse(self) -> DomainUsage {
        DomainUsage {
            from: self.to,
            to: self.from,
            ..self
        }
    }
}

/// The widening type changes that cannot lose data.
fn is_widening(from: &str, to: &str) -> bool {
    let rank = |t: &str| match t {
        "smallint" => Some(1),
        "integer" => Some(2),
        "bigint" => Some(3),
        "numeric" => Some(4),
        _ => None,
    };
    if let (Some(a), Some(b)) = (rank(from), rank(to)) {
        return a < b;
    }
    let length = |t: &str, prefix: &str| -> Option<Option<u32>> {
        let rest = t.strip_prefix(prefix)?;
        if rest.is_empty() {
            return Some(None);
        }
        rest.strip_prefix('(')?.strip_suffix(')')?.parse().ok().map(Some)
    };
    for prefix in ["character varying", "varchar", "bit varying"] {
        if let (Some(a), Some(b)) = (length(from, prefix), length(to, prefix)) {
            return match (a, b) {
                (_, None) => true,
                (Some(a), Some(b)) => a <= b,
                (None, Some(_)) => false,
            };
        }
    }
    to == "text" && (from.starts_with("character varying") || from.starts_with("character("))
}

/// Whether changing `from` to `to` needs an explicit `USING` cast (the base type changes).
pub fn needs_cast(from: &str, to: &str) -> bool {
    let base = |t: &str| t.split('(').next().unwrap_or(t).trim().to_string();
    let text_like = |t: &str| matches!(t, "text" | "character varying" | "character");
    let (a, b) = (base(from), base(to));
    a != b && !(text_like(&a) && text_like(&b)) && !is_widening(&a, &b)
}

impl Op {
    /// The operation that undoes this one.
    pub fn reverse(&self) -> Op {
        match self.clone() {
            Op::CreateSchema { name } => Op::DropSchema { name },
            Op::DropSchema { name } => Op::CreateSchema { name },
            Op::CreateExtension { name, schema } => Op::DropExtension { name, schema },
            Op::DropExtension { name, schema } => Op::CreateExtension { name, schema },
            Op::CreateEnum { name, values } => Op::DropEnum { name, values },
            Op::DropEnum { name, values } => Op::CreateEnum { name, values },
            Op::AddEnumValue {
                name,
                value,
                all_from,
                usages,
                domains,
                ..
            } => {
                let mut to_values = all_from.clone();
                to_values.retain(|v| v != &value);
                let mut from_values = all_from;
                if !from_values.contains(&value) {
                    from_values.push(value);
                }
                Op::RecreateEnum {
                    name,
                    from: from_values,
                    to: to_values,
                    usages,
                    domains: domains.into_iter().map(DomainUsage::reverse).collect(),
                }
            }
            Op::RecreateEnum {
                name,
                from,
                to,
                usages,
                domains,
            } => Op::RecreateEnum {
                name,
                from: to,
                to: from,
                usages,
                domains: domains.into_iter().map(DomainUsage::reverse).collect(),
            },
            Op::CreateDomain { name, domain } => Op::DropDomain { name, domain },
            Op::DropDomain { name, domain } => Op::CreateDomain { name, domain },
            Op::RecreateDomain { name, from, to, usages } => Op::RecreateDomain {
                name,
                from: to,
                to: from,
                usages,
            },
            Op::AlterDomainDefault { name, from, to } => Op::AlterDomainDefault {
                name,
                from: to,
                to: from,
            },
            Op::AlterDomainNull { name, is_not_null } => Op::AlterDomainNull {
                name,
                is_not_null: !is_not_null,
            },
            Op::AddDomainConstraint {
                name,
                constraint,
                definition,
            } => Op::DropDomainConstraint {
                name,
                constraint,
                definition,
            },
            Op::DropDomainConstraint {
                name,
                constraint,
                definition,
            } => Op::AddDomainConstraint {
                name,
                constraint,
                definition,
            },
            Op::CreateComposite { name, composite } => Op::DropComposite { name, composite },
            Op::DropComposite { name, composite } => Op::CreateComposite { name, composite },
            Op::AddAttribute { name, attribute } => Op::DropAttribute { name, attribute },
            Op::DropAttribute { name, attribute } => Op::AddAttribute { name, attribute },
            Op::AlterAttributeType {
                name,
                attribute,
                from,
                to,
            } => Op::AlterAttributeType {
                name,
                attribute,
                from: to,
                to: from,
            },
            Op::RecreateComposite { name, from, to, usages } => Op::RecreateComposite {
                name,
                from: to,
                to: from,
                usages,
            },
            Op::CreateSequence { name, sequence } => Op::DropSequence { name, sequence },
            Op::DropSequence { name, sequence } => Op::CreateSequence { name, sequence },
            Op::AlterSequence { name, from, to } => Op::AlterSequence {
                name,
                from: to,
                to: from,
            },
            Op::SetSequenceOwner { name, from, to } => Op::SetSequenceOwner {
                name,
                from: to,
                to: from,
            },
            Op::CreateTable { name, table } => Op::DropTable { name, table },
            Op::DropTable { name, table } => Op::CreateTable { name, table },
            Op::AddColumn { table, column } => Op::DropColumn { table, column },
            Op::DropColumn { table, column } => Op::AddColumn { table, column },
            Op::AlterColumnType {
                table,
                column,
                from,
                to,
            } => Op::AlterColumnType {
                table,
                column,
                from: to,
                to: from,
            },
            Op::AlterColumnNull {
                table,
                column,
                is_not_null,
            } => Op::AlterColumnNull {
                table,
                column,
                is_not_null: !is_not_null,
            },
            Op::AlterColumnDefault {
                table,
                column,
                from,
                to,
            } => Op::AlterColumnDefault {
                table,
                column,
                from: to,
                to: from,
            },
            Op::AlterColumnIdentity {
                table,
                column,
                from,
                to,
                options,
            } => Op::AlterColumnIdentity {
                table,
                column,
                from: to,
                to: from,
                options,
            },
            Op::AddConstraint {
                table,
                name,
                constraint,
                is_new_table,
            } => Op::DropConstraint {
                table,
                name,
                constraint,
                is_new_table,
            },
            Op::DropConstraint {
                table,
                name,
                constraint,
                is_new_table,
            } => Op::AddConstraint {
                table,
                name,
                constraint,
                is_new_table,
            },
            Op::CreateIndex {
                name,
                index,
                is_new_table,
            } => Op::DropIndex {
                name,
                index,
                is_new_table,
            },
            Op::DropIndex {
                name,
                index,
                is_new_table,
            } => Op::CreateIndex {
                name,
                index,
                is_new_table,
            },
            Op::CreateView { name, view } => Op::DropView { name, view },
            Op::DropView { name, view } => Op::CreateView { name, view },
            Op::CreateFunction { function } => Op::DropFunction { function },
            Op::DropFunction { function } => Op::CreateFunction { function },
            Op::ReplaceFunction { from, to } => Op::ReplaceFunction { from: to, to: from },
            Op::CreateTrigger { table, name, trigger } => Op::DropTrigger { table, name, trigger },
            Op::DropTrigger { table, name, trigger } => Op::CreateTrigger { table, name, trigger },
            Op::SetRowSecurity { table, is_enabled } => Op::SetRowSecurity {
                table,
                is_enabled: !is_enabled,
            },
            Op::SetForceRowSecurity { table, is_forced } => Op::SetForceRowSecurity {
                table,
                is_forced: !is_forced,
            },
            Op::CreatePolicy { table, name, policy } => Op::DropPolicy { table, name, policy },
            Op::DropPolicy { table, name, policy } => Op::CreatePolicy { table, name, policy },
            Op::AlterPolicy { table, name, from, to } => Op::AlterPolicy {
                table,
                name,
                from: to,
                to: from,
            },
            Op::SetComment { target, from, to } => Op::SetComment {
                target,
                from: to,
                to: from,
            },
            Op::CreateRange { name, range } => Op::DropRange { name, range },
            Op::DropRange { name, range } => Op::CreateRange { name, range },
            Op::SetTableOptions { table, from, to } => Op::SetTableOptions {
                table,
                from: to,
                to: from,
            },
            Op::ChangePartitionKey { table, from, to } => Op::ChangePartitionKey {
                table,
                from: to,
                to: from,
            },
            Op::AttachPartition { table, partition } => Op::DetachPartition { table, partition },
            Op::DetachPartition { table, partition } => Op::AttachPartition { table, partition },
            Op::AlterColumnCollation {
                table,
                column,
                data_type,
                from,
                to,
            } => Op::AlterColumnCollation {
                table,
                column,
                data_type,
                from: to,
                to: from,
            },
            Op::AlterIdentityOptions {
                table,
                column,
                from,
                to,
            } => Op::AlterIdentityOptions {
                table,
                column,
                from: to,
                to: from,
            },
            Op::SetOwner { on, alter, from, to } => Op::SetOwner {
                on,
                alter,
                from: to,
                to: from,
            },
            Op::Grant {
                grant,
                is_grantable,
                is_revoke,
            } => Op::Grant {
                grant,
                is_grantable,
                is_revoke: !is_revoke,
            },
            Op::DefaultPrivilege {
                grant,
                is_grantable,
                is_revoke,
            } => Op::DefaultPrivilege {
                grant,
                is_grantable,
                is_revoke: !is_revoke,
            },
            Op::RenameTable { name, to } => Op::RenameTable {
                name: QName::new(name.schema, to),
                to: name.name,
            },
            Op::RenameColumn { table, from, to } => Op::RenameColumn {
                table,
                from: to,
                to: from,
            },
            Op::Custom(op) => op.reverse(),
        }
    }

    /// Whether the upgrade can lose data: dropping a table, column, sequence, type, domain, composite attribute,
    /// schema or extension, a narrowing type change (also of a domain's base type or of a composite attribute
    /// columns hold), or removing enum labels.
    pub fn is_destructive(&self) -> bool {
        match self {
            Op::DropSchema { .. }
            | Op::DropExtension { .. }
            | Op::DropEnum { .. }
            | Op::DropDomain { .. }
            | Op::DropComposite { .. }
            | Op::DropAttribute { .. }
            | Op::DropSequence { .. }
            | Op::DropRange { .. }
            | Op::DropTable { .. } => true,
            Op::RecreateDomain { from, to, .. } => !is_widening(&from.base_type, &to.base_type),
            Op::RecreateComposite { from, to, .. } => from.attributes.iter().any(|(a, t)| {
                !to.attributes
                    .iter()
                    .any(|(b, u)| a == b && (t == u || is_widening(t, u)))
            }),
            Op::DropColumn { column, .. } => column.generated.is_none(),
            Op::AlterColumnType { from, to, .. } => !is_widening(from, to),
            Op::RecreateEnum { from, to, .. } => from.iter().any(|v| !to.contains(v)),
            Op::Custom(op) => op.is_destructive(),
            _ => false,
        }
    }

    /// (verb, object): `("add", "column t.c")`. The verb is `add`, `drop` or `change`; drift reports turn
    /// them into `extra`, `missing` and `changed`.
    pub fn summary(&self) -> (&'static str, String) {
        match self {
            Op::CreateSchema { name } => ("add", format!("schema {name}")),
            Op::DropSchema { name } => ("drop", format!("schema {name}")),
            Op::CreateExtension { name, .. } => ("add", format!("extension {name}")),
            Op::DropExtension { name, .. } => ("drop", format!("extension {name}")),
            Op::CreateEnum { name, .. } => ("add", format!("type {name}")),
            Op::DropEnum { name, .. } => ("drop", format!("type {name}")),
            Op::AddEnumValue { name, value, .. } => ("add", format!("label '{value}' of type {name}")),
            Op::RecreateEnum { name, from, to, .. } => (
                "change",
                format!("labels of type {name} ({} to {})", from.join(", "), to.join(", ")),
            ),
            Op::CreateDomain { name, .. } => ("add", format!("domain {name}")),
            Op::DropDomain { name, .. } => ("drop", format!("domain {name}")),
            Op::RecreateDomain { name, from, to, .. } => (
                "change",
                format!("base type of domain {name} ({} to {})", from.base_type, to.base_type),
            ),
            Op::AlterDomainDefault { name, from, to } => (
                "change",
                format!(
                    "default of domain {name} ({} to {})",
                    from.as_deref().unwrap_or("none"),
                    to.as_deref().unwrap_or("none")
                ),
            ),
            Op::AlterDomainNull { name, is_not_null } => (
                "change",
                format!(
                    "nullability of domain {name} (to {})",
                    if *is_not_null { "NOT NULL" } else { "NULL" }
                ),
            ),
            Op::AddDomainConstraint { name, constraint, .. } => {
                ("add", format!("constraint {constraint} on domain {name}"))
            }
            Op::DropDomainConstraint { name, constraint, .. } => {
                ("drop", format!("constraint {constraint} on domain {name}"))
            }
            Op::CreateComposite { name, .. } => ("add", format!("type {name}")),
            Op::DropComposite { name, .. } => ("drop", format!("type {name}")),
            Op::AddAttribute { name, attribute } => ("add", format!("attribute {} of type {name}", attribute.0)),
            Op::DropAttribute { name, attribute } => ("drop", format!("attribute {} of type {name}", attribute.0)),
            Op::AlterAttributeType {
                name,
                attribute,
                from,
                to,
            } => (
                "change",
                format!("type of attribute {attribute} of type {name} ({from} to {to})"),
            ),
            Op::RecreateComposite { name, .. } => ("change", format!("attributes of type {name}")),
            Op::CreateSequence { name, .. } => ("add", format!("sequence {name}")),
            Op::DropSequence { name, .. } => ("drop", format!("sequence {name}")),
            Op::AlterSequence { name, .. } => ("change", format!("sequence {name}")),
            Op::SetSequenceOwner { name, .. } => ("change", format!("owner of sequence {name}")),
            Op::CreateTable { name, .. } => ("add", format!("table {name}")),
            Op::DropTable { name, .. } => ("drop", format!("table {name}")),
            Op::AddColumn { table, column } => ("add", format!("column {table}.{}", column.name)),
            Op::DropColumn { table, column } => ("drop", format!("column {table}.{}", column.name)),
            Op::AlterColumnType {
                table,
                column,
                from,
                to,
            } => ("change", format!("type of column {table}.{column} ({from} to {to})")),
            Op::AlterColumnNull {
                table,
                column,
                is_not_null,
            } => (
                "change",
                format!(
                    "nullability of column {table}.{column} (to {})",
                    if *is_not_null { "NOT NULL" } else { "NULL" }
                ),
            ),
            Op::AlterColumnDefault {
                table,
                column,
                from,
                to,
            } => (
                "change",
                format!(
                    "default of column {table}.{column} ({} to {})",
                    from.as_deref().unwrap_or("none"),
                    to.as_deref().unwrap_or("none")
                ),
            ),
            Op::AlterColumnIdentity { table, column, .. } => ("change", format!("identity of column {table}.{column}")),
            Op::AddConstraint { table, name, .. } => ("add", format!("constraint {name} on {table}")),
            Op::DropConstraint { table, name, .. } => ("drop", format!("constraint {name} on {table}")),
            Op::CreateIndex { name, index, .. } => ("add", format!("index {name} on {}", index.table)),
            Op::DropIndex { name, index, .. } => ("drop", format!("index {name} on {}", index.table)),
            Op::CreateView { name, view } => ("add", format!("{} {name}", view_word(view))),
            Op::DropView { name, view } => ("drop", format!("{} {name}", view_word(view))),
            Op::CreateFunction { function } => {
                ("add", format!("function {}({})", function.name, function.identity_args))
            }
            Op::DropFunction { function } => (
                "drop",
                format!("function {}({})", function.name, function.identity_args),
            ),
            Op::ReplaceFunction { to, .. } => ("change", format!("function {}({})", to.name, to.identity_args)),
            Op::CreateTrigger { table, name, .. } => ("add", format!("trigger {name} on {table}")),
            Op::DropTrigger { table, name, .. } => ("drop", format!("trigger {name} on {table}")),
            Op::SetRowSecurity { table, is_enabled } => (
                "change",
                format!(
                    "row level security on {table} (to {})",
                    if *is_enabled { "enabled" } else { "disabled" }
                ),
            ),
            Op::SetForceRowSecurity { table, is_forced } => (
                "change",
                format!(
                    "forced row level security on {table} (to {})",
                    if *is_forced { "forced" } else { "not forced" }
                ),
            ),
            Op::CreatePolicy { table, name, .. } => ("add", format!("policy {name} on {table}")),
            Op::DropPolicy { table, name, .. } => ("drop", format!("policy {name} on {table}")),
            Op::AlterPolicy { table, name, .. } => ("change", format!("policy {name} on {table}")),
            Op::SetComment { target, .. } => (
                "change",
                format!("comment on {} {}", target.kind.to_lowercase(), target.name),
            ),
            Op::CreateRange { name, .. } => ("add", format!("range type {name}")),
            Op::DropRange { name, .. } => ("drop", format!("range type {name}")),
            Op::SetTableOptions { table, from, to } => (
                "change",
                format!("storage parameters of {table} ({} to {})", list(from), list(to)),
            ),
            Op::ChangePartitionKey { table, from, to } => (
                "change",
                format!(
                    "partition key of {table} ({} to {})",
                    from.as_deref().unwrap_or("none"),
                    to.as_deref().unwrap_or("none")
                ),
            ),
            Op::AttachPartition { table, partition } => (
                "add",
                format!("partition {table} of {} ({})", partition.parent, partition.bound),
            ),
            Op::DetachPartition { table, partition } => (
                "drop",
                format!("partition {table} of {} ({})", partition.parent, partition.bound),
            ),
            Op::AlterColumnCollation {
                table,
                column,
                from,
                to,
                ..
            } => (
                "change",
                format!(
                    "collation of column {table}.{column} ({} to {})",
                    from.as_deref().unwrap_or("default"),
                    to.as_deref().unwrap_or("default")
                ),
            ),
            Op::AlterIdentityOptions { table, column, .. } => {
                ("change", format!("identity options of column {table}.{column}"))
            }
            Op::SetOwner { on, from, to, .. } => (
                "change",
                format!(
                    "owner of {} ({} to {})",
                    on.to_lowercase_kind(),
                    from.as_deref().unwrap_or("the current user"),
                    to.as_deref().unwrap_or("the current user")
                ),
            ),
            Op::Grant { grant, is_revoke, .. } => (
                if *is_revoke { "drop" } else { "add" },
                format!(
                    "privilege {} on {} to {}",
                    grant.privilege,
                    grant.on.to_lowercase_kind(),
                    grant.grantee
                ),
            ),
            Op::DefaultPrivilege { grant, is_revoke, .. } => (
                if *is_revoke { "drop" } else { "add" },
                format!(
                    "default {}privilege {} on {} created by {}{} to {}",
                    if grant.is_revoked { "revoke of " } else { "" },
                    grant.privilege,
                    grant.objects.to_lowercase(),
                    grant.role,
                    grant
                        .schema
                        .as_ref()
                        .map(|s| format!(" in schema {s}"))
                        .unwrap_or_default(),
                    grant.grantee
                ),
            ),
            Op::RenameTable { name, to } => ("change", format!("name of table {name} (to {to})")),
            Op::RenameColumn { table, from, to } => ("change", format!("name of column {table}.{from} (to {to})")),
            Op::Custom(op) => ("change", op.summary()),
        }
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// `TABLE t` as `table t`: the kind word lower case, the name as it is.
trait LowerKind {
    fn to_lowercase_kind(&self) -> String;
}

impl LowerKind for String {
    fn to_lowercase_kind(&self) -> String {
        match self.split_once(' ') {
            Some((kind, name)) => format!("{} {name}", kind.to_lowercase()),
            None => self.clone(),
        }
    }
}

fn view_word(view: &View) -> &'static str {
    if view.is_materialized {
        "materialized view"
    } else {
        "view"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_and_casts() {
        assert!(is_widening("integer", "bigint"));
        assert!(!is_widening("bigint", "integer"));
        assert!(is_widening("character varying(10)", "character varying(20)"));
        assert!(!is_widening("character varying(20)", "character varying(10)"));
        assert!(is_widening("character varying(20)", "text"));
        assert!(!needs_cast("character varying(20)", "text"));
        assert!(!needs_cast("integer", "bigint"));
        assert!(needs_cast("text", "integer"));
    }
}
