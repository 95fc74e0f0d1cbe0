//! Aggregation states: each can take a value, merge with another (session windows merge when a
//! record bridges them) and give its result. All are serialisable for the changelog.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tributary_core::schema::features::AggregateFn;
use tributary_core::sketch::Sketch;

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

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
