//! Health throttling: cheap signals of a server's load (sessions waiting on locks, free connection slots,
//! replica replay lag, and a user query returning one number), sampled at most once a second per server and
//! shared by all its tenants. Over a threshold, that server's tenant starts wait (other servers' tenants go
//! on); they resume when every signal is back under the resume fraction of its threshold (hysteresis).
//!
//! Replay lag comes from the primary's `pg_stat_replication` and from each replica the server lists in
//! `replica_urls`, read on a connection of its own. A listed replica that cannot be read, or that is not in
//! recovery, pauses the server: nothing else in the run would notice it, and its lag is what the operator asked
//! to watch.
//!
//! [`judge`] and [`replica_state`] decide from a sample, purely; [`ServerHealth`] samples and waits (the
//! server's own signals are read by `Server::sample_health`, the replicas by [`ServerHealth::sample_replicas`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use crate::config::HealthLimits;

/// One statement reading every built-in signal `limits` configures (NULL for the others).
pub fn sample_sql(limits: &HealthLimits) -> String {
    let lock = if limits.lock_waiters.is_some() {
        "(SELECT count(*) FROM pg_catalog.pg_locks WHERE NOT granted)::float8"
    } else {
        "NULL::float8"
    };
    let free = if limits.free_connections.is_some() {
        "(current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int \
         - (SELECT count(*) FROM pg_catalog.pg_stat_activity))::float8"
    } else {
        "NULL::float8"
    };
    let lag = if limits.replay_lag.is_some() {
        "(SELECT coalesce(extract(epoch FROM max(replay_lag)), 0) FROM pg_catalog.pg_stat_replication)::float8"
    } else {
        "NULL::float8"
    };
    format!("SELECT {lock}, {free}, {lag}")
}

/// The statement a listed replica answers: whether it is in recovery, whether it has replayed all the WAL it
/// received (NULL when it receives none by streaming), and the seconds since the last transaction it replayed
/// committed on the primary (NULL before its first since it started).
pub const REPLICA_SQL: &str = "SELECT pg_catalog.pg_is_in_recovery(), \
     pg_catalog.pg_last_wal_replay_lsn() >= pg_catalog.pg_last_wal_receive_lsn(), \
     extract(epoch FROM now() - pg_catalog.pg_last_xact_replay_timestamp())::float8";

/// What one sample read (`None`: not configured, or the query gave no number).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthSample {
    pub lock_waiters: Option<f64>,
    pub free_connections: Option<f64>,
    pub replay_lag_secs: Option<f64>,
    pub query_value: Option<f64>,
    /// One reading per listed replica (`replica_urls`), in the order listed.
    pub replicas: Vec<ReplicaReading>,
}

/// One listed replica's reading.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaReading {
    /// The replica's url as messages show it.
    pub replica: String,
    pub state: ReplicaState,
}

/// What a listed replica's answer means for its lag.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaState {
    /// Seconds behind the primary; `None` when it cannot tell (WAL waits, but the replica has replayed no
    /// transaction since it started).
    Lag(Option<f64>),
    /// `pg_is_in_recovery()` is false: not a standby, or promoted.
    NotInRecovery,
    /// It could not be reached or read (the driver's message; the url holds no password).
    Unreadable(String),
}

/// The lag [`REPLICA_SQL`]'s answer means. A replica that has replayed everything it received is caught up (lag
/// 0), however long ago its last replayed transaction committed: otherwise an idle primary would look ever
/// more lagged. Otherwise the lag is the time since the last replayed transaction committed, an upper bound (its
/// first unreplayed transaction may be younger). A replica fed only from a WAL archive receives nothing by
/// streaming, so it is judged by that upper bound even when idle.
pub fn replica_state(is_in_recovery: bool, is_caught_up: Option<bool>, since_replay_secs: Option<f64>) -> ReplicaState {
    if !is_in_recovery {
        return ReplicaState::NotInRecovery;
    }
    if is_caught_up == Some(true) {
        return ReplicaState::Lag(Some(0.0));
    }
    // A clock a little behind the primary's gives a negative age.
    ReplicaState::Lag(since_replay_secs.map(|s| s.max(0.0)))
}

/// Pause or go, and why.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Go,
    Pause(String),
}

