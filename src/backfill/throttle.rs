//! Throttles between batches: a rows-per-second budget (per tenant, and one shared by the whole fleet) and
//! adaptive batch sizing toward a target batch duration.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A rows-per-second budget shared by whoever holds it (one tenant's loop, or every tenant of a fleet run).
///
/// Each batch is charged after it ran, with the rows it actually covered, and the caller then waits until the
/// budget has paid for them (a virtual-time schedule, as in GCRA). Over any window the rows done stay within
/// `rate * window` plus one batch per holder. Not `governor`: its `until_n_ready` refuses a charge larger than
/// the burst size, and batch sizes vary (adaptive sizing, the last partial batch).
#[derive(Debug)]
pub struct RowThrottle {
    rows_per_second: f64,
    /// When the rows charged so far are paid for.
    paid_until: Mutex<Option<Instant>>,
}

impl RowThrottle {
    /// `None` for a rate of zero or less (unlimited).
    pub fn new(rows_per_second: f64) -> Option<RowThrottle> {
        (rows_per_second > 0.0 && rows_per_second.is_finite()).then(|| RowThrottle {
            rows_per_second,
            paid_until: Mutex::new(None),
        })
    }

    pub fn rows_per_second(&self) -> f64 {
        self.rows_per_second
    }

    /// Charge `rows` and return how long the caller should wait before its next batch.
    pub fn charge(&self, rows: u64) -> Duration {
        let now = Instant::now();
        let cost = Duration::from_secs_f64(rows as f64 / self.rows_per_second);
        // A poisoned lock only means another holder panicked mid-update; the instant inside is still valid.
        let mut paid = self.paid_until.lock().unwrap_or_else(|e| e.into_inner());
        let start = paid.map_or(now, |p| p.max(now));
        let end = start + cost;
        *paid = Some(end);
        end.saturating_duration_since(now)
    }

