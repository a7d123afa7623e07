//! The SQL texts of a backfill: the progress table, the keyset query that finds a batch's upper bound, the key
//! predicate that replaces `{{batch}}`, and the offline loop (a `DO` block that commits once per batch).
//!
//! Key values travel as text (`key::text`) and come back as untyped literals, which PostgreSQL coerces to the
//! column's type; so bigint, uuid, text, timestamps and composite keys all work the same way.

use crate::executor::{quote_ident, quote_literal};

use std::time::Duration;

use super::hold::HoldBudget;
use super::spec::{BackfillSpec, BatchCommit, BATCH_PLACEHOLDER};

/// The progress table's name; it lives next to the version table (same schema rules).
pub const PROGRESS_TABLE: &str = "flotilla_backfill_progress";

/// A batch's key bounds: exclusive lower (none for the first batch) and inclusive upper, as key text values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    pub lower: Option<Vec<String>>,
    pub upper: Vec<String>,
}

/// The condition selecting one revision's progress row in one direction.
pub fn progress_key(revision: &str, direction: &str) -> String {
    format!(
        "revision = {} AND direction = {}",
        quote_literal(revision),
        quote_literal(direction)
    )
}

/// DDL for the progress table. One row per revision and direction while its phases are under way: `phase` is
/// the index of the next phase to run, `checkpoint` the last key a committed batch of that phase covered.
pub fn progress_create_sql(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (\n    \
             revision text NOT NULL,\n    \
             direction text NOT NULL,\n    \
             phase integer NOT NULL,\n    \
             checkpoint text[],\n    \
             rows_done bigint NOT NULL DEFAULT 0,\n    \
             checksum text,\n    \
             updated_at timestamptz NOT NULL DEFAULT now(),\n    \
             PRIMARY KEY (revision, direction)\n\
         )"
    )
}

fn key_row(spec: &BackfillSpec) -> String {
    format!("({})", spec.key.join(", "))
}

fn literal_row(values: &[String]) -> String {
    let list: Vec<String> = values.iter().map(|v| quote_literal(v)).collect();
    format!("({})", list.join(", "))
}

/// `(k) > (lower) AND (k) <= (upper)`, rows of literals built by `row`.
fn predicate_with(spec: &BackfillSpec, lower: Option<String>, upper: String) -> String {
    let key = key_row(spec);
    match lower {
        Some(lower) => format!("{key} > {lower} AND {key} <= {upper}"),
        None => format!("{key} <= {upper}"),
    }
}

/// The key predicate of one batch.
pub fn predicate(spec: &BackfillSpec, bounds: &Bounds) -> String {
    predicate_with(
        spec,
        bounds.lower.as_deref().map(literal_row),
        literal_row(&bounds.upper),
    )
}

/// `(k) = (key)`: one key, for messages.
pub fn key_equals(spec: &BackfillSpec, key: &[String]) -> String {
    format!("{} = {}", key_row(spec), literal_row(key))
}

/// The statement with every `{{batch}}` replaced by the parenthesised predicate.
pub fn substitute(statement: &str, predicate: &str) -> String {
    statement.replace(BATCH_PLACEHOLDER, &format!("({predicate})"))
}

/// The keyset query: the next `limit` keys after `lower` (a row of SQL values), answering one row with their
/// count and the last key (each column as text, or as one `text[]` when `as_array`), or no row when none
/// is left.
fn upper_sql_with(spec: &BackfillSpec, lower: Option<String>, limit: &str, as_array: bool) -> String {
    let keys = spec.key.join(", ");
    let filter = lower.map_or_else(String::new, |l| format!(" WHERE {} > {l}", key_row(spec)));
    // Qualified, because an output column named like the key (`id::text` is named `id`) would win in ORDER BY
    // and sort the keys as text.
    let desc: Vec<String> = spec.key.iter().map(|k| format!("flotilla_batch.{k} DESC")).collect();
    let texts: Vec<String> = spec.key.iter().map(|k| format!("{k}::text")).collect();
    let out = if as_array {
        format!("ARRAY[{}]", texts.join(", "))
    } else {
        texts.join(", ")
    };
    format!(
        "WITH flotilla_batch AS (SELECT {keys} FROM {table}{filter} ORDER BY {keys} LIMIT {limit}) \
         SELECT (SELECT count(*) FROM flotilla_batch), {out} FROM flotilla_batch ORDER BY {desc} LIMIT 1",
        table = spec.table,
        desc = desc.join(", "),
    )
}

