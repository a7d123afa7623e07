//! Live progress on stderr while a fleet runs, and the final summary on stdout when it ends.
//!
//! Three displays: indicatif bars on a terminal ([`ProgressMode::Bar`]), a status line at a steady interval for
//! CI logs and files ([`ProgressMode::Plain`]), or nothing ([`ProgressMode::None`]). Every mode prints the
//! summary at [`Sink::finish`]. Log lines reach stderr through [`LogRoute`], which prints them above the bars;
//! this module attaches its bars to the route but does not install any logger (see `logging.rs`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::color;
use super::event::{FleetEvent, RunEvent, Sink, SinkError};
use super::human::{clock, duration, thousands, UNKNOWN_CLOCK};
use super::logging::LogRoute;
use super::summary::{rate, render_summary_colored, summary_json, SummaryCollector, SummaryData};
use super::tally::StateCounts;
use crate::graph::Direction;
use crate::revision::RevisionId;

/// How progress is shown while a run is in progress. The summary is printed in every mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bars when stderr is a terminal, plain lines otherwise.
    #[default]
    Auto,
    Bar,
    Plain,
    None,
}

impl ProgressMode {
    /// The display to use when stderr is (or is not) a terminal: `Auto` picks bars or plain lines, and `Bar`
    /// without a terminal falls back to plain lines (bars there would draw nothing).
    pub fn resolve(self, is_terminal: bool) -> ProgressMode {
        match self {
            ProgressMode::Auto | ProgressMode::Bar if is_terminal => ProgressMode::Bar,
            ProgressMode::Auto | ProgressMode::Bar => ProgressMode::Plain,
            other => other,
        }
    }
}

/// The note printed when `--progress bar` falls back to plain lines.
pub const NO_TERMINAL_NOTE: &str = "note: --progress bar needs a terminal on stderr; showing plain lines instead";

/// How the final summary is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SummaryFormat {
    #[default]
    Text,
    /// One JSON document ([`summary_json`]), pretty-printed as every `--format json` document is.
    Json,
    /// No summary: the command prints its own report (a dry run's plans).
    None,
}

/// Settings for a [`ProgressSink`], resolved by the CLI.
#[derive(Debug, Clone)]
pub struct ProgressOptions {
    pub mode: ProgressMode,
    /// Time between two plain status lines.
    pub plain_interval: Duration,
    /// The command that retries failed and unfinished tenants, shown in the summary when there are any.
    pub retry_command: Option<String>,
    pub summary_format: SummaryFormat,
    /// Print the summary on stderr instead of stdout (use it when stdout carries the NDJSON stream).
    pub summary_to_stderr: bool,
    /// Log lines are printed above the bars through this route while the bars are live.
    pub log_route: Option<LogRoute>,
    /// Colour the text summary: `None` follows what `observe::color::apply` decided for the summary's stream
    /// (with [`ProgressSink::with_writers`], `None` means no colour). Bars follow that decision for stderr.
    pub summary_color: Option<bool>,
}

impl Default for ProgressOptions {
    fn default() -> Self {
        Self {
            mode: ProgressMode::Auto,
            plain_interval: Duration::from_secs(5),
            retry_command: None,
            summary_format: SummaryFormat::Text,
            summary_to_stderr: false,
            log_route: None,
            summary_color: None,
        }
    }
}

type Out = Box<dyn Write + Send>;

/// Shows progress and prints the summary. Create it before the run, feed it every event, call `finish` once.
pub struct ProgressSink {
    summary: SummaryCollector,
    display: Display,
    summary_format: SummaryFormat,
    summary_out: Out,
    is_summary_color: bool,
    is_finished: bool,
}

enum Display {
    Bar(Box<BarDisplay>),
    Plain(PlainDisplay),
    None,
}

impl ProgressSink {
    /// Progress on stderr, the summary on stdout (or stderr, see [`ProgressOptions::summary_to_stderr`]).
    pub fn new(mut opts: ProgressOptions) -> Self {
        opts.summary_color = opts.summary_color.or(Some(if opts.summary_to_stderr {
            color::is_stderr_colored()
        } else {
            color::is_stdout_colored()
        }));
        let summary_out: Out = if opts.summary_to_stderr {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        };
        Self::with_writers(opts, Box::new(std::io::stderr()), summary_out)
    }

    /// As [`ProgressSink::new`], with plain lines written to `progress_out` and the summary to `summary_out`.
    /// Bars always draw on stderr.
    pub fn with_writers(opts: ProgressOptions, progress_out: Out, summary_out: Out) -> Self {
        Self::build(opts, progress_out, summary_out, std::io::stderr().is_terminal())
    }

