//! Log output: a `tracing` subscriber writing text or JSON lines to stderr, filtered like `RUST_LOG`.
//!
//! While progress bars are live, each log line goes through a [`LogRoute`], which hides the bars, prints the
//! line and redraws them, so a log line never lands inside a bar. The progress sink attaches its bars to the
//! route and detaches them at the end; this module never draws progress itself.

use std::io::Write;
use std::sync::{Arc, RwLock};

use indicatif::MultiProgress;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use super::error::ObserveError;

/// The filter when `RUST_LOG` is unset or empty.
pub const DEFAULT_LOG_FILTER: &str = "flotilla=info";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`, and the span list).
    Json,
}

/// Where log lines go: straight to stderr, or above the progress bars while some are attached.
///
/// Cheap to clone; all clones share one attachment. Create one before installing the logger, pass it to
/// [`init_logging`] and to `ProgressOptions::log_route`.
#[derive(Clone, Default)]
pub struct LogRoute(Arc<RwLock<Option<MultiProgress>>>);

impl std::fmt::Debug for LogRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let is_attached = self.0.read().map(|g| g.is_some()).unwrap_or(false);
        f.debug_struct("LogRoute").field("is_attached", &is_attached).finish()
    }
}

impl LogRoute {
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on, lines are printed above these bars.
    pub fn attach(&self, bars: MultiProgress) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(bars);
        }
    }

    /// From now on, lines go straight to stderr.
    pub fn detach(&self) {
        if let Ok(mut slot) = self.0.write() {
            *slot = None;
        }
    }

    /// Writes one complete line (or several) to stderr, above the bars when attached.
    pub fn write_stderr(&self, bytes: &[u8]) {
        let bars = self.0.read().ok().and_then(|g| g.clone());
        let write = || {
            let mut err = std::io::stderr().lock();
            // A log line that cannot be written has nowhere else to go.
            let _ = err.write_all(bytes);
            let _ = err.flush();
        };
        match bars {
            Some(bars) => bars.suspend(write),
            None => write(),
        }
    }
}

/// Buffers one formatted event and hands it to the route in one piece when dropped.
pub struct RoutedLine {
    route: LogRoute,
    buf: Vec<u8>,
}

impl Write for RoutedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RoutedLine {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.route.write_stderr(&self.buf);
        }
    }
}

impl<'a> MakeWriter<'a> for LogRoute {
    type Writer = RoutedLine;

    fn make_writer(&'a self) -> Self::Writer {
        RoutedLine {
            route: self.clone(),
            buf: Vec::with_capacity(256),
        }
    }
}

/// Parses `RUST_LOG`-style directives; `None` or blank means [`DEFAULT_LOG_FILTER`].
pub fn log_filter(directives: Option<&str>) -> Result<EnvFilter, ObserveError> {
    let directives = directives
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or(DEFAULT_LOG_FILTER);
    EnvFilter::builder()
        .parse(directives)
        .map_err(|error| ObserveError::LogFilter {
            directives: directives.to_string(),
            error,
        })
}

/// Installs the global logger: `format` lines on stderr, filtered by `RUST_LOG` (default
/// [`DEFAULT_LOG_FILTER`]), printed above progress bars whenever `route` has some attached. Text lines are
/// coloured when `is_color` (see `observe::color`); JSON lines never are.
///
/// Errors: [`ObserveError::LogFilter`] for an unparsable `RUST_LOG`, [`ObserveError::LoggingInstalled`] when a
/// global subscriber already exists (call it once, from `main`).
pub fn init_logging(format: LogFormat, route: Option<&LogRoute>, is_color: bool) -> Result<(), ObserveError> {
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref())?;
    let route = route.cloned().unwrap_or_default();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(route);
    let installed = match format {
        LogFormat::Text => builder.with_ansi(is_color).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).with_current_span(false).try_init(),
    };
    installed.map_err(|_| ObserveError::LoggingInstalled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::ProgressDrawTarget;

    #[test]
    fn default_and_custom_filters() {
        assert_eq!(log_filter(None).unwrap().to_string(), "flotilla=info");
        assert_eq!(log_filter(Some("  ")).unwrap().to_string(), "flotilla=info");
        assert_eq!(
            log_filter(Some("flotilla::fleet=debug")).unwrap().to_string(),
            "flotilla::fleet=debug"
        );
        assert!(matches!(
            log_filter(Some("flotilla=notalevel")),
            Err(ObserveError::LogFilter { .. })
        ));
    }

    #[test]
    fn routed_lines_go_through_attached_bars() {
        let route = LogRoute::new();
        let bars = MultiProgress::with_draw_target(ProgressDrawTarget::hidden());
        route.attach(bars);
        assert!(format!("{route:?}").contains("is_attached: true"));
        {
            let mut line = route.make_writer();
            line.write_all(b"").unwrap();
        }
        route.detach();
        assert!(format!("{route:?}").contains("is_attached: false"));
    }

    #[test]
    fn a_scoped_subscriber_writes_through_the_route() {
        let route = LogRoute::new();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(log_filter(None).unwrap())
            .with_writer(route)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "flotilla::observe", "routed line");
        });
    }
}
