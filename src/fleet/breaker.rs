//! A server's circuit breaker: what its tenants do when the server goes away (a restart, a crash, a network cut),
//! and when it refuses this run's credentials.
//!
//! The breaker only decides; it is pure (the caller passes the clock, and the probe delays with their jitter), so
//! its tests run on a fake clock. The worker does the IO around it: the probe connection, the waits (which watch
//! the stop flag) and the log lines.
//!
//! States: closed (tenants run), open since T (tenants wait; the next probe is due at some moment), half-open (one
//! worker probes while the others wait), expired (down for longer than the outage budget: tenants fail), fatal
//! (authentication or TLS refused: tenants fail at once with the first tenant's failure, without connecting).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::worker::Failure;

/// How often a waiting tenant looks again while another worker's probe is in flight.
const HALF_OPEN_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
enum State {
    Closed,
    Open {
        since: Instant,
        probe_at: Instant,
        n_failed_probes: u32,
    },
    HalfOpen {
        since: Instant,
        n_failed_probes: u32,
    },
    Expired {
        since: Instant,
    },
    Fatal(Failure),
}

/// What a tenant of the server does now.
#[derive(Debug, Clone)]
pub(crate) enum Gate {
    /// The server answers: start the attempt.
    Go,
    /// The server is down: look again at this moment.
    Wait(Instant),
    /// The server is down and a probe is due: this worker probes, then reports with
    /// [`Breaker::probe_failed`] or [`Breaker::probe_succeeded`].
    Probe,
    /// The server has been down since this moment, for longer than the outage budget: fail the tenant.
    /// `is_new` for the first tenant to find the budget spent (the caller reports the outage once).
    Expired { since: Instant, is_new: bool },
    /// The server refused this run's credentials or TLS: fail the tenant with this failure.
    Fatal(Failure),
}

/// An outage that ended, for the one line that reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutageReport {
    pub down: Duration,
    pub n_waited: usize,
}

/// The breaker of one server. See the module documentation for its states.
#[derive(Debug)]
pub(crate) struct Breaker {
    state: State,
    /// Tenants (by index) that waited during the current outage.
    waited: BTreeSet<usize>,
    /// When the last outage ended: failures of attempts that started before it belong to that outage.
    closed_at: Option<Instant>,
    /// When a probe last failed: an attempt cut after that moment was cut by a real outage.
    last_down: Option<Instant>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: State::Closed,
            waited: BTreeSet::new(),
            closed_at: None,
            last_down: None,
        }
    }
}

impl Breaker {
    /// An attempt that started at `started` lost the server at `now`. Returns true when this opened the
    /// breaker (the caller logs the outage once). A failure of an attempt that started before the last outage
    /// ended is that outage's leftover and opens nothing.
    pub fn on_outage(&mut self, started: Instant, now: Instant) -> bool {
        if !matches!(self.state, State::Closed) || self.closed_at.is_some_and(|closed| started < closed) {
            return false;
        }
        self.state = State::Open {
            since: now,
            probe_at: now,
            n_failed_probes: 0,
        };
        self.waited.clear();
        true
    }

    /// What tenant `index` does at `now`, with the server allowed to be down for `budget`.
    pub fn gate(&mut self, index: usize, now: Instant, budget: Duration) -> Gate {
        let since = match &self.state {
            State::Closed => return Gate::Go,
            State::Fatal(failure) => return Gate::Fatal(failure.clone()),
            State::Expired { since } => {
                return Gate::Expired {
                    since: *since,
                    is_new: false,
                }
            }
            State::Open { since, .. } | State::HalfOpen { since, .. } => *since,
        };
        self.waited.insert(index);
        let deadline = since + budget;
        if now >= deadline {
            self.state = State::Expired { since };
            self.last_down = Some(now);
            return Gate::Expired { since, is_new: true };
        }
        match self.state {
            State::Open {
                probe_at,
                n_failed_probes,
                ..
            } if now >= probe_at => {
                self.state = State::HalfOpen { since, n_failed_probes };
                Gate::Probe
            }
            State::Open { probe_at, .. } => Gate::Wait(probe_at.min(deadline)),
            _ => Gate::Wait((now + HALF_OPEN_POLL).min(deadline)),
        }
    }

