//! Aggregation states: each can take a value, merge with another (session windows merge when a
//! record bridges them) and give its result. All are serialisable for the changelog.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tributary_core::schema::features::AggregateFn;

/// A value an aggregation takes or gives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Scalar {
    Null,
    Number(f64),
    Text(String),
}

/// The state of one aggregation in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum AggState {
    Count(u64),
    Sum(f64),
    Mean {
        sum: f64,
        n: u64,
    },
    Min(Option<f64>),
    Max(Option<f64>),
    /// Welford: count, mean, sum of squared differences from the mean.
    Stddev {
        n: u64,
        mean: f64,
        m2: f64,
    },
    /// 64-bit FNV-1a hashes of the values' text.
    Distinct(BTreeSet<u64>),
    /// The non-null value with the latest event time (ties: the later record).
    Last {
        time: i64,
        value: Scalar,
    },
    Quantile(Sketch),
}

impl AggState {
    pub(crate) fn new(function: AggregateFn) -> Self {
        match function {
            AggregateFn::Count => Self::Count(0),
            AggregateFn::Sum => Self::Sum(0.0),
            AggregateFn::Mean => Self::Mean { sum: 0.0, n: 0 },
            AggregateFn::Min => Self::Min(None),
            AggregateFn::Max => Self::Max(None),
            AggregateFn::Stddev => Self::Stddev {
                n: 0,
                mean: 0.0,
                m2: 0.0,
            },
            AggregateFn::DistinctCount => Self::Distinct(BTreeSet::new()),
            AggregateFn::Last => Self::Last {
                time: i64::MIN,
                value: Scalar::Null,
            },
            AggregateFn::Quantile => Self::Quantile(Sketch::default()),
        }
    }

    /// Takes one record's value (`Scalar::Null` when its expression was null; `count` without
    /// an expression is given `Number(1)`).
    pub(crate) fn add(&mut self, value: &Scalar, time: i64) {
        let number = match value {
            Scalar::Number(x) => Some(*x),
            _ => None,
        };
        match self {
            Self::Count(n) => {
                if *value != Scalar::Null {
                    *n += 1;
                }
            }
            Self::Sum(s) => *s += number.unwrap_or(0.0),
            Self::Mean { sum, n } => {
                if let Some(x) = number {
                    *sum += x;
                    *n += 1;
                }
            }
            Self::Min(m) => {
                if let Some(x) = number {
                    *m = Some(m.map_or(x, |m| m.min(x)));
                }
            }
            Self::Max(m) => {
                if let Some(x) = number {
                    *m = Some(m.map_or(x, |m| m.max(x)));
                }
            }
            Self::Stddev { n, mean, m2 } => {
                if let Some(x) = number {
                    *n += 1;
                    let delta = x - *mean;
                    *mean += delta / *n as f64;
                    *m2 += delta * (x - *mean);
                }
            }
            Self::Distinct(set) => match value {
                Scalar::Null => {}
                Scalar::Number(x) => {
                    set.insert(fnv1a(format!("{x}").as_bytes()));
                }
                Scalar::Text(s) => {
                    set.insert(fnv1a(s.as_bytes()));
                }
            },
            Self::Last { time: t, value: v } => {
                if *value != Scalar::Null && time >= *t {
                    *t = time;
                    *v = value.clone();
                }
            }
            Self::Quantile(sketch) => {
                if let Some(x) = number {
                    sketch.add(x);
                }
            }
        }
    }

