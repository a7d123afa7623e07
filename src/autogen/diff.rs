//! Comparing two catalogs into an ordered list of operations (pure: no IO).
//!
//! Operations come out in dependency order, in two halves. First everything that goes away, dependents first
//! (comments, triggers, policies, row-level security, views, foreign keys, indexes, constraints, columns,
//! tables, sequences, functions, types and domains, extensions, schemas); then everything that appears,
//! dependencies first (schemas, extensions, types and domains, sequences, functions, tables, columns, column
//! changes, the types kept columns, attributes or domains stopped using and the schemas holding them,
//! constraints, foreign keys, indexes, views, triggers, row-level security, policies, comments). The downgrade
//! is the same list reversed, each operation reversed, so it is ordered too.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{Catalog, Column, Composite, DepKey, Domain, Grant, Policy, QName, Table};
use super::ops::{CommentTarget, Comparator, DomainUsage, EnumUsage, Op};

#[derive(Default)]
struct Buckets {
    revokes: Vec<Op>,
    drop_comments: Vec<Op>,
    drop_triggers: Vec<Op>,
    drop_policies: Vec<Op>,
    disable_rls: Vec<Op>,
    drop_view_indexes: Vec<Op>,
    drop_views: Vec<Op>,
    drop_fks: Vec<Op>,
    drop_indexes: Vec<Op>,
    drop_constraints: Vec<Op>,
    drop_defaults: Vec<Op>,
    drop_columns: Vec<Op>,
    disown_sequences: Vec<Op>,
    detach_partitions: Vec<Op>,
    drop_partitions: Vec<Op>,
    drop_tables: Vec<Op>,
    drop_sequences: Vec<Op>,
    drop_functions: Vec<Op>,
    drop_types: Vec<Op>,
    drop_extensions: Vec<Op>,
    drop_schemas: Vec<Op>,
    create_schemas: Vec<Op>,
    create_extensions: Vec<Op>,
    create_types: Vec<Op>,
    create_sequences: Vec<Op>,
    create_functions: Vec<Op>,
    create_tables: Vec<Op>,
    create_partitions: Vec<Op>,
    add_columns: Vec<Op>,
    alter_columns: Vec<Op>,
    drop_types_late: Vec<Op>,
    drop_schemas_late: Vec<Op>,
    readd_columns: Vec<Op>,
    attach_partitions: Vec<Op>,
    set_defaults: Vec<Op>,
    own_sequences: Vec<Op>,
    add_constraints: Vec<Op>,
    add_fks: Vec<Op>,
    create_indexes: Vec<Op>,
    create_views: Vec<Op>,
    create_view_indexes: Vec<Op>,
    create_triggers: Vec<Op>,
    enable_rls: Vec<Op>,
    create_policies: Vec<Op>,
    grants: Vec<Op>,
    set_comments: Vec<Op>,
    custom: Vec<Op>,
    /// Comments of recreated types, already handled: dropped from the old type and set on the new one.
    recreated_comments: BTreeSet<(String, String)>,
    /// Objects dropped and created again because something they depend on is recreated or retyped.
    forced: Forced,
    /// Domains recreated together with the enum type they are over.
    enum_domains: BTreeSet<QName>,
}

impl Buckets {
    fn into_ops(self) -> Vec<Op> {
        [
            self.revokes,
            self.drop_comments,
            self.drop_triggers,
            self.drop_policies,
            self.disable_rls,
            self.drop_view_indexes,
            self.drop_views,
            self.drop_fks,
            self.drop_indexes,
            self.drop_constraints,
            self.drop_defaults,
            self.drop_columns,
            self.disown_sequences,
            self.detach_partitions,
            self.drop_partitions,
            self.drop_tables,
            self.drop_sequences,
            self.drop_functions,
            self.drop_types,
            self.drop_extensions,
            self.drop_schemas,
            self.create_schemas,
            self.create_extensions,
            self.create_types,
            self.create_sequences,
            self.create_functions,
            self.create_tables,
            self.create_partitions,
            self.add_columns,
            self.alter_columns,
            self.drop_types_late,
            self.drop_schemas_late,
            self.readd_columns,
            self.attach_partitions,
            self.set_defaults,
            self.own_sequences,
            self.add_constraints,
            self.add_fks,
            self.create_indexes,
            self.create_views,
            self.create_view_indexes,
            self.create_triggers,
            self.enable_rls,
            self.create_policies,
            self.grants,
            self.set_comments,
            self.custom,
        ]
        .concat()
    }

    /// A recreated type loses its comment: drop it before and set it after, so the downgrade restores it too.
    fn recreated(&mut self, from: &Catalog, to: &Catalog, kind: &str, name: &QName) {
        let key = (kind.to_string(), name.to_string());
        self.comment(kind, key.1.clone(), from.comments.get(&key), None);
        self.comment(kind, key.1.clone(), None, to.comments.get(&key));
        self.recreated_comments.insert(key);
    }

    fn comment(&mut self, kind: &str, name: String, from: Option<&String>, to: Option<&String>) {
        if from == to {
            return;
        }
        let op = Op::SetComment {
            target: CommentTarget {
                kind: kind.into(),
                name,
            },
            from: from.cloned(),
            to: to.cloned(),
        };
        if to.is_none() {
            self.drop_comments.push(op);
        } else {
            self.set_comments.push(op);
        }
    }
}

/// The objects a revision drops and creates again although they did not change themselves, because something
/// they depend on changes under them: a recreated enum, domain or composite type (an enum whose labels change
/// at all, since the downgrade of added labels recreates it), a column whose type changes, a generated column
/// that is dropped and added, a view that is recreated. The links come from both catalogs' `pg_depend`, so the
/// upgrade drops what the old schema holds and the downgrade what the new one holds; dependants of dependants
/// (a view on a view, a trigger on a function taking the type) follow.
#[derive(Default)]
struct Forced {
    keys: BTreeSet<DepKey>,
}

impl Forced {
    fn new(from: &Catalog, to: &Catalog) -> Forced {
        let mut roots: Vec<DepKey> = Vec::new();
        for (name, e) in &from.enums {
            if to.enums.get(name).is_some_and(|n| n.labels != e.labels) {
                roots.push(DepKey::Type(name.clone()));
            }
        }
        for (name, d) in &from.domains {
            if to.domains.get(name).is_some_and(|n| n.base_type != d.base_type) {
                roots.push(DepKey::Type(name.clone()));
            }
        }
        for (name, c) in &from.composites {
            if to.composites.get(name).is_some_and(|n| n.attributes != c.attributes) {
                roots.push(DepKey::Type(name.clone()));
            }
        }
        for (name, table) in &from.tables {
            let Some(new) = to.tables.get(name) else { continue };
            for column in &table.columns {
                if let Some(n) = new.column(&column.name) {
                    if n.data_type != column.data_type
                        || n.generated != column.generated
                        || n.collation != column.collation
                    {
                        roots.push(DepKey::Column(name.clone(), column.name.clone()));
                    }
                }
            }
        }
        // A primary key or unique constraint that goes away or changes takes the foreign keys using it along.
        for (name, table) in &from.tables {
            let Some(new) = to.tables.get(name) else { continue };
            for (cname, c) in &table.constraints {
                if matches!(c.kind, 'p' | 'u' | 'x') && new.constraints.get(cname) != Some(c) {
                    roots.push(DepKey::Constraint(name.clone(), cname.clone()));
                }
            }
        }
        for (name, view) in &from.views {
            if to
                .views
                .get(name)
                .is_some_and(|n| n.definition != view.definition || n.is_materialized != view.is_materialized)
            {
                roots.push(DepKey::View(name.clone()));
            }
        }
        let mut dependants: BTreeMap<&DepKey, Vec<&DepKey>> = BTreeMap::new();
        for (dependant, referenced) in from.depends.iter().chain(&to.depends) {
            dependants.entry(referenced).or_default().push(dependant);
        }
        let is_generated = |table: &QName, column: &str| {
            [from, to].iter().any(|c| {
                c.tables
                    .get(table)
                    .and_then(|t| t.column(column))
                    .is_some_and(|c| c.generated.is_some())
            })
        };
        let mut keys: BTreeSet<DepKey> = roots.iter().cloned().collect();
        while let Some(key) = roots.pop() {
            let mut next: Vec<DepKey> = dependants
                .get(&key)
                .into_iter()
                .flatten()
                .map(|k| (*k).clone())
                .collect();
            // A generated column is dropped and added again with its expression: what depends on the column follows.
            if let DepKey::Default(table, column) = &key {
                if is_generated(table, column) {
                    next.push(DepKey::Column(table.clone(), column.clone()));
                }
            }
            for k in next {
                if keys.insert(k.clone()) {
                    roots.push(k);
                }
            }
        }
        Forced { keys }
    }

