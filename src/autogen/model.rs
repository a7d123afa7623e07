//! The introspected schema: plain values, compared by equality. Every name is already quoted the way
//! PostgreSQL's `quote_ident` quotes it, and the introspected "home" schema (`public`, or a schema tenant's own
//! schema) is always called `public`, so two catalogs compare whatever schema they were read from.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A schema-qualified name; both parts quoted as needed. Displays without the schema when it is `public`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct QName {
    pub schema: String,
    pub name: String,
}

impl QName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> QName {
        QName {
            schema: schema.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for QName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.schema == "public" {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}.{}", self.schema, self.name)
        }
    }
}

/// Everything autogenerate compares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Schemas other than `public`, with their comments.
    pub schemas: BTreeMap<String, Option<String>>,
    pub extensions: BTreeMap<String, Extension>,
    pub enums: BTreeMap<QName, Enum>,
    pub sequences: BTreeMap<QName, Sequence>,
    pub tables: BTreeMap<QName, Table>,
    /// Indexes that do not back a constraint, by index name.
    pub indexes: BTreeMap<QName, Index>,
    pub views: BTreeMap<QName, View>,
    /// Functions and procedures, by `name(identity arguments)`.
    pub functions: BTreeMap<String, Function>,
    /// Triggers by (table, trigger name).
    pub triggers: BTreeMap<(QName, String), Trigger>,
    /// Comments on types, domains, indexes, views, functions and sequences, by their `COMMENT ON` (kind, target).
    pub comments: BTreeMap<(String, String), String>,
    pub domains: BTreeMap<QName, Domain>,
    /// Composite types (`CREATE TYPE name AS (...)`), not the row types of tables.
    pub composites: BTreeMap<QName, Composite>,
    /// Row-level security policies by (table, policy name).
    pub policies: BTreeMap<(QName, String), Policy>,
    pub ranges: BTreeMap<QName, Range>,
    /// (dependant, referenced) links between the objects above, read from `pg_depend` (views through their
    /// `pg_rewrite` rule). Only used to find what must be dropped and created around a recreated type or a
    /// retyped column; never a difference of its own.
    pub depends: BTreeSet<(DepKey, DepKey)>,
    /// Privileges on tables, views, sequences, functions, schemas (other than the home schema) and types, less
    /// the owner's own: by grant, whether `WITH GRANT OPTION`.
    pub grants: BTreeMap<Grant, bool>,
    /// `ALTER DEFAULT PRIVILEGES` entries, less the owner's own; entries without a schema as their difference
    /// from PostgreSQL's built-in defaults (grants beyond them, and revoked ones): by grant, whether
    /// `WITH GRANT OPTION`.
    pub default_privileges: BTreeMap<DefaultGrant, bool>,
    /// Owners other than the role reading the catalog (the one that ran the revisions), by object as `GRANT ... ON`
    /// names it (`TABLE v` for a view too): the `ALTER` word for the object (`VIEW`, `DOMAIN`, ...) and the role.
    pub owners: BTreeMap<String, (String, String)>,
}

/// One privilege on one object for one role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grant {
    /// The object as `GRANT ... ON` names it: `TABLE t`, `SEQUENCE s`, `FUNCTION f(integer)`, `SCHEMA s`, `TYPE t`.
    pub on: String,
    /// The role, quoted as needed, or `PUBLIC`.
    pub grantee: String,
    /// `SELECT`, `INSERT`, `USAGE`, `EXECUTE`, ...
    pub privilege: String,
}

/// One default privilege: what `role` creates (in `schema`, or anywhere) grants `privilege` to `grantee`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DefaultGrant {
    pub role: String,
    pub schema: Option<String>,
    /// `TABLES`, `SEQUENCES`, `FUNCTIONS`, `TYPES` or `SCHEMAS`.
    pub objects: String,
    pub grantee: String,
    pub privilege: String,
    /// A PostgreSQL default revoked (`ALTER DEFAULT PRIVILEGES ... REVOKE`, entries without a schema only).
    pub is_revoked: bool,
}

