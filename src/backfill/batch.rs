//! The batch loop on one connection: find the next batch's upper key, run the statement over (checkpoint,
//! upper], and move the checkpoint, all in one short transaction per batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::hold::{after_error, AfterError, BatchError, HoldBudget};
use super::spec::{BackfillSpec, Estimate};
use super::sql::{batch_sql, count_sql, estimate_sql, key_equals, upper_sql, Bounds, ProgressRow};
use super::throttle::{BatchSizer, RowThrottle};

/// One backfill to run: what, where its checkpoint lives, and the throttles that apply.
pub struct BackfillRun<'a> {
    pub client: &'a Client,
    pub spec: &'a BackfillSpec,
    /// The statement, still holding `{{batch}}`.
    pub statement: &'a str,
    /// The qualified progress table.
    pub progress_table: &'a str,
    pub revision: &'a str,
    /// `up` or `down`.
    pub direction: &'a str,
    /// Rows per second for this database alone.
    pub rows_per_second: Option<f64>,
    /// The fleet-wide budget, shared with every other tenant of the run.
    pub fleet: Option<Arc<RowThrottle>>,
    /// Waited on before each batch (the fleet's health throttling of this server).
    pub gate: Option<Arc<dyn super::throttle::BatchGate>>,
    pub stop: &'a AtomicBool,
}

/// How the loop ended; the checkpoint of every committed batch is in the progress table either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// No key is left after the checkpoint.
    Done { rows_done: u64 },
    /// The stop flag was set; the loop stopped between batches.
    Stopped { rows_done: u64 },
}

/// The rows of the last statement of a multi-statement simple query (the keyset query comes last, after the
/// batch statement, which may return rows of its own).
fn last_rows(messages: Vec<SimpleQueryMessage>) -> Vec<Vec<Option<String>>> {
    let mut current = Vec::new();
    let mut last = Vec::new();
    for message in messages {
        match message {
            SimpleQueryMessage::Row(row) => {
                current.push((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect())
            }
            SimpleQueryMessage::CommandComplete(_) => last = std::mem::take(&mut current),
            _ => {}
        }
    }
    last
}

/// The next batch as the keyset query answered it: how many keys and the last one, or `None` when no key is
/// left.
fn next_batch(messages: Vec<SimpleQueryMessage>) -> Option<(u64, Vec<String>)> {
    let row = last_rows(messages).into_iter().next()?;
    let n_rows = row[0].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
    // A NULL key never passes the keyset filter, so the upper bound has no NULLs; keep the text form.
    let upper = row[1..].iter().map(|v| v.clone().unwrap_or_default()).collect();
    Some((n_rows, upper))
}

async fn estimate(run: &BackfillRun<'_>) -> Result<Option<u64>, tokio_postgres::Error> {
    let first = |sql: String| async move {
        let found = last_rows(run.client.simple_query(&sql).await?);
        Ok::<_, tokio_postgres::Error>(
            found
                .first()
                .and_then(|r| r[0].as_deref())
                .and_then(|v| v.parse::<i64>().ok()),
        )
    };
    let n = match run.spec.estimate {
        Estimate::None => return Ok(None),
        Estimate::Count => first(count_sql(run.spec)).await?,
        // reltuples is -1 until the table is first vacuumed or analysed (PostgreSQL 14 and later).
        Estimate::Reltuples => match first(estimate_sql(run.spec)).await? {
            Some(n) if n >= 0 => Some(n),
            _ => first(count_sql(run.spec)).await?,
        },
    };
    Ok(n.map(|n| n.max(0) as u64))
}

/// Why a backfill stopped with an error; the checkpoint of every committed batch is in the progress table.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// The server's or the connection's error.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    /// A batch of one key was still cancelled by the `max_hold` ceiling: the statement is too slow for that
    /// key alone, and splitting cannot help.
    #[error(
        "the batch of the single key {key} ran longer than max_hold={max_hold_ms}ms allows (statement_timeout \
         {statement_ms}ms, which counts lock waits too) and was rolled back; raise max_hold, or make the statement \
         cheaper for that key: {}",
        crate::executor::db_message(.pg)
    )]
    KeyOverMaxHold {
        /// The key, as a condition (`(id) = ('42')`).
        key: String,
        max_hold_ms: u128,
        statement_ms: u128,
        pg: tokio_postgres::Error,
    },
    /// Like [`BackfillError::KeyOverMaxHold`], but another session holds that key's row lock: the batch waited
    /// for it past the ceiling. Carries the lock probe's error (SQLSTATE 55P03, transient, as a
    /// `lock_timeout` is).
    #[error(
        "the batch of the single key {key} was cancelled by max_hold={max_hold_ms}ms while another session holds \
         that row's lock, and was rolled back: {}",
        crate::executor::db_message(.pg)
    )]
    KeyLocked {
        key: String,
        max_hold_ms: u128,
        pg: tokio_postgres::Error,
    },
}