/// Decide from `sample` whether the server's work should wait; `is_paused` applies the hysteresis (a paused
/// server goes on only when every signal is under [`HealthLimits::RESUME_FRACTION`] of its threshold).
pub fn judge(limits: &HealthLimits, sample: &HealthSample, is_paused: bool) -> Verdict {
    let f = if is_paused { HealthLimits::RESUME_FRACTION } else { 1.0 };
    let mut reasons = Vec::new();
    if let (Some(max), Some(v)) = (limits.lock_waiters, sample.lock_waiters) {
        let limit = max as f64 * f;
        if v >= limit {
            reasons.push(format!("{v} sessions wait on locks (pause at {max})"));
        }
    }
    if let (Some(min), Some(v)) = (limits.free_connections, sample.free_connections) {
        let limit = min as f64 / f;
        if v < limit {
            reasons.push(format!("{v} free connection slots (pause under {min})"));
        }
    }
    if let (Some(max), Some(v)) = (limits.replay_lag, sample.replay_lag_secs) {
        let limit = max.as_secs_f64() * f;
        if v > limit {
            reasons.push(format!(
                "replica replay lag {v:.1}s (pause over {}s)",
                max.as_secs_f64()
            ));
        }
    }
    if let Some(max) = limits.replay_lag {
        for reading in &sample.replicas {
            let replica = &reading.replica;
            match &reading.state {
                ReplicaState::Lag(Some(v)) if *v > max.as_secs_f64() * f => reasons.push(format!(
                    "replica `{replica}` replay lag {v:.1}s (pause over {}s)",
                    max.as_secs_f64()
                )),
                ReplicaState::Lag(_) => {}
                ReplicaState::NotInRecovery => reasons.push(format!(
                    "replica `{replica}` is not in recovery (not a standby, or promoted)"
                )),
                ReplicaState::Unreadable(e) => reasons.push(format!("replica `{replica}` cannot be read: {e}")),
            }
        }
    }
    if let (Some(max), Some(v)) = (limits.query_above, sample.query_value) {
        let limit = max * f;
        if v > limit {
            reasons.push(format!("the health query gave {v} (pause over {max})"));
        }
    }
    if reasons.is_empty() {
        Verdict::Go
    } else {
        Verdict::Pause(reasons.join("; "))
    }
}

/// How often a server is sampled at most.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// One server's health: the last verdict, when it was sampled, and the time its work spent paused.
pub struct ServerHealth {
    pub limits: HealthLimits,
    /// Sample at most this often ([`SAMPLE_EVERY`]).
    every: Duration,
    state: tokio::sync::Mutex<State>,
    paused_ms: AtomicU64,
    /// One connection per listed replica, opened on first use and again after it fails.
    replica_clients: Vec<tokio::sync::Mutex<Option<tokio_postgres::Client>>>,
}

struct State {
    sampled_at: Option<Instant>,
    verdict: Verdict,
    /// Since when the server has been paused (for the paused-time count).
    paused_since: Option<Instant>,
}

/// A change of a server's state that the run reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Paused(String),
    Resumed(Duration),
}

impl ServerHealth {
    pub fn new(limits: HealthLimits) -> ServerHealth {
        Self::sampled_every(limits, SAMPLE_EVERY)
    }

    pub fn sampled_every(limits: HealthLimits, every: Duration) -> ServerHealth {
        let replica_clients = limits.replicas.iter().map(|_| tokio::sync::Mutex::new(None)).collect();
        ServerHealth {
            limits,
            replica_clients,
            every,
            state: tokio::sync::Mutex::new(State {
                sampled_at: None,
                verdict: Verdict::Go,
                paused_since: None,
            }),
            paused_ms: AtomicU64::new(0),
        }
    }

    /// Total time this server's work has waited so far.
    pub fn paused(&self) -> Duration {
        Duration::from_millis(self.paused_ms.load(Ordering::Relaxed))
    }

