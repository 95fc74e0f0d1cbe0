//! `tributary up`: the whole pipeline on one machine, no Docker. The broker (Tansu with SQLite
//! storage by default, or Apache Kafka with `--broker kafka`; its data in the data folder), the
//! registry and the five services run as child processes of this command, each with a
//! configuration file written for it and its own log; topics and schemas come from the catalog
//! as `tributary topics apply` makes them; the lake and the file sources' landing folder are
//! folders of the data folder. Ctrl-C stops the services first, the registry next and the
//! broker last; a later run on the same folder continues from there.

mod broker;
mod demo;
mod plan;
mod process;
mod shop;
mod shop_db;
pub(crate) mod watchdog;

pub(crate) use broker::BrokerKind;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tributary_core::bus::KafkaConfig;
use tributary_core::config::Secret;
use tributary_core::lake::LakeConfig;
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::registry::RegistryConfig;

use crate::config::{CliConfig, TopicsConfig};
use crate::display::{Extra, Screen};
use crate::figures::Probe;
use crate::usage;
use plan::{Layout, Ports, Service};
pub(crate) use plan::{STACK_FILE, file_url};
use process::{Process, Spec, Stopped};

/// How long a service may take to stop after SIGTERM (it finishes its batch and commits).
const SERVICE_GRACE: Duration = Duration::from_secs(60);
/// How long the broker may take to stop.
const BROKER_GRACE: Duration = Duration::from_secs(20);

/// Options of `tributary up`.
#[derive(Debug)]
pub(crate) struct UpOptions {
    /// The data folder.
    pub(crate) data: PathBuf,
    /// Which broker to run.
    pub(crate) broker: BrokerKind,
    /// The broker's program (Tansu's binary, Kafka's launcher), when given.
    pub(crate) broker_bin: Option<PathBuf>,
    /// Whether to run the demo traffic.
    pub(crate) demo: bool,
    /// Use free ports instead of the defaults.
    pub(crate) free_ports: bool,
    /// The catalog folder.
    pub(crate) schemas: PathBuf,
}

/// Runs the stack until `shutdown`; `Ok(true)` when everything stopped cleanly.
pub(crate) async fn run(
    options: UpOptions,
    catalog: &Catalog,
    shutdown: CancellationToken,
) -> Result<bool> {
    let layout = Layout::create(&options.data)?;
    init_logs(&layout)?;
    let _lock = PidFile::take(&layout.pid_file())?;
    let broker_program = broker::find(options.broker, options.broker_bin.as_deref())?;
    broker::claim(&layout, options.broker)?;
    let binaries = service_binaries()?;
    let schemas = options
        .schemas
        .canonicalize()
        .with_context(|| format!("resolve {}", options.schemas.display()))?;
    let api_key = secret_file(&layout.api_key(), "dev")?;
    let registry_admin = secret_file(&layout.registry_admin_password(), "admin")?;
    secret_file(&layout.registry_services_password(), "services")?;
    let ports = Ports::pick(options.free_ports, options.broker == BrokerKind::Kafka)?;
    let mut sources = plan::local_sources(catalog);
    let shop_db = if options.demo {
        match shop_db::prepare(catalog, &layout.demo_database()).await? {
            shop_db::Prepared::Ready(db) => {
                sources.push(db.source.clone());
                Some(*db)
            }
            shop_db::Prepared::Off(reason) => {
                println!("demo: no shop database: {reason}");
                info!(reason, "demo: no shop database");
                None
            }
        }
    } else {
        None
    };
    for service in Service::ALL {
        let file = layout.config().join(format!("{}.toml", service.name()));
        std::fs::write(
            &file,
            plan::service_config(service, &layout, &ports, &schemas, &sources)?,
        )
        .with_context(|| format!("write {}", file.display()))?;
    }
    std::fs::write(layout.stack_file(), plan::stack_file(&layout, &ports)?)
        .with_context(|| format!("write {}", layout.stack_file().display()))?;

    let mut stack = Stack::default();
    let inputs = StackInputs {
        options: &options,
        catalog,
        layout: &layout,
        ports: &ports,
        broker_program: &broker_program,
        binaries: &binaries,
        api_key: &api_key,
        registry_admin: &registry_admin,
        shop_db: shop_db.as_ref(),
    };
    let result = run_stack(&mut stack, &inputs, &shutdown).await;
    let clean = stack.stop().await;
    // The stack file describes a running stack.
    let _ = std::fs::remove_file(layout.stack_file());
    match result {
        Ok(crashed) => {
            println!(
                "{}",
                if clean && !crashed {
                    "stopped cleanly; run `tributary up` again on the same folder to continue"
                } else {
                    "stopped, not cleanly: see the logs"
                }
            );
            Ok(clean && !crashed)
        }
        Err(e) => Err(e),
    }
}

