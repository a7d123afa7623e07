//! The event stream: every [`FleetEvent`] as one JSON object per line, for scripts and log shippers.
//!
//! Each line is the event's own serialisation (an `event` field naming it, `tenant` on tenant events) plus
//! `v` (the line format version, now 1) and `ts` (when the sink saw it, RFC 3339 UTC with milliseconds).
//! Lines are buffered; the buffer is flushed at least every second, on `run_finished` and at `finish`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde::Serialize;

use super::error::ObserveError;
use super::event::{FleetEvent, RunEvent, Sink, SinkError};

/// The version written in each line's `v` field. Bump it when a field changes meaning or goes away.
pub const NDJSON_VERSION: u32 = 1;
/// The longest time a written line waits in the buffer (checked when the next event arrives).
const FLUSH_EVERY: Duration = Duration::from_secs(1);

#[derive(Serialize)]
struct Line<'a> {
    v: u32,
    ts: String,
    #[serde(flatten)]
    event: &'a FleetEvent,
}

/// Writes events as NDJSON. A write error is logged once and the stream stops; the run goes on.
pub struct NdjsonSink {
    out: BufWriter<Box<dyn Write + Send>>,
    name: String,
    last_flush: Instant,
    has_failed: bool,
}

impl NdjsonSink {
    /// Opens `path` for writing (created or truncated); `-` means stdout.
    ///
    /// Errors: [`ObserveError::OpenEvents`] when the file cannot be created.
    pub fn create(path: &Path) -> Result<Self, ObserveError> {
        if path == Path::new("-") {
            return Ok(Self::from_writer(Box::new(std::io::stdout()), "stdout"));
        }
        let file = File::create(path).map_err(|error| ObserveError::OpenEvents {
            path: PathBuf::from(path),
            error,
        })?;
        Ok(Self::from_writer(Box::new(file), path.display().to_string()))
    }

    /// Writes to any writer; `name` identifies it in the error log.
    pub fn from_writer(writer: Box<dyn Write + Send>, name: impl Into<String>) -> Self {
        Self {
            out: BufWriter::with_capacity(64 * 1024, writer),
            name: name.into(),
            last_flush: Instant::now(),
            has_failed: false,
        }
    }

    fn try_write(&mut self, event: &FleetEvent) -> std::io::Result<()> {
        let line = Line {
            v: NDJSON_VERSION,
            ts: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            event,
        };
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")?;
        let now = Instant::now();
        if matches!(event, FleetEvent::RunFinished { .. }) || now.duration_since(self.last_flush) >= FLUSH_EVERY {
            self.out.flush()?;
            self.last_flush = now;
        }
        Ok(())
    }

    fn fail(&mut self, err: std::io::Error) -> SinkError {
        self.has_failed = true;
        SinkError(format!(
            "cannot write the event stream {}: {}; no more events go to it",
            self.name,
            super::os_reason(&err)
        ))
    }
}

impl Sink for NdjsonSink {
    fn name(&self) -> &'static str {
        "event stream"
    }

    fn event(&mut self, event: &RunEvent) -> Result<(), SinkError> {
        if self.has_failed {
            return Ok(());
        }
        self.try_write(&event.event).map_err(|err| self.fail(err))
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        if self.has_failed {
            return Ok(());
        }
        self.out.flush().map_err(|err| self.fail(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::testing::{sample_run, sample_run_events};

    fn write_sample(path: &Path) {
        let mut sink = NdjsonSink::create(path).unwrap();
        for e in sample_run_events() {
            sink.event(&e).unwrap();
        }
        sink.finish().unwrap();
    }

    #[test]
    fn every_line_is_an_event_object() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        write_sample(&path);
        let text = std::fs::read_to_string(&path).unwrap();
        let events = sample_run();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), events.len());
        for (line, event) in lines.iter().zip(&events) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["v"], 1, "{line}");
            let ts = v["ts"].as_str().unwrap();
            assert!(
                chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z'),
                "{line}"
            );
            let name = v["event"].as_str().unwrap();
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{line}"
            );
            assert_eq!(v["tenant"].as_str(), event.tenant().map(|t| t.as_str()), "{line}");
        }
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["event"], "run_started");
        assert_eq!(first["n_tenants"], 5);
        let failed: serde_json::Value =
            serde_json::from_str(lines.iter().find(|l| l.contains("tenant_failed")).unwrap()).unwrap();
        assert_eq!(failed["sqlstate"], "23505");
        assert_eq!(failed["duration_ms"], 800);
    }

    #[test]
    fn run_finished_flushes_without_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        let mut sink = NdjsonSink::create(&path).unwrap();
        for e in sample_run_events() {
            sink.event(&e).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), sample_run().len());
        assert!(text.lines().last().unwrap().contains("\"event\":\"run_finished\""));
    }

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::Error::other("disk full"))
        }
    }

    #[test]
    fn a_write_error_is_reported_once_then_the_stream_stays_quiet() {
        let mut sink = NdjsonSink::from_writer(Box::new(Broken), "broken");
        let mut errors: Vec<String> = sample_run_events()
            .iter()
            .filter_map(|e| sink.event(e).err())
            .map(|e| e.to_string())
            .collect();
        errors.extend(sink.finish().err().map(|e| e.to_string()));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("broken") && errors[0].contains("disk full"),
            "{errors:?}"
        );
        assert!(sink.has_failed);
    }

    #[test]
    fn an_unwritable_path_fails_at_create() {
        let dir = tempfile::tempdir().unwrap();
        let err = NdjsonSink::create(&dir.path().join("no").join("events.ndjson"))
            .err()
            .unwrap();
        assert!(matches!(err, ObserveError::OpenEvents { .. }));
    }
}
