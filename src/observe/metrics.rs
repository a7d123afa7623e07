//! Prometheus metrics for a fleet run, in a registry of their own, kept up to date by [`MetricsSink`].
//!
//! The metric names and labels are a contract (dashboards and alerts use them); `docs/observability.md` lists
//! them. Tenant ids are never labels: a fleet has thousands. Serving them over HTTP lives in `server.rs` and
//! writing them for node_exporter in `textfile.rs`; this module only counts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{
    Counter, CounterVec, Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use super::event::{FleetEvent, RunEvent, Sink, SinkError};
use super::tally::StateCounts;
use crate::executor::FailureKind;
use crate::ledger::TenantStatus;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets of `flotilla_tenant_duration_seconds`: 10 ms to 30 min.
pub const TENANT_DURATION_BUCKETS: [f64; 17] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
];

/// The sqlstate label of an error without one (connection refused, timeout, TLS).
pub const NO_SQLSTATE: &str = "none";

/// The run's metrics. Cloning shares them (the HTTP server and the textfile writer hold clones).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    names: Arc<Vec<String>>,
    /// `flotilla_tenants` children, indexed like [`TenantStatus::ALL`].
    tenants: [IntGauge; 6],
    tenant_duration: Histogram,
    revisions_applied: IntCounterVec,
    revisions_failed: IntCounterVec,
    retries: IntCounterVec,
    requeues: IntCounterVec,
    errors: IntCounterVec,
    backfill_rows: IntCounter,
    connections: IntGaugeVec,
    server_paused: CounterVec,
    rate_limit_wait: Counter,
    run_start: Gauge,
    run_end: Gauge,
    wave: IntGauge,
    run_info: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers a collector and records its name. The names are fixed and the registry is fresh, so a failure