    fn contains(&self, key: &DepKey) -> bool {
        self.keys.contains(key)
    }

    /// Whether a column's default (not a generated expression) is dropped before and set after: it depends on
    /// a changed object, and the column itself does not change type (its own conversion handles its default).
    fn is_default(&self, table: &QName, column: &str) -> bool {
        self.contains(&DepKey::Default(table.clone(), column.to_string()))
            && !self.contains(&DepKey::Column(table.clone(), column.to_string()))
    }

    /// Whether a generated column is dropped and added again.
    fn is_generated(&self, table: &QName, column: &str) -> bool {
        self.contains(&DepKey::Default(table.clone(), column.to_string()))
    }
}

/// The operations that turn `from` into `to`.
pub fn diff(from: &Catalog, to: &Catalog) -> Vec<Op> {
    diff_with(from, to, &[])
}

/// As [`diff`], with the operations of user comparators appended.
pub fn diff_with(from: &Catalog, to: &Catalog, comparators: &[Box<dyn Comparator>]) -> Vec<Op> {
    let mut b = Buckets {
        forced: Forced::new(from, to),
        ..Buckets::default()
    };
    schemas(from, to, &mut b);
    types(from, to, &mut b);
    sequences(from, to, &mut b);
    functions(from, to, &mut b);
    tables(from, to, &mut b);
    indexes(from, to, &mut b);
    views(from, to, &mut b);
    triggers(from, to, &mut b);
    policies(from, to, &mut b);
    grants(from, to, &mut b);
    let keys: BTreeSet<&(String, String)> = from.comments.keys().chain(to.comments.keys()).collect();
    for key in keys {
        if b.recreated_comments.contains(key) {
            continue;
        }
        b.comment(&key.0, key.1.clone(), from.comments.get(key), to.comments.get(key));
    }
    for comparator in comparators {
        b.custom.extend(comparator.compare(from, to));
    }
    b.into_ops()
}

fn schemas(from: &Catalog, to: &Catalog, b: &mut Buckets) {
    for (name, comment) in &from.schemas {
        match to.schemas.get(name) {
            None => {
                b.comment("SCHEMA", name.clone(), comment.as_ref(), None);
                b.drop_schemas.push(Op::DropSchema { name: name.clone() });
            }
            Some(new) => b.comment("SCHEMA", name.clone(), comment.as_ref(), new.as_ref()),
        }
    }
    for (name, comment) in &to.schemas {
        if !from.schemas.contains_key(name) {
            b.create_schemas.push(Op::CreateSchema { name: name.clone() });
            b.comment("SCHEMA", name.clone(), None, comment.as_ref());
        }
    }
    for (name, ext) in &from.extensions {
        match to.extensions.get(name) {
            Some(new) if new == ext => {}
            other => {
                b.drop_extensions.push(Op::DropExtension {
                    name: name.clone(),
                    schema: ext.schema.clone(),
                });
                if let Some(new) = other {
                    b.create_extensions.push(Op::CreateExtension {
                        name: name.clone(),
                        schema: new.schema.clone(),
                    });
                }
            }
        }
    }
    for (name, ext) in &to.extensions {
        if !from.extensions.contains_key(name) {
            b.create_extensions.push(Op::CreateExtension {
                name: name.clone(),
                schema: ext.schema.clone(),
            });
        }
    }
}

/// Columns of `catalog` whose type is `name` (and arrays of it, with `with_arrays`).
fn type_usages(catalog: &Catalog, name: &QName, with_arrays: bool) -> Vec<EnumUsage> {
    let type_text = name.to_string();
    let mut out = Vec::new();
    for (table_name, table) in &catalog.tables {
        for column in &table.columns {
            let is_array = column.data_type.strip_suffix("[]") == Some(type_text.as_str());
            if column.data_type == type_text || (with_arrays && is_array) {
                out.push(EnumUsage {
                    table: table_name.clone(),
                    column: column.name.clone(),
                    default: column.default.clone(),
                    is_array,
                });
            }
        }
    }
    out
}

/// Columns of `catalog` whose type is `name`.
fn enum_usages(catalog: &Catalog, name: &QName) -> Vec<EnumUsage> {
    type_usages(catalog, name, false)
}

fn types(from: &Catalog, to: &Catalog, b: &mut Buckets) {
    // Domains and composite types may be built on enums: they are dropped first and created last.
    dropped_types(from, to, b);
    enums(from, to, b);
    domains_and_composites(from, to, b);
}

/// Columns of `from` whose type is `name` and that still have that type in `to` (the ones a recreated type
/// must convert).
fn kept_usages(from: &Catalog, to: &Catalog, name: &QName) -> Vec<EnumUsage> {
    let type_text = name.to_string();
    enum_usages(from, name)
        .into_iter()
        .filter(|u| {
            to.tables
                .get(&u.table)
                .and_then(|t| t.column(&u.column))
                .is_some_and(|c| c.data_type == type_text)
        })
        .collect()
}

/// Whether a column of `from` of type `name` or an array of it survives in `to` (with another type), or a kept
/// composite type has an attribute of that type, or a kept domain is over it: the type can only be dropped after
/// the column, attribute or domain changed.
fn is_used_by_kept_column(from: &Catalog, to: &Catalog, name: &QName) -> bool {
    let type_text = name.to_string();
    let uses = |t: &str| t == type_text || t.strip_suffix("[]") == Some(type_text.as_str());
    from.tables.iter().any(|(table_name, table)| {
        let kept = to.tables.get(table_name);
        table
            .columns
            .iter()
            .any(|c| uses(&c.data_type) && kept.is_some_and(|t| t.column(&c.name).is_some()))
    }) || from
        .composites
        .iter()
        .any(|(composite, c)| to.composites.contains_key(composite) && c.attributes.iter().any(|(_, t)| uses(t)))
        || from
            .domains
            .iter()
            .any(|(domain, d)| to.domains.contains_key(domain) && uses(&d.base_type))
}

