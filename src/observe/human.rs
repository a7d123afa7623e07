//! Numbers as people write them: durations (`350ms`, `2.0s`, `1m05s`, `2h03m`), clock times for progress
//! (`01:05`, `1:02:05`) and large counts with thousands separators (`1,234,567`).
//!
//! Every place that shows a duration or a large count to a person uses these, so no output prints a `Debug`
//! duration (`2.001934827s`). Machine output (JSON, NDJSON, metrics, the ledger) keeps plain numbers.

use std::time::Duration;

/// A duration as people write it: `350ms` under a second, `2.0s` (one decimal) under a minute, `1m05s` under
/// an hour, `2h03m` from an hour up. Rounded to the unit shown, never truncated to a smaller one: 59.96s is
/// `1m00s`, not `60.0s`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let tenths = (ms + 50) / 100;
    if tenths < 600 {
        return format!("{}.{}s", tenths / 10, tenths % 10);
    }
    let secs = (ms + 500) / 1000;
    if secs < 3600 {
        return format!("{}m{:02}s", secs / 60, secs % 60);
    }
    let mins = (secs + 30) / 60;
    format!("{}h{:02}m", mins / 60, mins % 60)
}

/// Elapsed time as a clock: `mm:ss` under an hour, `h:mm:ss` from an hour up (seconds truncated, as clocks
/// count).
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match s / 3600 {
        0 => format!("{:02}:{:02}", s / 60, s % 60),
        h => format!("{h}:{:02}:{:02}", (s / 60) % 60, s % 60),
    }
}

/// The clock shown while a time cannot be estimated yet.
pub const UNKNOWN_CLOCK: &str = "--:--";

/// An integer with `,` between groups of three digits from 10,000 up (`9999`, `12,345`, `1,234,567`): four
/// digits read fine without one and stay aligned with the small counts around them.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    if digits.len() <= 4 {
        return digits;
    }
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_duration(ms: u64, expected: &str) {
        assert_eq!(duration(Duration::from_millis(ms)), expected, "{ms}ms");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        check_duration(0, "0ms");
        check_duration(350, "350ms");
        check_duration(999, "999ms");
        check_duration(1000, "1.0s");
        check_duration(2_001, "2.0s");
        check_duration(12_340, "12.3s");
        check_duration(59_940, "59.9s");
        check_duration(59_960, "1m00s");
        check_duration(65_000, "1m05s");
        check_duration(3_599_400, "59m59s");
        check_duration(3_599_600, "1h00m");
        check_duration(3 * 3_600_000 + 62_000, "3h01m");
        check_duration(100 * 3_600_000, "100h00m");
        assert_eq!(duration(Duration::from_nanos(2_001_934_827)), "2.0s");
    }

    #[test]
    fn clocks() {
        assert_eq!(clock(Duration::ZERO), "00:00");
        assert_eq!(clock(Duration::from_millis(5_400)), "00:05");
        assert_eq!(clock(Duration::from_secs(75)), "01:15");
        assert_eq!(clock(Duration::from_secs(3725)), "1:02:05");
    }

    #[test]
    fn thousands_separators() {
        for (n, expected) in [
            (0, "0"),
            (999, "999"),
            (9_999, "9999"),
            (10_000, "10,000"),
            (123_456, "123,456"),
            (1_234_567, "1,234,567"),
            (u64::MAX, "18,446,744,073,709,551,615"),
        ] {
            assert_eq!(thousands(n), expected);
        }
    }
}
