//! SIGINT and SIGTERM as one stream of interrupts, and the cancel request that a second interrupt sends.
//!
//! The first signal asks a run to stop after the revision in progress; the second (and any later one) asks it to
//! cancel the statement in progress. What stopping and cancelling mean is left to the caller: the single-database
//! commands (`cli::single`) stop one session, the fleet coordinator stops its tenants.
//! [`SignalSource`] lets the fleet coordinator take [`Signals`] or, in tests, [`NoSignals`].

use std::future::Future;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_postgres::{CancelToken, Client};

use crate::config::TlsMode;

/// What a signal asks for, by how many came before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// The first signal: finish the revision in progress (it commits or rolls back whole), then stop.
    Stop,
    /// The second and every later signal: cancel the statement in progress.
    Cancel,
}

impl Interrupt {
    /// The interrupt that the `n`th signal (counting from 1) stands for.
    pub fn nth(n: u32) -> Interrupt {
        if n <= 1 {
            Interrupt::Stop
        } else {
            Interrupt::Cancel
        }
    }
}

/// SIGINT and SIGTERM merged into [`Interrupt`]s.
///
/// Creating it replaces the default disposition of both signals (terminate the process) for the rest of the
/// process, so create it before the work it guards starts. A signal whose handler cannot be installed keeps its
/// default.
pub struct Signals {
    sigint: Option<Signal>,
    sigterm: Option<Signal>,
    n_received: u32,
}

impl Signals {
    pub fn new() -> Signals {
        Signals {
            sigint: signal(SignalKind::interrupt()).ok(),
            sigterm: signal(SignalKind::terminate()).ok(),
            n_received: 0,
        }
    }

    /// Wait for the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) -> Interrupt {
        tokio::select! {
            () = recv_one(&mut self.sigint) => {}
            () = recv_one(&mut self.sigterm) => {}
        }
        self.n_received += 1;
        Interrupt::nth(self.n_received)
    }

    /// How many signals arrived so far.
    pub fn n_received(&self) -> u32 {
        self.n_received
    }
}

impl Default for Signals {
    fn default() -> Self {
        Signals::new()
    }
}

/// Where a run hears interrupts from.
pub trait SignalSource: Send {
    /// Wait for the next interrupt.
    fn next(&mut self) -> impl Future<Output = Interrupt> + Send;
}

impl SignalSource for Signals {
    fn next(&mut self) -> impl Future<Output = Interrupt> + Send {
        self.recv()
    }
}

/// No interrupts ever: for runs that tests drive, which must not take over the test process's signals.
pub struct NoSignals;

impl SignalSource for NoSignals {
    async fn next(&mut self) -> Interrupt {
        std::future::pending().await
    }
}

async fn recv_one(sig: &mut Option<Signal>) {
    match sig {
        Some(s) => {
            if s.recv().await.is_none() {
                // The stream ended (the driver is gone): never again, rather than a busy loop.
                *sig = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Cancels the statement a connection is running. The request travels on a new connection, which must use the
/// same TLS mode as the one it cancels (a server requiring TLS refuses a plain cancel request).
#[derive(Clone)]
pub struct Canceller {
    token: CancelToken,
    tls: TlsMode,
}

impl Canceller {
    pub fn new(client: &Client, tls: TlsMode) -> Canceller {
        Canceller {
            token: client.cancel_token(),
            tls,
        }
    }

    /// Send the cancel request. The server cancels whatever statement runs when the request arrives, and
    /// ignores it when none does.
    pub async fn cancel(&self) -> Result<(), tokio_postgres::Error> {
        match &self.tls {
            TlsMode::NoTls => self.token.cancel_query(tokio_postgres::NoTls).await,
            TlsMode::Rustls(connector) => self.token.cancel_query(connector.clone()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_signal_stops_and_every_later_one_cancels() {
        let check = |n: u32, expected: Interrupt| assert_eq!(Interrupt::nth(n), expected, "signal {n}");
        check(1, Interrupt::Stop);
        check(2, Interrupt::Cancel);
        check(3, Interrupt::Cancel);
    }
}
