//! The attributes of a `-- flotilla:backfill` marker line, parsed and checked without any database.

use std::time::Duration;

use crate::config::parse_duration;

/// The placeholder a backfill statement must contain: it becomes the batch's key predicate.
pub const BATCH_PLACEHOLDER: &str = "{{batch}}";

/// The smallest `max_hold` accepted: below it the statement's share would be a few milliseconds, which a
/// busy server's scheduling alone can use up.
pub const MIN_MAX_HOLD: Duration = Duration::from_millis(20);

/// How the total row count shown in progress is estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Estimate {
    /// `pg_class.reltuples` (free), or `count(*)` when the table was never analysed.
    #[default]
    Reltuples,
    /// An exact `count(*)` before the first batch.
    Count,
    /// No estimate.
    None,
}

/// How each batch's `COMMIT` waits for the server's write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchCommit {
    /// `SET LOCAL synchronous_commit = off` in every batch: a batch's `COMMIT` returns without waiting for its
    /// WAL flush. A server crash can lose the last batches (at most about three `wal_writer_delay`s of them),
    /// always together with their checkpoints, because WAL is replayed in order; the next run redoes them.
    /// The revision's last phase (version rows, history row) still commits with the session's setting, and
    /// its flush makes every earlier batch durable before the revision counts as applied.
    #[default]
    Async,
    /// Every batch commits with the session's `synchronous_commit` (one WAL flush, and with synchronous
    /// replication one standby confirmation, per batch).
    Sync,
}

/// One backfill's declaration: `table=T key=K[,K2...] batch_size=N [pause=D] [target=D] [max_hold=D]
/// [estimate=E] [commit=async|sync] [reverse=none]`.
///
/// Invariant: `table` and every `key` column are SQL identifiers (`[A-Za-z_][A-Za-z0-9_$]*`, the table
/// optionally `schema.table`), used unquoted so they fold to lower case exactly as in the statement itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillSpec {
    pub table: String,
    /// The unique key, in order; several columns make a composite key compared as a row.
    pub key: Vec<String>,
    pub batch_size: u64,
    /// Sleep between batches.
    pub pause: Duration,
    /// Adaptive sizing: grow or shrink the batch toward this duration per batch.
    pub target: Option<Duration>,
    /// The ceiling on how long a batch transaction may hold its locks: its statements run under a
    /// `statement_timeout` below it, and a batch cancelled by it is rolled back and split (see `hold.rs`).
    /// Invariant: at least [`MIN_MAX_HOLD`], and above `target` when both are given.
    pub max_hold: Option<Duration>,
    pub estimate: Estimate,
    /// `commit=async` (default) or `commit=sync`.
    pub commit: BatchCommit,
    /// `reverse=none`: the downgrade needs no batched reversal (it drops what the backfill wrote).
    pub is_reverse_none: bool,
}

/// What is wrong with a marker's attributes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackfillSpecError {
    #[error("backfill attribute `{text}` is not `name=value`")]
    NotKeyValue { text: String },
    #[error(
        "unknown backfill attribute `{name}` (known: table, key, batch_size, pause, target, max_hold, estimate, commit, \
         reverse)"
    )]
    UnknownAttribute { name: String },
    #[error("backfill attribute `{name}` given twice")]
    Duplicate { name: String },
    #[error("backfill needs `{name}=...`")]
    Missing { name: &'static str },
    #[error("`{value}` is not a plain SQL identifier (letters, digits, `_`, `$`; a table may be `schema.table`)")]
    BadIdentifier { value: String },
    #[error("`batch_size` must be a whole number from 1 to 1000000, not `{value}`")]
    BadBatchSize { value: String },
    #[error("`{name}` is not a duration: `{value}` (use e.g. 50ms or 2s)")]
    BadDuration { name: &'static str, value: String },
    #[error("`max_hold` must be at least 20ms, not `{value}`")]
    MaxHoldTooShort { value: String },
    #[error(
        "`target` ({target}) must be below `max_hold` ({max_hold}): the sizer aims at the typical batch, so aim at a \
         quarter to a half of the ceiling"
    )]
    TargetNotBelowMaxHold { target: String, max_hold: String },
    #[error("`estimate` must be reltuples, count or none, not `{value}`")]
    BadEstimate { value: String },
    #[error("`commit` must be async or sync, not `{value}`")]
    BadCommit { value: String },
    #[error(
        "`reverse` may only be `none`, not `{value}`; declare a reverse backfill in the downgrade section instead"
    )]
    BadReverse { value: String },
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