    /// Failed probes in the current outage, for the caller's backoff before the next one.
    pub fn n_failed_probes(&self) -> u32 {
        match self.state {
            State::Open { n_failed_probes, .. } | State::HalfOpen { n_failed_probes, .. } => n_failed_probes,
            _ => 0,
        }
    }

    /// The probe found the server still down at `now`; the next one is due after `retry_in`.
    pub fn probe_failed(&mut self, now: Instant, retry_in: Duration) {
        self.last_down = Some(now);
        if let State::HalfOpen { since, n_failed_probes } = self.state {
            self.state = State::Open {
                since,
                probe_at: now + retry_in,
                n_failed_probes: n_failed_probes + 1,
            };
        }
    }

    /// The probe reached the server at `now`: the breaker closes. Returns the outage when one ended.
    pub fn probe_succeeded(&mut self, now: Instant) -> Option<OutageReport> {
        let since = match self.state {
            State::Open { since, .. } | State::HalfOpen { since, .. } => since,
            _ => return None,
        };
        self.state = State::Closed;
        self.closed_at = Some(now);
        Some(OutageReport {
            down: now.saturating_duration_since(since),
            n_waited: std::mem::take(&mut self.waited).len(),
        })
    }

    /// Whether the server was found down after `started` (a probe failed, or the outage budget ran out): an
    /// attempt started then and cut by the outage does not count as a retry. An attempt cut while the server
    /// answered every probe (one backend terminated) does.
    pub fn was_down_since(&self, started: Instant) -> bool {
        self.last_down.is_some_and(|down| down >= started)
    }

    /// A tenant's attempt was refused in a way that never heals (authentication, TLS). The first such failure
    /// becomes the server's: it is returned to this tenant and every later one.
    pub fn on_fatal(&mut self, failure: Failure) -> (Failure, bool) {
        if let State::Fatal(first) = &self.state {
            return (first.clone(), false);
        }
        self.state = State::Fatal(failure.clone());
        (failure, true)
    }

    /// Tenants that waited in the current outage.
    pub fn n_waited(&self) -> usize {
        self.waited.len()
    }
}

