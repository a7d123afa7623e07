//! A server's health thresholds (`health`, `pause_*` keys of a `[[servers]]` entry), read with the tenants file.
//! `fleet::health` samples the signals and decides.

use std::time::Duration;

use toml::de::DeTable;
use toml::Spanned;

use super::doc::{get, Doc};
use super::error::ProblemKind;

/// A server's thresholds (`pause_*` keys of its `[[servers]]` entry; `health = true` turns on the defaults).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthLimits {
    /// Pause while at least this many sessions wait for a lock (`pg_locks` not granted).
    pub lock_waiters: Option<u64>,
    /// Pause while the server has fewer free connection slots than this (`max_connections` less sessions).
    pub free_connections: Option<u64>,
    /// Pause while a replica replays more than this far behind (`pg_stat_replication.replay_lag`, the largest).
    pub replay_lag: Option<Duration>,
    /// Pause while this query's one number is above `query_above`.
    pub query: Option<String>,
    pub query_above: Option<f64>,
}

impl HealthLimits {
    pub const DEFAULT_LOCK_WAITERS: u64 = 10;
    pub const DEFAULT_FREE_CONNECTIONS: u64 = 5;
    pub const DEFAULT_REPLAY_LAG: Duration = Duration::from_secs(30);
    /// A paused server resumes when every signal is under this fraction of its threshold (free connections:
    /// over the threshold divided by it).
    pub const RESUME_FRACTION: f64 = 0.8;

    /// `health = true`: every built-in signal at its default threshold.
    pub fn defaults() -> HealthLimits {
        HealthLimits {
            lock_waiters: Some(Self::DEFAULT_LOCK_WAITERS),
            free_connections: Some(Self::DEFAULT_FREE_CONNECTIONS),
            replay_lag: Some(Self::DEFAULT_REPLAY_LAG),
            query: None,
            query_above: None,
        }
    }

    pub fn is_off(&self) -> bool {
        self.lock_waiters.is_none()
            && self.free_connections.is_none()
            && self.replay_lag.is_none()
            && self.query.is_none()
    }
}

/// The thresholds of one `[[servers]]` entry: `health = true` turns on the built-in signals at their defaults,
/// each `pause_*` key turns one on (or sets its threshold); none: off.
pub(crate) fn read(doc: &mut Doc<'_>, table: &DeTable<'_>, server: &str) -> HealthLimits {
    let is_on = get(table, "health")
        .and_then(|v| doc.boolean("health", v))
        .unwrap_or(false);
    let mut limits = if is_on {
        HealthLimits::defaults()
    } else {
        HealthLimits::default()
    };
    let count = |doc: &mut Doc<'_>, key: &'static str| -> Option<u64> {
        let v = get(table, key)?;
        let n = doc.integer(key, v)?;
        match u64::try_from(*n.get_ref()) {
            Ok(n) => Some(n),
            Err(_) => {
                doc.report(
                    v.span(),
                    ProblemKind::Negative {
                        key,
                        value: *n.get_ref() as f64,
                    },
                );
                None
            }
        }
    };
    if let Some(n) = count(doc, "pause_lock_waiters") {
        limits.lock_waiters = Some(n);
    }
    if let Some(n) = count(doc, "pause_free_connections") {
        limits.free_connections = Some(n);
    }
    if let Some(lag) = get(table, "pause_replay_lag").and_then(|v| doc.duration("pause_replay_lag", v)) {
        limits.replay_lag = Some(lag);
    }
    let query: Option<Spanned<String>> = get(table, "pause_query").and_then(|v| doc.string("pause_query", v));
    let above = get(table, "pause_query_above").and_then(|v| doc.number("pause_query_above", v));
    match (query, above) {
        (Some(query), Some(above)) => {
            limits.query = Some(query.into_inner());
            limits.query_above = Some(*above.get_ref());
        }
        (Some(query), None) => doc.report(
            query.span(),
            ProblemKind::MissingKey {
                key: "pause_query_above",
                section: format!("server `{server}` (`pause_query` pauses when its number is above it)"),
            },
        ),
        (None, Some(above)) => doc.report(
            above.span(),
            ProblemKind::MissingKey {
                key: "pause_query",
                section: format!("server `{server}` (`pause_query_above` is the threshold of its number)"),
            },
        ),
        (None, None) => {}
    }
    limits
}
