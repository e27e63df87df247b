//! Medians, paired ratios, percentiles and the distribution-free
//! confidence interval of a median.

use std::time::Duration;

/// The `fraction` quantile of `values` (sorted in place).
pub fn percentile(values: &mut [Duration], fraction: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    values[((values.len() - 1) as f64 * fraction).round() as usize]
}

/// Each run's time in `a` divided by the same run's time in `b`.
pub fn paired_ratios(a: &[Duration], b: &[Duration]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
        .collect()
}

pub fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

pub fn median_rate(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// A distribution-free confidence interval (at least 95%, or the whole range
/// when there are too few values) for the median of `sorted`: the k-th
/// smallest and k-th largest values, with k the largest for which
/// P(Binomial(n, 1/2) < k) ≤ 2.5%.
pub fn median_interval(sorted: &[f64]) -> (f64, f64) {
    let n = sorted.len();
    let mut below = 0.0; // P(X < k), X ~ Binomial(n, 1/2)
    let mut k = 0;
    for candidate in 0..n / 2 {
        // P(X = candidate) = C(n, candidate) / 2^n
        let probability = (0..candidate).fold(1.0, |p, i| p * (n - i) as f64 / (i + 1) as f64)
            / 2f64.powi(n as i32);
        if below + probability > 0.025 {
            break;
        }
        below += probability;
        k = candidate + 1;
    }
    let k = k.max(1);
    (sorted[k - 1], sorted[n - k])
}
