//! The batch loop on one connection: find the next batch's upper key, run the statement over (checkpoint,
//! upper], and move the checkpoint, all in one short transaction per batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, SimpleQueryMessage};

use super::spec::{BackfillSpec, Estimate};
use super::sql::{batch_sql, count_sql, estimate_sql, upper_sql, Bounds, ProgressRow};
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

/// Run batches from `checkpoint` (the last key done, `None` to start at the beginning) until no key is left or
/// `stop` is set. `rows_done` is the count already done before this call; `on_progress(rows_done, estimate)`
/// is called once at the start and after every committed batch.
///
/// Each batch is one transaction: `BEGIN`, the statement over the batch's bounds, the checkpoint update,
/// `COMMIT`; so a batch and its checkpoint commit together or not at all, and a rerun never repeats or skips
/// one. The keyset query that finds the next batch's upper key runs after the `COMMIT`, in the same message
/// (see [`batch_sql`]), so a batch costs one round trip and the keyset query holds no batch's locks.
/// Errors are the server's or the connection's; the transaction is rolled back best effort.
pub async fn run_backfill(
    run: &BackfillRun<'_>,
    mut checkpoint: Option<Vec<String>>,
    mut rows_done: u64,
    on_progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
) -> Result<BatchOutcome, tokio_postgres::Error> {
    let estimated = estimate(run).await?;
    on_progress(rows_done, estimated);
    if run.stop.load(Ordering::Relaxed) {
        return Ok(BatchOutcome::Stopped { rows_done });
    }
    let own = run.rows_per_second.and_then(RowThrottle::new);
    let mut sizer = BatchSizer::new(run.spec.batch_size, run.spec.target);
    let first = upper_sql(run.spec, checkpoint.as_deref(), sizer.size());
    let mut next = next_batch(run.client.simple_query(&first).await?);
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
        let started = Instant::now();
        let bounds = Bounds {
            lower: checkpoint.take(),
            upper,
        };
        // The size chosen now is the batch after this one: the sizer's view lags one batch behind.
        let progress = ProgressRow {
            table: run.progress_table,
            revision: run.revision,
            direction: run.direction,
        };
        let message = batch_sql(run.spec, run.statement, progress, &bounds, n_rows, sizer.size());
        match run.client.simple_query(&message).await {
            Ok(messages) => next = next_batch(messages),
            Err(e) => {
                // Also after a failed keyset query, whose batch has committed: ROLLBACK then only warns.
                let _ = run.client.batch_execute("ROLLBACK").await;
                return Err(e);
            }
        }
        let elapsed = started.elapsed();
        tracing::debug!(
            revision = run.revision,
            rows = n_rows,
            ms = elapsed.as_secs_f64() * 1000.0,
            "backfill batch committed"
        );
        checkpoint = Some(bounds.upper);
        rows_done += n_rows;
        on_progress(rows_done, estimated);
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