/// here is a bug in this file (a duplicate or malformed name), caught by every test that builds `Metrics`.
fn register<C: Collector + Clone + 'static>(registry: &Registry, names: &mut Vec<String>, collector: C) -> C {
    names.extend(collector.desc().iter().map(|d| d.fq_name.clone()));
    registry
        .register(Box::new(collector.clone()))
        .expect("flotilla metric names are fixed and unique");
    collector
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    /// Every metric registered, the six `flotilla_tenants` states at 0.
    pub fn new() -> Self {
        let registry = Registry::new();
        let mut names = Vec::new();
        let r = &registry;
        let n = &mut names;
        let tenants_vec = register(
            r,
            n,
            IntGaugeVec::new(
                opts("flotilla_tenants", "Tenants in the current run by state."),
                &["state"],
            )
            .unwrap(),
        );
        let tenants = TenantStatus::ALL.map(|s| tenants_vec.with_label_values(&[s.as_str()]));
        let tenant_duration = register(
            r,
            n,
            Histogram::with_opts(
                HistogramOpts::new(
                    "flotilla_tenant_duration_seconds",
                    "Wall time of each tenant that succeeded or failed, retries included.",
                )
                .buckets(TENANT_DURATION_BUCKETS.to_vec()),
            )
            .unwrap(),
        );
        let counter_vec = |name: &str, help: &str, label: &str| IntCounterVec::new(opts(name, help), &[label]).unwrap();
        let revisions_applied = register(
            r,
            n,
            counter_vec(
                "flotilla_revisions_applied_total",
                "Revisions applied, summed over tenants.",
                "revision",
            ),
        );
        let revisions_failed = register(
            r,
            n,
            counter_vec(
                "flotilla_revisions_failed_total",
                "Tenants that failed on this revision.",
                "revision",
            ),
        );
        let retries = register(
            r,
            n,
            counter_vec(
                "flotilla_tenant_retries_total",
                "Tenant attempts retried, by retry reason.",
                "reason",
            ),
        );
        let requeues = register(
            r,
            n,
            counter_vec(
                "flotilla_tenant_requeues_total",
                "Tenants put back in the queue without spending a retry (another runner held the lock), by reason.",
                "reason",
            ),
        );
        let errors = register(
            r,
            n,
            counter_vec(
                "flotilla_errors_total",
                "Failed tenant attempts (retried or final) by SQLSTATE; \"none\" when the error had none.",
                "sqlstate",
            ),
        );
        let backfill_rows = register(
            r,
            n,
            IntCounter::with_opts(opts(
                "flotilla_backfill_rows_total",
                "Rows backfilled, summed over tenants.",
            ))
            .unwrap(),
        );
        let connections = register(
            r,
            n,
            IntGaugeVec::new(
                opts("flotilla_connections_open", "Open connections per database server."),
                &["server"],
            )
            .unwrap(),
        );
        let server_paused = register(
            r,
            n,
            CounterVec::new(
                opts(
                    "flotilla_server_paused_seconds_total",
                    "Time a server's tenants waited because its health signals passed a threshold (counted when it resumes).",
                ),
                &["server"],
            )
            .unwrap(),
        );
        let rate_limit_wait = register(
            r,
            n,
            Counter::with_opts(opts(
                "flotilla_rate_limit_wait_seconds_total",
                "Time tenant starts spent waiting for the start rate limiter.",
            ))
            .unwrap(),
        );
        let run_start = register(
            r,
            n,
            Gauge::with_opts(opts(
                "flotilla_run_start_timestamp_seconds",
                "Unix time the run started.",
            ))
            .unwrap(),
        );
        let run_end = register(
            r,
            n,
            Gauge::with_opts(opts(
                "flotilla_run_end_timestamp_seconds",
                "Unix time the run finished; 0 while running.",
            ))
            .unwrap(),
        );
        let wave = register(
            r,
            n,
            IntGauge::with_opts(opts(
                "flotilla_wave",
                "The wave of the run whose tenants may start (1-based); 0 for a run without waves.",
            ))
            .unwrap(),
        );
        let run_info = register(
            r,
            n,
            IntGaugeVec::new(
                opts("flotilla_run_info", "The current run; always 1."),
                &["run_id", "target", "command"],
            )
            .unwrap(),
        );
        Self {
            registry,
            names: Arc::new(names),
            tenants,
            tenant_duration,
            revisions_applied,
            revisions_failed,
            retries,
            requeues,
            errors,
            backfill_rows,
            connections,
            server_paused,
            rate_limit_wait,
            run_start,
            run_end,
            wave,
            run_info,
        }
    }

    /// The names of every metric family registered (histograms without `_bucket`, `_sum`, `_count`).
    pub fn metric_names(&self) -> &[String] {
        &self.names
    }

    /// The registry, for callers who want to add collectors of their own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// All metrics in the Prometheus text exposition format (version 0.0.4), also valid for node_exporter's
    /// textfile collector.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %err, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Updates [`Metrics`] from events. Per event: at most a couple of hash lookups and atomic adds.
pub struct MetricsSink {
    metrics: Metrics,
    /// The counts last set on the `flotilla_tenants` gauges.
    counts: Option<StateCounts>,
    /// The last cumulative backfill count per in-flight tenant, to turn `backfill_progress` into deltas.
    backfill: HashMap<Box<str>, (String, u64)>,
}

impl MetricsSink {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            counts: None,
            backfill: HashMap::new(),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The `flotilla_tenants` gauges from the coordinator's counts (only when they changed).
    fn set_states(&mut self, counts: StateCounts) {
        if self.counts == Some(counts) {
            return;
        }
        self.counts = Some(counts);
        for (gauge, state) in self.metrics.tenants.iter().zip(TenantStatus::ALL) {
            gauge.set(counts.get(state) as i64);
        }
    }

    fn error(&self, sqlstate: &Option<String>) {
        self.metrics
            .errors
            .with_label_values(&[sqlstate.as_deref().unwrap_or(NO_SQLSTATE)])
            .inc();
    }
}

