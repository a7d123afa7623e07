//! The lock-hold ceiling of a backfill (`max_hold=`): how it is split into `statement_timeout`s for a batch's
//! statements, and what to do when a batch fails (split it, or give up). Pure: the batch loop (`batch.rs`)
//! sets the timeouts, sends the batch and acts on [`after_error`]'s answer.
//!
//! A batch is one implicit transaction (one simple-query message without `BEGIN`), so when a statement is
//! cancelled the server rolls it back at once and its locks go with it, without waiting for the client.

use std::time::Duration;

/// SQLSTATE `query_canceled`: a `statement_timeout`, a cancel request (Ctrl-C twice, `pg_cancel_backend`).
pub const QUERY_CANCELED: &str = "57014";

/// The `statement_timeout`s of one batch's statements under a ceiling.
///
/// The batch statement gets three quarters of the ceiling and the checkpoint update an eighth; the last eighth
/// is left for the `COMMIT` and the server's hand-over between statements, which no timeout covers. PostgreSQL
/// (13 and later) times each statement of a multi-statement message on its own, so the two add up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldBudget {
    pub max_hold: Duration,
    /// The batch statement's `statement_timeout`.
    pub statement: Duration,
    /// The checkpoint update's `statement_timeout`.
    pub checkpoint: Duration,
    /// Whether these timeouts are the binding ones: false when the session's own `statement_timeout` is at or
    /// below the statement's share, which then cancels first and fails the step as it always did.
    pub is_binding: bool,
}

impl HoldBudget {
    /// The budget for `max_hold`, given the session's `statement_timeout` (`None` or zero: none).
    pub fn new(max_hold: Duration, session_timeout: Option<Duration>) -> HoldBudget {
        let ms = |d: Duration| Duration::from_millis((d.as_millis() as u64).max(1));
        let session = session_timeout.filter(|d| !d.is_zero());
        let statement = ms(max_hold * 3 / 4);
        let checkpoint = ms(max_hold / 8);
        HoldBudget {
            max_hold,
            statement: session.map_or(statement, |s| s.min(statement)),
            checkpoint: session.map_or(checkpoint, |s| s.min(checkpoint)),
            is_binding: session.is_none_or(|s| s > statement),
        }
    }
}

/// What the batch loop does after a batch transaction failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterError {
    /// The ceiling cancelled it (and the server rolled it back): run the same key range again as a batch of
    /// `limit` keys, half the failed one's.
    Split { limit: u64 },
    /// The ceiling cancelled a batch of a single key: it cannot be split, so the backfill fails.
    KeyOverMaxHold,
    /// Any other error (including a cancel that is not the ceiling's): the backfill fails with it.
    Fail,
}

/// How a batch transaction of `n_rows` keys failed: its SQLSTATE, the server's message, how long the client
/// waited for the answer, and whether the run was stopping (the second Ctrl-C cancels the running statement).
#[derive(Debug, Clone, Copy)]
pub struct BatchError<'a> {
    pub sqlstate: Option<&'a str>,
    pub message: &'a str,
    pub elapsed: Duration,
    pub is_stopping: bool,
    pub n_rows: u64,
}

/// Decide what a failed batch means under `budget`.
///
/// A `statement_timeout` and a cancel request share SQLSTATE 57014, and the message that tells them apart may
/// be translated (`lc_messages`), so the ceiling is blamed only when nothing else can explain the cancel: the
/// run is not stopping (a Ctrl-C cancel), the message is not the English "user request" one, and the client
/// waited at least the shortest timeout the batch set (a timeout cannot fire sooner; a cancel request from
/// elsewhere usually does).
pub fn after_error(budget: &HoldBudget, error: BatchError<'_>) -> AfterError {
    let is_ceiling = budget.is_binding
        && error.sqlstate == Some(QUERY_CANCELED)
        && !error.is_stopping
        && !error.message.contains("user request")
        && error.elapsed >= budget.statement.min(budget.checkpoint);
    match (is_ceiling, error.n_rows) {
        (false, _) => AfterError::Fail,
        (true, 0 | 1) => AfterError::KeyOverMaxHold,
        (true, n) => AfterError::Split { limit: n / 2 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backfill_hold_budget_shares_the_ceiling() {
        let b = HoldBudget::new(ms(200), None);
        assert_eq!((b.statement, b.checkpoint, b.is_binding), (ms(150), ms(25), true));
        assert!(b.statement + b.checkpoint < b.max_hold, "a margin is left for COMMIT");
        assert_eq!(
            HoldBudget::new(ms(200), Some(Duration::ZERO)),
            b,
            "zero is no session timeout"
        );
        let b = HoldBudget::new(ms(200), Some(ms(10_000)));
        assert_eq!((b.statement, b.checkpoint, b.is_binding), (ms(150), ms(25), true));
        let b = HoldBudget::new(ms(200), Some(ms(100)));
        assert_eq!(
            (b.statement, b.checkpoint, b.is_binding),
            (ms(100), ms(25), false),
            "a stricter session timeout wins and fails the step as before"
        );
        let b = HoldBudget::new(ms(20), None);
        assert_eq!((b.statement, b.checkpoint), (ms(15), ms(2)));
    }

    #[test]
    fn backfill_hold_after_error_splits_only_the_ceilings_cancel() {
        let budget = HoldBudget::new(ms(200), None);
        let timeout = BatchError {
            sqlstate: Some(QUERY_CANCELED),
            message: "canceling statement due to statement timeout",
            elapsed: ms(151),
            is_stopping: false,
            n_rows: 1000,
        };
        assert_eq!(after_error(&budget, timeout), AfterError::Split { limit: 500 });
        assert_eq!(
            after_error(&budget, BatchError { n_rows: 3, ..timeout }),
            AfterError::Split { limit: 1 }
        );
        assert_eq!(
            after_error(&budget, BatchError { n_rows: 1, ..timeout }),
            AfterError::KeyOverMaxHold
        );
        let translated = BatchError {
            message: "Abbruch der Anfrage wegen Zeitüberschreitung",
            ..timeout
        };
        assert_eq!(after_error(&budget, translated), AfterError::Split { limit: 500 });
        // The checkpoint update's shorter timeout also counts.
        assert_eq!(
            after_error(
                &budget,
                BatchError {
                    elapsed: ms(30),
                    ..timeout
                }
            ),
            AfterError::Split { limit: 500 }
        );
        assert_eq!(
            after_error(
                &budget,
                BatchError {
                    is_stopping: true,
                    ..timeout
                }
            ),
            AfterError::Fail,
            "the second Ctrl-C's cancel stops the run"
        );
        assert_eq!(
            after_error(
                &budget,
                BatchError {
                    message: "canceling statement due to user request",
                    ..timeout
                }
            ),
            AfterError::Fail,
            "pg_cancel_backend from elsewhere"
        );
        assert_eq!(
            after_error(
                &budget,
                BatchError {
                    elapsed: ms(5),
                    ..timeout
                }
            ),
            AfterError::Fail,
            "sooner than any timeout the batch set: a cancel request"
        );
        assert_eq!(
            after_error(
                &budget,
                BatchError {
                    sqlstate: Some("55P03"),
                    message: "canceling statement due to lock timeout",
                    ..timeout
                }
            ),
            AfterError::Fail,
            "lock_timeout fails the batch as before"
        );
        let session = HoldBudget::new(ms(200), Some(ms(100)));
        assert_eq!(after_error(&session, timeout), AfterError::Fail);
    }
}
