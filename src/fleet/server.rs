//! One server of the fleet: its connection cap, the shared pool for its schema tenants, and direct
//! connections for its database tenants, all under the same cap.
//!
//! The cap counts open connections, not busy ones: every connection holds a permit of the server's semaphore
//! for as long as its socket is open (the permit lives in the task that drives the connection). So idle pooled
//! connections count too, and a database tenant that finds every permit held by idle pooled connections
//! closes them to make room.
//!
//! The cap is the lowest of three limits: `max_connections` from the tenants file; what was open when the server
//! answered 53300 (too many connections), for the rest of the run; and, in a shared run, this runner's share of
//! the server's connection budget, which the ledger hands out among the run's runners (`set_share`). The server
//! also holds its circuit breaker (`fleet::breaker`), which its workers share.
//!
//! Health throttling reads its signals on a connection of the server's own, inside the cap: the first sample
//! reserves one permit for it for the rest of the run (tenants never hold a connection before it, since each waits
//! for that sample before it connects), so the tenants share one fewer, and the cap never goes below two while
//! the reservation stands (one for the signals, one for a tenant).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, WeakPool};
use futures_util::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::breaker::Breaker;
use super::error::FleetError;
use crate::config::{PasswordOrigin, TlsMode};
use crate::executor::session_reset_sql;

/// A server as the fleet uses it. The `pg_config` names the server URL's database (where schema tenants live).
pub struct Server {
    pub name: String,
    /// Per-server session settings from the tenants file; `None` keeps the run's.
    pub lock_timeout: Option<Duration>,
    pub statement_timeout: Option<Duration>,
    /// Where the password came from (or where the tenants file's server looked), added to the error when the
    /// server refuses the password or wants one it was not given.
    pub password_origin: Option<PasswordOrigin>,
    pg_config: tokio_postgres::Config,
    tls: TlsMode,
    permits: Arc<Semaphore>,
    /// The limits the cap is the lowest of, and the cap the permits stand for now.
    limits: Mutex<Limits>,
    /// The cap now (a copy of `limits.cap`, read without the lock).
    cap: AtomicUsize,
    open: Arc<AtomicUsize>,
    /// Workers of this run on this server right now (waiting for a connection or using one).
    n_workers: AtomicUsize,
    /// The runtime the server was made in: a cap lowered from the ledger's thread waits for permits there.
    runtime: Option<tokio::runtime::Handle>,
    /// Permits a lowered cap still has to take as connections close.
    owed: Arc<AtomicUsize>,
    pool: Pool,
    breaker: Mutex<Breaker>,
    /// When this server's tenants wait for it to be less loaded (health throttling; off unless configured).
    pub health: super::health::ServerHealth,
    /// The connection health signals are read on, and the permit of the cap reserved for it: taken at the first
    /// sample and kept, because the tenants waiting for the server to recover may hold every other permit (their
    /// backfills keep their connections), so a health connection that has to reconnect still has its slot.
    health_conn: tokio::sync::Mutex<HealthConn>,
}

/// The health signals' connection and its reserved permit of the cap.
#[derive(Default)]
struct HealthConn {
    client: Option<Client>,
    permit: Option<OwnedSemaphorePermit>,
}

/// The limits on a server's open connections; the cap is the lowest.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// `max_connections` from the tenants file.
    configured: usize,
    /// What was open when the server answered 53300.
    refused_at: Option<usize>,
    /// This runner's share of the run's budget for the server (shared runs).
    share: Option<usize>,
    /// Permits held for the health signals' connection (0 or 1).
    reserved: usize,
    /// The lowest of the above, but room for one tenant besides the reserved: what the semaphore's permits stand
    /// for.
    cap: usize,
}

impl Limits {
    fn lowest(&self) -> usize {
        let mut cap = self.configured;
        if let Some(n) = self.refused_at {
            cap = cap.min(n);
        }
        if let Some(n) = self.share {
            cap = cap.min(n);
        }
        // A reservation is only made when `configured` leaves a tenant room besides it. Without one the cap may be
        // 0: a shared run's share of 0 means this runner waits while the others hold the whole budget.
        if self.reserved == 0 {
            cap
        } else {
            cap.max(1 + self.reserved).min(self.configured)
        }
    }
}