    /// Wait until the server is healthy (at once when it is, or when its limits are off), sampling with
    /// `sample` at most once a second however many tenants wait; `report` hears each pause and resume once.
    /// Returns false when `cancel` stopped the wait.
    pub async fn wait<F, Fut>(&self, cancel: &CancellationToken, mut sample: F, mut report: impl FnMut(Change)) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<HealthSample, String>>,
    {
        if self.limits.is_off() {
            return true;
        }
        loop {
            let wait_until = {
                let mut state = self.state.lock().await;
                let now = Instant::now();
                let is_due = state.sampled_at.is_none_or(|at| now.duration_since(at) >= self.every);
                if is_due {
                    let is_paused = state.verdict != Verdict::Go;
                    let verdict = match sample().await {
                        Ok(s) => judge(&self.limits, &s, is_paused),
                        // A signal that cannot be read pauses nothing: the tenants' own errors say more.
                        Err(e) => {
                            tracing::warn!("could not read the server's health signals: {e}");
                            Verdict::Go
                        }
                    };
                    let now = Instant::now();
                    match (&state.verdict, &verdict) {
                        (Verdict::Go, Verdict::Pause(why)) => {
                            state.paused_since = Some(now);
                            report(Change::Paused(why.clone()));
                        }
                        (Verdict::Pause(_), Verdict::Go) => {
                            let since = state.paused_since.take().unwrap_or(now);
                            let paused = now.duration_since(since);
                            self.paused_ms.fetch_add(paused.as_millis() as u64, Ordering::Relaxed);
                            report(Change::Resumed(paused));
                        }
                        _ => {}
                    }
                    state.sampled_at = Some(now);
                    state.verdict = verdict;
                }
                if state.verdict == Verdict::Go {
                    return true;
                }
                state.sampled_at.map_or(now, |at| at + self.every)
            };
            tokio::select! {
                () = cancel.cancelled() => return false,
                () = tokio::time::sleep_until(wait_until.into()) => {}
            }
        }
    }
}

impl ServerHealth {
    /// Read every listed replica at once, each on its connection (opened with `server`'s configuration, see
    /// [`crate::config::Replica::pg_config`], and `tls`), each given at most [`HealthLimits::REPLICA_TIMEOUT`].
    pub(crate) async fn sample_replicas(
        &self,
        server: &tokio_postgres::Config,
        tls: &crate::config::TlsMode,
    ) -> Vec<ReplicaReading> {
        let reads = self
            .limits
            .replicas
            .iter()
            .zip(&self.replica_clients)
            .map(|(replica, slot)| async move {
                let read = async {
                    let mut slot = slot.lock().await;
                    if slot.as_ref().is_none_or(|c| c.is_closed()) {
                        let client = super::server::connect_outside_cap(replica.pg_config(server), tls.clone())
                            .await
                            .map_err(|e| crate::executor::db_message(&e))?;
                        *slot = Some(client);
                    }
                    let Some(client) = slot.as_ref() else {
                        return Err("no connection".to_string());
                    };
                    let result = client.query_one(REPLICA_SQL, &[]).await;
                    let row = match result {
                        Ok(row) => row,
                        Err(e) => {
                            *slot = None;
                            return Err(crate::executor::db_message(&e));
                        }
                    };
                    Ok(replica_state(row.get(0), row.get(1), row.get(2)))
                };
                let state = match tokio::time::timeout(HealthLimits::REPLICA_TIMEOUT, read).await {
                    Ok(Ok(state)) => state,
                    Ok(Err(e)) => ReplicaState::Unreadable(e),
                    Err(_) => ReplicaState::Unreadable(format!(
                        "no answer within {}",
                        crate::observe::human::duration(HealthLimits::REPLICA_TIMEOUT)
                    )),
                };
                ReplicaReading {
                    replica: replica.shown().to_string(),
                    state,
                }
            });
        futures_util::future::join_all(reads).await
    }
}

/// A fleet tenant's [`crate::backfill::BatchGate`]: its server's health, reported as the worker reports it.
pub(crate) struct HealthGate {
    pub(crate) server: std::sync::Arc<super::server::Server>,
    pub(crate) tx: tokio::sync::mpsc::UnboundedSender<super::worker::WorkerMsg>,
    pub(crate) index: usize,
    pub(crate) cancel: CancellationToken,
}

