//! The end-of-run summary: counts by state, wall time and throughput, the slowest tenants, failures grouped by
//! error, and the command that retries what is left.
//!
//! [`SummaryCollector`] builds a [`SummaryData`] from events; [`render_summary`] and [`summary_json`] are pure, so
//! the text is tested without a run. Printing is left to the progress sink, which owns the terminal.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::event::{FleetEvent, RunEvent, Sink, SinkError};
use super::human::{duration, thousands};
use super::tally::StateCounts;
use crate::executor::FailureKind;

/// How many of the slowest tenants the summary lists.
pub const N_SLOWEST: usize = 5;
/// How many tenant ids the summary shows for each failure group.
pub const N_EXAMPLES: usize = 3;
/// Error messages longer than this are cut in the text summary (the JSON keeps them whole).
const MAX_ERROR_CHARS: usize = 200;

/// Everything the final summary shows. Built by [`SummaryCollector::data`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SummaryData {
    pub run_id: String,
    pub command: String,
    pub target: String,
    pub counts: StateCounts,
    /// Retries across all tenants (one per `tenant_retrying` event).
    pub n_retries: u64,
    #[serde(rename = "wall_time_ms", serialize_with = "ser_millis")]
    pub wall_time: Duration,
    /// The slowest finished tenants, slowest first, at most [`N_SLOWEST`].
    pub slowest: Vec<SlowTenant>,
    /// Failed tenants grouped by SQLSTATE and message, largest group first.
    pub failures: Vec<FailureGroup>,
    /// The command that retries failed and unfinished tenants, as the CLI spells it.
    pub retry_command: Option<String>,
    /// The run's exit code, once `run_finished` was seen.
    pub exit_code: Option<i32>,
    /// Why the run stopped starting tenants, when a canary or the failure threshold halted it.
    pub halt: Option<Halt>,
    /// Servers that went away during the run and came back, in order.
    pub outages: Vec<Outage>,
}

/// A server's outage that the run waited out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outage {
    pub server: String,
    #[serde(rename = "down_ms", serialize_with = "ser_millis")]
    pub down: Duration,
    pub n_waited: usize,
}