    fn build(opts: ProgressOptions, mut progress_out: Out, summary_out: Out, is_terminal: bool) -> Self {
        let mode = opts.mode.resolve(is_terminal);
        if opts.mode == ProgressMode::Bar && mode != ProgressMode::Bar {
            let _ = writeln!(progress_out, "{NO_TERMINAL_NOTE}");
        }
        let display = match mode {
            ProgressMode::Bar => {
                let size = terminal_size();
                let bars = BarDisplay::new(
                    max_inflight_lines(size.map(|(rows, _)| rows)),
                    size.map_or(DEFAULT_COLUMNS, |(_, columns)| columns),
                );
                if let Some(route) = &opts.log_route {
                    route.attach(bars.multi.clone());
                }
                Display::Bar(Box::new(BarDisplay {
                    route: opts.log_route.clone(),
                    ..bars
                }))
            }
            ProgressMode::Plain => Display::Plain(PlainDisplay::new(opts.plain_interval, progress_out)),
            ProgressMode::None | ProgressMode::Auto => Display::None,
        };
        Self {
            summary: SummaryCollector::new(opts.retry_command),
            display,
            summary_format: opts.summary_format,
            summary_out,
            is_summary_color: opts.summary_color.unwrap_or(false),
            is_finished: false,
        }
    }

    /// The bars' [`MultiProgress`] in bar mode, for printing above the bars (`println`, `suspend`).
    pub fn multi_progress(&self) -> Option<MultiProgress> {
        match &self.display {
            Display::Bar(bars) => Some(bars.multi.clone()),
            _ => None,
        }
    }

    /// The summary so far (complete after `run_finished`).
    pub fn summary(&self) -> SummaryData {
        self.summary.data()
    }
}

impl Sink for ProgressSink {
    fn name(&self) -> &'static str {
        "progress"
    }

    fn event(&mut self, event: &RunEvent) -> Result<(), SinkError> {
        self.summary.event(event)?;
        match &mut self.display {
            Display::Bar(bars) => bars.event(&event.event, event.counts),
            Display::Plain(plain) => plain.event(&event.event, event.counts),
            Display::None => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        if std::mem::replace(&mut self.is_finished, true) {
            return Ok(());
        }
        match &mut self.display {
            Display::Bar(bars) => bars.finish(),
            Display::Plain(plain) => plain.finish(),
            Display::None => {}
        }
        let data = self.summary.data();
        let text = match self.summary_format {
            SummaryFormat::Text => render_summary_colored(&data, self.is_summary_color),
            SummaryFormat::Json => match serde_json::to_string_pretty(&summary_json(&data)) {
                Ok(text) => format!("{text}\n"),
                Err(_) => format!("{}\n", summary_json(&data)),
            },
            SummaryFormat::None => return Ok(()),
        };
        // The summary is the last thing the run prints; if stdout is gone there is nobody left to tell.
        let _ = self.summary_out.write_all(text.as_bytes());
        let _ = self.summary_out.flush();
        Ok(())
    }
}

impl Drop for ProgressSink {
    fn drop(&mut self) {
        // Stop the ticker thread and release the log route even when the coordinator never called `finish`.
        match &mut self.display {
            Display::Bar(bars) => bars.finish(),
            Display::Plain(plain) => plain.stop(),
            Display::None => {}
        }
    }
}

/// One plain status line, e.g. `[00:12] 812/2200 done: 800 ok, 2 failed, 10 skipped, 12 running; 67.7/s; eta 00:20`.
///
/// Failed, skipped and interrupted counts appear only when not zero, so a line usually fits 80 columns. The
/// rate is the average since the run started; the ETA assumes it holds for the tenants left, and reads `--:--`
/// until a tenant has finished.
pub fn format_plain_line(elapsed: Duration, counts: &StateCounts) -> String {
    format!(
        "[{}] {}/{} done: {}; {}/s; eta {}",
        clock(elapsed),
        thousands(counts.done() as u64),
        thousands(counts.n_tenants as u64),
        counts_text(counts, false),
        rate_text(rate(counts.done(), elapsed)),
        eta(elapsed, counts.done(), counts.n_tenants)
    )
}