/// A duration as `mm:ss` (or `h:mm:ss`), as the outage line shows it.
pub(crate) fn clock_text(d: Duration) -> String {
    let s = d.as_secs();
    match s / 3600 {
        0 => format!("{:02}:{:02}", s / 60, s % 60),
        h => format!("{h}:{:02}:{:02}", (s / 60) % 60, s % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_secs(60);

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn failure(message: &str) -> Failure {
        Failure::permanent(message.to_string(), crate::executor::FailureKind::Connection)
    }

    /// The gate's answer, with instants as milliseconds after `t0`.
    fn check(b: &mut Breaker, t0: Instant, index: usize, now_ms: u64, expected: &str) {
        let got = match b.gate(index, at(t0, now_ms), BUDGET) {
            Gate::Go => "go".to_string(),
            Gate::Wait(until) => format!("wait {}", until.duration_since(t0).as_millis()),
            Gate::Probe => "probe".to_string(),
            Gate::Expired { since, is_new } => {
                format!(
                    "expired {}{}",
                    since.duration_since(t0).as_millis(),
                    if is_new { " new" } else { "" }
                )
            }
            Gate::Fatal(f) => format!("fatal {}", f.message),
        };
        assert_eq!(got, expected, "tenant {index} at {now_ms} ms");
    }

    #[test]
    fn closed_lets_tenants_go() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        check(&mut b, t0, 0, 0, "go");
        assert_eq!(b.probe_succeeded(t0), None);
    }

    #[test]
    fn outage_waits_for_a_probe_then_reports_once() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        assert!(b.on_outage(t0, at(t0, 1000)));
        assert!(!b.on_outage(t0, at(t0, 1001)), "a second failure joins the open outage");
        check(&mut b, t0, 0, 1000, "probe");
        // While tenant 0 probes, the others wait without probing.
        check(&mut b, t0, 1, 1010, "wait 1110");
        check(&mut b, t0, 2, 1020, "wait 1120");
        b.probe_failed(at(t0, 1050), Duration::from_millis(400));
        assert_eq!(b.n_failed_probes(), 1);
        check(&mut b, t0, 1, 1100, "wait 1450");
        check(&mut b, t0, 2, 1450, "probe");
        assert!(b.was_down_since(at(t0, 500)));
        let report = b.probe_succeeded(at(t0, 6000)).expect("an outage ended");
        assert_eq!(
            report,
            OutageReport {
                down: Duration::from_secs(5),
                n_waited: 3
            }
        );
        check(&mut b, t0, 0, 6001, "go");
        assert_eq!(b.probe_succeeded(at(t0, 6002)), None, "reported once");
    }

    #[test]
    fn leftovers_of_an_ended_outage_do_not_open_it_again() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.on_outage(t0, at(t0, 100));
        check(&mut b, t0, 0, 100, "probe");
        b.probe_failed(at(t0, 200), Duration::from_millis(100));
        check(&mut b, t0, 0, 300, "probe");
        b.probe_succeeded(at(t0, 3000));
        // An attempt started before the end of the outage reports its cut late.
        assert!(!b.on_outage(at(t0, 50), at(t0, 3100)));
        check(&mut b, t0, 1, 3100, "go");
        assert!(b.was_down_since(at(t0, 50)), "its cut does not count as a retry");
        // An attempt started after it: a new outage.
        assert!(b.on_outage(at(t0, 3200), at(t0, 3300)));
        check(&mut b, t0, 1, 3300, "probe");
    }

    #[test]
    fn a_cut_while_every_probe_answers_counts_as_a_retry() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        assert!(b.on_outage(at(t0, 10), at(t0, 20)));
        check(&mut b, t0, 0, 20, "probe");
        assert!(b.probe_succeeded(at(t0, 25)).is_some());
        assert!(!b.was_down_since(at(t0, 10)));
    }

    #[test]
    fn outage_longer_than_the_budget_fails_waiting_and_later_tenants() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.on_outage(t0, t0);
        check(&mut b, t0, 0, 0, "probe");
        b.probe_failed(at(t0, 10), Duration::from_secs(100));
        // The wait never passes the budget's end.
        check(&mut b, t0, 1, 20, "wait 60000");
        check(&mut b, t0, 1, 60_000, "expired 0 new");
        check(&mut b, t0, 2, 70_000, "expired 0");
        assert_eq!(b.n_waited(), 2);
        assert!(b.was_down_since(at(t0, 59_000)));
    }

    #[test]
    fn half_open_wait_never_passes_the_budget() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.on_outage(t0, t0);
        check(&mut b, t0, 0, 59_950, "probe");
        check(&mut b, t0, 1, 59_990, "wait 60000");
    }

    #[test]
    fn fatal_keeps_the_first_failure_for_every_tenant() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        let (f, is_first) = b.on_fatal(failure("password missing"));
        assert!(is_first);
        assert_eq!(f.message, "password missing");
        let (f, is_first) = b.on_fatal(failure("another wording"));
        assert!(!is_first);
        assert_eq!(f.message, "password missing");
        check(&mut b, t0, 3, 0, "fatal password missing");
        // Fatal outlasts outages: the server answers, it refuses.
        assert!(!b.on_outage(t0, t0));
        check(&mut b, t0, 4, 10, "fatal password missing");
    }

    #[test]
    fn clock_text_reads_minutes_and_seconds() {
        assert_eq!(clock_text(Duration::from_millis(5400)), "00:05");
        assert_eq!(clock_text(Duration::from_secs(75)), "01:15");
        assert_eq!(clock_text(Duration::from_secs(3725)), "1:02:05");
    }
}