/// Drops enums, domains and composite types, late (after column changes) when something kept still uses them.
fn dropped_types(from: &Catalog, to: &Catalog, b: &mut Buckets) {
    let mut dropped: Vec<(i64, &QName, Op)> = Vec::new();
    for (name, domain) in &from.domains {
        if !to.domains.contains_key(name) {
            let op = Op::DropDomain {
                name: name.clone(),
                domain: split_domain(from, b, name, domain, false),
            };
            dropped.push((domain.order, name, op));
        }
    }
    for (name, composite) in &from.composites {
        if !to.composites.contains_key(name) {
            let op = Op::DropComposite {
                name: name.clone(),
                composite: composite.clone(),
            };
            dropped.push((composite.order, name, op));
        }
    }
    for (name, e) in &from.enums {
        if !to.enums.contains_key(name) {
            let op = Op::DropEnum {
                name: name.clone(),
                values: e.labels.clone(),
            };
            dropped.push((e.order, name, op));
        }
    }
    for (name, range) in &from.ranges {
        if to.ranges.get(name).is_none_or(|r| {
            r.subtype != range.subtype || r.subtype_diff != range.subtype_diff || r.collation != range.collation
        }) {
            let op = Op::DropRange {
                name: name.clone(),
                range: range.clone(),
            };
            dropped.push((range.order, name, op));
        }
    }
    // Types built on other types are dropped first (enums, built on nothing, last among equals); once one waits
    // for columns, the older ones (which it may be built on) wait too.
    dropped.sort_by_key(|(order, _, _)| std::cmp::Reverse(*order));
    let mut is_late = false;
    let mut late_schemas = BTreeSet::new();
    for (_, name, op) in dropped {
        is_late = is_late || is_used_by_kept_column(from, to, name);
        if is_late {
            late_schemas.insert(name.schema.clone());
            b.drop_types_late.push(op);
        } else {
            b.drop_types.push(op);
        }
    }
    // A dropped schema holding a type dropped late goes after it.
    let (late, early) = std::mem::take(&mut b.drop_schemas)
        .into_iter()
        .partition(|op| matches!(op, Op::DropSchema { name } if late_schemas.contains(name)));
    b.drop_schemas = early;
    b.drop_schemas_late = late;
}

/// Whether an expression names a function or sequence of `catalog` (which the revision may create after types).
fn refers_to_routines(catalog: &Catalog, expr: &str) -> bool {
    catalog
        .functions
        .values()
        .any(|f| expr.contains(&format!("{}(", f.name)))
        || catalog.sequences.keys().any(|s| expr.contains(&format!("'{s}'")))
}

/// The domain without the default and CHECK constraints that call functions or sequences of `catalog`: those
/// become operations of their own, after functions and sequences are created (`is_created`) or before they are
/// dropped.
fn split_domain(catalog: &Catalog, b: &mut Buckets, name: &QName, domain: &Domain, is_created: bool) -> Domain {
    let mut plain = domain.clone();
    let mut ops = Vec::new();
    if domain
        .default
        .as_deref()
        .is_some_and(|d| refers_to_routines(catalog, d))
    {
        plain.default = None;
        ops.push(Op::AlterDomainDefault {
            name: name.clone(),
            from: None,
            to: domain.default.clone(),
        });
    }
    for (constraint, definition) in &domain.checks {
        if refers_to_routines(catalog, definition) {
            plain.checks.remove(constraint);
            ops.push(Op::AddDomainConstraint {
                name: name.clone(),
                constraint: constraint.clone(),
                definition: definition.clone(),
            });
        }
    }
    for op in ops {
        if is_created {
            b.add_constraints.push(op);
        } else {
            b.drop_constraints.push(op.reverse());
        }
    }
    plain
}

fn domains_and_composites(from: &Catalog, to: &Catalog, b: &mut Buckets) {
    // New types first, so a changed domain or composite type may use them.
    let mut created: Vec<(i64, Op)> = Vec::new();
    for (name, domain) in &to.domains {
        if !from.domains.contains_key(name) {
            let op = Op::CreateDomain {
                name: name.clone(),
                domain: split_domain(to, b, name, domain, true),
            };
            created.push((domain.order, op));
        }
    }
    for (name, composite) in &to.composites {
        if !from.composites.contains_key(name) {
            let op = Op::CreateComposite {
                name: name.clone(),
                composite: composite.clone(),
            };
            created.push((composite.order, op));
        }
    }
    for (name, range) in &to.ranges {
        if from.ranges.get(name).is_none_or(|r| {
            r.subtype != range.subtype || r.subtype_diff != range.subtype_diff || r.collation != range.collation
        }) {
            created.push((
                range.order,
                Op::CreateRange {
                    name: name.clone(),
                    range: range.clone(),
                },
            ));
        }
    }
    created.sort_by_key(|(order, _)| *order);
    b.create_types.extend(created.into_iter().map(|(_, op)| op));
    for (name, domain) in &to.domains {
        if let Some(old) = from.domains.get(name) {
            domain_ops(from, to, b, name, old, domain);
        }
    }
    for (name, composite) in &to.composites {
        if let Some(old) = from.composites.get(name) {
            composite_ops(from, to, b, name, old, composite);
        }
    }
}

fn domain_ops(from: &Catalog, to: &Catalog, b: &mut Buckets, name: &QName, old: &Domain, new: &Domain) {
    if b.enum_domains.contains(name) {
        // Recreated from its old to its new definition with the enum type it is over.
        b.recreated(from, to, "DOMAIN", name);
        return;
    }
    if old.same(new) {
        return;
    }
    if old.base_type != new.base_type {
        // PostgreSQL has no ALTER DOMAIN ... TYPE.
        b.create_types.push(Op::RecreateDomain {
            name: name.clone(),
            from: old.clone(),
            to: new.clone(),
            usages: kept_usages(from, to, name),
        });
        b.recreated(from, to, "DOMAIN", name);
        return;
    }
    // Changes go after functions and sequences (a default or check may call them), drops before them.
    if old.default != new.default {
        b.add_constraints.push(Op::AlterDomainDefault {
            name: name.clone(),
            from: old.default.clone(),
            to: new.default.clone(),
        });
    }
    if old.is_not_null != new.is_not_null {
        b.add_constraints.push(Op::AlterDomainNull {
            name: name.clone(),
            is_not_null: new.is_not_null,
        });
    }
    for (constraint, definition) in &old.checks {
        if new.checks.get(constraint) != Some(definition) {
            b.drop_constraints.push(Op::DropDomainConstraint {
                name: name.clone(),
                constraint: constraint.clone(),
                definition: definition.clone(),
            });
        }
    }
    for (constraint, definition) in &new.checks {
        if old.checks.get(constraint) != Some(definition) {
            b.add_constraints.push(Op::AddDomainConstraint {
                name: name.clone(),
                constraint: constraint.clone(),
                definition: definition.clone(),
            });
        }
    }
}

fn composite_ops(from: &Catalog, to: &Catalog, b: &mut Buckets, name: &QName, old: &Composite, new: &Composite) {
    if old.attributes == new.attributes {
        return;
    }
    let names = |c: &Composite| c.attributes.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>();
    let (old_names, new_names) = (names(old), names(new));
    let common: Vec<&String> = old_names.iter().filter(|a| new_names.contains(a)).collect();
    let k = common.len();
    // ADD ATTRIBUTE appends, so the attributes both sides keep must lead both lists in the same order; then the
    // reverse (dropping the added ones, adding back the dropped ones) restores the old order too.
    let is_prefix = old_names[..k].iter().zip(&common).all(|(a, c)| a == *c)
        && new_names[..k].iter().zip(&common).all(|(a, c)| a == *c);
    let retyped: Vec<(&String, &String, &String)> = old.attributes[..k.min(old.attributes.len())]
        .iter()
        .zip(&new.attributes)
        .filter(|((_, t), (_, u))| t != u)
        .map(|((a, t), (_, u))| (a, t, u))
        .collect();
    // PostgreSQL refuses ALTER ATTRIBUTE ... TYPE on a type a column uses.
    let is_used = !enum_usages(from, name).is_empty() || !enum_usages(to, name).is_empty();
    if !is_prefix || (!retyped.is_empty() && is_used) {
        b.create_types.push(Op::RecreateComposite {
            name: name.clone(),
            from: old.clone(),
            to: new.clone(),
            usages: kept_usages(from, to, name),
        });
        b.recreated(from, to, "TYPE", name);
        return;
    }
    for attribute in old.attributes[k..].iter().rev() {
        b.create_types.push(Op::DropAttribute {
            name: name.clone(),
            attribute: attribute.clone(),
        });
    }
    for (attribute, t, u) in retyped {
        b.create_types.push(Op::AlterAttributeType {
            name: name.clone(),
            attribute: attribute.clone(),
            from: t.clone(),
            to: u.clone(),
        });
    }
    for attribute in &new.attributes[k..] {
        b.create_types.push(Op::AddAttribute {
            name: name.clone(),
            attribute: attribute.clone(),
        });
    }
}