/// `800 ok, 2 failed, 10 skipped, 12 running`; with `is_full` false, zero failed, skipped and interrupted
/// counts are left out.
fn counts_text(counts: &StateCounts, is_full: bool) -> String {
    let mut parts = vec![format!("{} ok", thousands(counts.succeeded as u64))];
    for (n, word) in [
        (counts.failed, "failed"),
        (counts.skipped, "skipped"),
        (counts.interrupted, "interrupted"),
    ] {
        if n > 0 || (is_full && word != "interrupted") {
            parts.push(format!("{} {word}", thousands(n as u64)));
        }
    }
    parts.push(format!("{} running", thousands(counts.running as u64)));
    parts.join(", ")
}

/// Tenants per second with one decimal (no separators: a rate is short).
fn rate_text(tps: f64) -> String {
    format!("{tps:.1}")
}

/// The time left if the average rate so far holds: `--:--` before the first tenant finished, `00:00` at the end.
fn eta(elapsed: Duration, done: usize, n_tenants: usize) -> String {
    let left = n_tenants.saturating_sub(done);
    if left == 0 {
        clock(Duration::ZERO)
    } else if done == 0 {
        UNKNOWN_CLOCK.to_string()
    } else {
        clock(elapsed.mul_f64(left as f64 / done as f64))
    }
}

/// What the progress line tells besides the counts: the open wave (`--waves`) and the servers health
/// throttling holds, with how long each has been paused and the paused time of those that resumed.
#[derive(Debug, Default, Clone)]
struct Stage {
    /// Number, count and name of the open wave.
    wave: Option<(usize, usize, String)>,
    /// Paused servers, since when.
    paused: BTreeMap<String, Instant>,
    /// Paused time of pauses that ended, all servers.
    paused_before: Duration,
}

impl Stage {
    /// Takes in `event`; true when the stage text changed.
    fn event(&mut self, event: &FleetEvent, now: Instant) -> bool {
        match event {
            FleetEvent::WaveStarted {
                wave, n_waves, name, ..
            } => self.wave = Some((*wave, *n_waves, name.clone())),
            FleetEvent::ServerPaused { server, .. } => {
                self.paused.entry(server.clone()).or_insert(now);
            }
            FleetEvent::ServerResumed { server, paused } => {
                self.paused.remove(server);
                self.paused_before += *paused;
            }
            _ => return false,
        }
        true
    }

    /// `; wave 2/4 (5%); paused db-eu 12.0s` (only what applies), or nothing: text to append to a progress
    /// line. A run whose servers resumed keeps saying how long its servers were paused in all.
    fn text(&self, now: Instant) -> String {
        let mut out = String::new();
        if let Some((wave, of, name)) = &self.wave {
            out.push_str(&format!("; wave {wave}/{of} ({name})"));
        }
        if !self.paused.is_empty() {
            let servers: Vec<String> = self
                .paused
                .iter()
                .map(|(server, since)| format!("{server} {}", duration(now.saturating_duration_since(*since))))
                .collect();
            out.push_str(&format!("; paused {}", servers.join(", ")));
        } else if !self.paused_before.is_zero() {
            out.push_str(&format!("; paused {} in all", duration(self.paused_before)));
        }
        out
    }
}

// ---- plain ------------------------------------------------------------------------------------------------

/// Prints a line every interval from a ticker thread, so a CI log shows signs of life even while no event
/// arrives (a long backfill), and a final line on `run_finished`.
struct PlainDisplay {
    shared: Arc<Mutex<PlainState>>,
    stop: Option<mpsc::Sender<()>>,
    ticker: Option<JoinHandle<()>>,
}

struct PlainState {
    out: Out,
    counts: StateCounts,
    stage: Stage,
    started: Option<Instant>,
    has_final_line: bool,
}

impl PlainState {
    fn print(&mut self, now: Instant) {
        let Some(started) = self.started else { return };
        let line = format!(
            "{}{}",
            format_plain_line(now.saturating_duration_since(started), &self.counts),
            self.stage.text(now)
        );
        // Progress output is best effort: a closed stderr must not stop the run.
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }
}

impl PlainDisplay {
    fn new(interval: Duration, out: Out) -> Self {
        let interval = interval.max(Duration::from_millis(100));
        let shared = Arc::new(Mutex::new(PlainState {
            out,
            counts: StateCounts::default(),
            stage: Stage::default(),
            started: None,
            has_final_line: false,
        }));
        let (stop, stopped) = mpsc::channel::<()>();
        let ticker_state = Arc::clone(&shared);
        let ticker = std::thread::Builder::new()
            .name("flotilla-progress".into())
            .spawn(move || loop {
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {
                        if let Ok(mut state) = ticker_state.lock() {
                            if !state.has_final_line {
                                state.print(Instant::now());
                            }
                        }
                    }
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            })
            .ok();
        Self {
            shared,
            stop: Some(stop),
            ticker,
        }
    }