/// A worker counted in [`Server::n_workers`] while it lives.
pub(crate) struct WorkerGuard(Arc<Server>);

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.0.n_workers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a connection could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("could not connect: {}", crate::executor::db_message(.0))]
    Pg(#[source] tokio_postgres::Error),
    /// An authentication failure (SQLSTATE 28P01, or no password to send), with where the password came from.
    #[error("could not connect: {}; {origin}", crate::executor::db_message(.pg))]
    Auth {
        #[source]
        pg: tokio_postgres::Error,
        origin: PasswordOrigin,
    },
    #[error("connection pool: {0}")]
    Pool(String),
    /// The other end answered, but not as PostgreSQL (another service on that port).
    #[error("could not connect: {at} did not answer as PostgreSQL ({})", crate::executor::db_message(.pg))]
    NotPostgres {
        at: String,
        #[source]
        pg: tokio_postgres::Error,
    },
}

/// A connection checked out for one tenant.
///
/// Unless [`Conn::release`] says the session ended cleanly, dropping it closes the connection instead of
/// returning it to the pool, so a pooled connection never goes back holding a lock, a transaction or a
/// statement still running (for example when a tenant timeout drops the work part way).
pub struct Conn {
    inner: Option<Inner>,
}

enum Inner {
    Pooled(deadpool_postgres::Object),
    Direct(Client),
}

impl Conn {
    pub fn client(&self) -> &Client {
        match self.inner.as_ref().expect("a conn holds its connection until dropped") {
            Inner::Pooled(object) => object,
            Inner::Direct(client) => client,
        }
    }

    /// The session ended cleanly: a pooled connection is reset to the state of a new connection (settings,
    /// role, temporary tables, SQL-prepared statements, cursors, listeners, session advisory locks) and goes back
    /// to the pool, so nothing of one tenant's session reaches the next. A connection whose reset fails is
    /// closed instead.
    pub async fn release(mut self) {
        if let Some(Inner::Pooled(object)) = self.inner.take() {
            match object.batch_execute(&session_reset_sql(false)).await {
                Ok(()) => drop(object),
                Err(e) => {
                    tracing::warn!(error = %crate::executor::db_message(&e), "closing a connection whose session reset failed");
                    drop(deadpool_postgres::Object::take(object));
                }
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(Inner::Pooled(object)) = self.inner.take() {
            drop(deadpool_postgres::Object::take(object));
        }
    }
}

async fn open_connection(
    config: tokio_postgres::Config,
    tls: TlsMode,
    permit: OwnedSemaphorePermit,
    open: Arc<AtomicUsize>,
) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
    let (client, handle) = match tls {
        TlsMode::NoTls => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            (client, spawn_driver(connection, permit, open))
        }
        TlsMode::Rustls(connector) => {
            let (client, connection) = config.connect(connector).await?;
            (client, spawn_driver(connection, permit, open))
        }
    };
    Ok((client, handle))
}

/// A permit of no cap, for a connection that holds its permit of the cap elsewhere or is under none.
async fn unlimited_permit() -> OwnedSemaphorePermit {
    Arc::new(Semaphore::new(1))
        .acquire_owned()
        .await
        .expect("a new semaphore is not closed")
}

/// A connection outside the server's cap and count (a listed replica: another server).
pub(super) async fn connect_outside_cap(
    config: tokio_postgres::Config,
    tls: TlsMode,
) -> Result<Client, tokio_postgres::Error> {
    let (client, _driver) =
        open_connection(config, tls, unlimited_permit().await, Arc::new(AtomicUsize::new(0))).await?;
    Ok(client)
}

/// One open connection in the count, and its permit of the cap. The count goes down before the permit is
/// released, so the count never exceeds the cap.
struct OpenGuard {
    open: Arc<AtomicUsize>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn spawn_driver<F>(connection: F, permit: OwnedSemaphorePermit, open: Arc<AtomicUsize>) -> JoinHandle<()>
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    open.fetch_add(1, Ordering::Relaxed);
    let guard = OpenGuard { open, _permit: permit };
    // The guard lives in the task so that it is dropped also when the task is aborted, as deadpool does to the
    // driver of a pooled connection it discards; code after the await would never run then.
    tokio::spawn(async move {
        let _guard = guard;
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    })
}

/// deadpool's connect hook: every pooled connection first takes a permit of the server's cap.
struct PermitConnect {
    tls: TlsMode,
    permits: Arc<Semaphore>,
    open: Arc<AtomicUsize>,
    /// The pool this hook belongs to, set once it is built (weak: the pool owns the hook).
    pool: Arc<OnceLock<WeakPool>>,
}

