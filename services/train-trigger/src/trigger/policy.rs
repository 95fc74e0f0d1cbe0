//! Which policies' conditions hold now, per kind: volume, schedule, drift.

use std::collections::BTreeMap;

use tributary_core::schema::triggers::{Combine, PolicyDecl};

use super::{Measure, Trigger};

/// A policy whose condition holds: its name, why, and its drift measures with thresholds.
pub(super) type Firing = (String, String, Vec<(Measure, f64)>);

impl Trigger {
    pub(super) fn volume_crossed(&self) -> bool {
        self.decl.policies.iter().any(|p| matches!(p, PolicyDecl::Volume { rows, .. } if self.state.rows_since_trigger == *rows))
    }

    /// Which policies' conditions hold now, and why.
    pub(super) fn firing(&self, now_ms: i64) -> Vec<Firing> {
        let mut out = Vec::new();
        for p in &self.decl.policies {
            let firing = match p {
                PolicyDecl::Volume { name, rows } => self.volume(name, *rows),
                PolicyDecl::Schedule { name, cron } => self.schedule(name, cron, now_ms),
                PolicyDecl::Drift {
                    name,
                    thresholds,
                    combine,
                    ..
                } => self.drift(name, thresholds, combine),
            };
            out.extend(firing);
        }
        out
    }

    /// At least `rows` new rows since the last request.
    fn volume(&self, name: &str, rows: u64) -> Option<Firing> {
        (self.state.rows_since_trigger >= rows).then(|| {
            (
                name.to_string(),
                format!(
                    "{} new rows since the last request (at least {rows})",
                    self.state.rows_since_trigger
                ),
                Vec::new(),
            )
        })
    }

    /// The schedule came due since the last request or the last check, whichever is later.
    fn schedule(&self, name: &str, cron: &str, now_ms: i64) -> Option<Firing> {
        let since = self
            .state
            .last_trigger_ms
            .max(self.state.schedule_checked_ms)
            .unwrap_or(now_ms);
        self.crons
            .iter()
            .any(|(n, c)| n == name && c.fired_between(since, now_ms))
            .then(|| {
                (
                    name.to_string(),
                    format!("schedule {cron:?} came due"),
                    Vec::new(),
                )
            })
    }

    /// The last window's measures over their thresholds (any or all of them), unless the policy
    /// is disarmed.
    fn drift(
        &self,
        name: &str,
        thresholds: &BTreeMap<String, f64>,
        combine: &Combine,
    ) -> Option<Firing> {
        if self.state.disarmed.iter().any(|d| d == name) {
            return None;
        }
        let checked: Vec<(Measure, f64)> = self
            .state
            .measures
            .iter()
            .filter_map(|m| thresholds.get(&m.metric).map(|t| (m.clone(), *t)))
            .collect();
        let over: Vec<&(Measure, f64)> = checked.iter().filter(|(m, t)| m.value > *t).collect();
        let fires = match combine {
            Combine::Any => !over.is_empty(),
            Combine::All => !checked.is_empty() && over.len() == checked.len(),
        };
        if !fires {
            return None;
        }
        let reason = over
            .iter()
            .map(|(m, t)| format!("{} {} {:.4} > {t}", m.feature, m.metric, m.value))
            .collect::<Vec<_>>()
            .join(", ");
        Some((name.to_string(), format!("drift: {reason}"), checked))
    }
}