    fn event(&mut self, event: &FleetEvent, counts: StateCounts) {
        let Ok(mut state) = self.shared.lock() else { return };
        state.counts = counts;
        state.stage.event(event, Instant::now());
        match event {
            FleetEvent::RunStarted { .. } => {
                state.started = Some(Instant::now());
                state.has_final_line = false;
            }
            FleetEvent::RunFinished { .. } => {
                state.print(Instant::now());
                state.has_final_line = true;
            }
            _ => {}
        }
    }

    fn stop(&mut self) {
        self.stop.take();
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }

    fn finish(&mut self) {
        self.stop();
        if let Ok(mut state) = self.shared.lock() {
            if !state.has_final_line {
                state.print(Instant::now());
                state.has_final_line = true;
            }
        }
    }
}

// ---- bars -------------------------------------------------------------------------------------------------

/// The fleet bar plus one line per in-flight tenant, at most `max_lines`, then a "+N more" line.
struct BarDisplay {
    multi: MultiProgress,
    fleet: Option<ProgressBar>,
    more: Option<ProgressBar>,
    max_lines: usize,
    inflight: HashMap<Box<str>, Inflight>,
    /// Running tenants without a line, oldest first. May hold tenants that already finished; skipped on pop.
    waiting: VecDeque<Box<str>>,
    n_lines: usize,
    route: Option<LogRoute>,
    /// The terminal's width when the run started: it picks the fleet bar's layout.
    columns: u16,
    stage: Stage,
}

struct Inflight {
    started: Instant,
    revision: Option<(RevisionId, Direction)>,
    rows: Option<(u64, Option<u64>)>,
    line: Option<ProgressBar>,
}

impl Inflight {
    fn message(&self) -> String {
        let mut msg = match &self.revision {
            Some((revision, direction)) => format!("{} {revision}", crate::executor::direction_word(*direction)),
            None => "planning".to_string(),
        };
        if let Some((done, estimated)) = self.rows {
            match estimated {
                Some(est) => msg.push_str(&format!("  backfill {}/{} rows", thousands(done), thousands(est))),
                None => msg.push_str(&format!("  backfill {} rows", thousands(done))),
            }
        }
        msg
    }
}

/// The terminal width assumed when stderr does not say.
const DEFAULT_COLUMNS: u16 = 80;
/// From this width on, the fleet bar shows every count, a longer bar and the rate's unit.
const WIDE_COLUMNS: u16 = 100;

/// At most 8 tenant lines, and never more than the terminal holds next to the fleet bar and some log lines.
fn max_inflight_lines(rows: Option<u16>) -> usize {
    let rows = rows.map_or(24, usize::from);
    rows.saturating_sub(4).min(8)
}

