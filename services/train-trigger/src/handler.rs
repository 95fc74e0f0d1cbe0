//! The train-trigger's batch handler over the consumer loop.

use std::collections::HashMap;

use tokio_util::sync::CancellationToken;
use tracing::error;
use tributary_core::bus::{BatchHandler, HandlerError, InboundRecord, OutboundRecord, Output};
use tributary_core::schema::registry::{RegistryClient, learn_writer_schemas};

use crate::config::Settings;
use crate::metrics::{DriftLabel, Metrics, PolicyLabel, TriggerLabel};
use crate::trigger::{Events, Trigger};
use crate::{actions, template};

/// The batch handler: hands each trigger its input records and ticks, produces the training
/// requests, runs their actions, and saves each trigger's state.
pub(crate) struct Triggers {
    pub(crate) triggers: Vec<Trigger>,
    /// The parsed Job template of each trigger with a `kubernetes_job`, by trigger name.
    pub(crate) templates: HashMap<String, template::JobTemplate>,
    pub(crate) registry: RegistryClient,
    pub(crate) settings: Settings,
    pub(crate) metrics: Metrics,
    pub(crate) http: reqwest::Client,
    pub(crate) kubernetes: reqwest::Client,
    pub(crate) shutdown: CancellationToken,
}

impl std::fmt::Debug for Triggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Triggers")
            .field("triggers", &self.triggers.len())
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Triggers {
    /// Runs the actions of requests produced by earlier (settled) batches; an action that
    /// fails every attempt is dropped with an error logged and counted.
    async fn run_actions(&mut self) {
        for t in &mut self.triggers {
            if t.state.pending.is_empty() {
                continue;
            }
            let label = TriggerLabel {
                trigger: t.decl.name.clone(),
            };
            for action in std::mem::take(&mut t.state.pending) {
                let result = match action.kind {
                    actions::ActionKind::Webhook => match &t.decl.webhook {
                        Some(w) => {
                            actions::webhook(
                                &self.http,
                                w,
                                &self.settings.webhook_env,
                                &action,
                                &self.shutdown,
                            )
                            .await
                        }
                        None => Ok(()),
                    },
                    actions::ActionKind::KubernetesJob => {
                        match (&t.decl.kubernetes_job, self.templates.get(&t.decl.name)) {
                            (Some(j), Some(template)) => {
                                actions::kubernetes_job(
                                    &self.kubernetes,
                                    &self.settings.kubernetes,
                                    j,
                                    template,
                                    &action,
                                )
                                .await
                            }
                            (Some(_), None) => Err(anyhow::anyhow!("no job template was loaded")),
                            (None, _) => Ok(()),
                        }
                    }
                };
                if let Err(e) = result {
                    if self.shutdown.is_cancelled() {
                        // Kept for the next start.
                        t.state.pending.push(action);
                        continue;
                    }
                    error!(trigger = %t.decl.name, request_id = %action.request_id, error = %format!("{e:#}"), "action failed");
                    self.metrics.action_failures.get_or_create(&label).inc();
                }
            }
            t.dirty = true;
        }
    }

    fn record_events(&self, t: &Trigger, events: &Events) {
        let label = TriggerLabel {
            trigger: t.decl.name.clone(),
        };
        for policy in &events.fired {
            self.metrics
                .fired
                .get_or_create(&PolicyLabel {
                    trigger: t.decl.name.clone(),
                    policy: policy.clone(),
                })
                .inc();
        }
        self.metrics
            .suppressed
            .get_or_create(&label)
            .inc_by(events.suppressed);
        self.metrics
            .windows
            .get_or_create(&label)
            .inc_by(events.windows);
        for m in &t.state.reported {
            self.metrics
                .drift
                .get_or_create(&DriftLabel {
                    trigger: t.decl.name.clone(),
                    feature: m.feature.clone(),
                    metric: m.metric.clone(),
                })
                .set(m.value);
        }
    }

    async fn save(&mut self, out: &mut Output<'_>) -> Result<(), HandlerError> {
        for t in &mut self.triggers {
            if t.dirty {
                let payload = serde_json::to_vec(&t.state).map_err(HandlerError::fatal)?;
                out.send(OutboundRecord::new(
                    self.settings.state_topic.clone(),
                    Some(t.decl.name.clone().into_bytes()),
                    payload,
                ))
                .await?;
                t.dirty = false;
            }
        }
        Ok(())
    }
}

impl BatchHandler for Triggers {
    async fn handle(
        &mut self,
        batch: &[InboundRecord],
        out: &mut Output<'_>,
    ) -> Result<(), HandlerError> {
        self.run_actions().await;
        let now = now_ms();
        for i in 0..self.triggers.len() {
            let inputs = self.triggers[i].decl.inputs.clone();
            let mut events = Events::default();
            for topic in &inputs {
                let records: Vec<&InboundRecord> =
                    batch.iter().filter(|r| &r.topic == topic).collect();
                if records.is_empty() {
                    continue;
                }
                let t = &mut self.triggers[i];
                if let Some(decoder) = t.decoder(topic) {
                    let payloads: Vec<&[u8]> = records
                        .iter()
                        .filter_map(|r| r.payload.as_deref())
                        .collect();
                    learn_writer_schemas(&self.registry, decoder, &payloads, &self.shutdown)
                        .await?;
                }
                let requests = t
                    .process(topic, &records, now, &mut events)
                    .await
                    .map_err(|e| HandlerError::fatal(format!("trigger {}: {e:#}", t.decl.name)))?;
                self.metrics
                    .records_in
                    .get_or_create(&TriggerLabel {
                        trigger: t.decl.name.clone(),
                    })
                    .inc_by(records.len() as u64);
                for request in requests {
                    out.send(request).await?;
                }
                for (index, message) in std::mem::take(&mut events.rejected) {
                    if let Some(r) = records.get(index) {
                        out.dead_letter(
                            r,
                            "decode",
                            &format!("trigger {}: {message}", t.decl.name),
                        )
                        .await?;
                    }
                }
            }
            self.record_events(&self.triggers[i], &events);
        }
        self.save(out).await
    }

    async fn tick(&mut self, out: &mut Output<'_>) -> Result<(), HandlerError> {
        self.run_actions().await;
        let now = now_ms();
        for i in 0..self.triggers.len() {
            let mut events = Events::default();
            let t = &mut self.triggers[i];
            if let Some(request) = t
                .check(now, &mut events)
                .map_err(|e| HandlerError::fatal(format!("trigger {}: {e:#}", t.decl.name)))?
            {
                out.send(request).await?;
            }
            self.record_events(&self.triggers[i], &events);
        }
        self.save(out).await
    }

    async fn finish(&mut self, out: &mut Output<'_>) -> Result<(), HandlerError> {
        self.save(out).await
    }
}