impl Sink for MetricsSink {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn event(&mut self, run_event: &RunEvent) -> Result<(), SinkError> {
        if let FleetEvent::RunStarted { .. } = &run_event.event {
            self.backfill.clear();
            self.counts = None;
        }
        self.set_states(run_event.counts);
        let m = &self.metrics;
        match &run_event.event {
            FleetEvent::RunStarted {
                run_id,
                command,
                target,
                at,
                ..
            } => {
                m.run_start.set(unix_seconds(*at));
                m.run_end.set(0.0);
                m.wave.set(0);
                m.run_info.reset();
                m.run_info
                    .with_label_values(&[run_id.as_str(), target.as_str(), command.as_str()])
                    .set(1);
            }
            FleetEvent::RevisionApplied { revision, .. } => {
                m.revisions_applied.with_label_values(&[revision.as_str()]).inc();
            }
            FleetEvent::BackfillProgress {
                tenant,
                revision,
                rows_done,
                ..
            } => {
                // A backfill reports its rows once before its first batch: rows an earlier run committed (it resumes
                // from their checkpoint), which this run did not do, so that report is the baseline, not counted.
                let last = self
                    .backfill
                    .entry(tenant.as_str().into())
                    .or_insert_with(|| (revision.to_string(), *rows_done));
                if last.0 != revision.as_str() {
                    *last = (revision.to_string(), *rows_done);
                }
                // A retried batch can report fewer rows than before; only growth counts, so nothing is counted twice.
                if *rows_done > last.1 {
                    m.backfill_rows.inc_by(rows_done - last.1);
                    last.1 = *rows_done;
                }
            }
            // The coordinator reports a tenant locked by another runner as retrying with reason "locked", but it
            // goes back to the queue without spending a retry and without an error.
            FleetEvent::TenantRetrying { reason, .. } if *reason == FailureKind::Locked => {
                m.requeues.with_label_values(&[reason.as_str()]).inc();
            }
            FleetEvent::TenantRetrying { reason, sqlstate, .. } => {
                m.retries.with_label_values(&[reason.as_str()]).inc();
                self.error(sqlstate);
            }
            FleetEvent::TenantSucceeded { tenant, duration, .. } => {
                m.tenant_duration.observe(duration.as_secs_f64());
                self.backfill.remove(tenant.as_str());
            }
            FleetEvent::TenantFailed {
                tenant,
                duration,
                failed_revision,
                sqlstate,
                ..
            } => {
                m.tenant_duration.observe(duration.as_secs_f64());
                if let Some(revision) = failed_revision {
                    m.revisions_failed.with_label_values(&[revision.as_str()]).inc();
                }
                self.error(sqlstate);
                self.backfill.remove(tenant.as_str());
            }
            FleetEvent::TenantSkipped { tenant, .. } | FleetEvent::TenantInterrupted { tenant, .. } => {
                self.backfill.remove(tenant.as_str());
            }
            FleetEvent::Connections { server, open } => {
                m.connections.with_label_values(&[server.as_str()]).set(*open as i64);
            }
            FleetEvent::RateLimited { waited } => m.rate_limit_wait.inc_by(waited.as_secs_f64()),
            FleetEvent::RunFinished { at, .. } => m.run_end.set(unix_seconds(*at)),
            FleetEvent::WaveStarted { wave, .. } => m.wave.set(*wave as i64),
            FleetEvent::ServerResumed { server, paused } => {
                m.server_paused
                    .with_label_values(&[server.as_str()])
                    .inc_by(paused.as_secs_f64());
            }
            FleetEvent::TenantStarted { .. }
            | FleetEvent::TenantPlanned { .. }
            | FleetEvent::RevisionStarted { .. }
            | FleetEvent::RunHalted { .. }
            | FleetEvent::ServerOutage { .. }
            | FleetEvent::ServerPaused { .. } => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::testing::{bare, rev, sample_run_events, t, with_counts, TENANTS};

    /// The value of one sample line, e.g. `flotilla_tenants{state="failed"}`.
    pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
    }

