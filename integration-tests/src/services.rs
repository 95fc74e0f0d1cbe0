//! The services as child processes: [`Ingest`], any service binary as a [`Service`] and its
//! wrappers ([`Archive`], [`Transform`], [`Feature`], [`TrainTrigger`]), the environment they
//! share, where their binaries are, and what a consumer-loop service's log says it holds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::broker::Broker;
use crate::registry::Registry;
use crate::util::{free_port, kill_child, unique, wait_for_port};

/// The sections each service binary reads (its `Config`'s top-level fields).
const SERVICE_SECTIONS: &[(&str, &[&str])] = &[
    (
        "tributary-registry",
        &["schema_registry", "kafka", "telemetry"],
    ),
    (
        "tributary-ingest",
        &["ingest", "kafka", "registry", "telemetry"],
    ),
    (
        "tributary-transform",
        &["transform", "kafka", "registry", "telemetry"],
    ),
    (
        "tributary-feature",
        &["feature", "kafka", "registry", "telemetry"],
    ),
    (
        "tributary-archive",
        &["archive", "kafka", "registry", "lake", "telemetry"],
    ),
    (
        "tributary-train-trigger",
        &["train_trigger", "kafka", "registry", "telemetry"],
    ),
];

/// One environment shared by every service, as a Kubernetes ConfigMap or a compose anchor
/// gives it: every service the tests start also gets a variable of each other service's
/// sections, with a value it could not take, and must leave them alone (issue #19).
pub(crate) fn shared_environment(binary: &str) -> Vec<(String, &'static str)> {
    const SHARED: &[(&str, &str)] = &[
        ("archive", "GROUP_ID"),
        ("feature", "GROUP_ID"),
        ("ingest", "LISTEN"),
        ("lake", "URL"),
        ("registry", "URL"),
        ("schema_registry", "LISTEN"),
        ("topics", "DLQ_PARTITIONS"),
        ("train_trigger", "GROUP_ID"),
        ("transform", "GROUP_ID"),
    ];
    let own = SERVICE_SECTIONS
        .iter()
        .find(|(b, _)| *b == binary)
        .map_or(&[][..], |(_, sections)| *sections);
    SHARED
        .iter()
        .filter(|(section, _)| !own.contains(section))
        .map(|(section, key)| {
            (
                format!("TRIBUTARY__{}__{key}", section.to_uppercase()),
                "another service's value",
            )
        })
        .collect()
}

/// A binary of the workspace, built next to the test executables (`cargo nextest run --workspace`
/// or `cargo build --workspace` builds them).
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locate the test executable")?;
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no target folder")?;
    let bin = dir.join(name);
    if !bin.exists() {
        bail!(
            "{} is not built; run `cargo build --workspace` first",
            bin.display()
        );
    }
    Ok(bin)
}

/// The ingest service as a child process on a free port, configured by a TOML file whose
/// `[ingest]` section is `ingest_toml` (credentials, limits) on top of the test defaults.
#[derive(Debug)]
pub struct Ingest {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Ingest {
    /// Starts ingest against `broker` and `registry` with the repository's catalog. `extra` is
    /// appended to the generated config file (more `[ingest]` keys, `[[ingest.credentials]]`,
    /// `[kafka]` settings).
    pub fn start(
        broker: &Broker,
        registry: &Registry,
        ingest_keys: &str,
        extra: &str,
    ) -> Result<Self> {
        Self::start_with_kafka(broker, registry, ingest_keys, "", extra)
    }