fn enums(from: &Catalog, to: &Catalog, b: &mut Buckets) {
    for (name, old) in &from.enums {
        let values = &old.labels;
        match to.enums.get(name).map(|e| &e.labels) {
            // Dropped enums are handled with domains and composite types, which may be built on them.
            None => {}
            Some(new) if new == values => {}
            Some(new) => {
                // Only additions keep the old labels in order; anything else recreates the type.
                let kept: Vec<&String> = new.iter().filter(|v| values.contains(v)).collect();
                // A label added with ADD VALUE cannot be used in the same transaction, for example by a new
                // default; a recreated type can.
                let is_used = new.iter().filter(|v| !values.contains(v)).any(|v| {
                    let literal = format!("'{}'::{name}", v.replace('\'', "''"));
                    to.tables
                        .values()
                        .flat_map(|t| &t.columns)
                        .any(|c| c.default.as_deref().is_some_and(|d| d.contains(&literal)))
                });
                let is_additive =
                    !is_used && kept.len() == values.len() && kept.iter().zip(values).all(|(a, b)| *a == b);
                // Every kept column of the type or an array of it is converted, also one that changes type
                // later in the revision (through the new type), so the old type can be dropped.
                let usages: Vec<EnumUsage> = type_usages(from, name, true)
                    .into_iter()
                    .filter(|u| to.tables.get(&u.table).is_some_and(|t| t.column(&u.column).is_some()))
                    .collect();
                // Domains over the type, kept over it, are recreated with it (PostgreSQL has no ALTER DOMAIN
                // ... TYPE, and the old type cannot be dropped while they use it).
                let type_text = name.to_string();
                let mut domains = Vec::new();
                for (dname, d) in &from.domains {
                    if let Some(nd) = to.domains.get(dname) {
                        if d.base_type == type_text && nd.base_type == type_text {
                            domains.push(DomainUsage {
                                name: dname.clone(),
                                from: d.clone(),
                                to: nd.clone(),
                                usages: kept_usages(from, to, dname),
                            });
                            b.enum_domains.insert(dname.clone());
                        }
                    }
                }
                if is_additive {
                    // The downgrade recreates the type.
                    b.recreated(from, to, "TYPE", name);
                    for (i, value) in new.iter().enumerate() {
                        if !values.contains(value) {
                            let before = new[i + 1..].iter().find(|v| values.contains(v)).cloned();
                            b.create_types.push(Op::AddEnumValue {
                                name: name.clone(),
                                value: value.clone(),
                                before,
                                all_from: values.clone(),
                                usages: usages.clone(),
                                domains: domains.clone(),
                            });
                        }
                    }
                } else {
                    b.create_types.push(Op::RecreateEnum {
                        name: name.clone(),
                        from: values.clone(),
                        to: new.clone(),
                        usages,
                        domains,
                    });
                    b.recreated(from, to, "TYPE", name);
                }
            }
        }
    }
    for (name, new) in &to.enums {
        if !from.enums.contains_key(name) {
            b.create_types.push(Op::CreateEnum {
                name: name.clone(),
                values: new.labels.clone(),
            });
        }
    }
}

fn sequences(from: &Catalog, to: &Catalog, b: &mut Buckets) {
    for (name, seq) in &from.sequences {
        match to.sequences.get(name) {
            None => {
                if seq.owned_by.is_some() {
                    b.disown_sequences.push(Op::SetSequenceOwner {
                        name: name.clone(),
                        from: seq.owned_by.clone(),
                        to: None,
                    });
                }
                let mut plain = seq.clone();
                plain.owned_by = None;
                b.drop_sequences.push(Op::DropSequence {
                    name: name.clone(),
                    sequence: plain,
                });
            }
            Some(new) => {
                let (mut a, mut c) = (seq.clone(), new.clone());
                a.owned_by = None;
                c.owned_by = None;
                if a != c {
                    b.create_sequences.push(Op::AlterSequence {
                        name: name.clone(),
                        from: a,
                        to: c,
                    });
                }
                if seq.owned_by != new.owned_by {
                    let op = Op::SetSequenceOwner {
                        name: name.clone(),
                        from: seq.owned_by.clone(),
                        to: new.owned_by.clone(),
                    };
                    if new.owned_by.is_none() {
                        b.disown_sequences.push(op);
                    } else {
                        b.own_sequences.push(op);
                    }
                }
            }
        }
    }
    for (name, seq) in &to.sequences {
        if !from.sequences.contains_key(name) {
            let mut plain = seq.clone();
            plain.owned_by = None;
            b.create_sequences.push(Op::CreateSequence {
                name: name.clone(),
                sequence: plain,
            });
            if seq.owned_by.is_some() {
                b.own_sequences.push(Op::SetSequenceOwner {
                    name: name.clone(),
                    from: None,
                    to: seq.owned_by.clone(),
                });
            }
        }
    }
}

fn functions(from: &Catalog, to: &Catalog, b: &mut Buckets) {
    for (key, f) in &from.functions {
        match to.functions.get(key) {
            None => b.drop_functions.push(Op::DropFunction { function: f.clone() }),
            Some(new) if b.forced.contains(&DepKey::Function(key.clone())) => {
                b.drop_functions.push(Op::DropFunction { function: f.clone() });
                b.create_functions.push(Op::CreateFunction { function: new.clone() });
            }
            Some(new) if new.definition != f.definition => b.create_functions.push(Op::ReplaceFunction {
                from: f.clone(),
                to: new.clone(),
            }),
            Some(_) => {}
        }
    }
    for (key, f) in &to.functions {
        if !from.functions.contains_key(key) {
            b.create_functions.push(Op::CreateFunction { function: f.clone() });
        }
    }
}

fn constraint_ops(b: &mut Buckets, table: &QName, old: &Table, new: Option<&Table>) {
    let is_new_table = false;
    // A primary key, unique or exclusion constraint over a retyped column is rebuilt by PostgreSQL itself.
    let is_forced = |b: &Buckets, name: &String, c: &super::model::Constraint| {
        matches!(c.kind, 'c' | 'f') && b.forced.contains(&DepKey::Constraint(table.clone(), name.clone()))
    };
    for (name, c) in &old.constraints {
        let same = new.and_then(|t| t.constraints.get(name)) == Some(c) && !is_forced(b, name, c);
        // A dropped table takes its own non-FK constraints with it (the reverse recreates them inline).
        if same || (new.is_none() && c.kind != 'f') {
            continue;
        }
        let op = Op::DropConstraint {
            table: table.clone(),
            name: name.clone(),
            constraint: c.clone(),
            is_new_table,
        };
        if c.kind == 'f' {
            b.drop_fks.push(op);
        } else {
            b.drop_constraints.push(op);
        }
    }
    if let Some(new) = new {
        for (name, c) in &new.constraints {
            if old.constraints.get(name) == Some(c) && !is_forced(b, name, c) {
                continue;
            }
            let op = Op::AddConstraint {
                table: table.clone(),
                name: name.clone(),
                constraint: c.clone(),
                is_new_table,
            };
            if c.kind == 'f' {
                b.add_fks.push(op);
            } else {
                b.add_constraints.push(op);
            }
        }
    }
}

fn column_comment(b: &mut Buckets, table: &QName, column: &str, from: Option<&String>, to: Option<&String>) {
    b.comment("COLUMN", format!("{table}.{column}"), from, to);
}

