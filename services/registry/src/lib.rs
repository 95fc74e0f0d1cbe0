//! The schema registry service: the Confluent Schema Registry REST API over a compacted Kafka
//! topic, so replicas are stateless and share one log.
//!
//! Any Confluent client (serializers, Kafka Connect converters, `kcat -r`) can use it; Tributary's
//! services can equally use Confluent Schema Registry, Karapace, Apicurio or Redpanda by URL.

mod access;
mod api;
pub mod config;
mod error;
mod state;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::info;
use tributary_core::runtime::Runtime;

pub use access::{Anonymous, Role, User};
pub use config::Config;

/// A started registry: its address and the task serving it.
#[derive(Debug)]
pub struct Running {
    /// Address of the REST API.
    pub addr: SocketAddr,
    /// Address of the admin server.
    pub admin_addr: Option<SocketAddr>,
    /// Completes when the service stopped.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts the registry: loads the schemas topic, then serves until `shutdown`.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let access = access::Access::new(
        config.schema_registry.users.clone(),
        config.schema_registry.anonymous,
    )?;
    // The runtime first: the follower of the schemas topic is one of its tasks.
    let mut runtime = Runtime::builder("registry", &config.telemetry, shutdown)
        .with_kafka(&config.kafka)?
        .start()
        .await?;
    let store = store::Store::open(
        &config.kafka,
        &config.schema_registry.topic,
        config.schema_registry.default_compatibility,
        &mut runtime,
    )
    .await
    .with_context(|| {
        format!(
            "open the schemas topic {} at {}",
            config.schema_registry.topic, config.kafka.bootstrap_servers
        )
    })?;
    let listener = tokio::net::TcpListener::bind(config.schema_registry.listen)
        .await
        .with_context(|| format!("bind the api to {}", config.schema_registry.listen))?;
    let addr = listener.local_addr()?;
    let admin_addr = runtime.admin_addr();
    info!(%addr, topic = %config.schema_registry.topic, "registry serving");
    let app = api::router(store).layer(axum::middleware::from_fn_with_state(
        Arc::new(access),
        access::check,
    ));
    let task = tokio::spawn(async move {
        runtime
            .run_http("api", listener, app)
            .await
            .map_err(anyhow::Error::from)
    });
    Ok(Running {
        addr,
        admin_addr,
        task,
    })
}

/// Runs the registry until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown)
        .await?
        .task
        .await
        .context("registry task")?
}
