//! Offline mode: a plan rendered as one SQL script for a DBA to review and run, leaving the database exactly
//! as the online run would (same DDL, same version rows, same history rows but timings).
//!
//! [`OfflineRenderer`] is the extension point; [`PsqlRenderer`] (registered as `psql`) is the built-in one.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::error::{ExecError, RESOLVE_HINT};
use super::phased::{advance_sql, finish_sql};
use super::session::{direction_word, stamp_sql, ExecOptions, TransactionPer};
use super::sql::quote_literal;
use super::store::{HistoryEntry, VersionStore};
use crate::backfill::{progress_create_sql, progress_key, progress_table, render_offline_loop};
use crate::graph::{Direction, Plan, RevisionGraph, Step};
use crate::revision::RevisionId;
use crate::script::Script;
use crate::script::{Phase, Section, Statement};

/// What an offline renderer is given: the plan, its scripts, the store whose SQL records each step, and the
/// session options (timeouts, hooks, transaction mode).
#[derive(Debug, Clone, Copy)]
pub struct OfflineInput<'a> {
    pub plan: &'a Plan,
    /// The graph the plan was made from (a rerun guard asks which revisions come after a step).
    pub graph: &'a RevisionGraph,
    pub scripts: &'a BTreeMap<RevisionId, Script>,
    pub store: &'a dyn VersionStore,
    pub opts: &'a ExecOptions,
    /// Add the store's DDL first (the plan starts from base).
    pub create_tables: bool,
}

/// Turns a plan (or a stamp) into a script someone runs by hand. A renderer must refuse, not approximate,
/// what it cannot express: the script has to leave the database as the online run would.
pub trait OfflineRenderer: Send + Sync {
    /// The script of an upgrade or downgrade.
    fn render_plan(&self, input: &OfflineInput<'_>) -> Result<String, ExecError>;

    /// The script of a stamp to `rows`, no revision SQL run: from base (`from` is `None`: the store's DDL,
    /// then every version row replaced), or from the rows `from` the database holds (only the difference; the
    /// store's DDL too when `from` is empty, as a label's base).
    fn render_stamp(
        &self,
        store: &dyn VersionStore,
        from: Option<&[RevisionId]>,
        rows: &[RevisionId],
    ) -> Result<String, ExecError>;
}

/// The built-in renderer: plain SQL for `psql -v ON_ERROR_STOP=1 -f FILE`, one `BEGIN`/`COMMIT` per revision
/// (or one for the run), no-transaction revisions bracketed by `started`/`applied` history rows, and backfills
/// as `DO` loops committing per batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct PsqlRenderer;

impl OfflineRenderer for PsqlRenderer {
    fn render_plan(&self, input: &OfflineInput<'_>) -> Result<String, ExecError> {
        render_plan(input)
    }