impl BackfillError {
    /// The server's error behind this one, and this error's own message when it says more than the server's.
    pub fn into_parts(self) -> (tokio_postgres::Error, Option<String>) {
        let text = self.to_string();
        match self {
            BackfillError::Db(pg) => (pg, None),
            BackfillError::KeyOverMaxHold { pg, .. } | BackfillError::KeyLocked { pg, .. } => (pg, Some(text)),
        }
    }
}

/// The session's `statement_timeout` (set by flotilla, the role, the database or the server), or `None`.
async fn session_timeout(client: &Client) -> Result<Option<Duration>, tokio_postgres::Error> {
    let sql = "SELECT setting FROM pg_settings WHERE name = 'statement_timeout'";
    let ms = last_rows(client.simple_query(sql).await?)
        .first()
        .and_then(|r| r[0].as_deref())
        .and_then(|v| v.parse::<u64>().ok());
    Ok(ms.filter(|&ms| ms > 0).map(Duration::from_millis))
}

/// The server-side time (ms) from the batch transaction's start to its checkpoint, which the checkpoint
/// update returns.
fn held_ms(messages: Vec<SimpleQueryMessage>) -> Option<f64> {
    last_rows(messages).first()?.first()?.as_deref()?.parse().ok()
}

/// Run batches from `checkpoint` (the last key done, `None` to start at the beginning) until no key is left or
/// `stop` is set. `rows_done` is the count already done before this call; `on_progress(rows_done, estimate)`
/// is called once at the start and after every committed batch.
///
/// Each batch is one transaction: the statement over the batch's bounds and the checkpoint update, committed
/// together or not at all, so a rerun never repeats or skips one (see [`batch_sql`]). The keyset query that
/// finds the next batch's upper key is a second message sent together with it (one round trip), so it holds
/// none of the batch's locks; its answer is used only when the batch committed.
///
/// With `max_hold`, a batch cancelled by its share of the ceiling (see [`super::hold`]) is rolled back by the
/// server and its key range is run again as a batch of half as many keys, which is not an error; a single key
/// that is still cancelled is [`BackfillError::KeyOverMaxHold`].
pub async fn run_backfill(
    run: &BackfillRun<'_>,
    mut checkpoint: Option<Vec<String>>,
    mut rows_done: u64,
    on_progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
) -> Result<BatchOutcome, BackfillError> {
    let estimated = estimate(run).await?;
    on_progress(rows_done, estimated);
    if run.stop.load(Ordering::Relaxed) {
        return Ok(BatchOutcome::Stopped { rows_done });
    }
    let budget = match run.spec.max_hold {
        Some(max_hold) => Some(HoldBudget::new(max_hold, session_timeout(run.client).await?)),
        None => None,
    };
    let own = run.rows_per_second.and_then(RowThrottle::new);
    let mut sizer = BatchSizer::new(run.spec.batch_size, run.spec.target);
    if let Some(budget) = &budget {
        sizer = sizer.with_ceiling(budget.statement);
    }
    let first = upper_sql(run.spec, checkpoint.as_deref(), sizer.size());
    let mut next = next_batch(run.client.simple_query(&first).await?);
    let progress = ProgressRow {
        table: run.progress_table,
        revision: run.revision,
        direction: run.direction,
    };
    loop {
        let Some((n_rows, upper)) = next.take() else {
            return Ok(BatchOutcome::Done { rows_done });
        };
        if run.stop.load(Ordering::Relaxed) {
            return Ok(BatchOutcome::Stopped { rows_done });
        }
        if let Some(gate) = &run.gate {
            if !gate.wait().await {
                return Ok(BatchOutcome::Stopped { rows_done });
            }
        }
        let bounds = Bounds {
            lower: checkpoint.clone(),
            upper,
        };
        let transaction = batch_sql(run.spec, run.statement, progress, &bounds, n_rows, budget.as_ref());
        // The size chosen now is the batch after this one: the sizer's view lags one batch behind.
        let keyset = upper_sql(run.spec, Some(&bounds.upper), sizer.size());
        let started = Instant::now();
        // Both messages go out together; the driver answers them in order, so the batch's answer (and how
        // long it took) comes first.
        let batch = async {
            let answer = run.client.simple_query(&transaction).await;
            (answer, started.elapsed())
        };
        let ((answer, elapsed), next_answer) = futures_util::join!(batch, run.client.simple_query(&keyset));
        let held = match answer {
            Ok(messages) => held_ms(messages),
            Err(e) => {
                let decision = budget.as_ref().map_or(AfterError::Fail, |budget| {
                    after_error(
                        budget,
                        BatchError {
                            sqlstate: e.code().map(|c| c.code()),
                            message: e.as_db_error().map_or("", |db| db.message()),
                            elapsed,
                            is_stopping: run.stop.load(Ordering::Relaxed),
                            n_rows,
                        },
                    )
                });
                match (decision, &budget) {
                    (AfterError::Split { limit }, _) => {
                        tracing::debug!(
                            revision = run.revision,
                            rows = n_rows,
                            limit,
                            ms = elapsed.as_secs_f64() * 1000.0,
                            "backfill batch over max_hold rolled back; splitting it"
                        );
                        sizer.split(limit);
                        // The same key range again, from the same checkpoint, as a smaller batch.
                        let retry = upper_sql(run.spec, checkpoint.as_deref(), sizer.size());
                        next = next_batch(run.client.simple_query(&retry).await?);
                        continue;
                    }
                    (AfterError::KeyOverMaxHold, Some(budget)) => {
                        let key = key_equals(run.spec, &bounds.upper);
                        // A row lock held by another session stalls a single key as a slow statement does; a
                        // lock is worth telling apart, because it passes (the fleet retries it, as it does a
                        // lock_timeout). Best effort: the holder may be gone by now, and the statement may
                        // wait on rows of other tables.
                        let probe = format!("SELECT 1 FROM {} WHERE {key} FOR UPDATE NOWAIT", run.spec.table);
                        if let Err(pg) = run.client.simple_query(&probe).await {
                            if pg.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
                                return Err(BackfillError::KeyLocked {
                                    key,
                                    max_hold_ms: budget.max_hold.as_millis(),
                                    pg,
                                });
                            }
                        }
                        return Err(BackfillError::KeyOverMaxHold {
                            key,
                            max_hold_ms: budget.max_hold.as_millis(),
                            statement_ms: budget.statement.as_millis(),
                            pg: e,
                        });
                    }
                    _ => return Err(e.into()),
                }
            }
        };
        tracing::debug!(
            revision = run.revision,
            rows = n_rows,
            ms = elapsed.as_secs_f64() * 1000.0,
            held_ms = held.unwrap_or(-1.0),
            "backfill batch committed"
        );
        checkpoint = Some(bounds.upper);
        rows_done += n_rows;
        on_progress(rows_done, estimated);
        // The batch committed even when the keyset query after it failed; the next run resumes after it.
        next = next_batch(next_answer?);
        sizer.observe(n_rows, elapsed);
        if let Some(own) = &own {
            own.wait(n_rows).await;
        }
        if let Some(fleet) = &run.fleet {
            fleet.wait(n_rows).await;
        }
        if run.spec.pause > Duration::ZERO {
            tokio::time::sleep(run.spec.pause).await;
        }
    }
}
