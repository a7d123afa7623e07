//! Several sinks behind one: the coordinator holds a [`Fanout`] and hands it each event once.

use super::event::{FleetEvent, Sink};

/// Hands each event to every sink, in the order they were added.
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
}

impl Sink for Fanout {
    fn event(&mut self, event: &FleetEvent) {
        for sink in &mut self.sinks {
            sink.event(event);
        }
    }

    fn finish(&mut self) {
        for sink in &mut self.sinks {
            sink.finish();
        }
    }
}
