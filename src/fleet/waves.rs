//! Waves: a run's tenants in cumulative stages (`--waves 1,5%,25%,100%`, or `--waves-by tag=ring`), each
//! started only when the one before it finished under the failure-rate gate. This file parses the flags and
//! orders the selected tenants into waves; the coordinator holds the gate (`coordinator/state.rs`).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::tenant::Tenant;

/// What `--waves` or `--waves-by` asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum WaveSpec {
    /// Cumulative sizes, in order: a count of tenants or a percentage of the selected tenants.
    Sizes(Vec<WaveSize>),
    /// One wave per value of a tag, in the given order, or in natural order of the values (numbers by value).
    ByTag { key: String, order: Option<Vec<String>> },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaveSize {
    Count(usize),
    Percent(f64),
}

/// The waves of a run: wave `k` (0-based) is the tenants at indices `ends[k-1]..ends[k]` of the run's ordered
/// tenant list; `names` says what each wave is (`1`, `5%`, `ring=canary`). A run shows wave `k` as `numbers[k]`
/// of `of`: `k + 1` of `ends.len()` for a new run, the first run's numbers for a retry ([`resume`]). Stored with
/// the run (its options), so `fleet status` and `fleet retry` know each tenant's wave from its position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waves {
    pub ends: Vec<usize>,
    pub names: Vec<String>,
    pub numbers: Vec<usize>,
    pub of: usize,
}

impl Waves {
    /// Waves numbered `1..=ends.len()`.
    pub fn new(ends: Vec<usize>, names: Vec<String>) -> Waves {
        let numbers = (1..=ends.len()).collect();
        let of = ends.len();
        Waves {
            ends,
            names,
            numbers,
            of,
        }
    }

    /// The number wave `wave` (0-based) is shown as (1-based).
    pub fn number(&self, wave: usize) -> usize {
        self.numbers.get(wave).copied().unwrap_or(wave + 1)
    }

    /// The wave number (1-based, as shown) of the tenant at `position` of the run's order.
    pub fn number_at(&self, position: usize) -> usize {
        self.number(self.wave_of(position).min(self.len().saturating_sub(1)))
    }

    /// The wave tenant `index` belongs to.
    pub fn wave_of(&self, index: usize) -> usize {
        self.ends.partition_point(|end| *end <= index)
    }

