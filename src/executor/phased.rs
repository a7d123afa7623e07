//! A revision section that holds a backfill, run phase by phase: each schema phase commits with the progress
//! row saying which phase is next, each batch commits with its checkpoint, and the last schema phase commits
//! with the version rows and the history row and removes the progress row.
//!
//! So a crash at any point resumes where the committed work ends: schema phases never run twice, and a batch
//! is either committed together with its checkpoint or not at all.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use tokio_postgres::{Client, SimpleQueryMessage};

use super::error::ExecError;
use super::session::{direction_word, step_error, ExecEvent, ExecOptions};
use super::sql::quote_literal;
use super::store::{HistoryEntry, VersionStore};
use crate::backfill::{
    progress_create_sql, progress_key, progress_table, run_backfill, BackfillError, BackfillRun, BatchOutcome,
};
use crate::graph::{Direction, Step};
use crate::script::{Phase, Script, Section};

/// Where a phased step stands, read from its progress row.
#[derive(Debug, Default)]
struct Resume {
    phase: usize,
    checkpoint: Option<Vec<String>>,
    rows_done: u64,
    checksum: Option<String>,
}

fn result_rows(messages: Vec<SimpleQueryMessage>) -> Vec<Vec<Vec<Option<String>>>> {
    let mut sets = vec![Vec::new()];
    for message in messages {
        match message {
            SimpleQueryMessage::Row(row) => {
                let values = (0..row.len()).map(|i| row.get(i).map(str::to_string)).collect();
                sets.last_mut().expect("sets is never empty").push(values);
            }
            SimpleQueryMessage::CommandComplete(_) => sets.push(Vec::new()),
            _ => {}
        }
    }
    sets
}

/// The SQL that records "phase `next` is the next to run" (and clears the checkpoint).
pub(crate) fn advance_sql(table: &str, revision: &str, direction: &str, next: usize, checksum: &str) -> String {
    format!(
        "INSERT INTO {table} (revision, direction, phase, checksum) VALUES ({r}, {d}, {next}, {c}) \
         ON CONFLICT (revision, direction) DO UPDATE SET phase = EXCLUDED.phase, checkpoint = NULL, \
         checksum = EXCLUDED.checksum, updated_at = now()",
        r = quote_literal(revision),
        d = quote_literal(direction),
        c = quote_literal(checksum),
    )
}

pub(crate) fn finish_sql(table: &str, revision: &str, direction: &str) -> String {
    format!("DELETE FROM {table} WHERE {}", progress_key(revision, direction))
}

fn section(script: &Script, direction: Direction) -> &Section {
    match direction {
        Direction::Up => &script.upgrade,
        Direction::Down => &script.downgrade,
    }
}

async fn read_resume(client: &Client, table: &str, revision: &str, direction: &str) -> Result<Resume, ExecError> {
    let key = progress_key(revision, direction);
    let sql = format!(
        "{};\nSELECT phase::text, rows_done::text, checksum FROM {table} WHERE {key};\n\
         SELECT c FROM {table}, unnest(checkpoint) WITH ORDINALITY AS u(c, i) WHERE {key} ORDER BY i",
        progress_create_sql(table)
    );
    let sets = result_rows(client.simple_query(&sql).await.map_err(|pg| ExecError::Db {
        context: "could not read the backfill progress table".into(),
        pg,
    })?);
    // Set 0 is the CREATE TABLE's (no rows); then the progress row, then the checkpoint's elements.
    let Some(row) = sets.get(1).and_then(|s| s.first()) else {
        return Ok(Resume::default());
    };
    let checkpoint: Vec<String> = sets
        .get(2)
        .map(|s| s.iter().map(|r| r[0].clone().unwrap_or_default()).collect())
        .unwrap_or_default();
    Ok(Resume {
        phase: row[0].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0),
        rows_done: row[1].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0),
        checksum: row[2].clone(),
        checkpoint: (!checkpoint.is_empty()).then_some(checkpoint),
    })
}

