//! Errors from setting up observation: binding the metrics listener, opening the event stream, the log filter.
//!
//! Errors while a run is in progress (a full disk under the NDJSON file, a failed textfile rename) are not
//! returned: a sink reports them once through `tracing` and keeps the run going.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("cannot listen for /metrics on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the event stream {}", path.display())]
    OpenEvents {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the metrics textfile {}", path.display())]
    Textfile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid log filter {directives:?} (RUST_LOG)")]
    LogFilter {
        directives: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("a global tracing subscriber is already installed")]
    LoggingInstalled,
}
