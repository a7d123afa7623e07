//! Which imported revisions cannot run in one transaction: their own transaction control (`BEGIN; ...
//! COMMIT;`) or statements PostgreSQL refuses inside a transaction block.

use super::error::SourceProblem;
use super::source::{SourceRevision, SqlText};
use crate::script::split_statements;

/// Why a statement needs a no-transaction revision, or `None`.
pub fn no_transaction_reason(sql: &str) -> Option<&'static str> {
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
        .filter(|w| !w.is_empty())
        .take(8)
        .map(str::to_ascii_uppercase)
        .collect();
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    let has = |word: &str| words.iter().any(|x| x == word);
    match w(0) {
        "BEGIN" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" => Some("its own transaction control"),
        "START" if w(1) == "TRANSACTION" => Some("its own transaction control"),
        "CREATE" if (w(1) == "INDEX" && w(2) == "CONCURRENTLY") || (w(1) == "UNIQUE" && w(3) == "CONCURRENTLY") => {
            Some("CREATE INDEX CONCURRENTLY")
        }
        "DROP" if w(1) == "INDEX" && w(2) == "CONCURRENTLY" => Some("DROP INDEX CONCURRENTLY"),
        "REINDEX" if has("CONCURRENTLY") => Some("REINDEX CONCURRENTLY"),
        "ALTER" if w(1) == "TABLE" && has("DETACH") && sql.to_ascii_uppercase().contains("CONCURRENTLY") => {
            Some("DETACH PARTITION CONCURRENTLY")
        }
        "VACUUM" => Some("VACUUM"),
        "CREATE" | "DROP" if w(1) == "DATABASE" || w(1) == "TABLESPACE" => Some("CREATE/DROP DATABASE or TABLESPACE"),
        "ALTER" if w(1) == "SYSTEM" => Some("ALTER SYSTEM"),
        "ALTER" if w(1) == "TYPE" && words.windows(2).any(|p| p[0] == "ADD" && p[1] == "VALUE") => {
            Some("ALTER TYPE ... ADD VALUE (refused in a transaction before PostgreSQL 12, and its new value is unusable in the same transaction after)")
        }
        _ => None,
    }
}

/// Mark `rev` no-transaction when one of its statements needs it, with a note naming the file and line; the
/// splitter's problems (an unterminated string, say) come back with their line.
pub fn check_transactions(rev: &mut SourceRevision) -> Result<(), SourceProblem> {
    let mut found = Vec::new();
    for text in std::iter::once(&rev.up).chain(rev.down.as_ref()) {
        found.extend(scan(text)?);
    }
    if !found.is_empty() {
        rev.is_transactional = false;
        for note in found {
            if !rev.notes.contains(&note) {
                rev.notes.push(note);
            }
        }
    }
    Ok(())
}

fn scan(text: &SqlText) -> Result<Vec<String>, SourceProblem> {
    let statements = split_statements(&text.text, text.first_line)
        .map_err(|e| SourceProblem::line(&text.path, e.line, format!("cannot split the SQL into statements: {e}")))?;
    Ok(statements
        .iter()
        .filter_map(|s| no_transaction_reason(&s.sql).map(|why| format!("{}:{}: {why}", text.path.display(), s.line)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::no_transaction_reason;

    #[test]
    fn statements_that_cannot_run_in_a_transaction() {
        for sql in [
            "BEGIN",
            "begin transaction isolation level serializable",
            "COMMIT",
            "START TRANSACTION",
            "CREATE INDEX CONCURRENTLY i ON t (a)",
            "create unique index concurrently if not exists i on t(a)",
            "DROP INDEX CONCURRENTLY i",
            "REINDEX INDEX CONCURRENTLY i",
            "VACUUM t",
            "CREATE DATABASE x",
            "ALTER SYSTEM SET work_mem = '1MB'",
            "ALTER TYPE mood ADD VALUE 'meh'",
            "ALTER TABLE p DETACH PARTITION c CONCURRENTLY",
        ] {
            assert!(no_transaction_reason(sql).is_some(), "{sql}");
        }
        for sql in [
            "CREATE INDEX i ON t (a)",
            "DO $$ BEGIN PERFORM 1; END $$",
            "CREATE TABLE begin_log (id int)",
            "ALTER TYPE mood RENAME VALUE 'a' TO 'b'",
            "REFRESH MATERIALIZED VIEW CONCURRENTLY v",
            "CREATE TABLE concurrently (index int)",
        ] {
            assert_eq!(no_transaction_reason(sql), None, "{sql}");
        }
    }
}
