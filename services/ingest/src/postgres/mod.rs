//! PostgreSQL sources (`[[source]] type = "postgres"`): tables of a database into topics, as
//! records in Debezium's envelope (`id`, `before`, `after`, `op`, `source`, `ts_ms`).
//!
//! Two modes share this module's pieces (connection, the table's columns, the Avro schema
//! derived from them, the record built from a row's text values, progress records):
//! [`cdc`] reads the write-ahead log through a logical replication slot (pgoutput), [`poll`]
//! queries on an incrementing and/or timestamp column.
//!
//! Every value is read in its text form (pgoutput sends text; queries select `column::text`),
//! with the session's `TimeZone = UTC` and `DateStyle = ISO`, and converted by [`types`].

mod cdc;
mod db;
pub(crate) mod pgoutput;
mod poll;
mod progress;
mod schema;
mod table;
mod types;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::error;
use tributary_core::bus::{KafkaConfig, OutboundRecord, Producer};
use tributary_core::schema::catalog::Topic;
use tributary_core::schema::registry::RegistryClient;
use tributary_core::schema::sources::{PostgresDecl, PostgresMode};

/// What a PostgreSQL source needs from the service.
pub(crate) struct SourceContext {
    pub decl: PostgresDecl,
    /// The catalog's topics, by name.
    pub topics: BTreeMap<String, Topic>,
    pub registry: RegistryClient,
    pub kafka: KafkaConfig,
    pub producer: Producer,
    /// Compacted topic holding snapshot and polling progress (key `postgres/<source>/<table>`).
    pub progress_topic: String,
    pub metrics: crate::metrics::IngestMetrics,
}

impl SourceContext {
    /// Sends records (each marked whether it is a dead letter) of tables, waits for the broker's
    /// acknowledgement and counts them.
    async fn deliver(&self, records: Vec<(String, OutboundRecord, bool)>) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let (labels, out): (Vec<(String, bool)>, Vec<OutboundRecord>) = records
            .into_iter()
            .map(|(table, record, ok)| ((table, ok), record))
            .unzip();
        self.producer
            .send_all(&out)
            .await
            .with_context(|| format!("source {}: produce", self.decl.name))?;
        for (table, ok) in &labels {
            let label = crate::metrics::SourceTableLabel {
                source: self.decl.name.clone(),
                table: table.clone(),
            };
            let family = if *ok {
                &self.metrics.source_records
            } else {
                &self.metrics.source_dead_letters
            };
            family.get_or_create(&label).inc();
        }
        Ok(())
    }
}

/// Runs a source until `shutdown`; a failure is logged and retried after a pause (the source
/// resumes from its acknowledged position), so a database restart does not stop ingest.
pub(crate) async fn run(ctx: SourceContext, shutdown: CancellationToken) {
    let ctx = Arc::new(ctx);
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        let result = match ctx.decl.mode {
            PostgresMode::Cdc => cdc::run(&ctx, &shutdown).await,
            PostgresMode::Poll => poll::run(&ctx, &shutdown).await,
        };
        match result {
            Ok(()) => return,
            Err(e) => {
                error!(source = %ctx.decl.name, error = format!("{e:#}"), retry_in_s = pause.as_secs(), "postgresql source failed");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(std::time::Duration::from_secs(30));
    }
}
