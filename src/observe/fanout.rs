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
