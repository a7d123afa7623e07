//! Run events and everything that watches them: progress display, Prometheus metrics, the NDJSON event
//! stream, logs, and the final summary. The fleet coordinator is the only producer; each consumer is a [`Sink`].

mod error;
mod event;
mod logging;
mod progress;
mod summary;
mod tally;
#[cfg(test)]
mod testing;

pub use error::ObserveError;
pub use event::{FleetEvent, Sink, TenantState};
pub use logging::{init_logging, log_filter, LogFormat, LogRoute, RoutedLine, DEFAULT_LOG_FILTER};
pub use progress::{format_plain_line, ProgressMode, ProgressOptions, ProgressSink, SummaryFormat};
pub use summary::{
    format_hms, format_short, render_summary, summary_json, FailureGroup, SlowTenant, SummaryCollector, SummaryData,
    N_EXAMPLES, N_SLOWEST,
};
pub use tally::{StateBook, StateCounts, Transition};