/// The running processes, stopped in order by [`Stack::stop`].
#[derive(Debug, Default)]
struct Stack {
    broker: Option<Process>,
    registry: Option<Process>,
    /// The services after the registry, by name.
    services: Vec<(Service, Process)>,
    demo: Option<(CancellationToken, Vec<tokio::task::JoinHandle<()>>)>,
}

impl Stack {
    /// Stops the demo, the services (together), the registry, then the broker. Returns whether
    /// each exited cleanly.
    async fn stop(&mut self) -> bool {
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

/// What the stack is started from: what [`run`] prepared.
struct StackInputs<'a> {
    options: &'a UpOptions,
    catalog: &'a Catalog,
    layout: &'a Layout,
    ports: &'a Ports,
    broker_program: &'a Path,
    binaries: &'a Path,
    api_key: &'a str,
    registry_admin: &'a str,
    shop_db: Option<&'a shop_db::ShopDb>,
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
    fn cli_config(&self) -> CliConfig {
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
async fn run_stack(
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

/// Shows the figures every second (redrawn on a terminal, a line every few seconds otherwise)
/// and who went down, until `shutdown`; then the summary. `Ok(true)` when a process exited on
/// its own meanwhile.
async fn watch(
    stack: &mut Stack,
    inputs: &StackInputs<'_>,
    counts: &demo::DemoCounts,
    started: Instant,
    shutdown: &CancellationToken,
) -> Result<bool> {
    let (options, layout) = (inputs.options, inputs.layout);
    let cli_config = inputs.cli_config();
    let tty = std::io::stdout().is_terminal();
    let mut probe = Probe::new(
        inputs.catalog,
        &cli_config.kafka,
        &cli_config.registry,
        Some(&LakeConfig::new(layout.lake_url()?)),
    )?;
    let mut screen = Screen::new(tty, Duration::from_secs(5));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut crashed = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Some(broker) = stack.broker.as_mut() {
            broker.check_running()?;
        }
        let mut down = Vec::new();
        for p in stack
            .registry
            .iter_mut()
            .chain(stack.services.iter_mut().map(|(_, p)| p))
        {
            if let Some(status) = p.exit_status() {
                down.push(format!(
                    "{} exited ({status}; see {})",
                    p.name,
                    p.log.display()
                ));
            }
        }
        if !down.is_empty() && !crashed {
            warn!(processes = ?down, "a process of the stack exited");
            crashed = true;
        }
        let figures = probe.sample().await;
        let mut extra = Extra::default();
        if tty {
            extra.header = vec![format!(
                "tributary up — {} — up {}{}",
                layout.data.display(),
                clock(started.elapsed()),
                if options.demo {
                    " — demo traffic on"
                } else {
                    ""
                }
            )];
            extra.footer.push(String::new());
            if options.demo {
                extra.footer.push(format!(
                    "demo sent: {}",
                    counts.summary().trim_start_matches("demo ")
                ));
            }
            extra.footer.extend(down.iter().cloned());
            extra.footer.push(format!(
                "Ctrl-C stops everything (services first, broker last); logs in {}",
                layout.logs().display()
            ));
        } else {
            if options.demo {
                extra.summary.push(counts.summary());
            }
            extra
                .summary
                .extend(down.iter().map(|d| format!("DOWN {d}")));
        }
        let mut stdout = std::io::stdout().lock();
        screen.show(&mut stdout, &figures, &extra, false)?;
    }
    let figures = probe.sample().await;
    let mut extra = Extra::default();
    if options.demo {
        extra.summary.push(counts.summary());
    }
    println!();
    println!("{}", crate::display::summary(&figures, &extra));
    Ok(crashed)
}

/// The lines printed once everything runs.
fn banner(
    broker: BrokerKind,
    layout: &Layout,
    ports: &Ports,
    demo: Option<Option<&shop_db::ShopDb>>,
    took: Duration,
) -> Vec<String> {
    let mut lines = vec![
        format!("the stack is up (in {:.0} s):", took.as_secs_f64()),
        format!("  broker      {} ({})", ports.bootstrap(), broker.label()),
        format!(
            "  registry    {}   user admin, password in {}",
            ports.registry_url(),
            layout.registry_admin_password().display()
        ),
        // The key's file, not the key: terminals are recorded, shared and scrolled back.
        format!(
            "  ingest      {}/v1/topics/<topic>/records   X-API-Key: $(cat {})",
            ports.ingest_url(),
            layout.api_key().display()
        ),
        format!(
            "  features    {}/v1/features/user_activity/<user_id>   the same key",
            ports.feature_url()
        ),
        format!("  lake        {}", layout.lake().display()),
        format!(
            "  landing     {} (CSV, NDJSON, Parquet, Avro)",
            layout.products().display()
        ),
        format!(
            "  status      tributary status --config {}",
            layout.stack_file().display()
        ),
    ];
    if let Some(shop_db) = demo {
        lines.push(
            "  demo        web and mobile events every second, a product file every 20 s".into(),
        );
        if let Some(db) = shop_db {
            lines.push(format!(
                "  shop db     database {} on {} (slot {}): orders and customers every second, \
                 captured into db.shop.*",
                db.database, db.server, db.slot
            ));
        }
    }
    lines.push(String::new());
    lines
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The folder holding the service binaries: this executable's (cargo builds them side by side).
fn service_binaries() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locate the tributary executable")?;
    let dir = exe
        .parent()
        .context("the tributary executable has no folder")?
        .to_path_buf();
    let missing: Vec<String> = Service::ALL
        .iter()
        .map(|s| s.binary())
        .filter(|b| !process::is_executable(&dir.join(b)))
        .collect();
    if !missing.is_empty() {
        return Err(usage(format!(
            "{} not found beside {}: build them with `cargo build --release --bins` (deploy/local/up.sh does)",
            missing.join(", "),
            exe.display()
        )));
    }
    Ok(dir)
}

/// A secret of the stack (the API key, the registry's passwords): read from `path`, or made up
/// (`<prefix>-` and 128 random bits) and written there (mode 0600). An existing file that others
/// may read is narrowed to 0600 first, with a warning.
fn secret_file(path: &Path, prefix: &str) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the secret file was readable by others: set to 0600"
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 600 {}", path.display()))?;
    }
    if let Ok(key) = std::fs::read_to_string(path)
        && !key.trim().is_empty()
    {
        return Ok(key.trim().to_string());
    }
    use rand::Rng;
    use std::os::unix::fs::OpenOptionsExt;
    let key = format!("{prefix}-{:032x}", rand::rng().random::<u128>());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    file.write_all(key.as_bytes())?;
    Ok(key)
}

/// `up.pid` in the data folder while `tributary up` runs, so that two stacks never share a
/// broker database; removed when dropped.
#[derive(Debug)]
struct PidFile(PathBuf);

impl PidFile {
    fn take(path: &Path) -> Result<Self> {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse::<u32>()
            && pid != std::process::id()
            && Path::new(&format!("/proc/{pid}")).exists()
        {
            bail!(
                "a tributary up (pid {pid}) is already running on this data folder ({}); stop it first",
                path.parent().unwrap_or(path).display()
            );
        }
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("write {}", path.display()))?;
        Ok(Self(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// This command's own log (the demo, the catalog apply, librdkafka) goes to `logs/tributary.log`:
/// the terminal shows the figures.
fn init_logs(layout: &Layout) -> Result<()> {
    let path = layout.logs().join("tributary.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,librdkafka=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    /// #18: an existing key file others could read was reused as it was.
    #[test]
    fn the_api_key_file_is_made_and_kept_at_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-key");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let key = super::secret_file(&path, "dev").unwrap();
        assert!(key.starts_with("dev-"), "{key}");
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            super::secret_file(&path, "dev").unwrap(),
            key,
            "the same key, kept"
        );
        assert_eq!(mode(&path), 0o600);
    }
}