/// The keyset query for the batch after `lower`.
pub fn upper_sql(spec: &BackfillSpec, lower: Option<&[String]>, limit: u64) -> String {
    upper_sql_with(spec, lower.map(literal_row), &limit.to_string(), false)
}

/// Record a committed batch: its upper key becomes the checkpoint.
pub fn checkpoint_sql(table: &str, revision: &str, direction: &str, upper: &[String], n_rows: u64) -> String {
    let list: Vec<String> = upper.iter().map(|v| quote_literal(v)).collect();
    format!(
        "UPDATE {table} SET checkpoint = ARRAY[{}]::text[], rows_done = rows_done + {n_rows}, updated_at = now() \
         WHERE {}",
        list.join(", "),
        progress_key(revision, direction)
    )
}

/// Where a backfill's checkpoint is recorded: the progress table and the key of the row.
#[derive(Debug, Clone, Copy)]
pub struct ProgressRow<'a> {
    pub table: &'a str,
    pub revision: &'a str,
    /// `up` or `down`.
    pub direction: &'a str,
}

/// The batch transaction's setting for `commit=async`: its `COMMIT` does not wait for the WAL flush (see
/// [`BatchCommit::Async`] for why that cannot lose or repeat a batch), or nothing for `commit=sync`.
fn commit_setting(spec: &BackfillSpec) -> &'static str {
    match spec.commit {
        BatchCommit::Async => "SET LOCAL synchronous_commit = off;\n",
        BatchCommit::Sync => "",
    }
}

/// `SET LOCAL statement_timeout` to `timeout` in whole milliseconds, or nothing without a ceiling.
fn timeout_setting(timeout: Option<Duration>) -> String {
    timeout.map_or_else(String::new, |t| {
        format!("SET LOCAL statement_timeout = {};\n", t.as_millis())
    })
}

/// One batch transaction as one simple-query message: the settings, the statement over `bounds`, and the
/// checkpoint, which answers how long the transaction had been running (ms, server-side) when it got there.
///
/// The message has no `BEGIN`: PostgreSQL runs a multi-statement message as one implicit transaction, which
/// commits after its last statement and, when a statement fails, rolls back there and then, so a batch
/// cancelled by its `statement_timeout` releases its locks without waiting for the client's `ROLLBACK`.
/// Under `max_hold` (`budget`) the statement and the checkpoint each get their share as `statement_timeout`
/// (`SET LOCAL`, so it ends with the batch). Statements are separated by a newline, so a trailing `--`
/// comment in the statement cannot swallow the next one.
pub fn batch_sql(
    spec: &BackfillSpec,
    statement: &str,
    progress: ProgressRow<'_>,
    bounds: &Bounds,
    n_rows: u64,
    budget: Option<&HoldBudget>,
) -> String {
    format!(
        "{commit}SET LOCAL flotilla.revision = {revision};\nSET LOCAL flotilla.direction = {direction};\n\
         {statement_timeout}{statement};\n{checkpoint_timeout}{checkpoint} \
         RETURNING round((extract(epoch FROM clock_timestamp() - now()) * 1000)::numeric, 1)",
        commit = commit_setting(spec),
        revision = quote_literal(progress.revision),
        direction = quote_literal(progress.direction),
        statement_timeout = timeout_setting(budget.map(|b| b.statement)),
        statement = substitute(statement, &predicate(spec, bounds)),
        checkpoint_timeout = timeout_setting(budget.map(|b| b.checkpoint)),
        checkpoint = checkpoint_sql(
            progress.table,
            progress.revision,
            progress.direction,
            &bounds.upper,
            n_rows
        ),
    )
}

/// The count the progress display divides by: `reltuples`, or -1 when the table was never analysed.
pub fn estimate_sql(spec: &BackfillSpec) -> String {
    format!(
        "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass({})",
        quote_literal(&spec.table)
    )
}

pub fn count_sql(spec: &BackfillSpec) -> String {
    format!("SELECT count(*) FROM {}", spec.table)
}

/// A PL/pgSQL string literal holding `text`.
fn plpgsql_literal(text: &str) -> String {
    quote_literal(text)
}

