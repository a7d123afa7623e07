//! Run events and everything that watches them: progress display, Prometheus metrics, the NDJSON event
//! stream, logs, and the final summary. The fleet coordinator is the only producer; each consumer is a [`Sink`].

pub mod color;
#[cfg(test)]
mod dashboard;
mod error;
mod event;
mod fanout;
pub mod human;
mod logging;
mod metrics;
mod ndjson;
mod progress;
mod server;
mod summary;
mod tally;
#[cfg(test)]
mod testing;
mod textfile;

pub use color::ColorChoice;
pub use error::{os_reason, ObserveError};
pub use event::{FleetEvent, HaltReason, RunEvent, Sink, SinkError, TenantId};
pub use fanout::Fanout;
pub use logging::{init_logging, log_filter, LogFormat, LogRoute, RoutedLine, DEFAULT_LOG_FILTER};
pub use metrics::{Metrics, MetricsSink, METRICS_CONTENT_TYPE, NO_SQLSTATE, TENANT_DURATION_BUCKETS};
pub use ndjson::{NdjsonSink, NDJSON_VERSION};
pub use progress::{format_plain_line, ProgressMode, ProgressOptions, ProgressSink, SummaryFormat};
pub use server::serve;
pub use summary::{
    count, render_summary, render_summary_colored, summary_json, FailureGroup, SlowTenant, SummaryCollector,
    SummaryData, N_EXAMPLES, N_SLOWEST,
};
pub use tally::StateCounts;
#[cfg(test)]
pub use tally::{StateBook, Transition};
pub use textfile::{write_atomically, TextfileWriter};