/// A halted run: why, and the tenant whose failure did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Halt {
    pub reason: String,
    pub tenant: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlowTenant {
    pub tenant: String,
    #[serde(rename = "duration_ms", serialize_with = "ser_millis")]
    pub duration: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureGroup {
    pub sqlstate: Option<String>,
    pub error: String,
    pub count: usize,
    /// Up to [`N_EXAMPLES`] tenant ids, in the order they failed.
    pub examples: Vec<String>,
}

fn ser_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl SummaryData {
    /// Tenants finished per second of wall time (0 for an empty or instant run).
    pub fn tenants_per_second(&self) -> f64 {
        rate(self.counts.done(), self.wall_time)
    }

    /// Tenants a retry would pick up: failed, interrupted, never started or still running.
    pub fn n_to_retry(&self) -> usize {
        self.counts.failed + self.counts.interrupted + self.counts.pending + self.counts.running
    }
}

pub(crate) fn rate(n: usize, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// Collects the summary from events. Cheap per event: a hash lookup, and a heap of [`N_SLOWEST`].
#[derive(Debug, Default)]
pub struct SummaryCollector {
    /// The coordinator's counts after the last event.
    counts: StateCounts,
    run_id: String,
    command: String,
    target: String,
    started_at: Option<SystemTime>,
    finished_at: Option<SystemTime>,
    exit_code: Option<i32>,
    n_retries: u64,
    slowest: BinaryHeap<Reverse<(Duration, String)>>,
    groups: HashMap<(Option<String>, String), usize>,
    failures: Vec<FailureGroup>,
    retry_command: Option<String>,
    halt: Option<Halt>,
    outages: Vec<Outage>,
}

impl SummaryCollector {
    /// `retry_command` is printed when tenants are left to retry, e.g. `flotilla fleet retry --run 01J…`.
    pub fn new(retry_command: Option<String>) -> Self {
        Self {
            retry_command,
            ..Self::default()
        }
    }

    pub fn counts(&self) -> StateCounts {
        self.counts
    }

    /// The summary so far. Without `run_finished`, the wall time runs up to now.
    pub fn data(&self) -> SummaryData {
        let end = self.finished_at.unwrap_or_else(SystemTime::now);
        let wall_time = self
            .started_at
            .and_then(|s| end.duration_since(s).ok())
            .unwrap_or_default();
        let mut slowest: Vec<SlowTenant> = self
            .slowest
            .iter()
            .map(|Reverse((duration, tenant))| SlowTenant {
                tenant: tenant.clone(),
                duration: *duration,
            })
            .collect();
        slowest.sort_by(|a, b| b.duration.cmp(&a.duration).then_with(|| a.tenant.cmp(&b.tenant)));
        let mut failures = self.failures.clone();
        // A stable sort keeps groups of equal size in the order they first failed.
        failures.sort_by_key(|g| Reverse(g.count));
        SummaryData {
            run_id: self.run_id.clone(),
            command: self.command.clone(),
            target: self.target.clone(),
            counts: self.counts,
            n_retries: self.n_retries,
            wall_time,
            slowest,
            failures,
            retry_command: self.retry_command.clone(),
            exit_code: self.exit_code,
            halt: self.halt.clone(),
            outages: self.outages.clone(),
        }
    }

    fn record_duration(&mut self, tenant: &str, duration: Duration) {
        if self.slowest.len() < N_SLOWEST {
            self.slowest.push(Reverse((duration, tenant.to_string())));
        } else if self.slowest.peek().is_some_and(|Reverse((min, _))| duration > *min) {
            self.slowest.pop();
            self.slowest.push(Reverse((duration, tenant.to_string())));
        }
    }
}

impl Sink for SummaryCollector {
    fn name(&self) -> &'static str {
        "summary"
    }

    fn event(&mut self, run_event: &RunEvent) -> Result<(), SinkError> {
        let event = &run_event.event;
        if let FleetEvent::RunStarted { .. } = event {
            let retry_command = self.retry_command.take();
            *self = Self {
                retry_command,
                ..Self::default()
            };
        }
        self.counts = run_event.counts;
        match event {
            FleetEvent::RunStarted {
                run_id,
                command,
                target,
                at,
                ..
            } => {
                self.run_id = run_id.clone();
                self.command = command.clone();
                self.target = target.clone();
                self.started_at = Some(*at);
            }
            // A tenant put back because another runner holds its lock is requeued, not retried.
            FleetEvent::TenantRetrying { reason, .. } if *reason != FailureKind::Locked => self.n_retries += 1,
            FleetEvent::TenantSucceeded { tenant, duration, .. } => self.record_duration(tenant, *duration),
            FleetEvent::TenantFailed {
                tenant,
                duration,
                error,
                sqlstate,
                ..
            } => {
                self.record_duration(tenant, *duration);
                let key = (sqlstate.clone(), error.clone());
                let idx = *self.groups.entry(key).or_insert_with(|| {
                    self.failures.push(FailureGroup {
                        sqlstate: sqlstate.clone(),
                        error: error.clone(),
                        count: 0,
                        examples: Vec::new(),
                    });
                    self.failures.len() - 1
                });
                let group = &mut self.failures[idx];
                group.count += 1;
                if group.examples.len() < N_EXAMPLES {
                    group.examples.push(tenant.to_string());
                }
            }
            FleetEvent::RunFinished { at, exit_code, .. } => {
                self.finished_at = Some(*at);
                self.exit_code = Some(*exit_code);
            }
            FleetEvent::ServerOutage { server, down, n_waited } => self.outages.push(Outage {
                server: server.clone(),
                down: *down,
                n_waited: *n_waited,
            }),
            FleetEvent::RunHalted { reason, tenant, error } => {
                self.halt.get_or_insert(Halt {
                    reason: reason.to_string(),
                    tenant: tenant.as_ref().map(|t| t.to_string()),
                    error: error.clone(),
                });
            }
            _ => {}
        }
        Ok(())
    }
}

/// The error without the ` (SQLSTATE XXXXX)` the executor appends, where the group's header already says it, so
/// a line shows its SQLSTATE once.
fn without_sqlstate(error: &str, sqlstate: Option<&str>) -> String {
    match sqlstate {
        Some(code) => error.replacen(&format!(" (SQLSTATE {code})"), "", 1),
        None => error.to_string(),
    }
}

fn one_line(message: &str) -> String {
    let flat: String = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

/// `n` and `noun`, plural unless `n` is 1 ("1 tenant", "2 tenants").
/// Large counts get thousands separators ("12,345 tenants").
pub fn count(n: usize, noun: &str) -> String {
    let shown = thousands(n as u64);
    if n == 1 {
        format!("{shown} {noun}")
    } else {
        format!("{shown} {noun}s")
    }
}

/// The summary as printed at the end of a run (text mode). Pure: same data, same text.
pub fn render_summary(data: &SummaryData) -> String {
    render_summary_colored(data, false)
}

/// [`render_summary`], with the state counts coloured when `is_color` (succeeded green, failed red, tenants
/// left unfinished yellow, zeros plain) and the first line bold.
pub fn render_summary_colored(data: &SummaryData, is_color: bool) -> String {
    let paint = |text: String, style: console::Style| -> String {
        if is_color {
            style.force_styling(true).apply_to(text).to_string()
        } else {
            text
        }
    };
    let c = &data.counts;
    let mut out = String::new();
    let head = format!(
        "run {}: {} to {}, {} in {} ({:.1} tenants/s)",
        data.run_id,
        data.command,
        data.target,
        count(c.n_tenants, "tenant"),
        duration(data.wall_time),
        data.tenants_per_second()
    );
    let _ = writeln!(out, "{}", paint(head, console::Style::new().bold()));
    let mut rows = vec![
        ("succeeded", c.succeeded),
        ("failed", c.failed),
        ("skipped", c.skipped),
        ("interrupted", c.interrupted),
        ("not started", c.pending),
    ];
    if c.running > 0 {
        rows.push(("unfinished", c.running));
    }
    for (label, n) in rows {
        let style = match label {
            _ if n == 0 => console::Style::new(),
            "succeeded" => console::Style::new().green(),
            "failed" => console::Style::new().red(),
            "skipped" => console::Style::new(),
            _ => console::Style::new().yellow(),
        };
        let row = format!("{label:<12} {}", thousands(n as u64));
        let _ = writeln!(out, "  {}", paint(row, style));
    }
    let _ = writeln!(out, "  {:<12} {}", "retries", thousands(data.n_retries));
    if !data.slowest.is_empty() {
        let width = data.slowest.iter().map(|s| s.tenant.len()).max().unwrap_or(0);
        let _ = writeln!(out, "slowest tenants:");
        for slow in &data.slowest {
            let _ = writeln!(out, "  {:<width$}  {}", slow.tenant, duration(slow.duration));
        }
    }
    if !data.failures.is_empty() {
        let _ = writeln!(out, "failures by error:");
        for group in &data.failures {
            let sqlstate = group.sqlstate.as_deref().unwrap_or("none");
            let _ = writeln!(
                out,
                "  {} x SQLSTATE {}: {}",
                thousands(group.count as u64),
                sqlstate,
                one_line(&without_sqlstate(&group.error, group.sqlstate.as_deref()))
            );
            let more = group.count - group.examples.len();
            let mut examples = group.examples.join(", ");
            if more > 0 {
                let _ = write!(examples, " and {more} more");
            }
            let _ = writeln!(out, "      tenants: {examples}");
        }
    }
    for outage in &data.outages {
        let _ = writeln!(
            out,
            "server {} unavailable {}, {} waited",
            outage.server,
            duration(outage.down),
            count(outage.n_waited, "tenant")
        );
    }
    if let Some(halt) = &data.halt {
        let who = halt
            .tenant
            .as_deref()
            .map(|t| format!(" after {t} failed"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "halted by the {}{who}: {} did not start",
            halt.reason,
            count(c.pending, "tenant")
        );
        if let Some(error) = &halt.error {
            let _ = writeln!(out, "  {}", one_line(error));
        }
    }
    if let Some(cmd) = data.retry_command.as_deref().filter(|_| data.n_to_retry() > 0) {
        let keeps = if data.halt.is_some() {
            " (it keeps this run's canary and thresholds)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "retry the {} failed or unfinished {} with{keeps}:",
            thousands(data.n_to_retry() as u64),
            if data.n_to_retry() == 1 { "tenant" } else { "tenants" }
        );
        let _ = writeln!(out, "  {cmd}");
    }
    out
}

/// The summary for `--format json`: [`SummaryData`] plus a format version `v` and `tenants_per_second`.
pub fn summary_json(data: &SummaryData) -> serde_json::Value {
    let mut value = serde_json::to_value(data).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("v".into(), 1.into());
        let tps = (data.tenants_per_second() * 1000.0).round() / 1000.0;
        map.insert("tenants_per_second".into(), tps.into());
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::testing::{sample_run, with_counts};
    use crate::revision::RevisionId;

    fn collect(events: &[FleetEvent], retry: Option<&str>) -> SummaryData {
        let mut c = SummaryCollector::new(retry.map(str::to_string));
        for e in with_counts(events.iter().cloned()) {
            c.event(&e).unwrap();
        }
        c.data()
    }

    fn failed(tenant: &str, sqlstate: Option<&str>, error: &str, ms: u64) -> FleetEvent {
        FleetEvent::TenantFailed {
            tenant: tenant.into(),
            from: vec![],
            to: vec![],
            failed_revision: Some(RevisionId::new("r2")),
            error: error.into(),
            error_kind: FailureKind::SqlError,
            sqlstate: sqlstate.map(str::to_string),
            attempts: 1,
            duration: Duration::from_millis(ms),
        }
    }

    #[test]
    fn sample_run_summary_text() {
        let data = collect(&sample_run(), Some("flotilla fleet retry --run run-1"));
        let expected = "\
run run-1: upgrade to head, 5 tenants in 10.0s (0.5 tenants/s)
  succeeded    2
  failed       1
  skipped      1
  interrupted  1
  not started  0
  retries      1
slowest tenants:
  t-beta   5.0s
  t-alpha  2.0s
  t-gamma  800ms
failures by error:
  1 x SQLSTATE 23505: duplicate key value violates unique constraint \"users_pkey\"
      tenants: t-gamma
retry the 2 failed or unfinished tenants with:
  flotilla fleet retry --run run-1
";
        assert_eq!(render_summary(&data), expected);
        assert_eq!(data.exit_code, Some(130));
    }

    #[test]
    fn failures_group_by_sqlstate_and_message() {
        let mut events = vec![sample_run().remove(0)];
        events.push(failed("a", Some("23505"), "dup", 10));
        events.push(failed("b", None, "connection refused", 20));
        events.push(failed("c", Some("23505"), "dup", 30));
        events.push(failed("d", Some("23505"), "dup", 40));
        events.push(failed("e", Some("23505"), "dup", 50));
        events.push(failed("f", Some("42P01"), "dup", 60));
        events.push(failed(
            "g",
            Some("42703"),
            "column \"x\" does not exist (SQLSTATE 42703)",
            70,
        ));
        let data = collect(&events, None);
        let groups: Vec<_> = data
            .failures
            .iter()
            .map(|g| (g.sqlstate.as_deref(), g.count, g.examples.len()))
            .collect();
        assert_eq!(
            groups,
            vec![
                (Some("23505"), 4, 3),
                (None, 1, 1),
                (Some("42P01"), 1, 1),
                (Some("42703"), 1, 1)
            ]
        );
        let text = render_summary(&data);
        assert!(
            text.contains("  4 x SQLSTATE 23505: dup\n      tenants: a, c, d and 1 more\n"),
            "{text}"
        );
        assert!(text.contains("  1 x SQLSTATE none: connection refused\n"), "{text}");
        // The SQLSTATE the executor appends to a server's message is shown once, in the group's header.
        assert!(
            text.contains("  1 x SQLSTATE 42703: column \"x\" does not exist\n"),
            "{text}"
        );
        // No retry command was given, so none is printed.
        assert!(!text.contains("retry"), "{text}");
    }

    #[test]
    fn slowest_keeps_the_top_five() {
        let mut events = vec![sample_run().remove(0)];
        for (i, ms) in [5u64, 70, 10, 90, 30, 60, 20, 80].iter().enumerate() {
            events.push(failed(&format!("t{i}"), None, "x", *ms));
        }
        let data = collect(&events, None);
        let slowest: Vec<_> = data.slowest.iter().map(|s| s.duration.as_millis()).collect();
        assert_eq!(slowest, vec![90, 80, 70, 60, 30]);
    }

    #[test]
    fn long_multiline_errors_fit_on_one_line() {
        let long = format!("first\nsecond {}", "x".repeat(300));
        let line = one_line(&long);
        assert!(line.starts_with("first second "));
        assert_eq!(line.chars().count(), MAX_ERROR_CHARS + 1);
    }

    #[test]
    fn json_summary_fields() {
        let data = collect(&sample_run(), Some("flotilla fleet retry --run run-1"));
        let v = summary_json(&data);
        assert_eq!(v["v"], 1);
        assert_eq!(v["counts"]["succeeded"], 2);
        assert_eq!(v["wall_time_ms"], 10_000);
        assert_eq!(v["tenants_per_second"], 0.5);
        assert_eq!(v["slowest"][0]["tenant"], "t-beta");
        assert_eq!(v["failures"][0]["sqlstate"], "23505");
        assert_eq!(v["retry_command"], "flotilla fleet retry --run run-1");
    }

    #[test]
    fn colors_only_when_asked() {
        let data = collect(&sample_run(), Some("flotilla fleet retry --run run-1"));
        let colored = render_summary_colored(&data, true);
        assert!(colored.contains("\x1b[31mfailed       1\x1b[0m"), "{colored:?}");
        assert!(colored.contains("\x1b[32msucceeded    2\x1b[0m"), "{colored:?}");
        assert!(colored.contains("  not started  0\n"), "zeros stay plain: {colored:?}");
        assert_eq!(console::strip_ansi_codes(&colored), render_summary(&data));
        assert!(!render_summary(&data).contains('\x1b'));
    }

    #[test]
    fn large_counts_get_separators() {
        assert_eq!(count(1, "tenant"), "1 tenant");
        assert_eq!(count(2, "tenant"), "2 tenants");
        assert_eq!(count(12_345, "tenant"), "12,345 tenants");
    }
}