    /// Starts the process on the configured port and waits until it listens; its output is
    /// appended to the log.
    fn spawn(&mut self) -> Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = Command::new(workspace_bin("tributary-ingest")?)
            .arg(self._dir.path().join("ingest.toml"))
            .envs(shared_environment("tributary-ingest"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("start tributary-ingest")?;
        if let Err(e) = wait_for_port(
            self.port,
            &mut child,
            "tributary-ingest",
            Duration::from_secs(60),
        ) {
            let _ = child.kill();
            bail!("{e}\ningest log:\n{}", self.log());
        }
        self.child = Some(child);
        Ok(())
    }

    /// Kills ingest with SIGKILL: requests in flight get no answer.
    pub fn kill(&mut self) -> Result<()> {
        kill_child(&mut self.child)
    }

    /// Kills and starts ingest again on the same port with the same config.
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn()
    }

    /// Base URL of the API.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Process id, for CPU accounting.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The service's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// Ingest helpers for tests/ingest.rs: `[kafka]` settings and the admin server's address.
impl Ingest {
    /// Like [`Ingest::start`], with `kafka_keys` written inside the `[kafka]` section (e.g.
    /// `delivery_timeout_ms = 5000`), which `extra` cannot reopen.
    pub fn start_with_kafka(
        broker: &Broker,
        registry: &Registry,
        ingest_keys: &str,
        kafka_keys: &str,
        extra: &str,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        // The catalog's file sources run only when a test asks for them.
        let ingest_keys = if ingest_keys.contains("sources =") {
            ingest_keys.to_string()
        } else {
            format!("sources = []\n{ingest_keys}")
        };
        let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
        let config = format!(
            "[ingest]\nlisten = \"127.0.0.1:{port}\"\nschemas = \"{}\"\n{ingest_keys}\n\n[kafka]\nbootstrap_servers = \"{}\"\n{kafka_keys}\n\n{}\n[telemetry]\nadmin_addr = \"127.0.0.1:{}\"\nlog_filter = \"info,librdkafka=warn\"\n\n{extra}\n",
            schemas.display(),
            broker.bootstrap(),
            registry.section(),
            free_port()?
        );
        std::fs::write(dir.path().join("ingest.toml"), config)?;
        let mut ingest = Self {
            port,
            child: None,
            log: dir.path().join("ingest.log"),
            _dir: dir,
        };
        ingest.spawn()?;
        Ok(ingest)
    }

    /// Base URL of the admin server (`/metrics`, `/healthz`, `/readyz`), from the generated config.
    pub fn admin_url(&self) -> Result<String> {
        admin_url_in(&self._dir.path().join("ingest.toml"), "ingest")
    }
}

/// A service binary of the workspace as a child process, configured by a generated TOML file
/// (with a free admin port) and logging to a file; killed when dropped.
#[derive(Debug)]
pub struct Service {
    binary: &'static str,
    config: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Writes `config` (followed by a `[telemetry]` section with a free admin port) and starts
    /// `binary` with it.
    pub fn start(binary: &'static str, config: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = format!(
            "{config}\n\n[telemetry]\nadmin_addr = \"127.0.0.1:{}\"\nlog_filter = \"info,librdkafka=warn\"\n",
            free_port()?
        );
        let path = dir.path().join(format!("{binary}.toml"));
        std::fs::write(&path, config)?;
        let mut service = Self {
            binary,
            config: path,
            child: None,
            log: dir.path().join(format!("{binary}.log")),
            _dir: dir,
        };
        service.spawn()?;
        Ok(service)
    }

    fn spawn(&mut self) -> Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(workspace_bin(self.binary)?)
            .arg(&self.config)
            .envs(shared_environment(self.binary))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {}", self.binary))?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the service with SIGKILL.
    pub fn kill(&mut self) -> Result<()> {
        kill_child(&mut self.child)
    }

    /// Starts it again after [`Service::kill`] or [`Service::stop`].
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn()
    }