/// Run (or resume) one step whose section holds a backfill. Returns [`ExecError::Interrupted`] when `stop` is
/// set between batches; the committed batches stay, and the next run resumes from the checkpoint.
pub(crate) async fn run_phased(
    client: &Client,
    store: &dyn VersionStore,
    opts: &ExecOptions,
    step: &Step,
    script: &Script,
    on_event: &mut (dyn FnMut(ExecEvent) + Send),
    stop: &AtomicBool,
) -> Result<(), ExecError> {
    let section = section(script, step.direction);
    let word = direction_word(step.direction);
    let revision = step.revision.as_str();
    let table = progress_table(store.schema());
    let mut resume = read_resume(client, &table, revision, word).await?;
    if let Some(recorded) = &resume.checksum {
        if *recorded != section.checksum {
            return Err(ExecError::BackfillScriptChanged {
                revision: step.revision.clone(),
                path: script.path.clone(),
            });
        }
    }
    let n_phases = section.phases.len();
    // The history row's duration covers this attempt only; earlier attempts' batches are not counted.
    let started = Instant::now();
    for (index, phase) in section.phases.iter().enumerate().skip(resume.phase) {
        match phase {
            Phase::Sql(statements) => {
                let is_last = index + 1 == n_phases;
                let mut batch: Vec<(String, Option<usize>)> = vec![
                    ("BEGIN".into(), None),
                    (
                        format!(
                            "SET LOCAL flotilla.revision = {}; SET LOCAL flotilla.direction = {}",
                            quote_literal(revision),
                            quote_literal(word)
                        ),
                        None,
                    ),
                ];
                batch.extend(opts.before_each.iter().map(|s| (s.clone(), None)));
                batch.extend(statements.iter().map(|s| (s.sql.clone(), Some(s.line))));
                batch.extend(opts.after_each.iter().map(|s| (s.clone(), None)));
                let bookkeeping = if is_last {
                    let mut sql = store.rows_sql(&step.delete_rows, &step.insert_rows);
                    let duration = started.elapsed().as_millis().to_string();
                    sql.push(
                        store.history_sql(
                            &HistoryEntry::new(revision, word, "applied", true)
                                .checksum(&section.checksum)
                                .duration_sql(&duration),
                        ),
                    );
                    sql.push(finish_sql(&table, revision, word));
                    sql
                } else {
                    vec![advance_sql(&table, revision, word, index + 1, &section.checksum)]
                };
                batch.push((bookkeeping.join(";\n"), None));
                batch.push(("COMMIT".into(), None));
                let results =
                    futures_util::future::join_all(batch.iter().map(|(sql, _)| client.batch_execute(sql))).await;
                let first_error = results
                    .into_iter()
                    .zip(&batch)
                    .find_map(|(result, (_, line))| result.err().map(|e| (e, *line)));
                if let Some((source, line)) = first_error {
                    return Err(step_error(step, script, line, source));
                }
            }
            Phase::Backfill(backfill) => {
                let run = BackfillRun {
                    client,
                    spec: &backfill.spec,
                    statement: &backfill.statement.sql,
                    progress_table: &table,
                    revision,
                    direction: word,
                    rows_per_second: opts.backfill_rate,
                    fleet: opts.backfill_fleet.clone(),
                    gate: opts.batch_gate.clone(),
                    stop,
                };
                let mut on_progress = |rows_done: u64, rows_estimated: Option<u64>| {
                    on_event(ExecEvent::BackfillProgress {
                        revision: step.revision.clone(),
                        rows_done,
                        rows_estimated,
                    })
                };
                let outcome = run_backfill(&run, resume.checkpoint.take(), resume.rows_done, &mut on_progress)
                    .await
                    .map_err(|e| backfill_error(step, script, backfill.statement.line, e))?;
                match outcome {
                    BatchOutcome::Done { rows_done } => resume.rows_done = rows_done,
                    BatchOutcome::Stopped { .. } => return Err(ExecError::Interrupted),
                }
                client
                    .batch_execute(&advance_sql(&table, revision, word, index + 1, &section.checksum))
                    .await
                    .map_err(|e| step_error(step, script, Some(backfill.marker_line), e))?;
            }
        }
    }
    Ok(())
}

/// A backfill's error as the step's, at its statement's line; a key over `max_hold` keeps the server's
/// SQLSTATE (57014, or the lock probe's 55P03) and says what happened in its message.
fn backfill_error(step: &Step, script: &Script, line: usize, error: BackfillError) -> ExecError {
    let (pg, text) = error.into_parts();
    let mut error = step_error(step, script, Some(line), pg);
    if let (ExecError::Step { message, .. }, Some(text)) = (&mut error, text) {
        *message = text;
    }
    error
}