impl BackfillSpec {
    /// Parse the text after `-- flotilla:backfill`. Returns every problem found.
    pub fn parse(attrs: &str) -> Result<BackfillSpec, Vec<BackfillSpecError>> {
        let mut errors = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        let mut spec = BackfillSpec {
            table: String::new(),
            key: Vec::new(),
            batch_size: 1000,
            pause: Duration::ZERO,
            target: None,
            max_hold: None,
            estimate: Estimate::default(),
            commit: BatchCommit::default(),
            is_reverse_none: false,
        };
        for word in attrs.split_whitespace() {
            let Some((name, value)) = word.split_once('=') else {
                errors.push(BackfillSpecError::NotKeyValue { text: word.into() });
                continue;
            };
            if seen.contains(&name) {
                errors.push(BackfillSpecError::Duplicate { name: name.into() });
                continue;
            }
            seen.push(name);
            let duration = |name: &'static str| {
                parse_duration(value).map_err(|_| BackfillSpecError::BadDuration {
                    name,
                    value: value.into(),
                })
            };
            let result = match name {
                "table" => {
                    if value.split('.').count() <= 2 && value.split('.').all(is_identifier) {
                        spec.table = value.into();
                        Ok(())
                    } else {
                        Err(BackfillSpecError::BadIdentifier { value: value.into() })
                    }
                }
                "key" => {
                    let columns: Vec<&str> = value.split(',').collect();
                    match columns.iter().find(|c| !is_identifier(c)) {
                        Some(bad) => Err(BackfillSpecError::BadIdentifier {
                            value: (*bad).to_string(),
                        }),
                        None => {
                            spec.key = columns.into_iter().map(String::from).collect();
                            Ok(())
                        }
                    }
                }
                "batch_size" => match value.parse::<u64>() {
                    Ok(n) if (1..=1_000_000).contains(&n) => {
                        spec.batch_size = n;
                        Ok(())
                    }
                    _ => Err(BackfillSpecError::BadBatchSize { value: value.into() }),
                },
                "pause" => duration("pause").map(|d| spec.pause = d),
                "target" => duration("target").map(|d| spec.target = Some(d).filter(|d| !d.is_zero())),
                "max_hold" => duration("max_hold").and_then(|d| {
                    if d < MIN_MAX_HOLD {
                        return Err(BackfillSpecError::MaxHoldTooShort { value: value.into() });
                    }
                    spec.max_hold = Some(d);
                    Ok(())
                }),
                "estimate" => match value {
                    "reltuples" => Ok(Estimate::Reltuples),
                    "count" => Ok(Estimate::Count),
                    "none" => Ok(Estimate::None),
                    _ => Err(BackfillSpecError::BadEstimate { value: value.into() }),
                }
                .map(|e| spec.estimate = e),
                "commit" => match value {
                    "async" => Ok(BatchCommit::Async),
                    "sync" => Ok(BatchCommit::Sync),
                    _ => Err(BackfillSpecError::BadCommit { value: value.into() }),
                }
                .map(|c| spec.commit = c),
                "reverse" if value == "none" => {
                    spec.is_reverse_none = true;
                    Ok(())
                }
                "reverse" => Err(BackfillSpecError::BadReverse { value: value.into() }),
                _ => Err(BackfillSpecError::UnknownAttribute { name: name.into() }),
            };
            if let Err(e) = result {
                errors.push(e);
            }
        }
        if !seen.contains(&"table") {
            errors.push(BackfillSpecError::Missing { name: "table" });
        }
        if !seen.contains(&"key") {
            errors.push(BackfillSpecError::Missing { name: "key" });
        }
        if let (Some(target), Some(max_hold)) = (spec.target, spec.max_hold) {
            if target >= max_hold {
                errors.push(BackfillSpecError::TargetNotBelowMaxHold {
                    target: format!("{}ms", target.as_millis()),
                    max_hold: format!("{}ms", max_hold.as_millis()),
                });
            }
        }
        if errors.is_empty() {
            Ok(spec)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(attrs: &str, expected: Result<(&str, &[&str], u64), &[BackfillSpecError]>) {
        let got = BackfillSpec::parse(attrs);
        match (got, expected) {
            (Ok(spec), Ok((table, key, batch))) => {
                assert_eq!(spec.table, table);
                assert_eq!(spec.key, key);
                assert_eq!(spec.batch_size, batch);
            }
            (Err(errors), Err(expected)) => assert_eq!(errors, expected),
            (got, expected) => panic!("{attrs}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn backfill_spec_attributes() {
        check("table=orders key=id", Ok(("orders", &["id"], 1000)));
        check(
            "table=app.orders key=tenant_id,id batch_size=50 pause=10ms target=200ms estimate=count commit=sync \
             reverse=none",
            Ok(("app.orders", &["tenant_id", "id"], 50)),
        );
        check("table=orders", Err(&[BackfillSpecError::Missing { name: "key" }]));
        check(
            "table=\"x\" key=id batch_size=0 colour=red",
            Err(&[
                BackfillSpecError::BadIdentifier { value: "\"x\"".into() },
                BackfillSpecError::BadBatchSize { value: "0".into() },
                BackfillSpecError::UnknownAttribute { name: "colour".into() },
            ]),
        );
        check(
            "table=t key=id pause=soon reverse=sql",
            Err(&[
                BackfillSpecError::BadDuration {
                    name: "pause",
                    value: "soon".into(),
                },
                BackfillSpecError::BadReverse { value: "sql".into() },
            ]),
        );
        check(
            "table=t key=id key=x",
            Err(&[BackfillSpecError::Duplicate { name: "key".into() }]),
        );
        let spec = BackfillSpec::parse("table=t key=id pause=50ms target=200ms").expect("valid");
        assert_eq!(spec.pause, Duration::from_millis(50));
        assert_eq!(spec.target, Some(Duration::from_millis(200)));
        assert_eq!(
            spec.commit,
            BatchCommit::Async,
            "batches commit without waiting for a flush by default"
        );
        let spec = BackfillSpec::parse("table=t key=id commit=sync").expect("valid");
        assert_eq!(spec.commit, BatchCommit::Sync);
        check(
            "table=t key=id commit=off",
            Err(&[BackfillSpecError::BadCommit { value: "off".into() }]),
        );
    }

    #[test]
    fn backfill_spec_max_hold() {
        let spec = BackfillSpec::parse("table=t key=id").expect("valid");
        assert_eq!(spec.max_hold, None, "no ceiling unless the marker asks for one");
        let spec = BackfillSpec::parse("table=t key=id target=50ms max_hold=200ms").expect("valid");
        assert_eq!(spec.max_hold, Some(Duration::from_millis(200)));
        assert_eq!(spec.target, Some(Duration::from_millis(50)));
        let spec = BackfillSpec::parse("table=t key=id max_hold=1s batch_size=5000").expect("valid");
        assert_eq!(spec.max_hold, Some(Duration::from_secs(1)));
        assert_eq!(spec.target, None, "a ceiling alone keeps fixed sizing");
        check(
            "table=t key=id max_hold=10ms",
            Err(&[BackfillSpecError::MaxHoldTooShort { value: "10ms".into() }]),
        );
        check(
            "table=t key=id max_hold=soon",
            Err(&[BackfillSpecError::BadDuration {
                name: "max_hold",
                value: "soon".into(),
            }]),
        );
        check(
            "table=t key=id target=200ms max_hold=200ms",
            Err(&[BackfillSpecError::TargetNotBelowMaxHold {
                target: "200ms".into(),
                max_hold: "200ms".into(),
            }]),
        );
        check(
            "table=t key=id max_hold=200ms max_hold=300ms",
            Err(&[BackfillSpecError::Duplicate {
                name: "max_hold".into(),
            }]),
        );
    }
}