    /// How many tenants wave `wave` has.
    pub fn size(&self, wave: usize) -> usize {
        let start = if wave == 0 { 0 } else { self.ends[wave - 1] };
        self.ends[wave] - start
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// Parse `--waves` (`1,5%,25%,100%`).
pub fn parse_sizes(text: &str) -> Result<WaveSpec, String> {
    let mut sizes = Vec::new();
    let mut last_count = 0;
    let mut last_percent = 0.0;
    for part in text.split(',').map(str::trim) {
        let size = match part.strip_suffix('%') {
            Some(number) => match number.trim().parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => {
                    if p < last_percent {
                        return Err(format!("`{part}` after {last_percent}%: waves are cumulative"));
                    }
                    last_percent = p;
                    WaveSize::Percent(p)
                }
                _ => return Err(format!("`{part}`: a percentage is above 0% and at most 100%")),
            },
            None => match part.parse::<usize>() {
                Ok(n) if n > 0 => {
                    if n < last_count {
                        return Err(format!("`{part}` after {last_count}: waves are cumulative"));
                    }
                    last_count = n;
                    WaveSize::Count(n)
                }
                _ => {
                    return Err(format!(
                        "`{part}`: expected a count of tenants (such as 10) or a percentage (such as 5%)"
                    ))
                }
            },
        };
        sizes.push(size);
    }
    Ok(WaveSpec::Sizes(sizes))
}

/// Parse `--waves-by` (`tag=ring`, `ring`, or `ring:canary,early,main` for an explicit order).
pub fn parse_by(text: &str) -> Result<WaveSpec, String> {
    let text = text.trim();
    let text = text.strip_prefix("tag=").unwrap_or(text);
    let (key, order) = match text.split_once(':') {
        Some((key, values)) => {
            let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
            if values.iter().any(String::is_empty) {
                return Err(format!("`{text}`: an empty tag value in the order"));
            }
            (key.trim(), Some(values))
        }
        None => (text, None),
    };
    if key.is_empty() || key.contains('=') {
        return Err(format!(
            "`{text}`: expected tag=KEY, KEY, or KEY:VALUE,VALUE,... (the tag whose values are the waves)"
        ));
    }
    Ok(WaveSpec::ByTag {
        key: key.to_string(),
        order,
    })
}

/// Order `tenants` into waves (a stable reorder: within a wave, the selection's order) and say where each ends.
/// Sizes that resolve to no new tenant are dropped; a last wave takes the tenants the sizes leave (a spec
/// that stops short of 100%); with `ByTag`, tenants without the tag (or with a value the order does not name)
/// form a last wave.
pub fn plan(spec: &WaveSpec, tenants: &mut [Tenant]) -> Waves {
    let n = tenants.len();
    let mut ends = Vec::new();
    let mut names = Vec::new();
    match spec {
        WaveSpec::Sizes(sizes) => {
            for size in sizes {
                let (end, name) = match *size {
                    WaveSize::Count(c) => (c.min(n), c.to_string()),
                    WaveSize::Percent(p) => (((p / 100.0) * n as f64).ceil() as usize, format!("{p}%")),
                };
                let end = end.min(n);
                if end > ends.last().copied().unwrap_or(0) {
                    ends.push(end);
                    names.push(name);
                }
            }
            if ends.last().copied().unwrap_or(0) < n {
                ends.push(n);
                names.push("rest".to_string());
            }
        }
        WaveSpec::ByTag { key, order } => {
            let mut values: Vec<String> = match order {
                Some(order) => order.clone(),
                None => {
                    let mut values: Vec<String> = tenants.iter().filter_map(|t| t.tags.get(key).cloned()).collect();
                    values.sort_by(|a, b| natural(a, b));
                    values.dedup();
                    values
                }
            };
            let rank = |t: &Tenant| {
                t.tags
                    .get(key)
                    .and_then(|v| values.iter().position(|w| w == v))
                    .unwrap_or(values.len())
            };
            tenants.sort_by_key(rank);
            let mut counts = vec![0usize; values.len() + 1];
            for t in tenants.iter() {
                counts[rank(t)] += 1;
            }
            values.push(String::new());
            let mut end = 0;
            for (value, count) in values.iter().zip(counts) {
                if count == 0 {
                    continue;
                }
                end += count;
                ends.push(end);
                names.push(if value.is_empty() {
                    format!("{key} not set")
                } else {
                    format!("{key}={value}")
                });
            }
        }
    }
    Waves::new(ends, names)
}

/// The waves a retry of a run in `original` waves runs in, so it continues at the wave where the run stopped:
/// `stage` (0-based, the last wave any of the run's tenants started in). The retried `tenants` are reordered
/// (stably) by the wave `wave_of` says they had; those of waves up to `stage` (the stopped wave's rest and the
/// failures earlier waves tolerated) go first, together, as wave `stage`; later waves keep their number and
/// name. A tenant `wave_of` knows nothing of joins the last wave.
pub fn resume(
    original: &Waves,
    stage: usize,
    wave_of: impl Fn(&Tenant) -> Option<usize>,
    tenants: &mut [Tenant],
) -> Waves {
    let last = original.len().saturating_sub(1);
    let rank = |t: &Tenant| wave_of(t).unwrap_or(last).min(last).max(stage);
    tenants.sort_by_key(rank);
    let mut waves = Waves {
        ends: Vec::new(),
        names: Vec::new(),
        numbers: Vec::new(),
        of: original.of,
    };
    let mut end = 0;
    for wave in stage..original.len() {
        let count = tenants.iter().filter(|t| rank(t) == wave).count();
        if count == 0 {
            continue;
        }
        end += count;
        waves.ends.push(end);
        waves.names.push(original.names[wave].clone());
        waves.numbers.push(original.number(wave));
    }
    waves
}

/// Numbers by value, then everything else as text.
fn natural(a: &str, b: &str) -> Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::fleet::tenant::Place;

    fn tenants(tags: &[Option<&str>]) -> Vec<Tenant> {
        tags.iter()
            .enumerate()
            .map(|(i, ring)| Tenant {
                id: format!("t{i}"),
                server: 0,
                place: Place::Schema(format!("t{i}")),
                tags: Arc::new(
                    ring.map(|r| BTreeMap::from([("ring".to_string(), r.to_string())]))
                        .unwrap_or_default(),
                ),
            })
            .collect()
    }

