//! The stack's processes: started in order (broker, registry, catalog, services, demo), then
//! stopped in the reverse order.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tributary_core::bus::KafkaConfig;
use tributary_core::config::Secret;
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::registry::RegistryConfig;

use super::plan::{Layout, Ports, Service};
use super::process::{self, Process, Spec, Stopped};
use super::watch::{banner, watch};
use super::{UpOptions, broker, demo, shop_db};
use crate::config::{CliConfig, TopicsConfig};

/// How long a service may take to stop after SIGTERM (it finishes its batch and commits).
const SERVICE_GRACE: Duration = Duration::from_secs(60);
/// How long the broker may take to stop.
const BROKER_GRACE: Duration = Duration::from_secs(20);

/// The running processes, stopped in order by [`Stack::stop`].
#[derive(Debug, Default)]
pub(super) struct Stack {
    pub(super) broker: Option<Process>,
    pub(super) registry: Option<Process>,
    /// The services after the registry, by name.
    pub(super) services: Vec<(Service, Process)>,
    pub(super) demo: Option<(CancellationToken, Vec<tokio::task::JoinHandle<()>>)>,
}

impl Stack {
    /// Stops the demo, the services (together), the registry, then the broker. Returns whether
    /// each exited cleanly.
    pub(super) async fn stop(&mut self) -> bool {
        if let Some((stop, tasks)) = self.demo.take() {
            stop.cancel();
            for task in tasks {
                let _ = task.await;
            }
        }
        let mut clean = true;
        let mut report = |name: &str, stopped: Stopped| {
            let ok = stopped == Stopped::Clean;
            clean &= ok;
            let how = match stopped {
                Stopped::Clean => "stopped".to_string(),
                Stopped::Failed(status) => format!("stopped with {status}"),
                Stopped::Killed => "killed (did not stop in time)".to_string(),
                Stopped::Exited(status) => format!("had exited with {status}"),
            };
            if ok {
                info!(process = name, "{how}");
            } else {
                warn!(process = name, "{how}");
            }
            println!("  {name:<14} {how}");
        };
        if !self.services.is_empty() || self.registry.is_some() || self.broker.is_some() {
            println!("stopping: services first, the registry, then the broker");
        }
        let stopping = self
            .services
            .iter_mut()
            .map(|(_, p)| async move { (p.name.clone(), p.stop(SERVICE_GRACE).await) });
        for (name, stopped) in futures::future::join_all(stopping).await {
            report(&name, stopped);
        }
        self.services.clear();
        for (process, grace) in [
            (self.registry.take(), SERVICE_GRACE),
            (self.broker.take(), BROKER_GRACE),
        ] {
            if let Some(mut p) = process {
                let stopped = p.stop(grace).await;
                report(&p.name, stopped);
            }
        }
        clean
    }
}

/// What the stack is started from: what [`super::run`] prepared.
pub(super) struct StackInputs<'a> {
    pub(super) options: &'a UpOptions,
    pub(super) catalog: &'a Catalog,
    pub(super) layout: &'a Layout,
    pub(super) ports: &'a Ports,
    pub(super) broker_program: &'a Path,
    pub(super) binaries: &'a Path,
    pub(super) api_key: &'a str,
    pub(super) registry_admin: &'a str,
    pub(super) shop_db: Option<&'a shop_db::ShopDb>,
}

impl StackInputs<'_> {
    /// Starts `service` with its configuration file, its log, and the environment its catalog
    /// sources name.
    fn spawn(&self, service: Service) -> Result<Process> {
        let mut env = Vec::new();
        if service == Service::Ingest {
            // The catalog's file source URL names ${TRIBUTARY_LANDING}.
            env.push(("TRIBUTARY_LANDING", self.layout.landing().into_os_string()));
            // The catalog's shop_db source names ${SHOP_DB_NAME} and ${SHOP_DB_SLOT}.
            for (var, value) in self.shop_db.map(shop_db::ShopDb::env).unwrap_or_default() {
                env.push((var, value.into()));
            }
        }
        let logs = self.layout.logs();
        Process::spawn(Spec {
            name: service.name(),
            program: &self.binaries.join(service.binary()),
            args: vec![
                self.layout
                    .config()
                    .join(format!("{}.toml", service.name()))
                    .into_os_string(),
            ],
            cwd: Some(&self.layout.data),
            env,
            log: logs.join(format!("{}.log", service.name())),
            sigterm_exit_is_clean: false,
        })
    }

    /// The CLI's own configuration for the stack: its broker and registry, as admin.
    pub(super) fn cli_config(&self) -> CliConfig {
        CliConfig {
            kafka: KafkaConfig::new(self.ports.bootstrap()),
            registry: RegistryConfig::new(self.ports.registry_url())
                .with_basic_auth("admin", Secret::new(self.registry_admin)),
            topics: TopicsConfig { dlq_partitions: 1 },
            lake: None,
        }
    }
}

