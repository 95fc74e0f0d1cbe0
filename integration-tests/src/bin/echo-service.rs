//! A minimal consume -> produce service over the shared loop, run as a child process by the
//! SIGTERM test: it forwards every record to an output topic with its source position in headers.
//! Settings come from the environment: BOOTSTRAP, INPUT, OUTPUT, GROUP, PAUSE_MS.

use anyhow::{Context, Result};
use tributary_core::bus::{
    BatchHandler, BusMetrics, ConsumerLoopConfig, HandlerError, InboundRecord, KafkaConfig,
    OutboundRecord, Output, Producer, run_consumer,
};

struct Forward {
    output: String,
    /// Pause after each batch, so that a test can stop the service mid-stream.
    pause: std::time::Duration,
}

impl BatchHandler for Forward {
    async fn handle(
        &mut self,
        batch: &[InboundRecord],
        out: &mut Output<'_>,
    ) -> Result<(), HandlerError> {
        for r in batch {
            let mut record = OutboundRecord::new(
                &self.output,
                r.key.clone(),
                r.payload.clone().unwrap_or_default(),
            );
            record.headers = vec![
                ("src.partition".into(), r.partition.to_string().into_bytes()),
                ("src.offset".into(), r.offset.to_string().into_bytes()),
            ];
            out.send(record).await?;
        }
        tokio::time::sleep(self.pause).await;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tributary_integration_tests::init_logs();
    let env = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let kafka = KafkaConfig::new(env("BOOTSTRAP")?);
    let mut config = ConsumerLoopConfig::new(env("GROUP")?, vec![env("INPUT")?], "echo");
    config.max_batch_records = 200;
    let pause_ms: u64 = std::env::var("PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let metrics = BusMetrics::default();
    let producer = Producer::new(&kafka, metrics.clone())?;
    let shutdown = tributary_core::shutdown::on_signals()?;
    let mut handler = Forward {
        output: env("OUTPUT")?,
        pause: std::time::Duration::from_millis(pause_ms),
    };
    let stats = run_consumer(&kafka, &config, &producer, &metrics, &mut handler, shutdown).await?;
    println!("stopped after {} records", stats.records);
    Ok(())
}
