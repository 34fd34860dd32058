//! Percentiles and medians over exact samples.

/// The `q` quantile (0..=1) of sorted samples, nearest-rank: the smallest
/// sample with at least `q` of all samples at or below it.
pub fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p99 and p99.9 of sorted nanosecond samples, in nanoseconds.
pub fn percentiles(sorted: &[u64]) -> Option<[f64; 3]> {
    Some([
        quantile(sorted, 0.50)? as f64,
        quantile(sorted, 0.99)? as f64,
        quantile(sorted, 0.999)? as f64,
    ])
}

/// The median of some values (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The element-wise median of percentile triples (one per round).
pub fn median3(rounds: &[[f64; 3]]) -> Option<[f64; 3]> {
    let col = |i: usize| median(&rounds.iter().map(|r| r[i]).collect::<Vec<_>>());
    Some([col(0)?, col(1)?, col(2)?])
}

/// A CDF thinned to a few hundred points for plotting: `(quantile, ns)`,
/// spaced evenly both in the body (steps of 0.005) and on the tail's log
/// scale (`1 - q` from 1 down to 1e-4), so p99 and p99.9 are drawn as
/// finely as the median.
pub fn cdf_points(sorted: &[u64]) -> Vec<(f64, u64)> {
    if sorted.is_empty() {
        return Vec::new();
    }
    let body = (0..=200).map(|i| i as f64 / 200.0);
    let tail = (0..=400).map(|i| 1.0 - 10f64.powf(-4.0 * i as f64 / 400.0));
    let mut qs: Vec<f64> = body.chain(tail).filter(|q| *q > 0.0 && *q < 1.0).collect();
    qs.sort_by(f64::total_cmp);
    qs.dedup();
    qs.into_iter()
        .filter_map(|q| quantile(sorted, q).map(|v| (q, v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_medians() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(quantile(&v, 0.5), Some(500));
        assert_eq!(quantile(&v, 0.99), Some(990));
        assert_eq!(quantile(&v, 0.999), Some(999));
        assert_eq!(quantile(&v, 1.0), Some(1000));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
