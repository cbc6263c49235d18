//! Latency summaries for `faasfuse run --repeat`.

use serde::Serialize;

/// Percentiles of a set of durations, in nanoseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub mean_ns: u64,
}

/// Nearest-rank percentile of sorted samples.
fn rank(sorted: &[u64], p: f64) -> u64 {
    let n = sorted.len();
    let idx = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[idx.clamp(1, n) - 1]
}

impl Percentiles {
    pub fn of(samples: &[u64]) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_unstable();
        let sum: u128 = s.iter().map(|&x| x as u128).sum();
        Some(Percentiles {
            count: s.len(),
            p50_ns: rank(&s, 50.0),
            p90_ns: rank(&s, 90.0),
            p99_ns: rank(&s, 99.0),
            min_ns: s[0],
            max_ns: s[s.len() - 1],
            mean_ns: (sum / s.len() as u128) as u64,
        })
    }
}

/// Human form of a duration in nanoseconds: `850 ns`, `39.2 µs`, `1.09 ms`.
pub fn human(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns} ns"),
        10_000..=9_999_999 => format!("{:.1} µs", ns as f64 / 1e3),
        _ => format!("{:.2} ms", ns as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        let p = Percentiles::of(&v).unwrap();
        assert_eq!((p.p50_ns, p.p90_ns, p.p99_ns), (50, 90, 99));
        assert_eq!((p.min_ns, p.max_ns, p.mean_ns), (1, 100, 50));
        assert_eq!(Percentiles::of(&[7]).unwrap().p99_ns, 7);
        assert!(Percentiles::of(&[]).is_none());
        assert_eq!(human(850), "850 ns");
        assert_eq!(human(39_200), "39.2 µs");
    }
}