fn column_ops(b: &mut Buckets, table: &QName, old: &Column, new: &Column) {
    let col = || old.name.clone();
    let is_regenerated = old.generated.is_some() && b.forced.is_generated(table, &old.name);
    if old.generated != new.generated || (old.generated.is_some() && old.data_type != new.data_type) || is_regenerated {
        column_comment(b, table, &old.name, old.comment.as_ref(), None);
        b.drop_columns.push(Op::DropColumn {
            table: table.clone(),
            column: old.clone(),
        });
        // After every column changed type: the expression may use one.
        b.readd_columns.push(Op::AddColumn {
            table: table.clone(),
            column: new.clone(),
        });
        column_comment(b, table, &new.name, None, new.comment.as_ref());
        return;
    }
    let is_type_change = old.data_type != new.data_type;
    if b.forced.is_default(table, &old.name) {
        if old.default.is_some() {
            b.drop_defaults.push(Op::AlterColumnDefault {
                table: table.clone(),
                column: col(),
                from: old.default.clone(),
                to: None,
            });
        }
        if new.default.is_some() {
            b.set_defaults.push(Op::AlterColumnDefault {
                table: table.clone(),
                column: col(),
                from: None,
                to: new.default.clone(),
            });
        }
    }
    let is_default_change = old.default != new.default && !b.forced.is_default(table, &old.name);
    if is_type_change && is_default_change && old.default.is_some() {
        // The old default may not cast to the new type: drop it first, set the new one after.
        b.alter_columns.push(Op::AlterColumnDefault {
            table: table.clone(),
            column: col(),
            from: old.default.clone(),
            to: None,
        });
    }
    // A type change resets the collation to the new type's default: the old one is taken off first and the
    // new one put on after, so the downgrade restores it too.
    let is_collation_change = old.collation != new.collation || (is_type_change && old.collation.is_some());
    if is_collation_change && is_type_change && old.collation.is_some() {
        b.alter_columns.push(Op::AlterColumnCollation {
            table: table.clone(),
            column: col(),
            data_type: old.data_type.clone(),
            from: old.collation.clone(),
            to: None,
        });
    }
    if is_type_change {
        b.alter_columns.push(Op::AlterColumnType {
            table: table.clone(),
            column: col(),
            from: old.data_type.clone(),
            to: new.data_type.clone(),
        });
    }
    if is_collation_change && (!is_type_change || new.collation.is_some()) {
        b.alter_columns.push(Op::AlterColumnCollation {
            table: table.clone(),
            column: col(),
            data_type: new.data_type.clone(),
            from: if is_type_change { None } else { old.collation.clone() },
            to: new.collation.clone(),
        });
    }
    if is_default_change {
        let from = if is_type_change { None } else { old.default.clone() };
        if from.is_some() || new.default.is_some() {
            b.alter_columns.push(Op::AlterColumnDefault {
                table: table.clone(),
                column: col(),
                from,
                to: new.default.clone(),
            });
        }
    }
    if old.identity.is_some() && new.identity.is_none() {
        b.alter_columns.push(Op::AlterColumnIdentity {
            table: table.clone(),
            column: col(),
            from: old.identity,
            to: None,
            options: old.identity_options.clone(),
        });
    }
    if old.is_not_null != new.is_not_null {
        b.alter_columns.push(Op::AlterColumnNull {
            table: table.clone(),
            column: col(),
            is_not_null: new.is_not_null,
        });
    }
    if new.identity.is_some() && old.identity != new.identity {
        b.alter_columns.push(Op::AlterColumnIdentity {
            table: table.clone(),
            column: col(),
            from: old.identity,
            to: new.identity,
            options: new.identity_options.clone(),
        });
    }
    if let (Some(_), Some(_), Some(a), Some(c)) =
        (old.identity, new.identity, &old.identity_options, &new.identity_options)
    {
        if a != c {
            b.alter_columns.push(Op::AlterIdentityOptions {
                table: table.clone(),
                column: col(),
                from: a.clone(),
                to: c.clone(),
            });
        }
    }
    column_comment(b, table, &old.name, old.comment.as_ref(), new.comment.as_ref());
}

fn tables(from: &Catalog, to: &Catalog, b: &mut Buckets) {
    // Partitions go before their parents and come after them, deepest first and last.
    let mut partitions: Vec<(std::cmp::Reverse<i32>, Op)> = Vec::new();
    for (name, table) in &from.tables {
        let new = to.tables.get(name);
        constraint_ops(b, name, table, new);
        match new {
            None => {
                b.comment("TABLE", name.to_string(), table.comment.as_ref(), None);
                for column in &table.columns {
                    column_comment(b, name, &column.name, column.comment.as_ref(), None);
                }
                let op = Op::DropTable {
                    name: name.clone(),
                    table: table.clone(),
                };
                match &table.partition_of {
                    Some(p) => partitions.push((std::cmp::Reverse(p.level), op)),
                    None => b.drop_tables.push(op),
                }
            }
            Some(new) => {
                b.comment("TABLE", name.to_string(), table.comment.as_ref(), new.comment.as_ref());
                if table.options != new.options {
                    b.alter_columns.push(Op::SetTableOptions {
                        table: name.clone(),
                        from: table.options.clone(),
                        to: new.options.clone(),
                    });
                }
                if table.partition_key != new.partition_key {
                    b.alter_columns.push(Op::ChangePartitionKey {
                        table: name.clone(),
                        from: table.partition_key.clone(),
                        to: new.partition_key.clone(),
                    });
                }
                if table.partition_of != new.partition_of {
                    if let Some(p) = &table.partition_of {
                        b.detach_partitions.push(Op::DetachPartition {
                            table: name.clone(),
                            partition: p.clone(),
                        });
                    }
                    if let Some(p) = &new.partition_of {
                        b.attach_partitions.push(Op::AttachPartition {
                            table: name.clone(),
                            partition: p.clone(),
                        });
                    }
                }
                // A partition's columns are its parent's: a table attached or detached keeps its own.
                if table.partition_of.is_some() || new.partition_of.is_some() {
                    continue;
                }
                if table.is_rls_enabled != new.is_rls_enabled {
                    let op = Op::SetRowSecurity {
                        table: name.clone(),
                        is_enabled: new.is_rls_enabled,
                    };
                    if new.is_rls_enabled {
                        b.enable_rls.push(op);
                    } else {
                        b.disable_rls.push(op);
                    }
                }
                if table.is_rls_forced != new.is_rls_forced {
                    let op = Op::SetForceRowSecurity {
                        table: name.clone(),
                        is_forced: new.is_rls_forced,
                    };
                    if new.is_rls_forced {
                        b.enable_rls.push(op);
                    } else {
                        b.disable_rls.push(op);
                    }
                }
                for column in &table.columns {
                    match new.column(&column.name) {
                        None => {
                            column_comment(b, name, &column.name, column.comment.as_ref(), None);
                            b.drop_columns.push(Op::DropColumn {
                                table: name.clone(),
                                column: column.clone(),
                            });
                        }
                        Some(new_column) => column_ops(b, name, column, new_column),
                    }
                }
                for column in &new.columns {
                    if table.column(&column.name).is_none() {
                        b.add_columns.push(Op::AddColumn {
                            table: name.clone(),
                            column: column.clone(),
                        });
                        column_comment(b, name, &column.name, None, column.comment.as_ref());
                    }
                }
            }
        }
    }
    partitions.sort_by_key(|(level, _)| *level);
    b.drop_partitions.extend(partitions.into_iter().map(|(_, op)| op));
    let mut partitions: Vec<(i32, Op)> = Vec::new();
    for (name, table) in &to.tables {
        if from.tables.contains_key(name) {
            continue;
        }
        let op = Op::CreateTable {
            name: name.clone(),
            table: table.clone(),
        };
        match &table.partition_of {
            Some(p) => partitions.push((p.level, op)),
            None => b.create_tables.push(op),
        }
        for (cname, c) in &table.constraints {
            if c.kind == 'f' {
                b.add_fks.push(Op::AddConstraint {
                    table: name.clone(),
                    name: cname.clone(),
                    constraint: c.clone(),
                    is_new_table: true,
                });
            }
        }
        b.comment("TABLE", name.to_string(), None, table.comment.as_ref());
        for column in &table.columns {
            column_comment(b, name, &column.name, None, column.comment.as_ref());
        }
    }
    partitions.sort_by_key(|(level, _)| *level);
    b.create_partitions.extend(partitions.into_iter().map(|(_, op)| op));
}

