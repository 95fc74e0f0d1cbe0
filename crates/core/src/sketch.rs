//! A mergeable quantile sketch with a relative-error guarantee (DDSketch), used by the feature
//! service for quantiles and by train-trigger for distribution profiles.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Relative accuracy of [`Sketch`]: a quantile it gives is within 1% of the true value.
pub const SKETCH_ALPHA: f64 = 0.01;

/// A DDSketch (Masson, Rim, Lee, VLDB 2019): values in logarithmic buckets, so any quantile is
/// returned within [`SKETCH_ALPHA`] relative error of the value of that rank, and two sketches
/// merge by adding bucket counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sketch {
    positive: BTreeMap<i32, u64>,
    negative: BTreeMap<i32, u64>,
    zeros: u64,
    count: u64,
}

fn gamma() -> f64 {
    (1.0 + SKETCH_ALPHA) / (1.0 - SKETCH_ALPHA)
}

impl Sketch {
    fn key(x: f64) -> i32 {
        // Bucket k holds (gamma^(k-1), gamma^k].
        (x.ln() / gamma().ln()).ceil() as i32
    }

    fn value(key: i32) -> f64 {
        2.0 * gamma().powi(key) / (gamma() + 1.0)
    }

    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.count += 1;
        if x > f64::MIN_POSITIVE {
            *self.positive.entry(Self::key(x)).or_default() += 1;
        } else if x < -f64::MIN_POSITIVE {
            *self.negative.entry(Self::key(-x)).or_default() += 1;
        } else {
            self.zeros += 1;
        }
    }

    pub fn merge(&mut self, other: &Self) {
        for (k, n) in &other.positive {
            *self.positive.entry(*k).or_default() += n;
        }
        for (k, n) in &other.negative {
            *self.negative.entry(*k).or_default() += n;
        }
        self.zeros += other.zeros;
        self.count += other.count;
    }

    /// Values added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The buckets in ascending order of value: (representative value, count). Every value
    /// added is within the relative accuracy of its bucket's representative.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let mut out = Vec::with_capacity(self.negative.len() + self.positive.len() + 1);
        out.extend(
            self.negative
                .iter()
                .rev()
                .map(|(k, n)| (-Self::value(*k), *n)),
        );
        if self.zeros > 0 {
            out.push((0.0, self.zeros));
        }
        out.extend(self.positive.iter().map(|(k, n)| (Self::value(*k), *n)));
        out
    }

    /// The value of rank `floor(q * (count - 1))` (0-based, ascending), within the accuracy.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q * (self.count - 1) as f64).floor() as u64;
        let mut seen = 0u64;
        for (k, n) in self.negative.iter().rev() {
            seen += n;
            if seen > rank {
                return Some(-Self::value(*k));
            }
        }
        seen += self.zeros;
        if seen > rank {
            return Some(0.0);
        }
        for (k, n) in &self.positive {
            seen += n;
            if seen > rank {
                return Some(Self::value(*k));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn the_sketch_is_within_its_relative_error_and_merges() {
        let values: Vec<f64> = (1..=10_000)
            .map(|i| ((i * 7919) % 10_007) as f64 * 0.37 - 500.0)
            .collect();
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let (mut a, mut b) = (Sketch::default(), Sketch::default());
        for (i, x) in values.iter().enumerate() {
            if i % 2 == 0 { a.add(*x) } else { b.add(*x) }
        }
        a.merge(&b);
        for q in [0.01, 0.1, 0.25, 0.5, 0.9, 0.99] {
            let (got, want) = (a.quantile(q).unwrap(), exact(&sorted, q));
            assert!(
                (got - want).abs() <= SKETCH_ALPHA * want.abs() + 1e-9,
                "q {q}: {got} vs {want}"
            );
        }
    }
}
