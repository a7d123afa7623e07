//! The options that shape a fleet run, resolved once (flags over the tenants file's `[defaults]` over
//! flotilla.toml), stored with the run in the ledger, and read back whole by `fleet retry`, so a retry is the same
//! run again: the same selection, canary, thresholds, pace, timeouts and backfill limits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The version of [`RunOptions`] this code writes. Version 1 was an untyped map with a subset of these keys;
/// its runs still read back (missing keys take their defaults).
pub const RUN_OPTIONS_VERSION: u32 = 2;

/// Every option of a fleet run that a retry must repeat. Durations are milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunOptions {
    pub v: u32,
    pub tenants_file: Option<String>,
    /// `--tenant`, `--tag`, `--exclude` as given.
    pub tenant: Vec<String>,
    pub tags: Vec<String>,
    pub exclude: Vec<String>,
    pub concurrency: Option<usize>,
    pub rate: Option<f64>,
    pub retries: Option<u32>,
    pub canary: Option<usize>,
    pub canary_tag: Option<String>,
    pub max_failures: Option<usize>,
    pub max_failure_rate: Option<String>,
    pub tenant_timeout_ms: Option<u64>,
    pub lock_timeout_ms: Option<u64>,
    pub statement_timeout_ms: Option<u64>,
    pub backfill_rate: Option<f64>,
    pub backfill_fleet_rate: Option<f64>,
    pub force: bool,
    pub stamp_revisions: Option<Vec<String>>,
    /// `--waves`, `--waves-by`, `--wave-pause`, `--wave-gate` as given.
    pub waves: Option<String>,
    pub waves_by: Option<String>,
    pub wave_pause_ms: Option<u64>,
    pub wave_gate: Option<String>,
    /// The waves the run was planned into (for `fleet status` and a retry that continues them).
    pub wave_plan: Option<crate::fleet::waves::Waves>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            // A stored map without `v` is version 1.
            v: 1,
            tenants_file: None,
            tenant: Vec::new(),
            tags: Vec::new(),
            exclude: Vec::new(),
            concurrency: None,
            rate: None,
            retries: None,
            canary: None,
            canary_tag: None,
            max_failures: None,
            max_failure_rate: None,
            tenant_timeout_ms: None,
            lock_timeout_ms: None,
            statement_timeout_ms: None,
            backfill_rate: None,
            backfill_fleet_rate: None,
            force: false,
            stamp_revisions: None,
            waves: None,
            waves_by: None,
            wave_pause_ms: None,
            wave_gate: None,
            wave_plan: None,
        }
    }
}

pub fn millis(d: Option<Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub fn duration(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

impl RunOptions {
    /// Read a stored run's options; `None` when they are not an object of this shape at all.
    pub fn from_stored(value: &serde_json::Value) -> Option<RunOptions> {
        serde_json::from_value(value.clone()).ok()
    }

    pub fn to_value(&self) -> serde_json::Value {
        // Plain numbers, strings and lists cannot fail to serialise.
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The safety and pace options as `--flag value` words, for saying what a retry inherited.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut push = |flag: &str, value: Option<String>| {
            if let Some(value) = value {
                out.push(format!("{flag} {value}"));
            }
        };
        push("--canary", self.canary.map(|n| n.to_string()));
        push("--canary-tag", self.canary_tag.clone());
        push("--max-failures", self.max_failures.map(|n| n.to_string()));
        push("--max-failure-rate", self.max_failure_rate.clone());
        push("--waves", self.waves.clone());
        push("--waves-by", self.waves_by.clone());
        push("--wave-pause", self.wave_pause_ms.map(|ms| format!("{ms}ms")));
        push("--wave-gate", self.wave_gate.clone());
        push("--concurrency", self.concurrency.map(|n| n.to_string()));
        push("--rate", self.rate.map(|n| n.to_string()));
        push("--retries", self.retries.map(|n| n.to_string()));
        push("--tenant-timeout", self.tenant_timeout_ms.map(|ms| format!("{ms}ms")));
        push("--lock-timeout", self.lock_timeout_ms.map(|ms| format!("{ms}ms")));
        push(
            "--statement-timeout",
            self.statement_timeout_ms.map(|ms| format!("{ms}ms")),
        );
        push("--backfill-rate", self.backfill_rate.map(|n| n.to_string()));
        push("--backfill-fleet-rate", self.backfill_fleet_rate.map(|n| n.to_string()));
        if self.force {
            out.push("--force".into());
        }
        for t in &self.tags {
            out.push(format!("--tag {t}"));
        }
        for t in &self.exclude {
            out.push(format!("--exclude {t}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_whole() {
        let options = RunOptions {
            v: RUN_OPTIONS_VERSION,
            tenants_file: Some("tenants.toml".into()),
            canary: Some(2),
            canary_tag: Some("ring=0".into()),
            max_failure_rate: Some("5%".into()),
            statement_timeout_ms: Some(30_000),
            force: true,
            tags: vec!["tier=gold".into()],
            ..RunOptions::default()
        };
        assert_eq!(RunOptions::from_stored(&options.to_value()), Some(options));
    }

    #[test]
    fn version_1_maps_still_read() {
        let stored = serde_json::json!({
            "tenants_file": "t.toml", "concurrency": 4, "rate": 0.0, "retries": 3, "canary": null,
            "canary_tag": null, "max_failures": null, "max_failure_rate": null, "tags": [], "stamp_revisions": null,
        });
        let options = RunOptions::from_stored(&stored).expect("a version 1 map");
        assert_eq!(options.v, 1);
        assert_eq!(options.concurrency, Some(4));
        assert_eq!(options.tenants_file.as_deref(), Some("t.toml"));
    }

    #[test]
    fn describe_names_safety_options() {
        let options = RunOptions {
            canary: Some(3),
            max_failures: Some(1),
            tags: vec!["tier=gold".into()],
            ..RunOptions::default()
        };
        assert_eq!(
            options.describe(),
            ["--canary 3", "--max-failures 1", "--tag tier=gold"]
        );
    }
}