    fn ids(tenants: &[Tenant]) -> Vec<&str> {
        tenants.iter().map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn sizes_are_cumulative_counts_and_percentages() {
        let spec = parse_sizes("1, 5%,25%,100%").unwrap();
        let mut list = tenants(&[None; 40]);
        let waves = plan(&spec, &mut list);
        assert_eq!(waves.ends, [1, 2, 10, 40]);
        assert_eq!(waves.names, ["1", "5%", "25%", "100%"]);
        assert_eq!(
            (waves.wave_of(0), waves.wave_of(1), waves.wave_of(2), waves.wave_of(39)),
            (0, 1, 2, 3)
        );
        assert_eq!(waves.size(2), 8);
    }

    #[test]
    fn sizes_that_add_nothing_are_dropped_and_a_short_spec_gets_a_last_wave() {
        let mut list = tenants(&[None; 10]);
        let waves = plan(&parse_sizes("1,5%,50%").unwrap(), &mut list);
        assert_eq!(waves.ends, [1, 5, 10]);
        assert_eq!(waves.names, ["1", "50%", "rest"]);
    }

    #[test]
    fn bad_sizes_are_refused_with_the_part() {
        for (text, part) in [
            ("0", "`0`"),
            ("5,x", "`x`"),
            ("10,5", "`5` after 10"),
            ("150%", "`150%`"),
            ("5%,1%", "`1%` after 5%"),
        ] {
            let err = parse_sizes(text).unwrap_err();
            assert!(err.contains(part), "{text}: {err}");
        }
    }

    #[test]
    fn tag_waves_follow_natural_or_given_order_and_untagged_tenants_go_last() {
        let rings = [Some("10"), Some("2"), None, Some("2"), Some("canary")];
        let mut list = tenants(&rings);
        let waves = plan(&parse_by("tag=ring").unwrap(), &mut list);
        assert_eq!(ids(&list), ["t1", "t3", "t0", "t4", "t2"]);
        assert_eq!(waves.ends, [2, 3, 4, 5]);
        assert_eq!(waves.names, ["ring=2", "ring=10", "ring=canary", "ring not set"]);

        let mut list = tenants(&rings);
        let waves = plan(&parse_by("ring:canary,2").unwrap(), &mut list);
        assert_eq!(ids(&list), ["t4", "t1", "t3", "t0", "t2"]);
        assert_eq!(waves.names, ["ring=canary", "ring=2", "ring not set"]);
        assert_eq!(waves.ends, [1, 3, 5]);
    }

    #[test]
    fn a_retry_continues_at_the_stopped_wave_with_earlier_failures_in_it() {
        // 10 tenants in waves 1 | 2,3 | 4..6 | 7..10; the run stopped in the third wave (0-based 2).
        let original = Waves::new(
            vec![1, 3, 6, 10],
            vec!["1".into(), "30%".into(), "60%".into(), "rest".into()],
        );
        let wave_at = |id: &str| {
            let position: usize = id[1..].parse().unwrap();
            Some(original.wave_of(position))
        };
        // Retried: t2 (a failure wave 2 tolerated), t4 and t5 (wave 3's failures), t6, t9 (never started).
        let mut list = tenants(&[None; 10]);
        list.retain(|t| ["t9", "t2", "t6", "t4", "t5"].contains(&t.id.as_str()));
        let waves = resume(&original, 2, |t| wave_at(&t.id), &mut list);
        assert_eq!(ids(&list), ["t2", "t4", "t5", "t6", "t9"]);
        assert_eq!(waves.ends, [3, 5]);
        assert_eq!(waves.names, ["60%", "rest"]);
        assert_eq!((waves.number(0), waves.number(1), waves.of), (3, 4, 4));
        assert_eq!((waves.number_at(0), waves.number_at(4)), (3, 4));

        // A retry of that retry, stopped in its first wave, numbers its waves the same way.
        let order: Vec<String> = ids(&list).iter().map(|id| id.to_string()).collect();
        let position = |t: &Tenant| order.iter().position(|id| *id == t.id);
        let again = resume(&waves, 0, |t| position(t).map(|p| waves.wave_of(p)), &mut list);
        assert_eq!(
            (again.ends.clone(), again.numbers.clone(), again.of),
            (vec![3, 5], vec![3, 4], 4)
        );
    }

    #[test]
    fn bad_tag_specs_are_refused() {
        assert!(parse_by("tag=").is_err());
        assert!(parse_by("a=b=c").is_err());
        assert!(parse_by("ring:a,,b").is_err());
    }
}
