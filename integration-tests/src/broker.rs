//! The broker harness: Apache Kafka (one KRaft node) or Tansu (SQLite storage) as a child
//! process on free ports, the pinned versions and where their binaries are installed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tributary_core::bus::KafkaConfig;

use crate::util::{free_port, kill_child, wait_for_port};

/// Version of Tansu the tests are pinned to.
pub const TANSU_VERSION: &str = "0.6.0";

/// Version of Apache Kafka the tests are pinned to: `deploy/local/kafka/pom.xml` pins it, and
/// `deploy/local/install-kafka.sh` installs it (a test checks the two agree).
pub const KAFKA_VERSION: &str = "4.1.1";

/// The cache `integration-tests/run.sh` installs the brokers into: `TRIBUTARY_CACHE`, else
/// `~/.cache/tributary`.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TRIBUTARY_CACHE") {
        return PathBuf::from(dir);
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
        .join(".cache/tributary")
}

/// Where the Tansu binary is: `TANSU_BIN`, else the cache `run.sh` installs into, else `PATH`.
pub fn tansu_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("TANSU_BIN") {
        return PathBuf::from(bin);
    }
    let cached = cache_dir().join(format!("tansu-{TANSU_VERSION}/bin/tansu"));
    if cached.exists() {
        cached
    } else {
        PathBuf::from("tansu")
    }
}

/// Where Apache Kafka's launcher is: `KAFKA_LAUNCHER`, else the cache `run.sh` installs into
/// (`deploy/local/install-kafka.sh`).
pub fn kafka_launcher() -> PathBuf {
    if let Some(bin) = std::env::var_os("KAFKA_LAUNCHER") {
        return PathBuf::from(bin);
    }
    cache_dir().join(format!("kafka-{KAFKA_VERSION}/bin/kafka-local"))
}

/// The brokers the tests run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// Apache Kafka, one KRaft node (broker and controller) started by `kafka-local`.
    Kafka,
    /// Tansu with SQLite storage, the embedded default of `tributary up`.
    Tansu,
}

impl BrokerKind {
    /// The broker named by `TRIBUTARY_TEST_BROKER` (`kafka` or `tansu`); Apache Kafka when unset.
    pub fn from_env() -> Result<Self> {
        match std::env::var("TRIBUTARY_TEST_BROKER") {
            Err(std::env::VarError::NotPresent) => Ok(Self::Kafka),
            Ok(name) => match name.trim().to_ascii_lowercase().as_str() {
                "kafka" | "" => Ok(Self::Kafka),
                "tansu" => Ok(Self::Tansu),
                other => bail!("TRIBUTARY_TEST_BROKER={other}: expected kafka or tansu"),
            },
            Err(e) => bail!("TRIBUTARY_TEST_BROKER: {e}"),
        }
    }

    /// `kafka` or `tansu`, as `TRIBUTARY_TEST_BROKER` and `tributary up --broker` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kafka => "kafka",
            Self::Tansu => "tansu",
        }
    }
}

/// A broker on free loopback ports with its data in a temporary folder, killed when dropped:
/// Apache Kafka or Tansu, as [`BrokerKind::from_env`] says.
#[derive(Debug)]
pub struct Broker {
    kind: BrokerKind,
    port: u16,
    /// Kafka's controller listener (unused by Tansu).
    controller_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Broker {
    /// Starts the broker `TRIBUTARY_TEST_BROKER` names and waits until it answers metadata
    /// requests.
    pub fn start() -> Result<Self> {
        Self::start_kind(BrokerKind::from_env()?)
    }

    /// Starts a broker of the given kind.
    pub fn start_kind(kind: BrokerKind) -> Result<Self> {
        let dir = tempfile::tempdir().context("create broker folder")?;
        let mut broker = Self {
            kind,
            port: free_port()?,
            controller_port: free_port()?,
            dir,
            child: None,
        };
        broker.spawn()?;
        Ok(broker)
    }

    fn spawn(&mut self) -> Result<()> {
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut command = match self.kind {
            BrokerKind::Tansu => {
                let url = format!("tcp://127.0.0.1:{}", self.port);
                let mut c = Command::new(tansu_binary());
                c.current_dir(self.dir.path())
                    .args([
                        "broker",
                        "--listener-url",
                        &url,
                        "--advertised-listener-url",
                        &url,
                    ])
                    .args(["--storage-engine", "sqlite://tansu.db"])
                    .env("RUST_LOG", "warn");
                c
            }
            BrokerKind::Kafka => {
                let mut c = Command::new(kafka_launcher());
                c.arg(self.dir.path().join("kafka"))
                    .arg(self.port.to_string())
                    .arg(self.controller_port.to_string())
                    .env("KAFKA_HEAP", "512m");
                c
            }
        };
        let what = self.kind.name();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {what}; run integration-tests/run.sh to install it"))?;
        if let Err(e) = wait_for_port(self.port, &mut child, what, Duration::from_secs(60)) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{e}; its log:\n{}", self.log());
        }
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&self) -> Result<()> {
        let consumer: BaseConsumer = self.kafka().client_config().create()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match consumer.fetch_metadata(None, Duration::from_secs(2)) {
                Ok(md) if !md.brokers().is_empty() => return Ok(()),
                result if Instant::now() > deadline => bail!(
                    "{} not ready: {:?}; its log:\n{}",
                    self.kind.name(),
                    result.err(),
                    self.log()
                ),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Which broker this is.
    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// How long a test waits between killing a consumer-group member and starting its
    /// replacement: nothing on Apache Kafka; on Tansu 0.6.0, which gives a replacement joining
    /// while the dead member's session lasts no partition for good (docs/failover.md), 8 s, past
    /// the 6 s session the tests configure, as a supervisor there must.
    pub fn replacement_delay(&self) -> Duration {
        match self.kind {
            BrokerKind::Kafka => Duration::ZERO,
            BrokerKind::Tansu => Duration::from_secs(8),
        }
    }

    /// `host:port` of the broker.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Client settings for this broker.
    pub fn kafka(&self) -> KafkaConfig {
        let mut k = KafkaConfig::new(self.bootstrap());
        k.linger_ms = 5;
        k
    }

    /// Kills the broker with SIGKILL (its data stays).
    pub fn kill(&mut self) -> Result<()> {
        kill_child(&mut self.child)
    }

    /// Starts the broker again on the same ports and data.
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn()
    }

    /// Folder holding the broker's data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.kind.name()))
    }

    /// The broker's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

// Broker accessor for the ingest benchmark (src/bin/bench-ingest.rs): CPU accounting.
impl Broker {
    /// Process id of the running broker, for CPU accounting (`None` while it is stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}
