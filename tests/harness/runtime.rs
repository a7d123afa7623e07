//! The harness's own tokio runtime, for database work that must happen outside a test's runtime: creating and
//! dropping databases from synchronous code and from `Drop`.
//!
//! Test code keeps using its own runtime (`#[tokio::test]`) for its clients; see [`connect`].

use std::future::Future;
use std::sync::mpsc;
use std::sync::OnceLock;

use anyhow::Context as _;
use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls};

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("harness-admin")
            .enable_all()
            .build()
            .expect("build the harness runtime")
    })
}

/// Runs `fut` to completion on the harness runtime and waits for it, from sync code or from inside a test's
/// runtime alike.
///
/// A panic inside `fut` becomes a panic here.
pub fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    // `Runtime::block_on` refuses to run inside another runtime, so hand the future over and wait on a channel.
    let (tx, rx) = mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().expect("a harness task panicked (see its message above)")
}

/// Opens a plain (no TLS) connection and drives it on the current tokio runtime.
///
/// Errors of the connection task itself are ignored: tests drop databases with `FORCE`, which ends them.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connect to {url}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}