    fn check(text: &str, series: &str, expected: f64) {
        assert_eq!(sample(text, series), Some(expected), "{series} in\n{text}");
    }

    #[test]
    fn contract_names() {
        let metrics = Metrics::new();
        let mut names: Vec<&str> = metrics.metric_names().iter().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            vec![
                "flotilla_backfill_rows_total",
                "flotilla_connections_open",
                "flotilla_errors_total",
                "flotilla_rate_limit_wait_seconds_total",
                "flotilla_revisions_applied_total",
                "flotilla_revisions_failed_total",
                "flotilla_run_end_timestamp_seconds",
                "flotilla_run_info",
                "flotilla_run_start_timestamp_seconds",
                "flotilla_server_paused_seconds_total",
                "flotilla_tenant_duration_seconds",
                "flotilla_tenant_requeues_total",
                "flotilla_tenant_retries_total",
                "flotilla_tenants",
                "flotilla_wave",
            ]
        );
        let text = metrics.render();
        for state in TenantStatus::ALL {
            check(&text, &format!("flotilla_tenants{{state=\"{}\"}}", state.as_str()), 0.0);
        }
    }

    #[test]
    fn states_add_up_at_every_event() {
        let metrics = Metrics::new();
        let mut sink = MetricsSink::new(metrics.clone());
        for event in sample_run_events() {
            sink.event(&event).unwrap();
            let text = metrics.render();
            let sum: f64 = TenantStatus::ALL
                .iter()
                .map(|s| sample(&text, &format!("flotilla_tenants{{state=\"{}\"}}", s.as_str())).unwrap())
                .sum();
            assert_eq!(sum, 5.0, "after {event:?}\n{text}");
        }
    }

    #[test]
    fn sample_run_values() {
        let metrics = Metrics::new();
        let mut sink = MetricsSink::new(metrics.clone());
        let events = sample_run_events();
        sink.event(&events[0]).unwrap();
        check(&metrics.render(), "flotilla_tenants{state=\"pending\"}", 5.0);
        for event in &events[1..] {
            sink.event(event).unwrap();
        }
        sink.finish().unwrap();
        let text = metrics.render();
        for (state, n) in [
            ("pending", 0),
            ("running", 0),
            ("succeeded", 2),
            ("failed", 1),
            ("skipped", 1),
            ("interrupted", 1),
        ] {
            check(&text, &format!("flotilla_tenants{{state=\"{state}\"}}"), n as f64);
        }
        check(&text, "flotilla_tenant_duration_seconds_count", 3.0);
        check(&text, "flotilla_tenant_duration_seconds_sum", 7.8);
        check(&text, "flotilla_tenant_duration_seconds_bucket{le=\"1\"}", 1.0);
        check(&text, "flotilla_tenant_duration_seconds_bucket{le=\"+Inf\"}", 3.0);
        check(&text, "flotilla_revisions_applied_total{revision=\"r1\"}", 2.0);
        check(&text, "flotilla_revisions_applied_total{revision=\"r2\"}", 1.0);
        check(&text, "flotilla_revisions_failed_total{revision=\"r2\"}", 1.0);
        check(&text, "flotilla_tenant_retries_total{reason=\"connection\"}", 1.0);
        check(&text, "flotilla_errors_total{sqlstate=\"08006\"}", 1.0);
        check(&text, "flotilla_errors_total{sqlstate=\"23505\"}", 1.0);
        // The sample's first report (100 rows) is the backfill's baseline: 400 - 100 were done in this run.
        check(&text, "flotilla_backfill_rows_total", 300.0);
        check(&text, "flotilla_connections_open{server=\"db1\"}", 0.0);
        check(&text, "flotilla_rate_limit_wait_seconds_total", 0.25);
        check(&text, "flotilla_run_start_timestamp_seconds", 1_700_000_000.0);
        check(&text, "flotilla_run_end_timestamp_seconds", 1_700_000_010.0);
        check(
            &text,
            "flotilla_run_info{command=\"upgrade\",run_id=\"run-1\",target=\"head\"}",
            1.0,
        );
        for tenant in TENANTS {
            assert!(
                !text.contains(tenant),
                "tenant id {tenant} leaked into metrics:\n{text}"
            );
        }
    }

