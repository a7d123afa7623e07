//! The batch loop on one connection: find the next batch's upper key, run the statement over (checkpoint,
//! upper], and move the checkpoint, all in one short transaction per batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, SimpleQueryMessage};

use super::spec::{BackfillSpec, Estimate};
use super::sql::{checkpoint_sql, count_sql, estimate_sql, predicate, substitute, upper_sql, Bounds};
use super::throttle::{BatchSizer, RowThrottle};
use crate::executor::quote_literal;

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

fn rows(messages: Vec<SimpleQueryMessage>) -> Vec<Vec<Option<String>>> {
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect()),
            _ => None,
        })
        .collect()
}

async fn estimate(run: &BackfillRun<'_>) -> Result<Option<u64>, tokio_postgres::Error> {
    let first = |sql: String| async move {
        let found = rows(run.client.simple_query(&sql).await?);
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
/// Each batch is `BEGIN`, the keyset query, the statement over the batch's bounds, the checkpoint update,
/// `COMMIT`: so a batch and its checkpoint commit together or not at all, and a rerun never repeats or skips
/// one. Errors are the server's or the connection's; the transaction is rolled back best effort.
pub async fn run_backfill(
    run: &BackfillRun<'_>,
    mut checkpoint: Option<Vec<String>>,
    mut rows_done: u64,
    on_progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
) -> Result<BatchOutcome, tokio_postgres::Error> {
    let estimated = estimate(run).await?;
    on_progress(rows_done, estimated);
    let own = run.rows_per_second.and_then(RowThrottle::new);
    let mut sizer = BatchSizer::new(run.spec.batch_size, run.spec.target);
    let settings = format!(
        "BEGIN; SET LOCAL flotilla.revision = {}; SET LOCAL flotilla.direction = {}",
        quote_literal(run.revision),
        quote_literal(run.direction)
    );
    loop {
        if run.stop.load(Ordering::Relaxed) {
            return Ok(BatchOutcome::Stopped { rows_done });
        }
        let started = Instant::now();
        let limit = sizer.size();
        let query = format!("{settings}; {}", upper_sql(run.spec, checkpoint.as_deref(), limit));
        let found = match run.client.simple_query(&query).await {
            Ok(messages) => rows(messages),
            Err(e) => {
                let _ = run.client.batch_execute("ROLLBACK").await;
                return Err(e);
            }
        };
        let Some(row) = found.into_iter().next() else {
            run.client.batch_execute("ROLLBACK").await?;
            return Ok(BatchOutcome::Done { rows_done });
        };
        let n_rows: u64 = row[0].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
        // A NULL key never passes the keyset filter, so the upper bound has no NULLs; keep the text form.
        let upper: Vec<String> = row[1..].iter().map(|v| v.clone().unwrap_or_default()).collect();
        let bounds = Bounds {
            lower: checkpoint.take(),
            upper,
        };
        let work = format!(
            "{};\n{};\nCOMMIT",
            substitute(run.statement, &predicate(run.spec, &bounds)),
            checkpoint_sql(run.progress_table, run.revision, run.direction, &bounds.upper, n_rows)
        );
        if let Err(e) = run.client.batch_execute(&work).await {
            let _ = run.client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
        checkpoint = Some(bounds.upper);
        rows_done += n_rows;
        on_progress(rows_done, estimated);
        sizer.observe(n_rows, started.elapsed());
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