/// Rows and columns of the terminal on stderr.
#[cfg(unix)]
fn terminal_size() -> Option<(u16, u16)> {
    // SAFETY: `winsize` is plain data; TIOCGWINSZ fills it or fails (stderr not a terminal) and leaves it zeroed.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

#[cfg(not(unix))]
fn terminal_size() -> Option<(u16, u16)> {
    None
}

/// The fleet bar's style for a terminal `columns` wide. Every part but the counts has a fixed width, and the
/// counts come last as `wide_msg`, which indicatif cuts at the terminal's edge, so the line never wraps: at 80
/// columns `00:12 [=====>      ] 812/2200 67.7/s eta 00:20 800 ok, 2 failed, 12 running`.
fn fleet_style(columns: u16) -> ProgressStyle {
    let is_wide = columns >= WIDE_COLUMNS;
    let template = if is_wide {
        "{clock} [{bar:30.cyan/blue}] {done}/{total} {tps} tenants/s eta {eta} | {wide_msg}"
    } else {
        "{clock} [{bar:12.cyan/blue}] {done}/{total} {tps}/s eta {eta} {wide_msg}"
    };
    style(template)
        .with_key("clock", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&clock(state.elapsed()));
        })
        .with_key("done", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&thousands(state.pos()));
        })
        .with_key("total", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&thousands(state.len().unwrap_or(0)));
        })
        .with_key("tps", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&rate_text(rate(state.pos() as usize, state.elapsed())));
        })
        .with_key("eta", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let (done, total) = (state.pos() as usize, state.len().unwrap_or(0) as usize);
            let _ = w.write_str(&eta(state.elapsed(), done, total));
        })
        .progress_chars("=> ")
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl BarDisplay {
    fn new(max_lines: usize, columns: u16) -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            columns,
            fleet: None,
            more: None,
            max_lines,
            inflight: HashMap::new(),
            waiting: VecDeque::new(),
            n_lines: 0,
            route: None,
            stage: Stage::default(),
        }
    }

    fn event(&mut self, event: &FleetEvent, counts: StateCounts) {
        let is_stage = self.stage.event(event, Instant::now());
        match event {
            FleetEvent::RunStarted { n_tenants, .. } => {
                self.clear_inflight();
                if let Some(old) = self.fleet.take() {
                    old.finish_and_clear();
                }
                let bar = self.multi.add(ProgressBar::new(*n_tenants as u64));
                bar.set_style(fleet_style(self.columns));
                bar.enable_steady_tick(Duration::from_millis(250));
                self.fleet = Some(bar);
            }
            FleetEvent::TenantStarted { tenant, .. } if !self.inflight.contains_key(tenant.as_str()) => {
                let entry = Inflight {
                    started: Instant::now(),
                    revision: None,
                    rows: None,
                    line: None,
                };
                self.inflight.insert(tenant.as_str().into(), entry);
                self.waiting.push_back(tenant.as_str().into());
                self.fill_lines();
            }
            FleetEvent::RevisionStarted {
                tenant,
                revision,
                direction,
            } => {
                if let Some(t) = self.inflight.get_mut(tenant.as_str()) {
                    t.revision = Some((revision.clone(), *direction));
                    t.rows = None;
                    update_line(t);
                }
            }
            FleetEvent::BackfillProgress {
                tenant,
                rows_done,
                rows_estimated,
                ..
            } => {
                if let Some(t) = self.inflight.get_mut(tenant.as_str()) {
                    t.rows = Some((*rows_done, *rows_estimated));
                    update_line(t);
                }
            }
            FleetEvent::RevisionApplied { tenant, .. } => {
                if let Some(t) = self.inflight.get_mut(tenant.as_str()) {
                    t.rows = None;
                }
            }
            FleetEvent::TenantSucceeded { tenant, .. }
            | FleetEvent::TenantFailed { tenant, .. }
            | FleetEvent::TenantSkipped { tenant, .. }
            | FleetEvent::TenantInterrupted { tenant, .. } => {
                if let Some(t) = self.inflight.remove(tenant.as_str()) {
                    if let Some(line) = t.line {
                        line.finish_and_clear();
                        self.multi.remove(&line);
                        self.n_lines -= 1;
                    }
                }
                self.fill_lines();
            }
            _ => {}
        }
        if is_stage
            || matches!(
                event,
                FleetEvent::RunStarted { .. }
                    | FleetEvent::TenantStarted { .. }
                    | FleetEvent::TenantSucceeded { .. }
                    | FleetEvent::TenantFailed { .. }
                    | FleetEvent::TenantSkipped { .. }
                    | FleetEvent::TenantInterrupted { .. }
            )
        {
            if let Some(fleet) = &self.fleet {
                // The coordinator's counts: a shared run's runner learns at its end which tenants were its own.
                fleet.set_length(counts.n_tenants as u64);
                fleet.set_position(counts.done() as u64);
                let stage = self.stage.text(Instant::now());
                fleet.set_message(format!("{}{stage}", counts_text(&counts, self.columns >= WIDE_COLUMNS)));
            }
        }
    }

    /// Gives free lines to the oldest waiting tenants and keeps the "+N more" line right.
    fn fill_lines(&mut self) {
        while self.n_lines < self.max_lines {
            let Some(tenant) = self.waiting.pop_front() else { break };
            let Some(t) = self.inflight.get_mut(&tenant) else {
                continue;
            };
            let line = self
                .multi
                .insert_before_more(self.more.as_ref(), ProgressBar::no_length());
            line.set_style(style("  {prefix:24!} {elapsed:>4} {wide_msg}"));
            line.set_prefix(tenant.to_string());
            line.set_elapsed(t.started.elapsed());
            t.line = Some(line);
            update_line(t);
            self.n_lines += 1;
        }
        let hidden = self.inflight.len().saturating_sub(self.n_lines);
        match (&self.more, hidden) {
            (Some(more), 0) => {
                more.finish_and_clear();
                self.multi.remove(more);
                self.more = None;
            }
            (Some(more), n) => more.set_message(format!("  … and {n} more running")),
            (None, 0) => {}
            (None, n) => {
                let more = self.multi.add(ProgressBar::no_length());
                more.set_style(style("{msg}"));
                more.set_message(format!("  … and {n} more running"));
                self.more = Some(more);
            }
        }
    }

    fn clear_inflight(&mut self) {
        for (_, t) in self.inflight.drain() {
            if let Some(line) = t.line {
                line.finish_and_clear();
                self.multi.remove(&line);
            }
        }
        if let Some(more) = self.more.take() {
            more.finish_and_clear();
            self.multi.remove(&more);
        }
        self.waiting.clear();
        self.n_lines = 0;
    }

    fn finish(&mut self) {
        self.clear_inflight();
        if let Some(fleet) = self.fleet.take() {
            // The summary that follows repeats the final counts; a bar left on screen would share its first line.
            fleet.finish_and_clear();
        }
        if let Some(route) = self.route.take() {
            route.detach();
        }
    }
}