    #[test]
    fn errors_without_sqlstate_use_none() {
        let metrics = Metrics::new();
        let mut sink = MetricsSink::new(metrics.clone());
        sink.event(&bare(FleetEvent::TenantRetrying {
            tenant: t("x"),
            attempt: 1,
            reason: FailureKind::TenantTimeout,
            error: "timed out".into(),
            sqlstate: None,
            delay: std::time::Duration::ZERO,
        }))
        .unwrap();
        check(&metrics.render(), "flotilla_errors_total{sqlstate=\"none\"}", 1.0);
    }

    #[test]
    fn lock_requeues_are_counted_apart_from_retries() {
        let metrics = Metrics::new();
        let mut sink = MetricsSink::new(metrics.clone());
        let retrying = |reason: FailureKind| FleetEvent::TenantRetrying {
            tenant: t("x"),
            attempt: 1,
            reason,
            error: "e".into(),
            sqlstate: None,
            delay: std::time::Duration::ZERO,
        };
        for reason in [FailureKind::Locked, FailureKind::Locked, FailureKind::Deadlock] {
            sink.event(&bare(retrying(reason))).unwrap();
        }
        let text = metrics.render();
        check(&text, "flotilla_tenant_requeues_total{reason=\"locked\"}", 2.0);
        check(&text, "flotilla_tenant_retries_total{reason=\"deadlock\"}", 1.0);
        assert_eq!(
            sample(&text, "flotilla_tenant_retries_total{reason=\"locked\"}"),
            None,
            "{text}"
        );
        check(&text, "flotilla_errors_total{sqlstate=\"none\"}", 1.0);
    }

    #[test]
    fn backfill_counts_only_growth_per_revision() {
        let metrics = Metrics::new();
        let mut sink = MetricsSink::new(metrics.clone());
        let progress = |revision: &str, rows_done| FleetEvent::BackfillProgress {
            tenant: t("x"),
            revision: rev(revision),
            rows_done,
            rows_estimated: None,
        };
        for e in [
            progress("r1", 0),
            progress("r1", 100),
            progress("r1", 50),
            progress("r1", 150),
            progress("r2", 0),
            progress("r2", 30),
        ] {
            sink.event(&bare(e)).unwrap();
        }
        check(&metrics.render(), "flotilla_backfill_rows_total", 180.0);
    }

    #[test]
    fn a_resumed_backfill_counts_only_the_rows_this_run_did() {
        let metrics = Metrics::new();
        let mut sink = MetricsSink::new(metrics.clone());
        // The first report (before any batch) carries the 500 rows an earlier run committed.
        for rows_done in [500, 600, 700] {
            sink.event(&bare(FleetEvent::BackfillProgress {
                tenant: t("x"),
                revision: rev("r1"),
                rows_done,
                rows_estimated: Some(700),
            }))
            .unwrap();
        }
        check(&metrics.render(), "flotilla_backfill_rows_total", 200.0);
    }

    #[test]
    fn a_new_run_replaces_run_info() {
        let metrics = Metrics::new();
        let mut sink = MetricsSink::new(metrics.clone());
        sink.event(&sample_run_events()[0]).unwrap();
        let second = with_counts([FleetEvent::RunStarted {
            run_id: "run-2".into(),
            command: "downgrade".into(),
            target: "r1".into(),
            n_tenants: 3,
            concurrency: 1,
            at: SystemTime::UNIX_EPOCH,
        }]);
        sink.event(&second[0]).unwrap();
        let text = metrics.render();
        assert!(!text.contains("run-1"), "{text}");
        check(&text, "flotilla_tenants{state=\"pending\"}", 3.0);
    }
}