    fn render_stamp(
        &self,
        store: &dyn VersionStore,
        from: Option<&[RevisionId]>,
        rows: &[RevisionId],
    ) -> Result<String, ExecError> {
        let mut out = format!("-- Flotilla {} offline stamp.\n\n", env!("CARGO_PKG_VERSION"));
        if from.is_none_or(|from| from.is_empty()) {
            let _ = writeln!(out, "{}\n", store.create_sql());
        }
        out.push_str("BEGIN;\n");
        for sql in stamp_sql(store, from, rows) {
            let _ = writeln!(out, "{sql};");
        }
        out.push_str("COMMIT;\n");
        Ok(out)
    }
}

fn render_plan(input: &OfflineInput<'_>) -> Result<String, ExecError> {
    let OfflineInput {
        plan,
        graph,
        scripts,
        store,
        opts,
        create_tables,
    } = *input;
    let mut out = String::new();
    let direction = match plan.direction {
        Direction::Up => "upgrade",
        Direction::Down => "downgrade",
    };
    let _ = writeln!(
        out,
        "-- Flotilla {} offline {direction}: {} step(s).",
        env!("CARGO_PKG_VERSION"),
        plan.steps.len()
    );
    let _ = writeln!(out, "-- Run with: psql -v ON_ERROR_STOP=1 -f THIS_FILE\n");
    if let Some(t) = opts.lock_timeout {
        let _ = writeln!(out, "SET lock_timeout = '{}ms';", t.as_millis());
    }
    if let Some(t) = opts.statement_timeout {
        let _ = writeln!(out, "SET statement_timeout = '{}ms';", t.as_millis());
    }
    if let Some(schema) = &opts.schema {
        let _ = writeln!(
            out,
            "SET search_path = {};",
            super::session::search_path(schema, &opts.shared_schemas)
        );
    }
    if create_tables {
        let _ = writeln!(out, "\n{}", store.create_sql());
    }
    let _ = writeln!(out, "\n{}", blocked_check_sql(store));
    if !opts.is_irreversible_allowed {
        let irreversible = plan
            .steps
            .iter()
            .filter(|s| s.direction == Direction::Down)
            .find_map(|s| scripts.get(&s.revision).filter(|script| !script.is_data_reversible()));
        if let Some(script) = irreversible {
            return Err(ExecError::IrreversibleBackfill {
                revision: script.meta.id.clone(),
                path: script.path.clone(),
            });
        }
    }
    let per_run = opts.transaction_per == TransactionPer::Run;
    if per_run {
        out.push_str("\nBEGIN;\n");
    }
    for step in &plan.steps {
        let script = scripts
            .get(&step.revision)
            .ok_or_else(|| ExecError::MissingScript(step.revision.clone()))?;
        if per_run && !script.is_transactional {
            return Err(ExecError::NoTransactionInRunMode(step.revision.clone()));
        }
        let title = if script.meta.message.is_empty() {
            String::new()
        } else {
            format!(": {}", script.meta.message)
        };
        let _ = writeln!(out, "\n-- Running {direction} {}{title}", step.revision);
        // One transaction for the run leaves nothing half done to skip on a rerun.
        if !per_run {
            let _ = writeln!(
                out,
                "SELECT {} AS flotilla_step_due \\gset\n\\if :flotilla_step_due",
                step_due_sql(step, graph, store)
            );
        }
        render_step(&mut out, step, script, store, opts, per_run)?;
        if !per_run {
            out.push_str("\\endif\n");
        }
    }
    if per_run {
        out.push_str("\nCOMMIT;\n");
    }
    Ok(out)
}

/// Whether a step is still to run, asked of the version rows when the script runs, so a rerun of the file after
/// a failure skips what committed: an upgrade step is done once its revision or a descendant of it (through
/// down_revision or depends_on, since a step may remove the row of a revision it depends on) is a row, and a
/// downgrade step is due while one of them is.
fn step_due_sql(step: &Step, graph: &RevisionGraph, store: &dyn VersionStore) -> String {
    let mut family = vec![step.revision.clone()];
    family.extend(graph.descendants_of(&step.revision, true).unwrap_or_default());
    let list: Vec<String> = family.iter().map(|id| quote_literal(id.as_str())).collect();
    let present = format!(
        "EXISTS (SELECT 1 FROM ({}) AS flotilla_rows (r) WHERE r IN ({}))",
        store.read_rows_sql(),
        list.join(", ")
    );
    match step.direction {
        Direction::Up => format!("NOT {present}"),
        Direction::Down => present,
    }
}

/// A `DO` block that stops the script, as the online run refuses to start, when the newest history entry is a
/// no-transaction revision that started or failed and was never resolved: its statements may be half applied,
/// so running it again (or anything after it) must wait for `flotilla resolve`.
fn blocked_check_sql(store: &dyn VersionStore) -> String {
    format!(
        "DO $flotilla_blocked$\n\
         DECLARE e record;\n\
         BEGIN\n    \
             SELECT * INTO e FROM ({}) AS last (revision, direction, status, applied_at, error, is_transactional);\n    \
             IF e.status IN ('started', 'failed') AND e.is_transactional = 'false' THEN\n        \
                 RAISE EXCEPTION 'revision % (no-transaction, %) % part way at %: {hint}', \
                 e.revision, e.direction, e.status, e.applied_at;\n    \
             END IF;\n\
         END $flotilla_blocked$;",
        store.last_entry_sql(),
        hint = RESOLVE_HINT.replace('\'', "''"),
    )
}

/// One step's SQL: its transaction (unless the run has one), settings, statements and bookkeeping.
fn render_step(
    out: &mut String,
    step: &Step,
    script: &Script,
    store: &dyn VersionStore,
    opts: &ExecOptions,
    per_run: bool,
) -> Result<(), ExecError> {
    let word = direction_word(step.direction);
    let section = match step.direction {
        Direction::Up => &script.upgrade,
        Direction::Down => &script.downgrade,
    };
    if section.has_backfill() {
        if per_run {
            return Err(ExecError::BackfillInRunMode(step.revision.clone()));
        }
        render_phased(out, step, section, store, opts);
        return Ok(());
    }
    let in_tx = script.is_transactional;
    if in_tx && !per_run {
        out.push_str("BEGIN;\n");
    }
    let started = (!in_tx).then(|| {
        let entry = HistoryEntry::new(step.revision.as_str(), word, "started", false).checksum(&section.checksum);
        store.history_sql(&entry)
    });
    write_body(
        out,
        in_tx,
        step.revision.as_str(),
        word,
        started,
        &section.statements,
        opts,
    );
    if !in_tx {
        out.push_str("BEGIN;\n");
    }
    for sql in store.rows_sql(&step.delete_rows, &step.insert_rows) {
        let _ = writeln!(out, "{sql};");
    }
    let entry = HistoryEntry::new(step.revision.as_str(), word, "applied", in_tx).checksum(&section.checksum);
    let _ = writeln!(out, "{};", store.history_sql(&entry));
    if !in_tx || !per_run {
        out.push_str("COMMIT;\n");
    }
    if !in_tx {
        out.push_str("RESET flotilla.revision;\nRESET flotilla.direction;\n");
    }
    Ok(())
}

/// The settings naming the revision (`SET LOCAL` inside a transaction), an optional bookkeeping statement, and
/// the statements between the `before_each` and `after_each` hooks.
fn write_body(
    out: &mut String,
    in_tx: bool,
    revision: &str,
    word: &str,
    bookkeeping: Option<String>,
    statements: &[Statement],
    opts: &ExecOptions,
) {
    let set = if in_tx { "SET LOCAL" } else { "SET" };
    let _ = writeln!(out, "{set} flotilla.revision = {};", quote_literal(revision));
    let _ = writeln!(out, "{set} flotilla.direction = {};", quote_literal(word));
    if let Some(sql) = bookkeeping {
        let _ = writeln!(out, "{sql};");
    }
    let body = opts
        .before_each
        .iter()
        .chain(statements.iter().map(|s| &s.sql))
        .chain(opts.after_each.iter());
    for sql in body {
        let _ = writeln!(out, "\n{sql};");
    }
    out.push('\n');
}

/// A section with backfills, as the online run does it: each schema phase in its own transaction that also
/// records the next phase in the progress table, each backfill as a `DO` loop committing once per batch, and
/// the last phase with the version rows.
///
/// Each phase is wrapped in psql's `\if`, asked of the progress table, so running the script again after a
/// failure (or resuming online, which reads the same row) skips the phases that committed and resumes the
/// backfill from its checkpoint. A progress row left by a different version of the script stops the run.
fn render_phased(out: &mut String, step: &Step, section: &Section, store: &dyn VersionStore, opts: &ExecOptions) {
    let word = direction_word(step.direction);
    let revision = step.revision.as_str();
    let table = progress_table(store.schema());
    let _ = writeln!(
        out,
        "-- This revision holds a backfill: it commits per phase and per batch, and a rerun of this script\n\
         -- resumes after the last committed phase and batch (psql's \\if reads the progress table)."
    );
    let _ = writeln!(out, "{};", progress_create_sql(&table));
    let key = progress_key(revision, word);
    let changed = format!(
        "revision {revision} ({word}) was started by a different version of its script; \
         inspect {table} and the database before going on"
    );
    let _ = writeln!(
        out,
        "DO $flotilla_check$ BEGIN\n    \
             IF EXISTS (SELECT 1 FROM {table} WHERE {key} AND checksum IS DISTINCT FROM {checksum}) THEN\n        \
                 RAISE EXCEPTION '%', {message};\n    \
             END IF;\n\
         END $flotilla_check$;",
        checksum = quote_literal(&section.checksum),
        message = quote_literal(&changed),
    );
    let n_phases = section.phases.len();
    for (index, phase) in section.phases.iter().enumerate() {
        let _ = writeln!(
            out,
            "\nSELECT coalesce((SELECT phase FROM {table} WHERE {key}), 0) <= {index} AS flotilla_phase_due \\gset\n\
             \\if :flotilla_phase_due"
        );
        match phase {
            Phase::Sql(statements) => {
                out.push_str("\nBEGIN;\n");
                write_body(out, true, revision, word, None, statements, opts);
                if index + 1 == n_phases {
                    for sql in store.rows_sql(&step.delete_rows, &step.insert_rows) {
                        let _ = writeln!(out, "{sql};");
                    }
                    let entry = HistoryEntry::new(revision, word, "applied", true).checksum(&section.checksum);
                    let history = store.history_sql(&entry);
                    let _ = writeln!(out, "{history};");
                    let _ = writeln!(out, "{};", finish_sql(&table, revision, word));
                } else {
                    let _ = writeln!(
                        out,
                        "{};",
                        advance_sql(&table, revision, word, index + 1, &section.checksum)
                    );
                }
                out.push_str("COMMIT;\n");
            }
            Phase::Backfill(backfill) => {
                let _ = writeln!(
                    out,
                    "\n-- Backfill of {} by key ({}), {} rows per batch.",
                    backfill.spec.table,
                    backfill.spec.key.join(", "),
                    backfill.spec.batch_size
                );
                let _ = writeln!(
                    out,
                    "{};",
                    render_offline_loop(&backfill.spec, &backfill.statement.sql, &table, revision, word)
                );
                let _ = writeln!(
                    out,
                    "{};",
                    advance_sql(&table, revision, word, index + 1, &section.checksum)
                );
            }
        }
        out.push_str("\\endif\n");
    }
}