fn update_line(t: &Inflight) {
    if let Some(line) = &t.line {
        line.set_message(t.message());
    }
}

/// Inserting tenant lines above the "+N more" line keeps it last.
trait InsertBeforeMore {
    fn insert_before_more(&self, more: Option<&ProgressBar>, bar: ProgressBar) -> ProgressBar;
}

impl InsertBeforeMore for MultiProgress {
    fn insert_before_more(&self, more: Option<&ProgressBar>, bar: ProgressBar) -> ProgressBar {
        match more {
            Some(more) => self.insert_before(more, bar),
            None => self.add(bar),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::StatusCounts;
    use crate::observe::testing::{sample_run, sample_run_events};

    /// A writer the test can read back after the sink is done with it.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn check_line(elapsed_s: u64, counts: StateCounts, expected: &str) {
        assert_eq!(format_plain_line(Duration::from_secs(elapsed_s), &counts), expected);
    }

    fn counts(n: usize, succeeded: usize, failed: usize, skipped: usize, running: usize) -> StateCounts {
        let pending = n - succeeded - failed - skipped - running;
        StateCounts {
            n_tenants: n,
            by_status: StatusCounts {
                pending,
                running,
                succeeded,
                failed,
                skipped,
                interrupted: 0,
            },
        }
    }

    #[test]
    fn the_stage_text_names_the_wave_and_paused_servers_with_their_time() {
        let t0 = Instant::now();
        let mut stage = Stage::default();
        assert_eq!(stage.text(t0), "");
        let wave = FleetEvent::WaveStarted {
            wave: 2,
            n_waves: 4,
            name: "5%".into(),
            n_tenants: 10,
        };
        assert!(stage.event(&wave, t0));
        let paused = |server: &str| FleetEvent::ServerPaused {
            server: server.into(),
            reason: "lock waiters 12 (pause over 10)".into(),
        };
        assert!(stage.event(&paused("eu"), t0));
        assert!(stage.event(&paused("us"), t0 + Duration::from_secs(2)));
        assert_eq!(
            stage.text(t0 + Duration::from_secs(12)),
            "; wave 2/4 (5%); paused eu 12.0s, us 10.0s"
        );
        let resumed = |server: &str, secs| FleetEvent::ServerResumed {
            server: server.into(),
            paused: Duration::from_secs(secs),
        };
        assert!(stage.event(&resumed("eu", 13), t0 + Duration::from_secs(13)));
        assert_eq!(
            stage.text(t0 + Duration::from_secs(13)),
            "; wave 2/4 (5%); paused us 11.0s"
        );
        assert!(stage.event(&resumed("us", 12), t0 + Duration::from_secs(14)));
        assert_eq!(
            stage.text(t0 + Duration::from_secs(60)),
            "; wave 2/4 (5%); paused 25.0s in all"
        );
        assert!(!stage.event(
            &FleetEvent::ServerOutage {
                server: "eu".into(),
                down: Duration::ZERO,
                n_waited: 0
            },
            t0
        ));
    }

    #[test]
    fn plain_line_format() {
        check_line(
            12,
            counts(2200, 800, 2, 10, 12),
            "[00:12] 812/2200 done: 800 ok, 2 failed, 10 skipped, 12 running; 67.7/s; eta 00:20",
        );
        check_line(
            0,
            counts(10, 0, 0, 0, 0),
            "[00:00] 0/10 done: 0 ok, 0 running; 0.0/s; eta --:--",
        );
        // Running tenants are not done: the ETA waits for a finished one.
        check_line(
            30,
            counts(10, 0, 0, 0, 4),
            "[00:30] 0/10 done: 0 ok, 4 running; 0.0/s; eta --:--",
        );
        check_line(
            3725,
            counts(4, 3, 1, 0, 0),
            "[1:02:05] 4/4 done: 3 ok, 1 failed, 0 running; 0.0/s; eta 00:00",
        );
        check_line(
            600,
            counts(250_000, 120_000, 0, 0, 16),
            "[10:00] 120,000/250,000 done: 120,000 ok, 16 running; 200.0/s; eta 10:50",
        );
        let mut c = counts(5, 1, 0, 0, 0);
        c.by_status.interrupted = 2;
        c.by_status.pending -= 2;
        check_line(
            1,
            c,
            "[00:01] 3/5 done: 1 ok, 2 interrupted, 0 running; 3.0/s; eta 00:00",
        );
    }

    /// A terminal of a fixed width that keeps every line indicatif draws.
    #[derive(Debug, Clone)]
    struct Screen {
        columns: u16,
        lines: Arc<Mutex<Vec<String>>>,
    }

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            self.columns
        }
        fn height(&self) -> u16 {
            40
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.lines.lock().unwrap().push(s.to_string());
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.write_line(s)
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The fleet bar as drawn on a terminal `columns` wide, once `n_done` of 2200 tenants finished.
    fn draw_fleet_bar(columns: u16, n_done: usize) -> String {
        let screen = Screen {
            columns,
            lines: Arc::default(),
        };
        let mut bars = BarDisplay::new(8, columns);
        bars.multi
            .set_draw_target(ProgressDrawTarget::term_like_with_hz(Box::new(screen.clone()), 1));
        let mut book = super::super::tally::StateBook::new();
        let mut feed = |bars: &mut BarDisplay, e: FleetEvent| {
            book.apply(&e);
            bars.event(&e, book.counts());
        };
        feed(
            &mut bars,
            FleetEvent::RunStarted {
                run_id: "r".into(),
                command: "upgrade".into(),
                target: "head".into(),
                n_tenants: 2200,
                concurrency: 16,
                at: std::time::SystemTime::now(),
            },
        );
        for i in 0..n_done + 12 {
            feed(
                &mut bars,
                FleetEvent::TenantStarted {
                    tenant: format!("a-rather-long-tenant-name-{i:05}").into(),
                    server: "db1".into(),
                    attempt: 1,
                },
            );
        }
        for i in 0..n_done {
            feed(
                &mut bars,
                FleetEvent::TenantFailed {
                    tenant: format!("a-rather-long-tenant-name-{i:05}").into(),
                    from: vec![],
                    to: vec![],
                    failed_revision: None,
                    error: "e".into(),
                    error_kind: crate::executor::FailureKind::SqlError,
                    sqlstate: None,
                    attempts: 1,
                    duration: Duration::from_millis(5),
                },
            );
        }
        // Drawing is rate limited; abandoning the bar draws its current state once more.
        bars.fleet.clone().unwrap().abandon();
        // The bar is coloured when the test's stderr is a terminal; the width is what is visible.
        let lines: Vec<String> = screen
            .lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| console::strip_ansi_codes(l).into_owned())
            .collect();
        for line in &lines {
            assert!(
                line.chars().count() <= usize::from(columns),
                "{columns} columns: {line:?}"
            );
        }
        bars.finish();
        lines.into_iter().rfind(|l| l.contains("/2200")).unwrap_or_default()
    }