    /// Folds `other` (the same function) into this state.
    pub(crate) fn merge(&mut self, other: &Self) {
        match (self, other) {
            (Self::Count(a), Self::Count(b)) => *a += b,
            (Self::Sum(a), Self::Sum(b)) => *a += b,
            (Self::Mean { sum, n }, Self::Mean { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            (Self::Min(a), Self::Min(b)) => {
                *a = match (*a, *b) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                }
            }
            (Self::Max(a), Self::Max(b)) => {
                *a = match (*a, *b) {
                    (Some(x), Some(y)) => Some(x.max(y)),
                    (x, y) => x.or(y),
                }
            }
            (
                Self::Stddev { n, mean, m2 },
                Self::Stddev {
                    n: nb,
                    mean: mb,
                    m2: m2b,
                },
            ) => {
                if *nb == 0 {
                    return;
                }
                let total = *n + nb;
                let delta = mb - *mean;
                *m2 += m2b + delta * delta * (*n as f64) * (*nb as f64) / total as f64;
                *mean += delta * (*nb as f64) / total as f64;
                *n = total;
            }
            (Self::Distinct(a), Self::Distinct(b)) => a.extend(b.iter().copied()),
            (
                Self::Last { time, value },
                Self::Last {
                    time: t2,
                    value: v2,
                },
            ) if *t2 != i64::MIN && *t2 >= *time => {
                *time = *t2;
                *value = v2.clone();
            }
            (Self::Quantile(a), Self::Quantile(b)) => a.merge(b),
            _ => {}
        }
    }

    /// The result; `q` for quantiles.
    pub(crate) fn result(&self, q: f64) -> Scalar {
        let number = |x: Option<f64>| x.map_or(Scalar::Null, Scalar::Number);
        match self {
            Self::Count(n) => Scalar::Number(*n as f64),
            Self::Sum(s) => Scalar::Number(*s),
            Self::Mean { sum, n } => number((*n > 0).then(|| sum / *n as f64)),
            Self::Min(m) | Self::Max(m) => number(*m),
            Self::Stddev { n, m2, .. } => number((*n > 1).then(|| (m2 / (*n - 1) as f64).sqrt())),
            Self::Distinct(set) => Scalar::Number(set.len() as f64),
            Self::Last { value, .. } => value.clone(),
            Self::Quantile(sketch) => number(sketch.quantile(q)),
        }
    }
}

/// 64-bit FNV-1a: a stable hash (the same after a restart, unlike std's).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Relative accuracy of [`Sketch`]: a quantile it gives is within 1% of the true value.
pub(crate) const SKETCH_ALPHA: f64 = 0.01;

/// A DDSketch (Masson, Rim, Lee, VLDB 2019): values in logarithmic buckets, so any quantile is
/// returned within [`SKETCH_ALPHA`] relative error of the value of that rank, and two sketches
/// merge by adding bucket counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Sketch {
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

    pub(crate) fn add(&mut self, x: f64) {
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

    pub(crate) fn merge(&mut self, other: &Self) {
        for (k, n) in &other.positive {
            *self.positive.entry(*k).or_default() += n;
        }
        for (k, n) in &other.negative {
            *self.negative.entry(*k).or_default() += n;
        }
        self.zeros += other.zeros;
        self.count += other.count;
    }

    /// The value of rank `floor(q * (count - 1))` (0-based, ascending), within the accuracy.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
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

    #[test]
    fn merged_states_equal_one_state_over_all_values() {
        let values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
        for f in [
            AggregateFn::Count,
            AggregateFn::Sum,
            AggregateFn::Mean,
            AggregateFn::Min,
            AggregateFn::Max,
            AggregateFn::Stddev,
            AggregateFn::DistinctCount,
        ] {
            let mut whole = AggState::new(f);
            let (mut left, mut right) = (AggState::new(f), AggState::new(f));
            for (i, x) in values.iter().enumerate() {
                whole.add(&Scalar::Number(*x), i as i64);
                if i < 3 {
                    left.add(&Scalar::Number(*x), i as i64)
                } else {
                    right.add(&Scalar::Number(*x), i as i64)
                }
            }
            left.merge(&right);
            match (whole.result(0.5), left.result(0.5)) {
                (Scalar::Number(a), Scalar::Number(b)) => {
                    assert!((a - b).abs() < 1e-9, "{f:?}: {a} vs {b}")
                }
                (a, b) => assert_eq!(a, b, "{f:?}"),
            }
        }
        let mut s = AggState::new(AggregateFn::Stddev);
        for x in values {
            s.add(&Scalar::Number(x), 0);
        }
        // statistics.stdev(values) in Python
        let Scalar::Number(sd) = s.result(0.0) else {
            panic!()
        };
        assert!((sd - 2.748_376_143_938_713).abs() < 1e-9, "{sd}");
    }
}
