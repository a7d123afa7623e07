//! Errors from setting up observation: binding the metrics listener, opening the event stream, the log filter.
//!
//! Errors while a run is in progress (a full disk under the NDJSON file, a failed textfile rename) are not
//! returned: a sink reports them once through `tracing` and keeps the run going.

use std::net::SocketAddr;
use std::path::PathBuf;

// The operating system's reason is part of each message (not a `source`), so every caller that prints only the
// top-level message, a log field included, still says why.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("cannot listen for /metrics on {addr}: {}", os_reason(.error))]
    Bind { addr: SocketAddr, error: std::io::Error },
    #[error("cannot open the event stream {}: {}", .path.display(), os_reason(.error))]
    OpenEvents { path: PathBuf, error: std::io::Error },
    #[error("cannot write the metrics textfile {}: {}", .path.display(), os_reason(.error))]
    Textfile { path: PathBuf, error: std::io::Error },
    #[error("invalid log filter {directives:?} (RUST_LOG): {error}")]
    LogFilter {
        directives: String,
        error: tracing_subscriber::filter::ParseError,
    },
    #[error("a global tracing subscriber is already installed")]
    LoggingInstalled,
}

/// An I/O error as a reason in a sentence: `address already in use`, `no such file or directory` (the OS text
/// without its `(os error N)` suffix, starting in lower case).
pub fn os_reason(error: &std::io::Error) -> String {
    let text = error.to_string();
    let text = match text.rfind(" (os error ") {
        Some(cut) if error.raw_os_error().is_some() => &text[..cut],
        _ => text.as_str(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_reasons_read_as_part_of_a_sentence() {
        let in_use = std::io::Error::from_raw_os_error(libc::EADDRINUSE);
        assert_eq!(os_reason(&in_use), "address already in use");
        let missing = std::io::Error::from_raw_os_error(libc::ENOENT);
        let err = ObserveError::Textfile {
            path: "/nowhere/flotilla.prom".into(),
            error: missing,
        };
        assert_eq!(
            err.to_string(),
            "cannot write the metrics textfile /nowhere/flotilla.prom: no such file or directory"
        );
        let custom = std::io::Error::other("Disk on fire");
        assert_eq!(os_reason(&custom), "disk on fire");
    }
}
