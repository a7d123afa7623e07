//! `--rename` hints: a table or column the desired schema renamed, so the revision writes `RENAME` instead of a
//! drop and an add (pure: parsing, SQL text, and the hints printed when a drop and an add look like a rename).

use super::error::AutogenError;
use super::model::QName;
use super::ops::Op;

/// One rename hint, names as written (unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rename {
    /// `old_table=new_table`, or `schema.old_table=schema.new_table`.
    Table { schema: String, from: String, to: String },
    /// `table.old_column=new_column`, or `schema.table.old_column=new_column`.
    Column {
        schema: String,
        table: String,
        from: String,
        to: String,
    },
}

/// PostgreSQL's `quote_ident` for the common case: bare when the name is a plain lower-case identifier that is
/// not a keyword of the small set below, quoted otherwise (quoting a name that needs none is still correct).
pub fn quote_name(name: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "all",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "between",
        "both",
        "case",
        "cast",
        "check",
        "column",
        "constraint",
        "create",
        "current_user",
        "default",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "false",
        "for",
        "foreign",
        "from",
        "grant",
        "group",
        "having",
        "in",
        "into",
        "is",
        "join",
        "leading",
        "limit",
        "not",
        "null",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "primary",
        "references",
        "select",
        "table",
        "then",
        "to",
        "true",
        "union",
        "unique",
        "user",
        "using",
        "when",
        "where",
        "window",
        "with",
    ];
    let is_plain = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if is_plain && !KEYWORDS.contains(&name) {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

impl std::fmt::Display for Rename {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rename::Table { schema, from, to } if schema == "public" => write!(f, "{from}={to}"),
            Rename::Table { schema, from, to } => write!(f, "{schema}.{from}={schema}.{to}"),
            Rename::Column {
                schema,
                table,
                from,
                to,
            } if schema == "public" => write!(f, "{table}.{from}={to}"),
            Rename::Column {
                schema,
                table,
                from,
                to,
            } => write!(f, "{schema}.{table}.{from}={to}"),
        }
    }
}

impl Rename {
    /// The statement that renames the object in a scratch database (every name quoted as written).
    pub fn sql(&self) -> String {
        use crate::executor::quote_ident as q;
        match self {
            Rename::Table { schema, from, to } => format!("ALTER TABLE {}.{} RENAME TO {}", q(schema), q(from), q(to)),
            Rename::Column {
                schema,
                table,
                from,
                to,
            } => format!(
                "ALTER TABLE {}.{} RENAME COLUMN {} TO {}",
                q(schema),
                q(table),
                q(from),
                q(to)
            ),
        }
    }

    /// Parse `old=new` as `--rename` takes it.
    pub fn parse(text: &str) -> Result<Rename, AutogenError> {
        let bad = |reason: &str| AutogenError::BadRename {
            hint: text.to_string(),
            reason: reason.to_string(),
        };
        let (old, new) = text.split_once('=').ok_or_else(|| bad("expected OLD=NEW"))?;
        let old: Vec<&str> = old.trim().split('.').collect();
        let new: Vec<&str> = new.trim().split('.').collect();
        if old.iter().chain(&new).any(|p| p.is_empty()) {
            return Err(bad("a name is empty"));
        }
        match (old.as_slice(), new.as_slice()) {
            ([from], [to]) => Ok(Rename::Table {
                schema: "public".into(),
                from: from.to_string(),
                to: to.to_string(),
            }),
            ([schema, from], [to_schema, to]) if schema == to_schema => Ok(Rename::Table {
                schema: schema.to_string(),
                from: from.to_string(),
                to: to.to_string(),
            }),
            ([_, _], [_, _]) => Err(bad("a table keeps its schema: RENAME cannot move it")),
            ([table, from], [to]) => Ok(Rename::Column {
                schema: "public".into(),
                table: table.to_string(),
                from: from.to_string(),
                to: to.to_string(),
            }),
            ([schema, table, from], [to]) => Ok(Rename::Column {
                schema: schema.to_string(),
                table: table.to_string(),
                from: from.to_string(),
                to: to.to_string(),
            }),
            _ => Err(bad(
                "expected table=new_table, schema.table=schema.new_table or [schema.]table.column=new_column",
            )),
        }
    }

    fn table_name(schema: &str, table: &str) -> QName {
        QName::new(quote_name(schema), quote_name(table))
    }

    /// The operation renaming the object in the upgrade (and back in the downgrade).
    pub fn op(&self) -> Op {
        match self {
            Rename::Table { schema, from, to } => Op::RenameTable {
                name: Self::table_name(schema, from),
                to: quote_name(to),
            },
            Rename::Column {
                schema,
                table,
                from,
                to,
            } => Op::RenameColumn {
                table: Self::table_name(schema, table),
                from: quote_name(from),
                to: quote_name(to),
            },
        }
    }
}

/// Suggestions for drops and adds that may be renames: in one table, a dropped column and an added column of the
/// same type; a dropped table and an added table with the same column types.
pub fn rename_suggestions(ops: &[Op]) -> Vec<String> {
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::DropColumn { table, column } if column.generated.is_none() => {
                for other in ops {
                    if let Op::AddColumn { table: t, column: c } = other {
                        if t == table && c.data_type == column.data_type && c.generated.is_none() {
                            out.push(format!(
                                "column {table}.{} was dropped and {table}.{} added with the same type ({}): if it was \
                                 renamed, rerun with --rename {table}.{}={}",
                                column.name, c.name, c.data_type, column.name, c.name
                            ));
                        }
                    }
                }
            }
            Op::DropTable { name, table } => {
                let types = |t: &super::model::Table| t.columns.iter().map(|c| c.data_type.clone()).collect::<Vec<_>>();
                for other in ops {
                    if let Op::CreateTable { name: n, table: t } = other {
                        if n.schema == name.schema && types(t) == types(table) {
                            let new = if n.schema == "public" {
                                n.name.clone()
                            } else {
                                n.to_string()
                            };
                            out.push(format!(
                                "table {name} was dropped and {n} added with the same column types: if it was \
                                 renamed, rerun with --rename {name}={new}"
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_table_and_column_hints() {
        assert_eq!(
            Rename::parse("users.name=full_name").unwrap(),
            Rename::Column {
                schema: "public".into(),
                table: "users".into(),
                from: "name".into(),
                to: "full_name".into()
            }
        );
        assert_eq!(
            Rename::parse("s.t.a=b").unwrap(),
            Rename::Column {
                schema: "s".into(),
                table: "t".into(),
                from: "a".into(),
                to: "b".into()
            }
        );
        assert_eq!(
            Rename::parse("old=new").unwrap(),
            Rename::Table {
                schema: "public".into(),
                from: "old".into(),
                to: "new".into()
            }
        );
        assert_eq!(
            Rename::parse("s.old=s.new").unwrap().op().summary().1,
            "name of table s.old (to new)"
        );
        for bad in ["nothing", "a=", "a.b=c.d", "a.b.c.d=e", "=b"] {
            assert!(Rename::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(quote_name("Order"), "\"Order\"");
        assert_eq!(quote_name("user"), "\"user\"");
        assert_eq!(quote_name("full_name"), "full_name");
    }
}
