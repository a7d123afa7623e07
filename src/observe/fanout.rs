//! Several sinks behind one: the coordinator holds a [`Fanout`] and hands it each event once.

use super::event::{RunEvent, Sink, SinkError};

/// Hands each event to every sink, in the order they were added. A sink that fails is logged once and left
/// out of the rest of the run, so a full disk under the event file or a broken terminal never stops a run.
///
/// Order matters for sinks that read shared state: add the [`MetricsSink`](super::MetricsSink) before a
/// [`TextfileWriter`](super::TextfileWriter) of the same metrics, and the progress sink last so its summary is
/// the final output.
#[derive(Default)]
pub struct Fanout {
    sinks: Vec<Box<dyn Sink>>,
}

impl Fanout {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, sink: impl Sink + 'static) {
        self.sinks.push(Box::new(sink));
    }

    pub fn with(mut self, sink: impl Sink + 'static) -> Self {
        self.push(sink);
        self
    }

    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Hand `event` to every sink still taking events.
    pub fn event(&mut self, event: &RunEvent) {
        self.each(|sink| sink.event(event));
    }

    /// Tell every sink still taking events that the run is over.
    pub fn finish(&mut self) {
        self.each(|sink| sink.finish());
    }

    fn each(&mut self, mut call: impl FnMut(&mut dyn Sink) -> Result<(), SinkError>) {
        self.sinks.retain_mut(|sink| match call(sink.as_mut()) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(sink = sink.name(), error = %e, "a run output failed and is switched off for the rest of the run; the run goes on");
                false
            }
        });
    }
}

impl From<Vec<Box<dyn Sink>>> for Fanout {
    fn from(sinks: Vec<Box<dyn Sink>>) -> Self {
        Fanout { sinks }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::observe::testing::sample_run_events;

    /// Counts the events it takes; fails at the `fail_at`-th.
    struct Counting {
        seen: Arc<Mutex<usize>>,
        fail_at: Option<usize>,
    }

    impl Sink for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }

        fn event(&mut self, _event: &RunEvent) -> Result<(), SinkError> {
            let mut seen = self.seen.lock().unwrap();
            *seen += 1;
            match self.fail_at {
                Some(n) if *seen == n => Err(SinkError("broken".into())),
                _ => Ok(()),
            }
        }
    }

    #[test]
    fn a_failing_sink_is_switched_off_and_the_others_go_on() {
        let (broken, healthy) = (Arc::new(Mutex::new(0)), Arc::new(Mutex::new(0)));
        let mut fanout = Fanout::new()
            .with(Counting {
                seen: broken.clone(),
                fail_at: Some(2),
            })
            .with(Counting {
                seen: healthy.clone(),
                fail_at: None,
            });
        let events = sample_run_events();
        for e in &events {
            fanout.event(e);
        }
        fanout.finish();
        assert_eq!(*broken.lock().unwrap(), 2);
        assert_eq!(*healthy.lock().unwrap(), events.len());
        assert_eq!(fanout.len(), 1);
    }
}
