//! A minimal HTTP/1.1 endpoint for Prometheus: `GET /metrics` answers [`Metrics::render`], anything else 404.
//!
//! One request per connection, then close; no keep-alive, TLS or auth. It is meant for a scraper on the same
//! host or network (default `127.0.0.1:9464`), not for the internet.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::error::ObserveError;
use super::metrics::{Metrics, METRICS_CONTENT_TYPE};

/// The largest request head read; a scrape request is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// A client that has not sent its request head by then is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr` and serves `/metrics` until the returned task is aborted (or the runtime stops).
///
/// Returns the bound address (useful with port 0). Errors: [`ObserveError::Bind`] when the address cannot be
/// bound (in use, not local, no permission).
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> Result<(SocketAddr, JoinHandle<()>), ObserveError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| ObserveError::Bind { addr, error })?;
    let bound = listener
        .local_addr()
        .map_err(|error| ObserveError::Bind { addr, error })?;
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _peer)) => {
                    let metrics = metrics.clone();
                    tokio::spawn(async move {
                        if let Err(err) = answer(stream, &metrics).await {
                            tracing::debug!(error = %err, "metrics request failed");
                        }
                    });
                }
                Err(err) => {
                    // Out of file descriptors, usually; back off instead of spinning.
                    tracing::warn!(error = %err, "cannot accept a metrics connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok((bound, task))
}

/// The response to a request line: status line, content type and body.
fn route(request_line: &str, metrics: &Metrics) -> (&'static str, &'static str, String, bool) {
    let mut parts = request_line.split_ascii_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("").split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => ("200 OK", METRICS_CONTENT_TYPE, metrics.render(), true),
        ("HEAD", "/metrics") => ("200 OK", METRICS_CONTENT_TYPE, metrics.render(), false),
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found\n".to_string(),
            true,
        ),
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(READ_TIMEOUT, read_head)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head not received"))??;
    let text = String::from_utf8_lossy(&head);
    let request_line = text.lines().next().unwrap_or("");
    let (status, content_type, body, has_body) = route(request_line, metrics);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    if has_body {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::testing::sample_run_events;
    use crate::observe::{MetricsSink, Sink};

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_metrics_and_404s_the_rest() {
        let metrics = Metrics::new();
        let mut sink = MetricsSink::new(metrics.clone());
        for e in sample_run_events() {
            sink.event(&e).unwrap();
        }
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), metrics.clone()).await.unwrap();
        assert_ne!(addr.port(), 0);

        let ok = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
        assert_eq!(body, metrics.render());
        assert!(body.contains("flotilla_tenants{state=\"succeeded\"} 2"));

        let query = get(addr, "GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
        assert!(query.starts_with("HTTP/1.1 200 OK\r\n"));

        for request in [
            "GET / HTTP/1.1\r\n\r\n",
            "GET /metricsx HTTP/1.1\r\n\r\n",
            "POST /metrics HTTP/1.1\r\n\r\n",
        ] {
            let response = get(addr, request).await;
            assert!(
                response.starts_with("HTTP/1.1 404 Not Found\r\n"),
                "{request:?}: {response}"
            );
        }
        task.abort();
    }

    #[tokio::test]
    async fn bind_errors_are_returned() {
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), Metrics::new()).await.unwrap();
        let err = serve(addr, Metrics::new()).await.unwrap_err();
        assert!(
            matches!(err, ObserveError::Bind { addr: a, .. } if a == addr),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("cannot listen for /metrics on 127.0.0.1:"),
            "{err}"
        );
        task.abort();
    }
}