impl deadpool_postgres::Connect for PermitConnect {
    fn connect(
        &self,
        pg_config: &tokio_postgres::Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let config = pg_config.clone();
        Box::pin(async move {
            let permit = loop {
                match tokio::time::timeout(Duration::from_millis(50), self.permits.clone().acquire_owned()).await {
                    Ok(permit) => break permit.expect("server semaphore is never closed"),
                    // Once a 53300 lowered the cap below the pool's size, idle pooled connections may hold every
                    // permit while this one waits for a new connection: close them and wait again.
                    Err(_) => {
                        if let Some(pool) = self.pool.get().and_then(WeakPool::upgrade) {
                            pool.retain(|_, _| false);
                        }
                    }
                }
            };
            open_connection(config, self.tls.clone(), permit, self.open.clone()).await
        })
    }
}

impl Server {
    pub fn new(
        name: String,
        pg_config: tokio_postgres::Config,
        tls: TlsMode,
        max_connections: usize,
    ) -> Result<Self, FleetError> {
        let max_connections = max_connections.max(1);
        let permits = Arc::new(Semaphore::new(max_connections));
        let open = Arc::new(AtomicUsize::new(0));
        let pool_handle = Arc::new(OnceLock::new());
        let connect = PermitConnect {
            tls: tls.clone(),
            permits: permits.clone(),
            open: open.clone(),
            pool: pool_handle.clone(),
        };
        let manager = Manager::from_connect(
            pg_config.clone(),
            connect,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| FleetError::Pool {
                server: name.clone(),
                message: e.to_string(),
            })?;
        let _ = pool_handle.set(pool.weak());
        Ok(Server {
            name,
            lock_timeout: None,
            statement_timeout: None,
            password_origin: None,
            pg_config,
            tls,
            permits,
            limits: Mutex::new(Limits {
                configured: max_connections,
                refused_at: None,
                share: None,
                reserved: 0,
                cap: max_connections,
            }),
            cap: AtomicUsize::new(max_connections),
            open,
            n_workers: AtomicUsize::new(0),
            runtime: tokio::runtime::Handle::try_current().ok(),
            owed: Arc::new(AtomicUsize::new(0)),
            pool,
            breaker: Mutex::new(Breaker::default()),
            health: super::health::ServerHealth::new(super::health::HealthLimits::default()),
            health_conn: tokio::sync::Mutex::new(HealthConn::default()),
        })
    }

    /// Connections open to this server right now (pooled, idle or busy, and direct).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The connection cap now (`max_connections`, or lower after a 53300).
    pub fn max_connections(&self) -> usize {
        self.cap.load(Ordering::Relaxed)
    }

    /// The server's circuit breaker. Held only to decide, never across an await.
    pub(crate) fn breaker(&self) -> MutexGuard<'_, Breaker> {
        // A worker that panicked while deciding left nothing half-changed worth refusing for.
        self.breaker.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The server refused a connection with 53300: lower the cap to the connections open now (at least 1), for
    /// the rest of the run. Returns the old and new cap when this lowered it; `None` when the cap already was
    /// that low (a concurrent refusal lowered it, or it is 1).
    pub fn lower_cap(&self) -> Option<(usize, usize)> {
        let open = self.open_connections();
        let mut limits = self.limits();
        let new = lowered_cap(limits.cap, open)?;
        limits.refused_at = Some(limits.refused_at.map_or(new, |n| n.min(new)));
        let old = limits.cap;
        self.apply(&mut limits);
        // The health reservation may hold the cap where it was.
        (limits.cap < old).then_some((old, limits.cap))
    }

    /// `max_connections` from the tenants file: the most this runner ever opens to the server.
    pub fn configured_connections(&self) -> usize {
        self.limits().configured
    }

    /// Set this runner's share of the server's connection budget (a shared run's ledger decides it). A lower
    /// cap takes effect as connections close; nothing in use is closed.
    pub fn set_share(&self, share: usize) {
        let mut limits = self.limits();
        limits.share = Some(share);
        self.apply(&mut limits);
    }

    /// Workers of this run on this server right now (waiting for a connection or using one).
    pub fn n_workers(&self) -> usize {
        self.n_workers.load(Ordering::Relaxed)
    }

    /// Connections of the cap held for the health signals (0, or 1 once the first sample reserved it).
    pub fn n_reserved(&self) -> usize {
        self.limits().reserved
    }

    /// Count a worker on this server until the guard drops.
    pub(crate) fn worker(self: &Arc<Server>) -> WorkerGuard {
        self.n_workers.fetch_add(1, Ordering::Relaxed);
        WorkerGuard(self.clone())
    }

