//! Distribution profiles and drift metrics. Numeric features are profiled by a DDSketch
//! (bounded memory, mergeable, 1% relative accuracy), categorical ones by counts per category
//! (at most [`MAX_CATEGORIES`], the rest counted as one "other" category).
//!
//! - PSI: ten bins cut at the reference's deciles; `sum (c - r) ln(c / r)` over the bins'
//!   proportions, each floored at 1e-4.
//! - KS: the largest distance between the two empirical CDFs.
//! - Wasserstein-1: the area between the two CDFs, in the feature's unit.
//! - JS: the Jensen-Shannon distance (square root of the divergence, base 2: between 0 and 1)
//!   of the categories' proportions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tributary_core::sketch::Sketch;

/// Categories kept per feature; further ones are counted together.
pub(crate) const MAX_CATEGORIES: usize = 1_000;
const OTHER: &str = "\u{0}other";
const PSI_FLOOR: f64 = 1e-4;

/// The values of every feature over some rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Profile {
    pub(crate) numeric: BTreeMap<String, Sketch>,
    pub(crate) categorical: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Profile {
    pub(crate) fn add_number(&mut self, feature: &str, x: f64) {
        self.numeric.entry(feature.to_string()).or_default().add(x);
    }

    pub(crate) fn add_category(&mut self, feature: &str, value: &str) {
        let counts = self.categorical.entry(feature.to_string()).or_default();
        if counts.len() >= MAX_CATEGORIES && !counts.contains_key(value) {
            *counts.entry(OTHER.to_string()).or_default() += 1;
        } else {
            *counts.entry(value.to_string()).or_default() += 1;
        }
    }

    /// Values of a feature.
    pub(crate) fn samples(&self, feature: &str) -> u64 {
        self.numeric
            .get(feature)
            .map(Sketch::count)
            .or_else(|| self.categorical.get(feature).map(|c| c.values().sum()))
            .unwrap_or(0)
    }
}

/// The two CDFs evaluated over the union of both sketches' buckets, in ascending value order:
/// (value, reference CDF, current CDF).
fn cdfs(reference: &Sketch, current: &Sketch) -> Vec<(f64, f64, f64)> {
    let (nr, nc) = (reference.count() as f64, current.count() as f64);
    let mut points: Vec<(f64, u64, u64)> = reference
        .buckets()
        .into_iter()
        .map(|(v, n)| (v, n, 0))
        .chain(current.buckets().into_iter().map(|(v, n)| (v, 0, n)))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut fr, mut fc) = (0u64, 0u64);
    let mut out: Vec<(f64, f64, f64)> = Vec::with_capacity(points.len());
    for (v, r, c) in points {
        fr += r;
        fc += c;
        match out.last_mut() {
            Some(last) if last.0 == v => {
                last.1 = fr as f64 / nr;
                last.2 = fc as f64 / nc;
            }
            _ => out.push((v, fr as f64 / nr, fc as f64 / nc)),
        }
    }
    out
}

/// Kolmogorov-Smirnov statistic.
pub(crate) fn ks(reference: &Sketch, current: &Sketch) -> f64 {
    cdfs(reference, current)
        .iter()
        .map(|(_, r, c)| (r - c).abs())
        .fold(0.0, f64::max)
}

/// Wasserstein-1 distance.
pub(crate) fn wasserstein(reference: &Sketch, current: &Sketch) -> f64 {
    let points = cdfs(reference, current);
    points
        .windows(2)
        .map(|w| (w[0].1 - w[0].2).abs() * (w[1].0 - w[0].0))
        .sum()
}

/// Population Stability Index over the reference's deciles.
pub(crate) fn psi(reference: &Sketch, current: &Sketch) -> f64 {
    let mut edges: Vec<f64> = (1..10)
        .filter_map(|i| reference.quantile(f64::from(i) / 10.0))
        .collect();
    edges.dedup();
    let proportions = |s: &Sketch| -> Vec<f64> {
        let mut bins = vec![0u64; edges.len() + 1];
        for (v, n) in s.buckets() {
            // The number of edges strictly below the value.
            let bin = edges.partition_point(|e| *e < v);
            bins[bin] += n;
        }
        let total = s.count().max(1) as f64;
        bins.iter()
            .map(|n| (*n as f64 / total).max(PSI_FLOOR))
            .collect()
    };
    let (r, c) = (proportions(reference), proportions(current));
    r.iter().zip(&c).map(|(r, c)| (c - r) * (c / r).ln()).sum()
}

/// Jensen-Shannon distance, base 2.
pub(crate) fn js(reference: &BTreeMap<String, u64>, current: &BTreeMap<String, u64>) -> f64 {
    let (nr, nc) = (
        reference.values().sum::<u64>().max(1) as f64,
        current.values().sum::<u64>().max(1) as f64,
    );
    let mut divergence = 0.0;
    let keys: std::collections::BTreeSet<&String> =
        reference.keys().chain(current.keys()).collect();
    for k in keys {
        let p = reference.get(k).copied().unwrap_or(0) as f64 / nr;
        let q = current.get(k).copied().unwrap_or(0) as f64 / nc;
        let m = (p + q) / 2.0;
        if p > 0.0 {
            divergence += 0.5 * p * (p / m).log2();
        }
        if q > 0.0 {
            divergence += 0.5 * q * (q / m).log2();
        }
    }
    divergence.max(0.0).sqrt()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn sketch(values: impl Iterator<Item = f64>) -> Sketch {
        let mut s = Sketch::default();
        values.for_each(|v| s.add(v));
        s
    }

    #[test]
    fn identical_distributions_do_not_drift() {
        let a = sketch((0..10_000).map(|i| f64::from(i % 997)));
        assert!(ks(&a, &a) < 1e-12);
        assert!(wasserstein(&a, &a) < 1e-12);
        assert!(psi(&a, &a).abs() < 1e-12);
        let c = BTreeMap::from([("a".to_string(), 3), ("b".to_string(), 1)]);
        assert!(js(&c, &c) < 1e-12);
    }

    #[test]
    fn a_shift_is_measured_in_the_feature_unit() {
        // Uniform on [100, 200) against uniform on [110, 210): KS 0.1, Wasserstein 10.
        let a = sketch((0..10_000).map(|i| 100.0 + f64::from(i) / 100.0));
        let b = sketch((0..10_000).map(|i| 110.0 + f64::from(i) / 100.0));
        assert!((ks(&a, &b) - 0.1).abs() < 0.02, "{}", ks(&a, &b));
        assert!(
            (wasserstein(&a, &b) - 10.0).abs() < 0.3,
            "{}",
            wasserstein(&a, &b)
        );
        assert!(psi(&a, &b) > 0.05);
    }

    #[test]
    fn jensen_shannon_matches_the_definition() {
        // scipy.spatial.distance.jensenshannon([0.5, 0.5, 0], [0, 0.5, 0.5], base=2) = 0.7071...
        let p = BTreeMap::from([("a".to_string(), 1), ("b".to_string(), 1)]);
        let q = BTreeMap::from([("b".to_string(), 1), ("c".to_string(), 1)]);
        assert!((js(&p, &q) - 0.5f64.sqrt()).abs() < 1e-12, "{}", js(&p, &q));
    }
}
