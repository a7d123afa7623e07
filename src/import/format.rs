//! The tools Flotilla imports from, and the rule that turns their version text into a revision id.

use crate::revision::RevisionId;
use crate::script::{check_name, NameError};

/// Another migration tool whose directory `flotilla import` reads and whose bookkeeping table
/// `stamp --from` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceFormat {
    Sqlx,
    Diesel,
    Flyway,
    GolangMigrate,
    Dbmate,
    Alembic,
}

impl SourceFormat {
    pub const ALL: [SourceFormat; 6] = [
        SourceFormat::Sqlx,
        SourceFormat::Diesel,
        SourceFormat::Flyway,
        SourceFormat::GolangMigrate,
        SourceFormat::Dbmate,
        SourceFormat::Alembic,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::Sqlx => "sqlx",
            SourceFormat::Diesel => "diesel",
            SourceFormat::Flyway => "flyway",
            SourceFormat::GolangMigrate => "golang-migrate",
            SourceFormat::Dbmate => "dbmate",
            SourceFormat::Alembic => "alembic",
        }
    }

    pub fn from_name(name: &str) -> Option<SourceFormat> {
        SourceFormat::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The bookkeeping table the tool writes by default.
    pub fn default_table(self) -> &'static str {
        match self {
            SourceFormat::Sqlx => "_sqlx_migrations",
            SourceFormat::Diesel => "__diesel_schema_migrations",
            SourceFormat::Flyway => "flyway_schema_history",
            SourceFormat::GolangMigrate | SourceFormat::Dbmate => "schema_migrations",
            SourceFormat::Alembic => "alembic_version",
        }
    }
}

impl std::fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Characters a revision id must not hold (see docs/revision-format.md), each written as `_` by [`revision_id`].
fn is_reserved_char(c: char) -> bool {
    c.is_whitespace() || matches!(c, ',' | '@' | '+' | '-' | ':')
}

/// The revision id of a version as the other tool records it in its bookkeeping table (sqlx's and
/// golang-migrate's number without leading zeros, diesel's version without `-`, Flyway's dotted version,
/// dbmate's digits, Alembic's id).
///
/// The rule (documented in docs/import.md): the version text unchanged when it is a valid revision id; otherwise
/// each whitespace, `,`, `@`, `+`, `-` and `:` becomes `_`, and a reserved word (`head`, `heads`, `base`,
/// `none`) gets a `v_` prefix. The original text stays in the file's header. `stamp --from` applies the same
/// rule to the table's rows, so it needs no other map.
pub fn revision_id(version: &str) -> Result<RevisionId, NameError> {
    let mapped: String = version
        .chars()
        .map(|c| if is_reserved_char(c) { '_' } else { c })
        .collect();
    let mapped = match check_name(&mapped) {
        Err(NameError::ReservedWord(_)) => format!("v_{mapped}"),
        _ => mapped,
    };
    check_name(&mapped)?;
    Ok(RevisionId(mapped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(version: &str, expected: &str) {
        assert_eq!(
            revision_id(version).expect("a valid id").as_str(),
            expected,
            "{version}"
        );
    }

    #[test]
    fn ids_keep_valid_versions_and_map_reserved_characters() {
        check("20240101120000", "20240101120000");
        check("1.2.3", "1.2.3");
        check("2024-01-01-120000", "2024_01_01_120000");
        check("a b,c@d+e:f", "a_b_c_d_e_f");
        check("head", "v_head");
        check("None", "v_None");
        check("ae1027a6acf", "ae1027a6acf");
    }

    #[test]
    fn ids_that_cannot_be_mapped_are_refused() {
        assert_eq!(revision_id(""), Err(NameError::Empty));
        assert!(matches!(revision_id(&"9".repeat(300)), Err(NameError::TooLong(300))));
    }

    #[test]
    fn names_round_trip() {
        for f in SourceFormat::ALL {
            assert_eq!(SourceFormat::from_name(f.name()), Some(f));
        }
    }
}