    /// Stops it with SIGTERM and waits (up to 60 s) for a clean exit; returns whether it was clean.
    pub fn stop(&mut self) -> Result<bool> {
        let Some(mut child) = self.child.take() else {
            return Ok(true);
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill()?;
        child.wait()?;
        Ok(false)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends the signal `name` (`STOP`, `CONT`, ...) to the running process: SIGSTOP freezes
    /// it whole, librdkafka's threads included, as a long GC pause or a frozen VM would.
    pub fn signal(&self, name: &str) -> Result<()> {
        let child = self.child.as_ref().context("the service is not running")?;
        let status = Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{name} {}: {status}", child.id());
        Ok(())
    }

    /// Waits (up to `timeout`) for the process to exit by itself; its exit status, or `None`
    /// if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(None)
    }

    /// Process id, for CPU accounting.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The service's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Base URL of the admin server (`/metrics`, `/healthz`, `/readyz`), from the generated config.
    pub fn admin_url(&self) -> Result<String> {
        admin_url_in(&self.config, self.binary)
    }
}

/// Base URL of the admin server, from the `admin_addr` line of the generated config at `path`;
/// `what` names the config in the error (shared by [`Ingest::admin_url`] and
/// [`Service::admin_url`]).
fn admin_url_in(path: &Path, what: &str) -> Result<String> {
    let config = std::fs::read_to_string(path)?;
    let addr = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("admin_addr = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .with_context(|| format!("no admin_addr in the generated {what} config"))?;
    Ok(format!("http://{addr}"))
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The archive service (see [`Service`] for what it can do).
#[derive(Debug)]
pub struct Archive(Service);

impl Archive {
    /// Starts the archive with the repository's catalog. `archive_keys` go inside `[archive]`,
    /// `lake_keys` inside `[lake]` (its `url` must be given), `extra` at the end.
    pub fn start(
        broker: &Broker,
        registry: &Registry,
        archive_keys: &str,
        lake_keys: &str,
        extra: &str,
    ) -> Result<Self> {
        let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
        let config = format!(
            "[archive]\nschemas = \"{}\"\n{archive_keys}\n\n[kafka]\nbootstrap_servers = \"{}\"\n\n{}\n[lake]\n{lake_keys}\n\n{extra}\n",
            schemas.display(),
            broker.bootstrap(),
            registry.section(),
        );
        Ok(Self(Service::start("tributary-archive", &config)?))
    }
}

impl std::ops::Deref for Archive {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.0
    }
}

impl std::ops::DerefMut for Archive {
    fn deref_mut(&mut self) -> &mut Service {
        &mut self.0
    }
}

/// The transform service (see [`Service`] for what it can do).
#[derive(Debug)]
pub struct Transform(Service);

impl Transform {
    /// Starts the transform with the catalog in `schemas`; `transform_keys` go inside
    /// `[transform]` (e.g. `only = ["clean_web_events"]`), `extra` at the end (e.g. a
    /// `[kafka.extra]` table).
    pub fn start(
        broker: &Broker,
        registry: &Registry,
        schemas: &Path,
        transform_keys: &str,
        extra: &str,
    ) -> Result<Self> {
        let config = format!(
            "[transform]\nschemas = \"{}\"\n{transform_keys}\n\n[kafka]\nbootstrap_servers = \"{}\"\n\n{}\n{extra}\n",
            schemas.display(),
            broker.bootstrap(),
            registry.section(),
        );
        Ok(Self(Service::start("tributary-transform", &config)?))
    }
}

impl std::ops::Deref for Transform {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.0
    }
}

impl std::ops::DerefMut for Transform {
    fn deref_mut(&mut self) -> &mut Service {
        &mut self.0
    }
}

/// The feature service (see [`Service`] for what it can do), with its lookup API on a free port.
#[derive(Debug)]
pub struct Feature {
    service: Service,
    api: String,
    lookup_key: String,
}

impl Feature {
    /// Starts the feature service with the catalog in `schemas`; `feature_keys` go inside
    /// `[feature]` (`[[feature.credentials]]` blocks may end them), `extra` at the end (e.g. a
    /// `[kafka.extra]` table). The lookup API takes [`Feature::lookup_key`] for every view.
    pub fn start(
        broker: &Broker,
        registry: &Registry,
        schemas: &Path,
        feature_keys: &str,
        extra: &str,
    ) -> Result<Self> {
        let port = free_port()?;
        let lookup_key = unique("lookup-key");
        let config = format!(
            "[feature]\nschemas = \"{}\"\nlisten = \"127.0.0.1:{port}\"\n{feature_keys}\n\n\
             [[feature.credentials]]\nname = \"tests\"\nsecret = \"{lookup_key}\"\nviews = [\"*\"]\n\n[kafka]\nbootstrap_servers = \"{}\"\n\n{}\n{extra}\n",
            schemas.display(),
            broker.bootstrap(),
            registry.section(),
        );
        Ok(Self {
            service: Service::start("tributary-feature", &config)?,
            api: format!("http://127.0.0.1:{port}"),
            lookup_key,
        })
    }