    #[test]
    fn fleet_bar_fits_80_columns_and_shows_more_on_wider_terminals() {
        let narrow = draw_fleet_bar(80, 0);
        assert!(
            narrow.contains(" 0/2200 0.0/s eta --:-- 0 ok, 12 running"),
            "{narrow:?}"
        );
        let narrow = draw_fleet_bar(80, 1500);
        assert!(narrow.contains(" 1500/2200 "), "{narrow:?}");
        assert!(narrow.contains("0 ok, 1500 failed, 12 running"), "{narrow:?}");
        let wide = draw_fleet_bar(140, 1500);
        assert!(wide.contains(" tenants/s eta "), "{wide:?}");
        assert!(wide.contains("| 0 ok, 1500 failed, 0 skipped, 12 running"), "{wide:?}");
    }

    #[test]
    fn inflight_lines_fit_the_terminal() {
        assert_eq!(max_inflight_lines(Some(50)), 8);
        assert_eq!(max_inflight_lines(Some(10)), 6);
        assert_eq!(max_inflight_lines(Some(3)), 0);
        assert_eq!(max_inflight_lines(None), 8);
    }

    fn run(mode: ProgressMode, format: SummaryFormat) -> (String, String) {
        let progress = Captured::default();
        let summary = Captured::default();
        let opts = ProgressOptions {
            mode,
            plain_interval: Duration::from_secs(3600),
            retry_command: Some("flotilla fleet retry --run run-1".into()),
            summary_format: format,
            ..ProgressOptions::default()
        };
        let mut sink = ProgressSink::build(opts, Box::new(progress.clone()), Box::new(summary.clone()), false);
        for e in sample_run_events() {
            sink.event(&e).unwrap();
        }
        sink.finish().unwrap();
        sink.finish().unwrap();
        drop(sink);
        (progress.text(), summary.text())
    }

