//! One server of the fleet: its connection cap, the shared pool for its schema tenants, and direct
//! connections for its database tenants, all under the same cap.
//!
//! The cap counts open connections, not busy ones: every connection holds a permit of the server's semaphore
//! for as long as its socket is open (the permit lives in the task that drives the connection). So idle pooled
//! connections count too, and a database tenant that finds every permit held by idle pooled connections
//! closes them to make room.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

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
    max_connections: usize,
    open: Arc<AtomicUsize>,
    pool: Pool,
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
}

impl deadpool_postgres::Connect for PermitConnect {
    fn connect(
        &self,
        pg_config: &tokio_postgres::Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let config = pg_config.clone();
        Box::pin(async move {
            // The semaphore is never closed, so acquiring cannot fail.
            let permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .expect("server semaphore is never closed");
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
        let connect = PermitConnect {
            tls: tls.clone(),
            permits: permits.clone(),
            open: open.clone(),
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
        Ok(Server {
            name,
            lock_timeout: None,
            statement_timeout: None,
            password_origin: None,
            pg_config,
            tls,
            permits,
            max_connections,
            open,
            pool,
        })
    }

    /// Connections open to this server right now (pooled, idle or busy, and direct).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections
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
        let permit = loop {
            match tokio::time::timeout(Duration::from_millis(50), self.permits.clone().acquire_owned()).await {
                Ok(permit) => break permit.expect("server semaphore is never closed"),
                // Idle pooled connections may be holding every permit: close them and wait again.
                Err(_) => {
                    self.pool.retain(|_, _| false);
                }
            }
        };
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