fn indexes(from: &Catalog, to: &Catalog, b: &mut Buckets) {
    // A materialized view that is recreated takes its indexes with it, so they are recreated too.
    let recreated = |name: &QName| match (from.views.get(name), to.views.get(name)) {
        (Some(a), Some(c)) => a.definition != c.definition || a.is_materialized != c.is_materialized,
        _ => false,
    };
    let is_forced = |name: &QName| b.forced.contains(&DepKey::Index(name.clone()));
    let (mut dropped, mut created) = (Vec::new(), Vec::new());
    for (name, index) in &from.indexes {
        if to.indexes.get(name) != Some(index) || recreated(&index.table) || is_forced(name) {
            let op = Op::DropIndex {
                name: name.clone(),
                index: index.clone(),
                is_new_table: !to.tables.contains_key(&index.table),
            };
            dropped.push((from.views.contains_key(&index.table), op));
        }
    }
    for (name, index) in &to.indexes {
        if from.indexes.get(name) != Some(index) || recreated(&index.table) || is_forced(name) {
            let op = Op::CreateIndex {
                name: name.clone(),
                index: index.clone(),
                is_new_table: !from.tables.contains_key(&index.table),
            };
            created.push((to.views.contains_key(&index.table), op));
        }
    }
    for (is_view, op) in dropped {
        if is_view {
            b.drop_view_indexes.push(op);
        } else {
            b.drop_indexes.push(op);
        }
    }
    for (is_view, op) in created {
        if is_view {
            b.create_view_indexes.push(op);
        } else {
            b.create_indexes.push(op);
        }
    }
}

fn views(from: &Catalog, to: &Catalog, b: &mut Buckets) {
    let same = |name: &QName, a: &super::model::View, c: &super::model::View| {
        a.definition == c.definition
            && a.is_materialized == c.is_materialized
            && !b.forced.contains(&DepKey::View(name.clone()))
    };
    let mut dropped: Vec<_> = from
        .views
        .iter()
        .filter(|(name, view)| !to.views.get(*name).is_some_and(|new| same(name, view, new)))
        .collect();
    // Views built on other views are dropped first and created last.
    dropped.sort_by_key(|(_, v)| std::cmp::Reverse(v.order));
    for (name, view) in dropped {
        b.drop_views.push(Op::DropView {
            name: name.clone(),
            view: view.clone(),
        });
    }
    let mut created: Vec<_> = to
        .views
        .iter()
        .filter(|(name, view)| !from.views.get(*name).is_some_and(|old| same(name, old, view)))
        .collect();
    created.sort_by_key(|(_, v)| v.order);
    for (name, view) in created {
        b.create_views.push(Op::CreateView {
            name: name.clone(),
            view: view.clone(),
        });
    }
}

fn triggers(from: &Catalog, to: &Catalog, b: &mut Buckets) {
    let all: BTreeMap<_, _> = from.triggers.iter().chain(to.triggers.iter()).collect();
    for (key, _) in all {
        let (old, new) = (from.triggers.get(key), to.triggers.get(key));
        if old == new && !b.forced.contains(&DepKey::Trigger(key.0.clone(), key.1.clone())) {
            continue;
        }
        if let Some(t) = old {
            b.drop_triggers.push(Op::DropTrigger {
                table: key.0.clone(),
                name: key.1.clone(),
                trigger: t.clone(),
            });
        }
        if let Some(t) = new {
            b.create_triggers.push(Op::CreateTrigger {
                table: key.0.clone(),
                name: key.1.clone(),
                trigger: t.clone(),
            });
        }
    }
}

/// The objects (as `GRANT ... ON` names them) the revision drops and creates again, or replaces by a new type of
/// the same name: their privileges are revoked before and granted again after.
fn recreated_objects(b: &Buckets) -> BTreeSet<String> {
    let all = [
        &b.drop_views,
        &b.create_views,
        &b.drop_functions,
        &b.create_functions,
        &b.drop_tables,
        &b.create_tables,
        &b.drop_types,
        &b.drop_types_late,
        &b.create_types,
    ];
    let mut dropped = BTreeSet::new();
    let mut created = BTreeSet::new();
    let function = |f: &super::model::Function| {
        let kind = if f.is_procedure { "PROCEDURE" } else { "FUNCTION" };
        format!("{kind} {}({})", f.name, f.identity_args)
    };
    for op in all.into_iter().flatten() {
        match op {
            Op::DropView { name, .. } | Op::DropTable { name, .. } => {
                dropped.insert(format!("TABLE {name}"));
            }
            Op::CreateView { name, .. } | Op::CreateTable { name, .. } => {
                created.insert(format!("TABLE {name}"));
            }
            Op::DropFunction { function: f } => {
                dropped.insert(function(f));
            }
            Op::CreateFunction { function: f } => {
                created.insert(function(f));
            }
            Op::DropEnum { name, .. } | Op::DropDomain { name, .. } | Op::DropComposite { name, .. } => {
                dropped.insert(format!("TYPE {name}"));
            }
            Op::CreateEnum { name, .. } | Op::CreateDomain { name, .. } | Op::CreateComposite { name, .. } => {
                created.insert(format!("TYPE {name}"));
            }
            Op::RecreateEnum { name, domains, .. } | Op::AddEnumValue { name, domains, .. } => {
                dropped.insert(format!("TYPE {name}"));
                created.insert(format!("TYPE {name}"));
                for d in domains {
                    dropped.insert(format!("TYPE {}", d.name));
                    created.insert(format!("TYPE {}", d.name));
                }
            }
            Op::RecreateDomain { name, .. } | Op::RecreateComposite { name, .. } => {
                dropped.insert(format!("TYPE {name}"));
                created.insert(format!("TYPE {name}"));
            }
            _ => {}
        }
    }
    dropped.intersection(&created).cloned().collect()
}

/// Privileges by object: (grantee, privilege) → grantable.
type Acl = BTreeMap<(String, String), bool>;

fn acls(catalog: &Catalog) -> BTreeMap<&str, Acl> {
    let mut out: BTreeMap<&str, Acl> = BTreeMap::new();
    for (g, is_grantable) in &catalog.grants {
        out.entry(g.on.as_str())
            .or_default()
            .insert((g.grantee.clone(), g.privilege.clone()), *is_grantable);
    }
    out
}

/// The functions and types of a catalog as `GRANT ... ON` names them, with the privileges PostgreSQL gives a
/// new one (`EXECUTE` or `USAGE` to `PUBLIC`); other objects start with none but their owner's.
fn defaulted_objects(catalog: &Catalog) -> BTreeMap<String, Acl> {
    let public = |privilege: &str| -> Acl { [(("PUBLIC".to_string(), privilege.to_string()), false)].into() };
    let mut out = BTreeMap::new();
    for (key, f) in &catalog.functions {
        let kind = if f.is_procedure { "PROCEDURE" } else { "FUNCTION" };
        out.insert(format!("{kind} {key}"), public("EXECUTE"));
    }
    let types = catalog
        .enums
        .keys()
        .chain(catalog.domains.keys())
        .chain(catalog.composites.keys());
    for name in types {
        out.insert(format!("TYPE {name}"), public("USAGE"));
    }
    out
}

