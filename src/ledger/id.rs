//! Run ids: the UTC start time plus a random suffix, so they sort by start time and stay unique.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A run's id, such as `20261127T235212Z-3fa1`: the UTC start second, then four random hex digits.
///
/// Ids sort by start second. Two runs started in the same second compare by suffix, so the ledger orders runs
/// by insertion rather than by id (see [`crate::ledger::RunSelector::Latest`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub String);

impl RunId {
    /// A fresh id for a run started at `at`.
    pub fn generate(at: DateTime<Utc>) -> RunId {
        let suffix: u16 = rand::random();
        RunId(format!("{}-{suffix:04x}", at.format("%Y%m%dT%H%M%SZ")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn id_is_utc_second_and_hex_suffix() {
        let at = Utc.with_ymd_and_hms(2026, 11, 27, 23, 52, 12).unwrap();
        let id = RunId::generate(at);
        let (time, suffix) = id.as_str().split_once('-').unwrap();
        assert_eq!(time, "20261127T235212Z");
        assert_eq!(suffix.len(), 4);
        assert!(suffix.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn ids_sort_by_start_time() {
        let early = RunId::generate(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap());
        let late = RunId::generate(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 6).unwrap());
        assert!(early < late);
    }
}