/// The backfill as one `DO` block that loops over keyset batches and commits after each, resuming from the
/// progress table's checkpoint. `COMMIT` inside `DO` needs PostgreSQL 11 and a `DO` run outside a transaction
/// block (psql's default autocommit).
pub fn render_offline_loop(
    spec: &BackfillSpec,
    statement: &str,
    progress_table: &str,
    revision: &str,
    direction: &str,
) -> String {
    // Inside format() a literal `%` must be doubled; `%L` quotes each key value as an untyped literal.
    let escape = |s: &str| s.replace('%', "%%");
    let n = spec.key.len();
    let row = format!("({})", vec!["%L"; n].join(", "));
    let args_of = |var: &str| (1..=n).map(|i| format!("{var}[{i}]")).collect::<Vec<_>>().join(", ");
    let first_query = upper_sql_with(spec, None, &spec.batch_size.to_string(), true);
    // Table and key names are plain identifiers, so these format strings hold no `%` but their own `%L`s.
    let next_query = upper_sql_with(spec, Some(row.clone()), &spec.batch_size.to_string(), true);
    let pred_first = predicate_with(spec, None, row.clone());
    let pred_next = predicate_with(spec, Some(row.clone()), row.clone());
    let body = escape(statement).replace(BATCH_PLACEHOLDER, "(%s)");
    let mut tag = "flotilla_backfill".to_string();
    while statement.contains(&format!("${tag}$")) {
        tag.push('_');
    }
    let where_row = progress_key(revision, direction);
    // `statement_timeout` times a top-level statement, and the whole `DO` is one, so no timeout can bound one
    // batch of the loop: say so in the script rather than pretend.
    let hold_note = spec.max_hold.map_or_else(String::new, |d| {
        format!(
            "-- max_hold={}ms is not enforced by this offline loop (statement_timeout cannot time one batch inside \
             a DO block); run the backfill online (flotilla upgrade) for the ceiling.\n",
            d.as_millis()
        )
    });
    // `set_config(.., true)` is `SET LOCAL`: it ends with each batch's COMMIT, so it is set again every batch.
    let commit = match spec.commit {
        BatchCommit::Async => "PERFORM set_config('synchronous_commit', 'off', true);\n        ",
        BatchCommit::Sync => "",
    };
    format!(
        "{hold_note}DO ${tag}$\n\
         DECLARE\n    \
             last text[];\n    \
             hi text[];\n    \
             n bigint;\n    \
             pred text;\n\
         BEGIN\n    \
             SELECT checkpoint INTO last FROM {progress_table} WHERE {where_row};\n    \
             LOOP\n        \
                 IF last IS NULL THEN\n            \
                     EXECUTE {first_query} INTO n, hi;\n            \
                     pred := format({pred_first}, {hi_args});\n        \
                 ELSE\n            \
                     EXECUTE format({next_query}, {last_args}) INTO n, hi;\n            \
                     pred := format({pred_next}, {last_args}, {hi_args});\n        \
                 END IF;\n        \
                 EXIT WHEN hi IS NULL;\n        \
                 {commit}EXECUTE format({body}, pred);\n        \
                 UPDATE {progress_table} SET checkpoint = hi, rows_done = rows_done + n, updated_at = now() WHERE {where_row};\n        \
                 last := hi;\n        \
                 COMMIT;\n    \
             END LOOP;\n\
         END\n\
         ${tag}$",
        first_query = plpgsql_literal(&first_query),
        next_query = plpgsql_literal(&next_query),
        pred_first = plpgsql_literal(&pred_first),
        pred_next = plpgsql_literal(&pred_next),
        body = plpgsql_literal(&body),
        hi_args = args_of("hi"),
        last_args = args_of("last"),
    )
}