    /// Base URL of the lookup API.
    pub fn api_url(&self) -> &str {
        &self.api
    }

    /// An API key of the lookup API allowed every view.
    pub fn lookup_key(&self) -> &str {
        &self.lookup_key
    }
}

impl std::ops::Deref for Feature {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.service
    }
}

impl std::ops::DerefMut for Feature {
    fn deref_mut(&mut self) -> &mut Service {
        &mut self.service
    }
}

/// The train-trigger service (see [`Service`] for what it can do).
#[derive(Debug)]
pub struct TrainTrigger(Service);

impl TrainTrigger {
    /// Starts train-trigger with the catalog in `schemas`; `keys` go inside `[train_trigger]`,
    /// `extra` at the end.
    pub fn start(
        broker: &Broker,
        registry: &Registry,
        schemas: &Path,
        keys: &str,
        extra: &str,
    ) -> Result<Self> {
        let config = format!(
            "[train_trigger]\nschemas = \"{}\"\n{keys}\n\n[kafka]\nbootstrap_servers = \"{}\"\n\n{}\n{extra}\n",
            schemas.display(),
            broker.bootstrap(),
            registry.section(),
        );
        Ok(Self(Service::start("tributary-train-trigger", &config)?))
    }
}

impl std::ops::Deref for TrainTrigger {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.0
    }
}

impl std::ops::DerefMut for TrainTrigger {
    fn deref_mut(&mut self) -> &mut Service {
        &mut self.0
    }
}

// Failover tests (tests/failover.rs): any service on a catalog of the test's own, and what its
// consumer holds.

/// The configuration file of a consume-process-produce service: `[<section>]` with
/// `section_keys` (`schemas`, `group_id`, ...), `[kafka]` with the broker, `[registry]`, then
/// `extra` (further tables: `[lake]`, `[kafka.extra]`). Unlike [`Archive::start`], which reads
/// the repository's catalog, any service can run on a test's catalog this way. Start it with
/// [`Service::start`], which adds `[telemetry]`.
pub fn service_config(
    section: &str,
    section_keys: &str,
    broker: &Broker,
    registry: &Registry,
    extra: &str,
) -> String {
    format!(
        "[{section}]\n{section_keys}\n\n[kafka]\nbootstrap_servers = \"{}\"\n\n{}\n{extra}\n",
        broker.bootstrap(),
        registry.section(),
    )
}

/// How many partitions a consumer-loop service holds after its latest rebalance, from its log
/// (`partitions assigned` / `partitions revoked`); `None` before its first assignment.
pub fn assigned_partitions(log: &str) -> Option<usize> {
    let mut held = None;
    for line in log.lines() {
        let line = strip_ansi(line);
        if line.contains("partitions revoked") {
            held = Some(0);
        } else if line.contains("partitions assigned") {
            held = line
                .split_whitespace()
                .find_map(|word| word.strip_prefix("partitions="))
                .and_then(|n| n.parse().ok());
        }
    }
    held
}

/// A log line without its terminal colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