    fn limits(&self) -> MutexGuard<'_, Limits> {
        self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make the permits stand for the lowest limit. Raising adds permits (first cancelling permits still owed
    /// from an earlier lowering); lowering forgets the free permits at once and owes the rest, which a task takes
    /// as connections close, so nothing in use is closed. The pool keeps its size: the permits cap it.
    fn apply(&self, limits: &mut Limits) {
        let new = limits.lowest();
        let old = limits.cap;
        limits.cap = new;
        self.cap.store(new, Ordering::Relaxed);
        if new > old {
            let raise = new - old;
            let owed = self
                .owed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |owed| {
                    Some(owed.saturating_sub(raise))
                })
                .unwrap_or(0);
            self.permits.add_permits(raise - owed.min(raise));
        } else if new < old {
            let mut lower = old - new;
            while lower > 0 {
                match self.permits.try_acquire() {
                    Ok(permit) => {
                        permit.forget();
                        lower -= 1;
                    }
                    Err(_) => break,
                }
            }
            if lower > 0 {
                self.owed.fetch_add(lower, Ordering::AcqRel);
                let (permits, owed) = (self.permits.clone(), self.owed.clone());
                let collect = async move {
                    while owed.load(Ordering::Acquire) > 0 {
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            break;
                        };
                        // A raise may have cancelled the debt while this waited: then the permit goes back.
                        let paid = owed.fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| o.checked_sub(1));
                        if paid.is_ok() {
                            permit.forget();
                        }
                    }
                };
                if let Some(runtime) = &self.runtime {
                    drop(runtime.spawn(collect));
                }
            }
        }
    }

    /// Whether the server answers: one connection to the server URL's database under the cap, closed at once.
    /// Gives up after `limit`, as a server that does not answer.
    pub async fn probe(&self, limit: Duration) -> Result<(), ConnectError> {
        let attempt = async {
            let permit = self.permit().await;
            open_connection(self.pg_config.clone(), self.tls.clone(), permit, self.open.clone())
                .await
                .map(drop)
                .map_err(|e| self.pg_error(e))
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Pool(format!(
                "no answer within {}",
                crate::observe::human::duration(limit)
            ))),
        }
    }

    /// A permit of the cap, closing idle pooled connections when they hold every one.
    async fn permit(&self) -> OwnedSemaphorePermit {
        loop {
            match tokio::time::timeout(Duration::from_millis(50), self.permits.clone().acquire_owned()).await {
                Ok(permit) => break permit.expect("server semaphore is never closed"),
                // Idle pooled connections may be holding every permit: close them and wait again.
                Err(_) => {
                    self.pool.retain(|_, _| false);
                }
            }
        }
    }

    /// Reserve a permit of the cap for the health signals' connection, once: when `max_connections` leaves a
    /// tenant room besides it. Gives up after `limit` (then the signals are not read this time).
    async fn reserve_for_health(&self, conn: &mut HealthConn, limit: Duration) -> Result<(), String> {
        if conn.permit.is_some() {
            return Ok(());
        }
        {
            let mut limits = self.limits();
            if limits.configured < 2 {
                // Loading refuses health with max_connections = 1; a server built otherwise samples outside the cap.
                return Ok(());
            }
            if limits.reserved == 0 {
                limits.reserved = 1;
                self.apply(&mut limits);
            }
        }
        match tokio::time::timeout(limit, self.permit()).await {
            Ok(permit) => {
                conn.permit = Some(permit);
                Ok(())
            }
            Err(_) => Err(format!(
                "no connection of the server's max_connections came free for the health signals within {}",
                crate::observe::human::duration(limit)
            )),
        }
    }

    /// Read the health signals this server's limits configure, on the server's health connection (opened on first
    /// use, within the cap: see the module's documentation).
    pub async fn sample_health(&self) -> Result<super::health::HealthSample, String> {
        let limits = &self.health.limits;
        let mut slot = self.health_conn.lock().await;
        self.reserve_for_health(&mut slot, super::health::HealthLimits::REPLICA_TIMEOUT)
            .await?;
        if slot.client.as_ref().is_none_or(|c| c.is_closed()) {
            // The reserved permit stands for this connection; the count includes it, so `open` never exceeds the
            // cap.
            let (client, _driver) = open_connection(
                self.pg_config.clone(),
                self.tls.clone(),
                unlimited_permit().await,
                self.open.clone(),
            )
            .await
            .map_err(|e| self.pg_error(e).to_string())?;
            slot.client = Some(client);
        }
        let Some(client) = slot.client.as_ref() else {
            return Err("no connection for the health signals".to_string());
        };
        let row = client
            .query_one(&super::health::sample_sql(limits), &[])
            .await
            .map_err(|e| crate::executor::db_message(&e))?;
        let mut sample = super::health::HealthSample {
            lock_waiters: row.get(0),
            free_connections: row.get(1),
            replay_lag_secs: row.get(2),
            query_value: None,
            replicas: Vec::new(),
        };
        if let Some(query) = &limits.query {
            let messages = client
                .simple_query(query)
                .await
                .map_err(|e| format!("pause_query: {}", crate::executor::db_message(&e)))?;
            let first = messages.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
                _ => None,
            });
            sample.query_value = match first.flatten() {
                Some(text) => Some(
                    text.trim()
                        .parse::<f64>()
                        .map_err(|_| format!("pause_query gave `{text}`, not a number"))?,
                ),
                None => None,
            };
        }
        drop(slot);
        sample.replicas = self.health.sample_replicas(&self.pg_config, &self.tls).await;
        Ok(sample)
    }

    /// A connection to the server URL's own database, from the shared pool.
    pub async fn pooled(&self) -> Result<Conn, ConnectError> {
        match self.pool.get().await {
            Ok(object) => Ok(Conn {
                inner: Some(Inner::Pooled(object)),
            }),
            Err(deadpool_postgres::PoolError::Backend(e)) => Err(self.pg_error(e)),
            Err(other) => Err(ConnectError::Pool(other.to_string())),
        }
    }

    /// A new connection to `database` on this server, under the same cap. Closed when dropped.
    pub async fn direct(&self, database: &str) -> Result<Conn, ConnectError> {
        let permit = self.permit().await;
        let mut config = self.pg_config.clone();
        config.dbname(database);
        let (client, _driver) = open_connection(config, self.tls.clone(), permit, self.open.clone())
            .await
            .map_err(|e| self.pg_error(e))?;
        Ok(Conn {
            inner: Some(Inner::Direct(client)),
        })
    }

    fn pg_error(&self, pg: tokio_postgres::Error) -> ConnectError {
        if crate::executor::is_not_postgres(&pg) {
            return ConnectError::NotPostgres {
                at: crate::executor::server_at(&self.pg_config),
                pg,
            };
        }
        let is_auth = pg.code() == Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD)
            || crate::error::error_chain(&pg).contains("password missing");
        match &self.password_origin {
            Some(origin) if is_auth => ConnectError::Auth {
                pg,
                origin: origin.clone(),
            },
            _ => ConnectError::Pg(pg),
        }
    }

    /// A cancel token for `client`, used by the second Ctrl-C to cancel statements in flight.
    pub async fn cancel(&self, token: &tokio_postgres::CancelToken) {
        let outcome = match &self.tls {
            TlsMode::NoTls => token.cancel_query(tokio_postgres::NoTls).await,
            TlsMode::Rustls(connector) => token.cancel_query(connector.clone()).await,
        };
        if let Err(e) = outcome {
            tracing::warn!(server = %self.name, error = %e, "could not cancel a statement");
        }
    }

    /// Close every idle pooled connection (at the end of a run).
    pub fn close_idle(&self) {
        self.pool.retain(|_, _| false);
    }
}