    #[test]
    fn plain_mode_prints_a_final_line_and_the_summary() {
        let (progress, summary) = run(ProgressMode::Plain, SummaryFormat::Text);
        let lines: Vec<&str> = progress.lines().collect();
        assert_eq!(lines.len(), 1, "{progress}");
        // The rate depends on the wall clock, so only the counts and the ETA are checked here.
        assert!(lines[0].contains("] 5/5 done: 2 ok, 1 failed, 1 skipped, 1 interrupted, 0 running; "));
        assert!(lines[0].ends_with("; eta 00:00"), "{progress}");
        assert!(
            summary.starts_with("run run-1: upgrade to head, 5 tenants in 10.0s"),
            "{summary}"
        );
        assert_eq!(
            summary.matches("run run-1:").count(),
            1,
            "summary printed once: {summary}"
        );
    }

    #[test]
    fn none_mode_prints_only_the_summary() {
        let (progress, summary) = run(ProgressMode::None, SummaryFormat::Json);
        assert_eq!(progress, "");
        let v: serde_json::Value = serde_json::from_str(summary.trim_end()).unwrap();
        assert_eq!(v["counts"]["failed"], 1);
        assert!(
            summary.starts_with("{\n  \""),
            "pretty, as every JSON document: {summary}"
        );
    }

    #[test]
    fn bar_mode_without_a_terminal_falls_back_to_plain_lines_with_a_note() {
        let (progress, summary) = run(ProgressMode::Bar, SummaryFormat::Text);
        let lines: Vec<&str> = progress.lines().collect();
        assert_eq!(lines.len(), 2, "{progress}");
        assert_eq!(lines[0], NO_TERMINAL_NOTE);
        assert!(lines[1].contains("] 5/5 done: "), "{progress}");
        assert!(summary.contains("slowest tenants:"));
        // Auto falls back silently; on a terminal both draw bars.
        let (progress, _) = run(ProgressMode::Auto, SummaryFormat::Text);
        assert!(!progress.contains("note:"), "{progress}");
        assert_eq!(ProgressMode::Bar.resolve(true), ProgressMode::Bar);
        assert_eq!(ProgressMode::Auto.resolve(true), ProgressMode::Bar);
        assert_eq!(ProgressMode::None.resolve(false), ProgressMode::None);
    }

    #[test]
    fn bar_mode_caps_inflight_lines() {
        let mut bars = BarDisplay::new(2, 80);
        bars.multi.set_draw_target(ProgressDrawTarget::hidden());
        let mut book = super::super::tally::StateBook::new();
        let mut feed = |bars: &mut BarDisplay, e: FleetEvent| {
            book.apply(&e);
            bars.event(&e, book.counts());
        };
        feed(&mut bars, sample_run().remove(0));
        for t in ["a", "b", "c", "d"] {
            feed(
                &mut bars,
                FleetEvent::TenantStarted {
                    tenant: t.into(),
                    server: "db1".into(),
                    attempt: 1,
                },
            );
        }
        assert_eq!(bars.n_lines, 2);
        assert_eq!(
            bars.more.as_ref().map(|m| m.message()),
            Some("  … and 2 more running".to_string())
        );
        feed(
            &mut bars,
            FleetEvent::TenantInterrupted {
                tenant: "a".into(),
                from: vec![],
                to: vec![],
            },
        );
        feed(
            &mut bars,
            FleetEvent::TenantInterrupted {
                tenant: "c".into(),
                from: vec![],
                to: vec![],
            },
        );
        assert_eq!(bars.n_lines, 2);
        let shown: Vec<_> = bars
            .inflight
            .iter()
            .filter(|(_, t)| t.line.is_some())
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(shown.len(), 2);
        assert!(bars.more.is_none());
        bars.finish();
    }
}