impl crate::backfill::BatchGate for HealthGate {
    fn wait(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            let server = &self.server;
            server
                .health
                .wait(
                    &self.cancel,
                    || server.sample_health(),
                    |change| {
                        let _ = self.tx.send(super::worker::WorkerMsg::ServerHealth {
                            index: self.index,
                            server: server.name.clone(),
                            change,
                        });
                    },
                )
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HealthLimits {
        HealthLimits {
            query: Some("SELECT 1".into()),
            query_above: Some(100.0),
            ..HealthLimits::defaults()
        }
    }

    fn sample(lock: f64, free: f64, lag: f64, query: f64) -> HealthSample {
        HealthSample {
            lock_waiters: Some(lock),
            free_connections: Some(free),
            replay_lag_secs: Some(lag),
            query_value: Some(query),
            replicas: Vec::new(),
        }
    }

    #[test]
    fn each_signal_over_its_threshold_pauses_and_says_why() {
        let l = limits();
        assert_eq!(judge(&l, &sample(0.0, 50.0, 0.0, 0.0), false), Verdict::Go);
        for (s, says) in [
            (sample(10.0, 50.0, 0.0, 0.0), "10 sessions wait on locks"),
            (sample(0.0, 4.0, 0.0, 0.0), "4 free connection slots"),
            (sample(0.0, 50.0, 31.0, 0.0), "replica replay lag 31.0s"),
            (sample(0.0, 50.0, 0.0, 101.0), "the health query gave 101"),
        ] {
            match judge(&l, &s, false) {
                Verdict::Pause(why) => assert!(why.contains(says), "{why}"),
                Verdict::Go => panic!("{s:?} should pause"),
            }
        }
    }

    #[test]
    fn a_paused_server_resumes_only_under_the_resume_fraction() {
        let l = limits();
        // 90 is under the threshold (100) but over 80% of it: a paused server stays paused, a running one runs.
        assert!(matches!(
            judge(&l, &sample(0.0, 50.0, 0.0, 90.0), true),
            Verdict::Pause(_)
        ));
        assert_eq!(judge(&l, &sample(0.0, 50.0, 0.0, 90.0), false), Verdict::Go);
        assert_eq!(judge(&l, &sample(0.0, 50.0, 0.0, 79.0), true), Verdict::Go);
        // Free connections: 6 is over the threshold (5) but under 5 / 0.8.
        assert!(matches!(
            judge(&l, &sample(0.0, 6.0, 0.0, 0.0), true),
            Verdict::Pause(_)
        ));
        assert_eq!(judge(&l, &sample(0.0, 7.0, 0.0, 0.0), true), Verdict::Go);
    }

    #[test]
    fn signals_not_configured_or_not_read_never_pause() {
        let l = HealthLimits {
            lock_waiters: Some(1),
            ..HealthLimits::default()
        };
        assert_eq!(judge(&l, &sample(0.0, 0.0, 1000.0, 1e9), false), Verdict::Go);
        assert_eq!(judge(&l, &HealthSample::default(), false), Verdict::Go);
        assert!(HealthLimits::default().is_off());
        assert!(!l.is_off());
    }

    fn replica(state: ReplicaState) -> ReplicaReading {
        ReplicaReading {
            replica: "postgres://r1:5433/app".into(),
            state,
        }
    }

    fn with_replicas(states: Vec<ReplicaState>) -> HealthSample {
        HealthSample {
            replicas: states.into_iter().map(replica).collect(),
            ..HealthSample::default()
        }
    }

    #[test]
    fn a_replica_is_caught_up_when_it_replayed_all_it_received_however_old_its_last_transaction() {
        for (in_recovery, caught_up, since, expected) in [
            // An idle primary: nothing to replay, the last transaction an hour old.
            (true, Some(true), Some(3600.0), ReplicaState::Lag(Some(0.0))),
            (true, Some(false), Some(42.5), ReplicaState::Lag(Some(42.5))),
            // Streaming, but nothing replayed since the replica started: it cannot tell.
            (true, Some(false), None, ReplicaState::Lag(None)),
            // Fed from an archive only: judged by its last replayed transaction.
            (true, None, Some(7.0), ReplicaState::Lag(Some(7.0))),
            (true, Some(false), Some(-0.2), ReplicaState::Lag(Some(0.0))),
            (false, None, None, ReplicaState::NotInRecovery),
            (false, Some(true), Some(1.0), ReplicaState::NotInRecovery),
        ] {
            assert_eq!(
                replica_state(in_recovery, caught_up, since),
                expected,
                "{in_recovery} {caught_up:?} {since:?}"
            );
        }
    }

    #[test]
    fn a_listed_replica_pauses_when_it_lags_cannot_be_read_or_is_not_a_standby() {
        let l = HealthLimits {
            replay_lag: Some(Duration::from_secs(10)),
            ..HealthLimits::default()
        };
        let lag = |v: Option<f64>| with_replicas(vec![ReplicaState::Lag(Some(0.0)), ReplicaState::Lag(v)]);
        assert_eq!(judge(&l, &lag(Some(10.0)), false), Verdict::Go);
        assert_eq!(judge(&l, &lag(None), false), Verdict::Go);
        assert_eq!(
            judge(&l, &lag(Some(12.0)), false),
            Verdict::Pause("replica `postgres://r1:5433/app` replay lag 12.0s (pause over 10s)".into())
        );
        // Hysteresis: 9s holds a paused server (over 80% of 10s), 7s lets it go.
        assert!(matches!(judge(&l, &lag(Some(9.0)), true), Verdict::Pause(_)));
        assert_eq!(judge(&l, &lag(Some(7.0)), true), Verdict::Go);
        for (state, says) in [
            (
                ReplicaState::Unreadable("connection refused".into()),
                "replica `postgres://r1:5433/app` cannot be read: connection refused",
            ),
            (
                ReplicaState::NotInRecovery,
                "replica `postgres://r1:5433/app` is not in recovery",
            ),
        ] {
            for is_paused in [false, true] {
                match judge(&l, &with_replicas(vec![state.clone()]), is_paused) {
                    Verdict::Pause(why) => assert!(why.contains(says), "{why}"),
                    Verdict::Go => panic!("{state:?} should pause"),
                }
            }
        }
        // Without a replay-lag threshold the replicas are not judged (loading turns it on when any is listed).
        let off = HealthLimits {
            lock_waiters: Some(1),
            ..HealthLimits::default()
        };
        assert_eq!(
            judge(&off, &with_replicas(vec![ReplicaState::NotInRecovery]), false),
            Verdict::Go
        );
    }

    #[tokio::test]
    async fn waiters_share_one_sample_per_interval_and_resume_together() {
        let health = ServerHealth::sampled_every(
            HealthLimits {
                query: Some("q".into()),
                query_above: Some(10.0),
                ..HealthLimits::default()
            },
            Duration::from_millis(20),
        );
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
        let values = std::sync::Arc::new(std::sync::Mutex::new(vec![50.0, 50.0, 50.0, 1.0]));
        let changes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let cancel = CancellationToken::new();
        let waiter = |health: &'static ServerHealth| {
            let (samples, values, changes, cancel) = (samples.clone(), values.clone(), changes.clone(), cancel.clone());
            async move {
                health
                    .wait(
                        &cancel,
                        || {
                            let v = {
                                let mut values = values.lock().unwrap();
                                if values.len() > 1 {
                                    values.remove(0)
                                } else {
                                    values[0]
                                }
                            };
                            samples.lock().unwrap().push(v);
                            async move {
                                Ok(HealthSample {
                                    query_value: Some(v),
                                    ..HealthSample::default()
                                })
                            }
                        },
                        |c| changes.lock().unwrap().push(c),
                    )
                    .await
            }
        };
        let health: &'static ServerHealth = Box::leak(Box::new(health));
        let (a, b) = tokio::join!(waiter(health), waiter(health));
        assert!(a && b);
        // Three samples over the threshold, one per interval, then one under: four samples for two waiters.
        assert_eq!(*samples.lock().unwrap(), [50.0, 50.0, 50.0, 1.0]);
        let changes = changes.lock().unwrap();
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(matches!(&changes[0], Change::Paused(why) if why.contains("gave 50")));
        assert!(
            matches!(changes[1], Change::Resumed(d) if d >= Duration::from_millis(60)),
            "{changes:?}"
        );
        assert!(health.paused() >= Duration::from_millis(60));
    }

    #[tokio::test]
    async fn a_cancel_ends_the_wait() {
        let health = ServerHealth::new(HealthLimits {
            lock_waiters: Some(1),
            ..HealthLimits::default()
        });
        let cancel = CancellationToken::new();
        cancel.cancel();
        let waited = health
            .wait(
                &cancel,
                || async {
                    Ok(HealthSample {
                        lock_waiters: Some(5.0),
                        ..HealthSample::default()
                    })
                },
                |_| {},
            )
            .await;
        assert!(!waited);
    }
}
