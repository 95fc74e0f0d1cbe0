//! The drift windows: rows profiled, closed windows measured against the reference, re-arming.

use tributary_core::schema::triggers::PolicyDecl;

use super::features::Value;
use super::{Measure, Trigger};
use crate::drift;

impl Trigger {
    /// Adds a row's feature values to the current window.
    pub(super) fn profile(&mut self, features: &[(String, bool)], values: Vec<Value>) {
        for ((name, categorical), v) in features.iter().zip(values) {
            match (v, categorical) {
                (Value::Number(x), false) => self.state.current.add_number(name, x),
                (Value::Number(x), true) => self.state.current.add_category(name, &format!("{x}")),
                (Value::Text(s), true) => self.state.current.add_category(name, &s),
                (Value::Text(s), false) => {
                    if let Ok(x) = s.parse() {
                        self.state.current.add_number(name, x);
                    }
                }
                (Value::Null, _) => {}
            }
        }
    }

    /// Ends the current window: the first becomes the reference; later ones are measured.
    pub(super) fn close_window(&mut self) {
        let window = std::mem::take(&mut self.state.current);
        self.state.window_rows = 0;
        match &self.state.reference {
            None => {
                self.state.reference = Some(window.clone());
                self.state.measures.clear();
            }
            Some(reference) => {
                let mut measures = Vec::new();
                for f in &self.decl.features {
                    if reference.samples(&f.name) < self.decl.min_samples
                        || window.samples(&f.name) < self.decl.min_samples
                    {
                        continue;
                    }
                    if f.categorical {
                        if let (Some(r), Some(c)) = (
                            reference.categorical.get(&f.name),
                            window.categorical.get(&f.name),
                        ) {
                            measures.push(measure(&f.name, "js", drift::js(r, c)));
                        }
                    } else if let (Some(r), Some(c)) =
                        (reference.numeric.get(&f.name), window.numeric.get(&f.name))
                    {
                        measures.push(measure(&f.name, "psi", drift::psi(r, c)));
                        measures.push(measure(&f.name, "ks", drift::ks(r, c)));
                        measures.push(measure(&f.name, "wasserstein", drift::wasserstein(r, c)));
                    }
                }
                self.state.reported = measures.clone();
                self.state.measures = measures;
            }
        }
        self.state.last_window = Some(window);
        self.rearm();
    }

    /// Re-arms disarmed drift policies whose measures all fell below the hysteresis line.
    fn rearm(&mut self) {
        let measures = self.state.measures.clone();
        let decl = self.decl.clone();
        self.state.disarmed.retain(|name| {
            let Some(PolicyDecl::Drift {
                thresholds,
                rearm_below,
                ..
            }) = decl.policies.iter().find(|p| p.name() == name)
            else {
                return false;
            };
            let calm = measures.iter().all(|m| {
                thresholds
                    .get(&m.metric)
                    .is_none_or(|t| m.value < t * rearm_below)
            });
            !calm || measures.is_empty()
        });
    }
}

fn measure(feature: &str, metric: &str, value: f64) -> Measure {
    Measure {
        feature: feature.to_string(),
        metric: metric.to_string(),
        value,
    }
}
