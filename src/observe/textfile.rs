//! Metrics for node_exporter's textfile collector: the text exposition written to a `.prom` file every few
//! seconds and once more at the end, for runs too short-lived or too firewalled to be scraped.
//!
//! Each write goes to `<path>.tmp.<pid>` and is renamed over `<path>`, so the collector never reads half a file.
//! The writes happen on a thread of their own, never on the coordinator.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::error::ObserveError;
use super::event::{RunEvent, Sink, SinkError};
use super::metrics::Metrics;

/// Writes `content` to `path` atomically: a temporary file beside it (`<path>.tmp.<pid>`), then a rename.
pub fn write_atomically(path: &Path, content: &str) -> Result<(), ObserveError> {
    let mut tmp: OsString = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = std::fs::write(&tmp, content).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|error| ObserveError::Textfile {
        path: path.to_path_buf(),
        error,
    })
}

/// Rewrites the textfile every `interval` and at [`Sink::finish`]. Its `event` does nothing: put it after the
/// [`MetricsSink`](super::MetricsSink) that updates the same [`Metrics`].
pub struct TextfileWriter {
    path: PathBuf,
    metrics: Metrics,
    stop: Option<mpsc::Sender<()>>,
    ticker: Option<JoinHandle<()>>,
}

impl TextfileWriter {
    /// Writes the file once now (so a bad path fails before the run), then every `interval`.
    ///
    /// Errors: [`ObserveError::Textfile`] when the first write fails. Later failures are logged once and retried; a failure of the last write, at the end of the run, is the sink's error.
    pub fn start(path: impl Into<PathBuf>, metrics: Metrics, interval: Duration) -> Result<Self, ObserveError> {
        let path = path.into();
        write_atomically(&path, &metrics.render())?;
        let has_warned = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let interval = interval.max(Duration::from_millis(100));
        let (t_path, t_metrics) = (path.clone(), metrics.clone());
        let ticker = std::thread::Builder::new()
            .name("flotilla-textfile".into())
            .spawn(move || loop {
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => write_or_warn(&t_path, &t_metrics, &has_warned),
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            })
            .ok();
        Ok(Self {
            path,
            metrics,
            stop: Some(stop),
            ticker,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the current metrics now.
    pub fn write_now(&self) -> Result<(), ObserveError> {
        write_atomically(&self.path, &self.metrics.render())
    }

    fn stop_ticker(&mut self) {
        self.stop.take();
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

fn write_or_warn(path: &Path, metrics: &Metrics, has_warned: &AtomicBool) {
    if let Err(err) = write_atomically(path, &metrics.render()) {
        if !has_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!("{err}; will keep trying");
        }
    }
}

impl Sink for TextfileWriter {
    fn name(&self) -> &'static str {
        "metrics textfile"
    }

    fn event(&mut self, _event: &RunEvent) -> Result<(), SinkError> {
        Ok(())
    }

    /// The last write: its failure is the sink's (the ticker's earlier failures were warned about and retried).
    fn finish(&mut self) -> Result<(), SinkError> {
        self.stop_ticker();
        write_atomically(&self.path, &self.metrics.render()).map_err(|e| SinkError(e.to_string()))
    }
}

impl Drop for TextfileWriter {
    fn drop(&mut self) {
        self.stop_ticker();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::testing::sample_run_events;
    use crate::observe::MetricsSink;

    #[test]
    fn textfile_matches_the_rendered_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flotilla.prom");
        let metrics = Metrics::new();
        let mut sink = MetricsSink::new(metrics.clone());
        let mut textfile = TextfileWriter::start(&path, metrics.clone(), Duration::from_secs(3600)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), metrics.render());
        for e in sample_run_events() {
            sink.event(&e).unwrap();
            textfile.event(&e).unwrap();
        }
        textfile.finish().unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written, metrics.render());
        assert!(written.contains("flotilla_tenants{state=\"failed\"} 1"));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![OsString::from("flotilla.prom")],
            "no temporary file left behind"
        );
    }

    #[test]
    fn a_bad_path_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("flotilla.prom");
        let err = TextfileWriter::start(&path, Metrics::new(), Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(matches!(err, ObserveError::Textfile { .. }), "{err:?}");
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.prom");
        std::fs::write(&path, "old").unwrap();
        write_atomically(&path, "new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
    }
}
