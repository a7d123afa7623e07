//! Run events and everything that watches them: progress display, Prometheus metrics, the NDJSON event
//! stream, and the final summary. The fleet coordinator is the only producer; each consumer is a [`Sink`].

mod event;

pub use event::{FleetEvent, Sink, TenantState};