    /// Charge `rows` and sleep until they are paid for.
    pub async fn wait(&self, rows: u64) {
        let delay = self.charge(rows);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

/// The batch size for the next batch: fixed, or adapted toward a target duration per batch.
#[derive(Debug, Clone)]
pub struct BatchSizer {
    size: u64,
    /// The marker's `batch_size`: where a fixed size grows back to after a split.
    initial: u64,
    min: u64,
    max: u64,
    target: Option<Duration>,
    /// The batch statement's share of `max_hold` (see `hold.rs`), when the marker sets one.
    ceiling: Option<Duration>,
}

impl BatchSizer {
    pub fn new(initial: u64, target: Option<Duration>) -> BatchSizer {
        let initial = initial.max(1);
        BatchSizer {
            size: initial,
            initial,
            min: 1,
            max: initial.saturating_mul(100).min(1_000_000),
            target,
            ceiling: None,
        }
    }

    /// The same sizer under a ceiling on the batch statement's duration: after [`BatchSizer::split`] a fixed
    /// size grows back toward `batch_size`, doubling after each full batch that took under half the ceiling.
    pub fn with_ceiling(mut self, ceiling: Duration) -> BatchSizer {
        self.ceiling = Some(ceiling);
        self
    }

    /// A batch was cancelled by the ceiling: the next batches (from the same key range) have `limit` keys, and
    /// adaptive sizing continues from there.
    pub fn split(&mut self, limit: u64) {
        self.size = limit.clamp(self.min, self.max);
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Record how long a batch of `rows` took. Only full batches grow the size (a short last batch says nothing
    /// about a bigger one), and each step at most halves or doubles it, so one slow batch cannot collapse it.
    pub fn observe(&mut self, rows: u64, elapsed: Duration) {
        let Some(target) = self.target else {
            if let Some(ceiling) = self.ceiling {
                if self.size < self.initial && rows >= self.size && elapsed < ceiling / 2 {
                    self.size = self.size.saturating_mul(2).min(self.initial);
                }
            }
            return;
        };
        let ratio = (target.as_secs_f64() / elapsed.as_secs_f64().max(0.000_1)).clamp(0.5, 2.0);
        if ratio > 1.0 && rows < self.size {
            return;
        }
        let next = (self.size as f64 * ratio).round() as u64;
        self.size = next.clamp(self.min, self.max);
    }
}

/// What a backfill waits on before each batch besides its row budgets: the fleet's health throttling of the
/// tenant's server (a server over its limits holds its batches as it holds its tenant starts).
pub trait BatchGate: Send + Sync {
    /// Wait until a batch may run; false when the run is stopping (the backfill then stops at its checkpoint).
    fn wait(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>>;
}

impl std::fmt::Debug for dyn BatchGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchGate")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backfill_throttle_charges_in_virtual_time() {
        assert!(RowThrottle::new(0.0).is_none());
        let t = RowThrottle::new(1000.0).expect("positive rate");
        let first = t.charge(500);
        assert!(first <= Duration::from_millis(500));
        // The second charge queues behind the first: about one second in total.
        let second = t.charge(500);
        assert!(
            second > Duration::from_millis(900) && second <= Duration::from_millis(1000),
            "{second:?}"
        );
    }

    #[test]
    fn backfill_batch_sizer_moves_toward_target() {
        let mut fixed = BatchSizer::new(100, None);
        fixed.observe(100, Duration::from_secs(5));
        assert_eq!(fixed.size(), 100);
        let mut s = BatchSizer::new(100, Some(Duration::from_millis(200)));
        s.observe(100, Duration::from_millis(50));
        assert_eq!(s.size(), 200);
        s.observe(10, Duration::from_millis(1));
        assert_eq!(s.size(), 200, "a short batch never grows the size");
        s.observe(200, Duration::from_millis(800));
        assert_eq!(s.size(), 100);
        for _ in 0..20 {
            s.observe(s.size(), Duration::from_secs(10));
        }
        assert_eq!(s.size(), 1);
    }

    #[test]
    fn backfill_batch_sizer_after_a_split() {
        let ceiling = Duration::from_millis(150);
        // Fixed sizing grows back to batch_size, only after full batches well under the ceiling.
        let mut fixed = BatchSizer::new(1000, None).with_ceiling(ceiling);
        fixed.observe(1000, Duration::from_millis(10));
        assert_eq!(fixed.size(), 1000, "never past batch_size");
        fixed.split(250);
        assert_eq!(fixed.size(), 250);
        fixed.observe(250, Duration::from_millis(100));
        assert_eq!(
            fixed.size(),
            250,
            "over half the ceiling: doubling would likely be cancelled again"
        );
        fixed.observe(100, Duration::from_millis(1));
        assert_eq!(fixed.size(), 250, "a short last batch says nothing");
        fixed.observe(250, Duration::from_millis(20));
        assert_eq!(fixed.size(), 500);
        fixed.observe(500, Duration::from_millis(20));
        fixed.observe(1000, Duration::from_millis(20));
        assert_eq!(fixed.size(), 1000);
        fixed.split(0);
        assert_eq!(fixed.size(), 1, "never below one key");
        // Without a ceiling a fixed size never moves.
        let mut plain = BatchSizer::new(1000, None);
        plain.split(10);
        plain.observe(10, Duration::from_millis(1));
        assert_eq!(plain.size(), 10);
        // Adaptive sizing continues from the split size.
        let mut adaptive = BatchSizer::new(1000, Some(Duration::from_millis(50))).with_ceiling(ceiling);
        adaptive.observe(1000, Duration::from_millis(25));
        assert_eq!(adaptive.size(), 2000);
        adaptive.split(1000);
        adaptive.observe(1000, Duration::from_millis(50));
        assert_eq!(adaptive.size(), 1000);
        adaptive.observe(1000, Duration::from_millis(100));
        assert_eq!(adaptive.size(), 500);
    }
}