/// Grant and revoke to turn `from` into `to` on one object; `bucket` takes them.
fn acl_ops(on: &str, from: &Acl, to: &Acl, bucket: &mut Vec<Op>) {
    let grant = |(grantee, privilege): &(String, String)| Grant {
        on: on.to_string(),
        grantee: grantee.clone(),
        privilege: privilege.clone(),
    };
    for (key, is_grantable) in from {
        if to.get(key) != Some(is_grantable) {
            bucket.push(Op::Grant {
                grant: grant(key),
                is_grantable: *is_grantable,
                is_revoke: true,
            });
        }
    }
    for (key, is_grantable) in to {
        if from.get(key) != Some(is_grantable) {
            bucket.push(Op::Grant {
                grant: grant(key),
                is_grantable: *is_grantable,
                is_revoke: false,
            });
        }
    }
}

/// Privileges. An object that goes away first has its privileges brought back to PostgreSQL's defaults (so the
/// downgrade, which creates it again, restores them); a new or recreated one goes from the defaults to its
/// privileges after it is created.
fn grants(from: &Catalog, to: &Catalog, b: &mut Buckets) {
    let recreated = recreated_objects(b);
    let (old_acls, new_acls) = (acls(from), acls(to));
    let (old_defaulted, new_defaulted) = (defaulted_objects(from), defaulted_objects(to));
    let empty = Acl::new();
    let objects: BTreeSet<&str> = old_acls
        .keys()
        .chain(new_acls.keys())
        .copied()
        .chain(old_defaulted.keys().map(String::as_str))
        .chain(new_defaulted.keys().map(String::as_str))
        .collect();
    for on in objects {
        let old = old_acls.get(on).unwrap_or(&empty);
        let new = new_acls.get(on).unwrap_or(&empty);
        let default = old_defaulted.get(on).or(new_defaulted.get(on)).unwrap_or(&empty);
        // Objects other than functions and types are known only by their privileges: they are on both sides.
        let in_from = !default.is_empty() && old_defaulted.contains_key(on) || default.is_empty();
        let in_to = !default.is_empty() && new_defaulted.contains_key(on) || default.is_empty();
        let is_recreated = recreated.contains(on);
        if in_from && in_to && !is_recreated {
            let mut revokes = Vec::new();
            acl_ops(on, old, new, &mut revokes);
            for op in revokes {
                match op {
                    Op::Grant { is_revoke: true, .. } => b.revokes.push(op),
                    _ => b.grants.push(op),
                }
            }
            continue;
        }
        if in_from {
            acl_ops(on, old, default, &mut b.revokes);
        }
        if in_to {
            acl_ops(on, default, new, &mut b.grants);
        }
    }
    // Owners: one going back to the current user goes first (before the object may be dropped), one set goes
    // last (after the object is created); a recreated object gets its owner again.
    let keys: BTreeSet<&String> = from.owners.keys().chain(to.owners.keys()).collect();
    for on in keys {
        let (old, new) = (from.owners.get(on), to.owners.get(on));
        let is_recreated = recreated.contains(on.as_str());
        if old == new && !is_recreated {
            continue;
        }
        let alter = old.or(new).map(|(a, _)| a.clone()).unwrap_or_default();
        let (old, new) = (old.map(|(_, r)| r.clone()), new.map(|(_, r)| r.clone()));
        let set = |from: Option<String>, to: Option<String>| Op::SetOwner {
            on: on.clone(),
            alter: alter.clone(),
            from,
            to,
        };
        if is_recreated || new.is_none() {
            if old.is_some() {
                b.revokes.push(set(old.clone(), None));
            }
            if new.is_some() {
                b.grants.push(set(None, new));
            }
        } else {
            b.grants.push(set(old, new));
        }
    }
    let keys: BTreeSet<_> = from
        .default_privileges
        .keys()
        .chain(to.default_privileges.keys())
        .collect();
    for key in keys {
        let (old, new) = (from.default_privileges.get(key), to.default_privileges.get(key));
        if old == new {
            continue;
        }
        if let Some(is_grantable) = old {
            b.revokes.push(Op::DefaultPrivilege {
                grant: key.clone(),
                is_grantable: *is_grantable,
                is_revoke: true,
            });
        }
        if let Some(is_grantable) = new {
            b.grants.push(Op::DefaultPrivilege {
                grant: key.clone(),
                is_grantable: *is_grantable,
                is_revoke: false,
            });
        }
    }
}

/// Whether ALTER POLICY can turn `a` into `b` (and back): it changes roles and expressions, but cannot change
/// the command or `PERMISSIVE`/`RESTRICTIVE`, or remove an expression.
fn is_alterable(a: &Policy, b: &Policy) -> bool {
    let expr = |x: &Option<String>, y: &Option<String>| x == y || (x.is_some() && y.is_some());
    a.command == b.command
        && a.is_permissive == b.is_permissive
        && expr(&a.using, &b.using)
        && expr(&a.with_check, &b.with_check)
}

/// Whether a column of `table` is dropped or changes type (also through its enum, domain or composite type
/// being recreated): PostgreSQL refuses both while a policy depends on the column, so the table's policies
/// are dropped before and created after.
fn has_unstable_columns(from: &Catalog, to: &Catalog, table: &QName) -> bool {
    let (Some(old), Some(new)) = (from.tables.get(table), to.tables.get(table)) else {
        return false;
    };
    let is_type_changing = |data_type: &str| {
        from.enums
            .iter()
            .any(|(n, e)| n.to_string() == data_type && to.enums.get(n).is_none_or(|f| f.labels != e.labels))
            || from.composites.iter().any(|(n, c)| {
                n.to_string() == data_type && to.composites.get(n).is_none_or(|d| d.attributes != c.attributes)
            })
            || from.domains.iter().any(|(n, d)| {
                n.to_string() == data_type && to.domains.get(n).is_none_or(|e| e.base_type != d.base_type)
            })
    };
    old.columns.iter().any(|c| match new.column(&c.name) {
        None => true,
        Some(n) => {
            n.data_type != c.data_type
                || n.generated != c.generated
                || is_type_changing(c.data_type.strip_suffix("[]").unwrap_or(&c.data_type))
        }
    })
}

/// Whether a policy expression calls a function this diff drops (ALTER POLICY would come too late).
fn calls_dropped_function(from: &Catalog, to: &Catalog, policy: &Policy) -> bool {
    from.functions.iter().any(|(key, f)| {
        let call = format!("{}(", f.name);
        !to.functions.contains_key(key)
            && [&policy.using, &policy.with_check]
                .iter()
                .any(|e| e.as_deref().is_some_and(|e| e.contains(&call)))
    })
}

