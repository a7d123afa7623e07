//! Duration values in configuration files: `"500ms"`, `"5s"`, `"10min"`, `"2h"`, `"1h30m"`, and bare integers.
//!
//! A bare integer (a TOML integer, or a string of digits) means seconds.

use std::time::Duration;

/// Why a duration string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("negative durations are not allowed")]
    Negative,
    #[error("expected a number at `{rest}`")]
    ExpectedNumber { rest: String },
    #[error("unknown unit `{unit}` (use ms, s, m or min, h, d)")]
    UnknownUnit { unit: String },
    #[error("missing unit after `{number}` (use ms, s, m or min, h, d)")]
    MissingUnit { number: u64 },
    #[error("too large")]
    Overflow,
}

/// Parses a duration: one or more `<integer><unit>` parts (units `ms`, `s`, `m`/`min`, `h`, `d`, optionally
/// separated by spaces), or a bare integer meaning seconds.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| DurationError::Overflow);
    }
    let mut total_ms: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let n_digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if n_digits == 0 {
            return Err(DurationError::ExpectedNumber { rest: rest.to_string() });
        }
        let number: u64 = rest[..n_digits].parse().map_err(|_| DurationError::Overflow)?;
        rest = rest[n_digits..].trim_start();
        let n_unit = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..n_unit];
        rest = rest[n_unit..].trim_start();
        let ms_per_unit: u64 = match unit {
            "" => return Err(DurationError::MissingUnit { number }),
            "ms" => 1,
            "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(DurationError::UnknownUnit { unit: unit.to_string() }),
        };
        let part = number.checked_mul(ms_per_unit).ok_or(DurationError::Overflow)?;
        total_ms = total_ms.checked_add(part).ok_or(DurationError::Overflow)?;
    }
    Ok(Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<u64, DurationError>) {
        let got = parse_duration(input).map(|d| d.as_millis() as u64);
        assert_eq!(got, expected, "input: {input:?}");
    }

    #[test]
    fn parses() {
        check("500ms", Ok(500));
        check("5s", Ok(5_000));
        check("10min", Ok(600_000));
        check("10m", Ok(600_000));
        check("2h", Ok(7_200_000));
        check("1h30m", Ok(5_400_000));
        check("1h 30min 5s", Ok(5_405_000));
        check("1d", Ok(86_400_000));
        check("30", Ok(30_000));
        check("0", Ok(0));
        check(" 5s ", Ok(5_000));
        check("5 s", Ok(5_000));
    }

    #[test]
    fn rejects() {
        check("", Err(DurationError::Empty));
        check("-5s", Err(DurationError::Negative));
        check("5", Ok(5_000));
        check("5x", Err(DurationError::UnknownUnit { unit: "x".into() }));
        check("5", Ok(5_000));
        check("1.5s", Err(DurationError::MissingUnit { number: 1 }));
        check("s", Err(DurationError::ExpectedNumber { rest: "s".into() }));
        check("99999999999999999999s", Err(DurationError::Overflow));
        check("999999999999999h", Err(DurationError::Overflow));
    }
}