/// Starts everything, shows the figures until `shutdown`; `Ok(true)` when a process exited
/// on its own meanwhile.
pub(super) async fn run_stack(
    stack: &mut Stack,
    inputs: &StackInputs<'_>,
    shutdown: &CancellationToken,
) -> Result<bool> {
    let started = Instant::now();
    if !start_stack(stack, inputs, shutdown).await? {
        return Ok(false);
    }
    let counts = Arc::new(demo::DemoCounts::default());
    if inputs.options.demo {
        stack.demo = Some(start_demo(inputs, &counts)?);
    }
    let banner = banner(
        inputs.options.broker,
        inputs.layout,
        inputs.ports,
        inputs.options.demo.then_some(inputs.shop_db),
        started.elapsed(),
    );
    for line in &banner {
        println!("{line}");
    }
    watch(stack, inputs, &counts, started, shutdown).await
}

/// Starts the broker, the registry, applies the catalog, then starts the services and waits
/// until those that listen do; `Ok(false)` when `shutdown` came first.
async fn start_stack(
    stack: &mut Stack,
    inputs: &StackInputs<'_>,
    shutdown: &CancellationToken,
) -> Result<bool> {
    let (layout, ports) = (inputs.layout, inputs.ports);
    let logs = layout.logs();
    println!(
        "tributary up: data in {}, logs in {}",
        layout.data.display(),
        logs.display()
    );
    println!(
        "starting the broker ({}, {})",
        inputs.options.broker.label(),
        inputs.broker_program.display()
    );
    stack.broker = Some(
        broker::start(
            inputs.options.broker,
            inputs.broker_program,
            layout,
            ports,
            logs.join("broker.log"),
        )
        .await?,
    );
    if shutdown.is_cancelled() {
        return Ok(false);
    }
    println!("starting the registry");
    let registry = stack.registry.insert(inputs.spawn(Service::Registry)?);
    process::wait_for_port(registry, ports.registry, Duration::from_secs(120)).await?;

    println!("applying the catalog's topics and schemas");
    let apply_log = logs.join("apply.log");
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&apply_log)
        .with_context(|| format!("open {}", apply_log.display()))?;
    let mut progress = out.try_clone()?;
    crate::apply::run(
        inputs.catalog,
        &inputs.cli_config(),
        false,
        &mut out,
        &mut progress,
    )
    .await
    .with_context(|| format!("apply the catalog (see {})", apply_log.display()))?;

    for service in Service::ALL.into_iter().filter(|s| *s != Service::Registry) {
        if shutdown.is_cancelled() {
            return Ok(false);
        }
        println!("starting {}", service.name());
        stack.services.push((service, inputs.spawn(service)?));
    }
    for (service, process) in &mut stack.services {
        if let Some(port) = ports.listen(*service) {
            process::wait_for_port(process, port, Duration::from_secs(120)).await?;
        }
    }
    Ok(true)
}

/// Starts the demo's traffic: events over HTTP, files in the landing folder and, when the
/// demo has its database, the shop's writes.
fn start_demo(
    inputs: &StackInputs<'_>,
    counts: &Arc<demo::DemoCounts>,
) -> Result<(CancellationToken, Vec<tokio::task::JoinHandle<()>>)> {
    let stop = CancellationToken::new();
    let layout = inputs.layout;
    let mut tasks = demo::start(
        demo::Target {
            ingest_url: inputs.ports.ingest_url(),
            api_key: inputs.api_key.to_string(),
            products: layout.products(),
            incoming: layout.incoming(),
            marker: layout.demo_marker(),
        },
        counts.clone(),
        stop.clone(),
    )?;
    if let Some(db) = inputs.shop_db {
        tasks.push(tokio::spawn(shop_db::run(
            db.clone(),
            counts.clone(),
            stop.clone(),
        )));
    }
    Ok((stop, tasks))
}