/// An object a dependency link names. Columns and types are what gets changed; the other kinds are what
/// depends on them and is dropped before and created after.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DepKey {
    /// An enum, domain or composite type (an array type stands for its element type).
    Type(QName),
    Column(QName, String),
    /// A column's default, or a generated column's expression.
    Default(QName, String),
    /// A table's CHECK constraint.
    Constraint(QName, String),
    /// An index that does not back a constraint.
    Index(QName),
    /// A view or materialized view.
    View(QName),
    /// A function or procedure by `name(identity arguments)`, as [`Catalog::functions`] keys it.
    Function(String),
    Trigger(QName, String),
    Policy(QName, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub schema: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    pub data_type: String,
    pub start: i64,
    pub increment: i64,
    pub min: i64,
    pub max: i64,
    pub cache: i64,
    pub is_cycle: bool,
    /// The column owning the sequence (`serial` columns and `OWNED BY`).
    pub owned_by: Option<(QName, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// Columns in their table order; compared by name (the order is not part of a difference). Empty for a
    /// partition, whose columns are its parent's.
    pub columns: Vec<Column>,
    /// Primary key, unique, check, exclusion and foreign-key constraints, by name.
    pub constraints: BTreeMap<String, Constraint>,
    pub comment: Option<String>,
    /// `ENABLE ROW LEVEL SECURITY`.
    pub is_rls_enabled: bool,
    /// `FORCE ROW LEVEL SECURITY` (policies apply to the table's owner too).
    pub is_rls_forced: bool,
    /// `pg_get_partkeydef` of a partitioned table, for example `RANGE (created_at)`.
    pub partition_key: Option<String>,
    /// The table this one is a partition of, and its bound.
    pub partition_of: Option<Partition>,
    /// Storage parameters (`fillfactor=70`, `autovacuum_enabled=false`), sorted.
    pub options: Vec<String>,
}

/// Where a partition belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub parent: QName,
    /// `pg_get_expr` of the bound: `FOR VALUES FROM (...) TO (...)`, `FOR VALUES IN (...)`, `DEFAULT`.
    pub bound: String,
    /// How many tables up the root is (1 for a partition of a root), so parents are created first.
    pub level: i32,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `format_type` text, for example `character varying(20)` or `integer[]`.
    pub data_type: String,
    pub is_not_null: bool,
    /// The default expression (not for generated columns).
    pub default: Option<String>,
    /// `a` (ALWAYS) or `d` (BY DEFAULT) for identity columns.
    pub identity: Option<char>,
    /// The expression of a `GENERATED ALWAYS AS (...) STORED` column.
    pub generated: Option<String>,
    pub comment: Option<String>,
    /// `COLLATE` name when it is not the type's default collation.
    pub collation: Option<String>,
    /// The options of an identity column's sequence.
    pub identity_options: Option<IdentityOptions>,
}

/// An identity column's sequence options (its type follows the column's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityOptions {
    pub start: i64,
    pub increment: i64,
    pub min: i64,
    pub max: i64,
    pub cache: i64,
    pub is_cycle: bool,
}

/// A range type (`CREATE TYPE ... AS RANGE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// `format_type` of the subtype.
    pub subtype: String,
    /// `SUBTYPE_DIFF` function, when there is one.
    pub subtype_diff: Option<String>,
    /// `COLLATION`, when not the subtype's default.
    pub collation: Option<String>,
    /// Creation order (the catalog oid order).
    pub order: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// `p`, `u`, `c`, `x` or `f`.
    pub kind: char,
    /// `pg_get_constraintdef` text.
    pub definition: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub table: QName,
    /// `pg_get_indexdef` text, home schema left out.
    pub definition: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub is_materialized: bool,
    pub definition: String,
    /// Creation order (the catalog oid order), so views built on views are created after them.
    pub order: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub name: QName,
    pub identity_args: String,
    pub is_procedure: bool,
    /// `pg_get_functiondef` text (a `CREATE OR REPLACE` statement).
    pub definition: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// `pg_get_triggerdef` text.
    pub definition: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enum {
    /// The labels in sort order.
    pub labels: Vec<String>,
    /// Creation order (the catalog oid order), so a domain or composite type built on it is dropped before it.
    pub order: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// `format_type` text of the base type, for example `numeric(10,2)`.
    pub base_type: String,
    pub default: Option<String>,
    pub is_not_null: bool,
    /// CHECK constraints by name: `pg_get_constraintdef` text, for example `CHECK ((VALUE > 0))`.
    pub checks: BTreeMap<String, String>,
    /// Creation order (the catalog oid order), so a domain over another type is created after it.
    pub order: i64,
}

impl Domain {
    /// Equal but for the creation order.
    pub fn same(&self, other: &Domain) -> bool {
        Domain {
            order: other.order,
            ..self.clone()
        } == *other
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composite {
    /// (name, `format_type` text) in attribute order; the order is part of the type.
    pub attributes: Vec<(String, String)>,
    /// Creation order (the catalog oid order), so a type built on another type is created after it.
    pub order: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `AS PERMISSIVE` (otherwise `AS RESTRICTIVE`).
    pub is_permissive: bool,
    /// `ALL`, `SELECT`, `INSERT`, `UPDATE` or `DELETE`.
    pub command: String,
    /// Role names quoted as needed, sorted; `PUBLIC` for everyone.
    pub roles: Vec<String>,
    /// The `USING` expression.
    pub using: Option<String>,
    /// The `WITH CHECK` expression.
    pub with_check: Option<String>,
}