/// The cap after a 53300 with `open` connections open (the refused one not among them): `open`, at least 1;
/// `None` when that is not below `cap`.
fn lowered_cap(cap: usize, open: usize) -> Option<usize> {
    let new = open.max(1);
    (new < cap).then_some(new)
}

#[cfg(test)]
mod tests {
    use super::{lowered_cap, Limits};

    #[test]
    fn the_health_reservation_keeps_room_for_one_tenant_within_the_configured_cap() {
        let limits = |configured, refused_at, share, reserved| Limits {
            configured,
            refused_at,
            share,
            reserved,
            cap: configured,
        };
        assert_eq!(limits(16, None, None, 1).lowest(), 16);
        assert_eq!(limits(16, Some(3), Some(5), 1).lowest(), 3);
        // A share or a 53300 of one would leave the tenants nothing beside the signals' connection.
        assert_eq!(limits(16, None, Some(1), 1).lowest(), 2);
        assert_eq!(limits(16, Some(1), None, 1).lowest(), 2);
        assert_eq!(limits(16, Some(1), None, 0).lowest(), 1);
        // Never above max_connections.
        assert_eq!(limits(1, None, None, 1).lowest(), 1);
    }

    #[test]
    fn too_many_connections_lowers_the_cap_to_what_was_open() {
        let check = |cap, open, expected| assert_eq!(lowered_cap(cap, open), expected, "cap {cap}, open {open}");
        check(4, 2, Some(2));
        check(10, 0, Some(1));
        check(4, 3, Some(3));
        // Never below 1, never up, and a concurrent refusal that finds it lowered already changes nothing.
        check(1, 0, None);
        check(2, 2, None);
        check(2, 5, None);
    }
}