fn policies(from: &Catalog, to: &Catalog, b: &mut Buckets) {
    let all: BTreeSet<_> = from.policies.keys().chain(to.policies.keys()).collect();
    for key in all {
        let (old, new) = (from.policies.get(key), to.policies.get(key));
        let is_unstable =
            has_unstable_columns(from, to, &key.0) || b.forced.contains(&DepKey::Policy(key.0.clone(), key.1.clone()));
        if old == new && !is_unstable {
            continue;
        }
        let (table, name) = (key.0.clone(), key.1.clone());
        if let (Some(a), Some(c)) = (old, new) {
            if !is_unstable && is_alterable(a, c) && !calls_dropped_function(from, to, a) {
                b.create_policies.push(Op::AlterPolicy {
                    table,
                    name,
                    from: a.clone(),
                    to: c.clone(),
                });
                continue;
            }
        }
        if let Some(p) = old {
            b.drop_policies.push(Op::DropPolicy {
                table: table.clone(),
                name: name.clone(),
                policy: p.clone(),
            });
        }
        if let Some(p) = new {
            b.create_policies.push(Op::CreatePolicy {
                table,
                name,
                policy: p.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autogen::model::{Column, Constraint};

    fn table(fk: Option<&str>) -> Table {
        let mut constraints = BTreeMap::new();
        constraints.insert(
            "pk".to_string(),
            Constraint {
                kind: 'p',
                definition: "PRIMARY KEY (id)".into(),
            },
        );
        if let Some(target) = fk {
            constraints.insert(
                "fk".to_string(),
                Constraint {
                    kind: 'f',
                    definition: format!("FOREIGN KEY (id) REFERENCES {target}(id)"),
                },
            );
        }
        Table {
            columns: vec![Column {
                name: "id".into(),
                data_type: "integer".into(),
                is_not_null: true,
                ..Default::default()
            }],
            constraints,
            ..Default::default()
        }
    }

    fn two_tables() -> Catalog {
        let mut c = Catalog::default();
        // b sorts after a but a points at b: the foreign key must wait for both tables.
        c.tables.insert(QName::new("public", "a"), table(Some("b")));
        c.tables.insert(QName::new("public", "b"), table(None));
        c
    }

    /// A database's catalog lists PostgreSQL's default privileges of its functions and types; these built by
    /// hand get them here.
    fn with_default_grants(catalog: &Catalog) -> Catalog {
        let mut c = catalog.clone();
        for (on, acl) in defaulted_objects(catalog) {
            for ((grantee, privilege), is_grantable) in acl {
                c.grants.insert(
                    Grant {
                        on: on.clone(),
                        grantee,
                        privilege,
                    },
                    is_grantable,
                );
            }
        }
        c
    }

    fn check(from: &Catalog, to: &Catalog, expected: &[&str]) {
        let (from, to) = (&with_default_grants(from), &with_default_grants(to));
        let got: Vec<String> = diff(from, to)
            .iter()
            .map(|op| {
                let (verb, object) = op.summary();
                format!("{verb} {object}")
            })
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn foreign_keys_come_after_their_tables_and_go_before_them() {
        let empty = Catalog::default();
        check(
            &empty,
            &two_tables(),
            &["add table a", "add table b", "add constraint fk on a"],
        );
        check(
            &two_tables(),
            &empty,
            &["drop constraint fk on a", "drop table a", "drop table b"],
        );
        check(&two_tables(), &two_tables(), &[]);
    }

    fn domain_column(data_type: &str) -> Catalog {
        let mut c = Catalog::default();
        let mut t = table(None);
        t.columns[0].data_type = data_type.into();
        c.tables.insert(QName::new("public", "t"), t);
        c
    }

    #[test]
    fn a_domain_a_kept_column_stops_using_is_dropped_after_the_column_changes() {
        let mut with_domain = domain_column("d");
        with_domain.domains.insert(
            QName::new("public", "d"),
            crate::autogen::model::Domain {
                base_type: "integer".into(),
                default: None,
                is_not_null: false,
                checks: BTreeMap::new(),
                order: 1,
            },
        );
        check(
            &with_domain,
            &domain_column("integer"),
            &["change type of column t.id (d to integer)", "drop domain d"],
        );
        check(
            &domain_column("integer"),
            &with_domain,
            &["add domain d", "change type of column t.id (integer to d)"],
        );
    }

    #[test]
    fn an_enum_a_kept_column_stops_using_is_dropped_after_the_column_and_the_domains_over_it() {
        let mood = crate::autogen::model::Enum {
            labels: vec!["sad".into()],
            order: 1,
        };
        let mut with_enum = domain_column("mood[]");
        with_enum.enums.insert(QName::new("public", "mood"), mood.clone());
        check(
            &with_enum,
            &domain_column("text[]"),
            &["change type of column t.id (mood[] to text[])", "drop type mood"],
        );
        let mut with_domain = domain_column("known_mood");
        with_domain.enums.insert(QName::new("public", "mood"), mood);
        with_domain.domains.insert(
            QName::new("public", "known_mood"),
            crate::autogen::model::Domain {
                base_type: "mood".into(),
                default: None,
                is_not_null: false,
                checks: BTreeMap::new(),
                order: 2,
            },
        );
        check(
            &with_domain,
            &domain_column("text"),
            &[
                "change type of column t.id (known_mood to text)",
                "drop domain known_mood",
                "drop type mood",
            ],
        );
    }

    #[test]
    fn composite_attributes_change_in_place_only_when_the_kept_ones_lead() {
        let composite = |attributes: &[(&str, &str)]| {
            let mut c = Catalog::default();
            c.composites.insert(
                QName::new("public", "pair"),
                crate::autogen::model::Composite {
                    attributes: attributes.iter().map(|(a, t)| (a.to_string(), t.to_string())).collect(),
                    order: 1,
                },
            );
            c
        };
        let abc = composite(&[("a", "integer"), ("b", "text"), ("c", "date")]);
        check(
            &abc,
            &composite(&[("a", "bigint"), ("d", "text")]),
            &[
                "drop attribute c of type pair",
                "drop attribute b of type pair",
                "change type of attribute a of type pair (integer to bigint)",
                "add attribute d of type pair",
            ],
        );
        check(
            &abc,
            &composite(&[("b", "text"), ("a", "integer")]),
            &["change attributes of type pair"],
        );
    }

    #[test]
    fn dependants_of_a_recreated_enum_are_dropped_before_and_created_after() {
        let with_labels = |labels: &[&str]| {
            let mut c = domain_column("mood");
            let mood = QName::new("public", "mood");
            let index = QName::new("public", "t_sad");
            c.enums.insert(
                mood.clone(),
                crate::autogen::model::Enum {
                    labels: labels.iter().map(|l| l.to_string()).collect(),
                    order: 1,
                },
            );
            c.indexes.insert(
                index.clone(),
                crate::autogen::model::Index {
                    table: QName::new("public", "t"),
                    definition: "CREATE INDEX t_sad ON t USING btree (id) WHERE (id = 'sad'::mood)".into(),
                },
            );
            // Only the catalog's links say the index depends on the type: no name matching.
            c.depends.insert((DepKey::Index(index), DepKey::Type(mood)));
            c
        };
        let (two, three) = (with_labels(&["sad", "ok"]), with_labels(&["sad", "ok", "happy"]));
        check(
            &three,
            &two,
            &[
                "drop index t_sad on t",
                "change labels of type mood (sad, ok, happy to sad, ok)",
                "add index t_sad on t",
            ],
        );
        check(
            &two,
            &three,
            &[
                "drop index t_sad on t",
                "add label 'happy' of type mood",
                "add index t_sad on t",
            ],
        );
        let mut unlinked = two.clone();
        unlinked.depends.clear();
        let mut unlinked_three = three.clone();
        unlinked_three.depends.clear();
        check(&unlinked, &unlinked_three, &["add label 'happy' of type mood"]);
    }

    #[test]
    fn a_changed_partition_key_is_reported() {
        let keyed = |key: &str| {
            let mut c = Catalog::default();
            let mut t = table(None);
            t.partition_key = Some(key.into());
            c.tables.insert(QName::new("public", "t"), t);
            c
        };
        check(
            &keyed("RANGE (id)"),
            &keyed("LIST (id)"),
            &["change partition key of t (RANGE (id) to LIST (id))"],
        );
        let ops = diff(&keyed("RANGE (id)"), &keyed("LIST (id)"));
        let options = crate::autogen::RenderOptions::default();
        let rendered = crate::autogen::render(&ops, &crate::autogen::Registry::standard(&options), &options);
        assert!(
            rendered
                .upgrade
                .starts_with("-- flotilla: the partition key of t changes"),
            "{}",
            rendered.upgrade
        );
    }

    #[test]
    fn the_downgrade_reverses_in_reverse_order() {
        let ops = diff(&Catalog::default(), &two_tables());
        let reversed: Vec<String> = ops.iter().rev().map(|op| op.reverse().summary().1).collect();
        assert_eq!(reversed, ["constraint fk on a", "table b", "table a"]);
    }
}
