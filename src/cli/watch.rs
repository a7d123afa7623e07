//! The sinks a fleet run's flags ask for: Prometheus metrics (served and/or a textfile), the NDJSON event
//! stream, and the progress display with its final summary (last, so the summary prints after everything);
//! and the `/metrics` server's linger after the run ([`linger`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::args::{Format, ProgressArg, RunArgs};
use super::context::Ctx;
use super::error::CliError;
use crate::observe::{
    self, LogRoute, Metrics, MetricsSink, NdjsonSink, ProgressMode, ProgressOptions, ProgressSink, Sink, SummaryFormat,
    TextfileWriter,
};

/// How often `--metrics-textfile` is rewritten during a run.
const TEXTFILE_EVERY: Duration = Duration::from_secs(5);

/// The `/metrics` server of this process's run, kept until [`linger`] is done with it. A process runs one
/// fleet command, and the run's code (`cli::fleet`) hands its sinks to the coordinator and returns only the exit
/// code, so the server waits here rather than travelling back through it.
static SERVED: Mutex<Option<Served>> = Mutex::new(None);

struct Served {
    bound: SocketAddr,
    linger: Duration,
    task: JoinHandle<()>,
}

/// After the command: keep serving `/metrics` for `--metrics-linger`, ended early by SIGINT or SIGTERM, then
/// stop the server. Returns at once when nothing was served, the linger is zero, or the run was interrupted
/// (the signal that stopped it already asked to end).
pub async fn linger(was_interrupted: bool) {
    let Some(served) = SERVED.lock().ok().and_then(|mut slot| slot.take()) else {
        return;
    };
    if !was_interrupted && !served.linger.is_zero() {
        tracing::info!(
            "the run is over; serving http://{}/metrics for {} more (--metrics-linger; Ctrl-C ends it now)",
            served.bound,
            observe::human::duration(served.linger)
        );
        let mut signals = crate::signals::Signals::new();
        tokio::select! {
            () = tokio::time::sleep(served.linger) => {}
            _ = signals.recv() => {}
        }
    }
    served.task.abort();
}

pub async fn sinks(
    ctx: &Ctx,
    run: &RunArgs,
    route: LogRoute,
    retry_command: String,
) -> Result<Vec<Box<dyn Sink>>, CliError> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if run.metrics_addr.is_some() || run.metrics_textfile.is_some() {
        let metrics = Metrics::new();
        sinks.push(Box::new(MetricsSink::new(metrics.clone())));
        if let Some(addr) = &run.metrics_addr {
            let addr: SocketAddr = addr.parse().map_err(|e| {
                CliError::usage(format!(
                    "--metrics-addr `{addr}`: {e} (expected HOST:PORT, e.g. 127.0.0.1:9464)"
                ))
            })?;
            let (bound, task) = observe::serve(addr, metrics.clone()).await.map_err(CliError::usage)?;
            tracing::info!(%bound, "serving Prometheus metrics at http://{bound}/metrics");
            if let Ok(mut slot) = SERVED.lock() {
                if let Some(old) = slot.replace(Served {
                    bound,
                    linger: run.metrics_linger,
                    task,
                }) {
                    old.task.abort();
                }
            }
        }
        if let Some(path) = &run.metrics_textfile {
            sinks.push(Box::new(
                TextfileWriter::start(path, metrics, TEXTFILE_EVERY).map_err(CliError::usage)?,
            ));
        }
    }
    let is_events_stdout = run.events.as_deref() == Some("-");
    if let Some(events) = &run.events {
        sinks.push(Box::new(
            NdjsonSink::create(Path::new(events)).map_err(CliError::usage)?,
        ));
    }
    let mode = match run.progress {
        ProgressArg::Auto => ProgressMode::Auto,
        ProgressArg::Bar => ProgressMode::Bar,
        ProgressArg::Plain => ProgressMode::Plain,
        ProgressArg::None => ProgressMode::None,
    };
    sinks.push(Box::new(ProgressSink::new(ProgressOptions {
        mode,
        retry_command: Some(retry_command),
        // A dry run's report of plans replaces the summary, whose counts would call every tenant "skipped".
        summary_format: match ctx.format {
            _ if run.dry_run => SummaryFormat::None,
            Format::Text => SummaryFormat::Text,
            Format::Json => SummaryFormat::Json,
        },
        // With events on stdout the summary must not interleave with them, and a dry run's stdout is its plan
        // alone, so `--format json` prints one JSON document there.
        summary_to_stderr: is_events_stdout || run.dry_run,
        log_route: Some(route),
        ..ProgressOptions::default()
    })));
    Ok(sinks)
}
