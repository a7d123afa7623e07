//! Writing new revision files: random ids and the file text, in the format `parse` reads back.

use chrono::NaiveDateTime;

use crate::revision::RevisionMeta;

/// What a new revision file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewScript {
    pub meta: RevisionMeta,
    /// Written verbatim as `create_date`; see [`format_create_date`]. Omitted when empty.
    pub create_date: String,
    pub is_transactional: bool,
    pub upgrade_sql: String,
    pub downgrade_sql: String,
}

/// A new random revision id: 12 lowercase hex characters, like Alembic's `uuid4().hex[-12:]`.
pub fn new_revision_id() -> String {
    hex::encode(rand::random::<[u8; 6]>())
}

/// `create_date` as Alembic writes it: `2026-11-27 23:40:00.123456`.
pub fn format_create_date(date: NaiveDateTime) -> String {
    date.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// The text of a revision file.
///
/// The header lists `revision`, then `down_revision` (always present, empty for a root), then
/// `branch_labels`, `depends_on`, `message` and `create_date` when not empty, then `transaction: false` for a
/// no-transaction revision. Both section markers are always written; each section's SQL is written with its
/// trailing blank lines removed. Line breaks in `message` and `create_date` become spaces, so the header
/// stays one line per key. Parsing the result gives back `meta`, `is_transactional` and the statements
/// (see the round-trip tests), as long as the SQL holds no `-- flotilla:` marker line of its own.
pub fn render_script(script: &NewScript) -> String {
    let meta = &script.meta;
    let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let list = |items: Vec<&str>| items.join(", ");
    let mut out = String::new();
    let mut header = |key: &str, value: String, is_always: bool| {
        if is_always || !value.is_empty() {
            let line = format!("-- {key}: {value}");
            out.push_str(line.trim_end());
            out.push('\n');
        }
    };
    header("revision", meta.id.to_string(), true);
    header(
        "down_revision",
        list(meta.down_revisions.iter().map(|r| r.as_str()).collect()),
        true,
    );
    header(
        "branch_labels",
        list(meta.branch_labels.iter().map(String::as_str).collect()),
        false,
    );
    header(
        "depends_on",
        list(meta.depends_on.iter().map(String::as_str).collect()),
        false,
    );
    header("message", one_line(&meta.message), false);
    header("create_date", one_line(&script.create_date), false);
    if !script.is_transactional {
        header("transaction", "false".to_string(), true);
    }
    for (marker, sql) in [("upgrade", &script.upgrade_sql), ("downgrade", &script.downgrade_sql)] {
        out.push_str(&format!("\n-- flotilla:{marker}\n"));
        let sql = sql.trim_end();
        if !sql.is_empty() {
            out.push_str(sql);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::revision::RevisionId;
    use crate::script::parse_script;

    fn meta(id: &str, down: &[&str], labels: &[&str], depends: &[&str], message: &str) -> RevisionMeta {
        RevisionMeta {
            id: RevisionId::new(id),
            down_revisions: down.iter().map(|d| RevisionId::new(*d)).collect(),
            branch_labels: labels.iter().map(|l| l.to_string()).collect(),
            depends_on: depends.iter().map(|d| d.to_string()).collect(),
            message: message.to_string(),
        }
    }

    #[test]
    fn exact_text() {
        let script = NewScript {
            meta: meta(
                "3f2a9c1b7d4e",
                &["1a2b3c4d5e6f"],
                &["billing"],
                &["9c8b7a6d5e4f"],
                "add orders table",
            ),
            create_date: "2026-11-27 23:40:00.123456".to_string(),
            is_transactional: false,
            upgrade_sql: "CREATE TABLE orders (id bigserial PRIMARY KEY);\n\n".to_string(),
            downgrade_sql: "DROP TABLE orders;".to_string(),
        };
        let expected = "\
-- revision: 3f2a9c1b7d4e
-- down_revision: 1a2b3c4d5e6f
-- branch_labels: billing
-- depends_on: 9c8b7a6d5e4f
-- message: add orders table
-- create_date: 2026-11-27 23:40:00.123456
-- transaction: false

-- flotilla:upgrade
CREATE TABLE orders (id bigserial PRIMARY KEY);

-- flotilla:downgrade
DROP TABLE orders;
";
        assert_eq!(render_script(&script), expected);
        let root = NewScript {
            meta: meta("aaa", &[], &[], &[], ""),
            create_date: String::new(),
            is_transactional: true,
            upgrade_sql: String::new(),
            downgrade_sql: String::new(),
        };
        assert_eq!(
            render_script(&root),
            "-- revision: aaa\n-- down_revision:\n\n-- flotilla:upgrade\n\n-- flotilla:downgrade\n"
        );
    }

    /// Renders, parses back, and compares everything the file carries.
    fn check(script: NewScript, expected_upgrade: &[&str], expected_downgrade: &[&str]) {
        let text = render_script(&script);
        let parsed = parse_script(Path::new("new.sql"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let mut expected_meta = script.meta.clone();
        expected_meta.message = expected_meta.message.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(parsed.meta, expected_meta, "{text}");
        assert_eq!(parsed.is_transactional, script.is_transactional);
        let expected_date = script.create_date.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(parsed.create_date.unwrap_or_default(), expected_date);
        let sqls = |s: &crate::script::Section| s.statements.iter().map(|s| s.sql.clone()).collect::<Vec<_>>();
        assert_eq!(sqls(&parsed.upgrade), expected_upgrade, "{text}");
        assert_eq!(sqls(&parsed.downgrade), expected_downgrade, "{text}");
    }

    #[test]
    fn round_trips() {
        let new = |meta, is_transactional, upgrade: &str, downgrade: &str| NewScript {
            meta,
            create_date: "2026-01-02 03:04:05.000006".to_string(),
            is_transactional,
            upgrade_sql: upgrade.to_string(),
            downgrade_sql: downgrade.to_string(),
        };
        check(new(meta("a1", &[], &[], &[], ""), true, "", ""), &[], &[]);
        check(
            new(
                meta("b2", &["a1"], &["billing"], &[], "add orders"),
                true,
                "CREATE TABLE t (x int);",
                "DROP TABLE t;",
            ),
            &["CREATE TABLE t (x int)"],
            &["DROP TABLE t"],
        );
        check(
            new(meta("m3", &["b2", "c2"], &[], &[], "merge heads"), true, "", ""),
            &[],
            &[],
        );
        check(
            new(
                meta("d4", &["m3"], &["x", "y"], &["a1", "billing"], "  spaced\nmessage  "),
                false,
                "BEGIN;\nSELECT 1",
                "",
            ),
            &["BEGIN", "SELECT 1"],
            &[],
        );
        check(
            new(
                meta("e5", &["d4"], &[], &[], "plpgsql"),
                true,
                "CREATE FUNCTION f() RETURNS int AS $$ BEGIN RETURN 1; END $$ LANGUAGE plpgsql;\n-- done\n",
                "DROP FUNCTION f();",
            ),
            &["CREATE FUNCTION f() RETURNS int AS $$ BEGIN RETURN 1; END $$ LANGUAGE plpgsql"],
            &["DROP FUNCTION f()"],
        );
    }

    #[test]
    fn ids_are_12_lowercase_hex() {
        let a = new_revision_id();
        assert_eq!(a.len(), 12);
        assert!(
            a.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{a}"
        );
        assert_ne!(a, new_revision_id());
    }

    #[test]
    fn create_date_format() {
        let date = chrono::NaiveDate::from_ymd_opt(2026, 11, 27)
            .unwrap()
            .and_hms_micro_opt(23, 40, 0, 123_456)
            .unwrap();
        assert_eq!(format_create_date(date), "2026-11-27 23:40:00.123456");
    }
}