/// The progress table name qualified like the version table: `schema` or unqualified (found via search_path).
pub fn progress_table(schema: Option<&str>) -> String {
    match schema {
        Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(PROGRESS_TABLE)),
        None => quote_ident(PROGRESS_TABLE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(attrs: &str) -> BackfillSpec {
        BackfillSpec::parse(attrs).expect("valid spec")
    }

    #[test]
    fn backfill_keyset_sql() {
        let s = spec("table=orders key=id batch_size=3");
        assert_eq!(
            upper_sql(&s, None, 3),
            "WITH flotilla_batch AS (SELECT id FROM orders ORDER BY id LIMIT 3) \
             SELECT (SELECT count(*) FROM flotilla_batch), id::text FROM flotilla_batch ORDER BY flotilla_batch.id DESC LIMIT 1"
        );
        let c = spec("table=s.t key=a,b");
        let lower = vec!["1".to_string(), "it's".to_string()];
        assert!(upper_sql(&c, Some(&lower), 10).contains("FROM s.t WHERE (a, b) > ('1', 'it''s') ORDER BY a, b"));
        let bounds = Bounds {
            lower: Some(lower),
            upper: vec!["2".into(), "z".into()],
        };
        assert_eq!(
            predicate(&c, &bounds),
            "(a, b) > ('1', 'it''s') AND (a, b) <= ('2', 'z')"
        );
        assert_eq!(
            substitute("UPDATE t SET x = 1 WHERE {{batch}} AND y", "k <= ('5')"),
            "UPDATE t SET x = 1 WHERE (k <= ('5')) AND y"
        );
    }

    #[test]
    fn backfill_batch_message_is_one_implicit_transaction() {
        let s = spec("table=t key=id batch_size=10");
        let bounds = Bounds {
            lower: Some(vec!["10".into()]),
            upper: vec!["20".into()],
        };
        let progress = ProgressRow {
            table: "\"p\"",
            revision: "r1",
            direction: "up",
        };
        let sql = batch_sql(
            &s,
            "UPDATE t SET x = 1 WHERE {{batch}} -- note",
            progress,
            &bounds,
            10,
            None,
        );
        let statements: Vec<&str> = sql.split(";\n").collect();
        assert_eq!(
            statements[0], "SET LOCAL synchronous_commit = off",
            "commit=async is the default; no BEGIN, so a failed statement rolls back at once"
        );
        assert_eq!(
            statements[3],
            "UPDATE t SET x = 1 WHERE ((id) > ('10') AND (id) <= ('20')) -- note"
        );
        assert!(
            statements[4].starts_with("UPDATE \"p\" SET checkpoint = ARRAY['20']::text[]"),
            "{sql}"
        );
        assert!(statements[4].contains("RETURNING round("), "{sql}");
        assert_eq!(statements.len(), 5, "the checkpoint is last; no COMMIT: {sql}");
        assert!(!sql.contains("statement_timeout"), "no ceiling without max_hold: {sql}");
        let sync = spec("table=t key=id commit=sync");
        let sql = batch_sql(&sync, "UPDATE t SET x = 1 WHERE {{batch}}", progress, &bounds, 10, None);
        assert!(!sql.contains("synchronous_commit"), "{sql}");
        assert!(sql.starts_with("SET LOCAL flotilla.revision"), "{sql}");
        let budget = HoldBudget::new(Duration::from_millis(200), None);
        let sql = batch_sql(
            &s,
            "UPDATE t SET x = 1 WHERE {{batch}}",
            progress,
            &bounds,
            10,
            Some(&budget),
        );
        let statements: Vec<&str> = sql.split(";\n").collect();
        assert_eq!(statements[3], "SET LOCAL statement_timeout = 150", "{sql}");
        assert!(statements[4].starts_with("UPDATE t SET x = 1"), "{sql}");
        assert_eq!(statements[5], "SET LOCAL statement_timeout = 25", "{sql}");
        assert!(statements[6].starts_with("UPDATE \"p\" SET checkpoint"), "{sql}");
    }

    #[test]
    fn backfill_offline_loop_escapes_percent() {
        let s = spec("table=t key=id batch_size=10");
        let sql = render_offline_loop(&s, "UPDATE t SET s = '5%' WHERE {{batch}}", "\"p\"", "r1", "up");
        assert!(sql.starts_with("DO $flotilla_backfill$"), "{sql}");
        assert!(sql.contains("'UPDATE t SET s = ''5%%'' WHERE (%s)'"), "{sql}");
        assert!(sql.contains("COMMIT;"), "{sql}");
        assert!(
            sql.contains("PERFORM set_config('synchronous_commit', 'off', true);"),
            "{sql}"
        );
        let sync = spec("table=t key=id commit=sync");
        let sql = render_offline_loop(&sync, "UPDATE t SET n = 1 WHERE {{batch}}", "\"p\"", "r1", "up");
        assert!(!sql.contains("synchronous_commit"), "{sql}");
        let held = spec("table=t key=id max_hold=200ms");
        let sql = render_offline_loop(&held, "UPDATE t SET n = 1 WHERE {{batch}}", "\"p\"", "r1", "up");
        assert!(
            sql.starts_with("-- max_hold=200ms is not enforced by this offline loop"),
            "{sql}"
        );
        assert!(
            !sql.contains("statement_timeout', "),
            "nothing pretends to enforce it: {sql}"
        );
    }
}
