//! The test harness: real services on loopback for integration tests.
//!
//! - [`Broker`]: Apache Kafka (one KRaft node) or Tansu (SQLite storage), as
//!   `TRIBUTARY_TEST_BROKER` says, with its data in a temporary folder, on free ports (both are
//!   installed by `integration-tests/run.sh`; `KAFKA_LAUNCHER` and `TANSU_BIN` override where).
//! - [`S3`]: moto's S3 server on a free port, with a fresh bucket.
//! - [`TestDatabase`]: a fresh database on the machine's PostgreSQL, dropped afterwards.
//! - [`unique`]: random topic and group names, so tests never share state and can run twice.

pub mod bench;
pub mod faults;
mod stack;

pub use stack::{Stack, key_of, to_json};

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tributary_core::bus::KafkaConfig;
use tributary_core::config::Secret;
use tributary_core::schema::registry::{RegistryClient, RegistryConfig};

/// Version of Tansu the tests are pinned to.
pub const TANSU_VERSION: &str = "0.6.0";

/// Version of Apache Kafka the tests are pinned to: `deploy/local/kafka/pom.xml` pins it, and
/// `deploy/local/install-kafka.sh` installs it (a test checks the two agree).
pub const KAFKA_VERSION: &str = "4.1.1";

/// A random name with a prefix, e.g. `t-loop-3f9a2c71`.
pub fn unique(prefix: &str) -> String {
    let n: u32 = rand::rng().random();
    format!("{prefix}-{n:08x}")
}

/// Installs a log subscriber for a test (once per process; later calls do nothing).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,librdkafka=warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A port nothing listens on, for a server a test starts. Chosen below the kernel's ephemeral
/// range: a port the kernel hands out (bind to 0) may be taken by any outgoing connection (a
/// broker's, a client's) between this check and the server's bind, and a test then fails with
/// "address already in use"; below that range only another test's server can take it, and
/// those are spread at random over some 20,000 ports. A port is never handed out twice in one
/// process: two servers of one test (a broker's two listeners, say) asked for ports before
/// either binds, and at random they could get the same one (a CI run saw Kafka refuse
/// `PLAINTEXT://127.0.0.1:15780,CONTROLLER://127.0.0.1:15780`).
fn free_port() -> Result<u16> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_start > 12_000 {
        for _ in 0..50 {
            let port = rand::rng().random_range(10_000..ephemeral_start);
            if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.insert(port);
                return Ok(port);
            }
        }
    }
    for _ in 0..50 {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
        let port = listener.local_addr()?.port();
        if given.insert(port) {
            return Ok(port);
        }
    }
    bail!("no free port found that this process has not handed out already")
}

fn wait_for_port(port: u16, child: &mut Child, what: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status} before listening on port {port}");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on port {port} within {timeout:?}")
}

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

/// moto's S3 server on loopback, with one fresh bucket; killed when dropped.
#[derive(Debug)]
pub struct S3 {
    port: u16,
    child: Child,
    /// The bucket created for the test.
    pub bucket: String,
}

impl S3 {
    /// Starts `moto_server` on a free port and creates a bucket.
    pub async fn start() -> Result<Self> {
        let port = free_port()?;
        let mut child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "start moto_server (pip install 'moto[server]'; integration-tests/run.sh does)",
            )?;
        wait_for_port(port, &mut child, "moto_server", Duration::from_secs(30))?;
        let s3 = Self {
            port,
            child,
            bucket: unique("lake"),
        };
        let response = reqwest::Client::new()
            .put(format!("{}/{}", s3.endpoint(), s3.bucket))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "creating bucket {} answered {}",
                s3.bucket,
                response.status()
            );
        }
        Ok(s3)
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's port (for a proxy in front of it).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Lake settings for `s3://<bucket>/<prefix>` on this server.
    pub fn lake(&self, prefix: &str) -> tributary_core::lake::LakeConfig {
        let mut c = tributary_core::lake::LakeConfig::new(format!("s3://{}/{prefix}", self.bucket));
        c.s3_endpoint = Some(self.endpoint());
        c.s3_region = Some("us-east-1".into());
        c.s3_access_key_id = Some(tributary_core::config::Secret::new("test"));
        c.s3_secret_access_key = Some(tributary_core::config::Secret::new("test"));
        c.allow_http = true;
        c
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Address of the machine's PostgreSQL (`TRIBUTARY_TEST_PG` overrides), trust auth as `postgres`.
pub fn postgres_base() -> String {
    std::env::var("TRIBUTARY_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres".to_string())
}

/// A fresh database on the machine's PostgreSQL, dropped when the value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    /// Database name.
    pub name: String,
}

impl TestDatabase {
    /// Creates a database with a random name.
    pub async fn create() -> Result<Self> {
        let name = unique("t").replace('-', "_");
        let client = connect(&postgres_base()).await?;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .context("create test database")?;
        Ok(Self { name })
    }

    /// Connection string of the database.
    pub fn connection_string(&self) -> String {
        format!("{} dbname={}", postgres_base(), self.name)
    }

    /// Connects to the database.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        connect(&self.connection_string()).await
    }
}

async fn connect(conn: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connect to postgresql ({conn})"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs outside async context: a short-lived thread with its own runtime.
        let base = postgres_base();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let client = connect(&base).await?;
                // Replication slots of the database (a change data capture test's) keep it
                // from being dropped, and WAL from being recycled: drop them first.
                client
                    .execute(
                        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                         WHERE database = $1 AND active_pid IS NOT NULL",
                        &[&name],
                    )
                    .await?;
                for _ in 0..50 {
                    let left = client
                        .query(
                            "SELECT slot_name::text FROM pg_replication_slots WHERE database = $1",
                            &[&name],
                        )
                        .await?;
                    if left.is_empty() {
                        break;
                    }
                    for row in left {
                        let slot: String = row.try_get(0)?;
                        let _ = client
                            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                            .await;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
    }
}

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
fn shared_environment(binary: &str) -> Vec<(String, &'static str)> {
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

/// The registry service as a child process on a free port, storing schemas on `broker` in a
/// topic of its own; killed when dropped. Two users with random passwords: `admin` (role
/// admin, for tests and the CLI) and `services` (role write, for the services).
#[derive(Debug)]
pub struct Registry {
    port: u16,
    bootstrap: String,
    topic: String,
    admin_password: String,
    services_password: String,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry with a fresh schemas topic.
    pub fn start(broker: &Broker) -> Result<Self> {
        Self::start_on(broker, &unique("_schemas"))
    }

    /// Starts a registry on an existing (or new) schemas topic, e.g. a second replica.
    pub fn start_on(broker: &Broker, topic: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut registry = Self {
            port: free_port()?,
            bootstrap: broker.bootstrap(),
            topic: topic.to_string(),
            admin_password: unique("admin-pw"),
            services_password: unique("services-pw"),
            child: None,
            log: dir.path().join("registry.log"),
            _dir: dir,
        };
        registry.spawn()?;
        Ok(registry)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::File::create(&self.log)?;
        let config = self.log.with_file_name("registry.toml");
        std::fs::write(
            &config,
            format!(
                "[[schema_registry.users]]\nname = \"admin\"\npassword = \"{}\"\nrole = \"admin\"\n\n\
                 [[schema_registry.users]]\nname = \"services\"\npassword = \"{}\"\nrole = \"write\"\n",
                self.admin_password, self.services_password
            ),
        )?;
        let mut child = Command::new(workspace_bin("tributary-registry")?)
            .arg(&config)
            .envs(shared_environment("tributary-registry"))
            .env(
                "TRIBUTARY__SCHEMA_REGISTRY__LISTEN",
                format!("127.0.0.1:{}", self.port),
            )
            .env("TRIBUTARY__SCHEMA_REGISTRY__TOPIC", &self.topic)
            .env("TRIBUTARY__KAFKA__BOOTSTRAP_SERVERS", &self.bootstrap)
            .env(
                "TRIBUTARY__TELEMETRY__ADMIN_ADDR",
                format!("127.0.0.1:{}", free_port()?),
            )
            .env("TRIBUTARY__TELEMETRY__LOG_FILTER", "info,librdkafka=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start tributary-registry")?;
        if let Err(e) = wait_for_port(
            self.port,
            &mut child,
            "tributary-registry",
            Duration::from_secs(60),
        ) {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let _ = child.kill();
            bail!("{e}\nregistry log:\n{log}");
        }
        self.child = Some(child);
        Ok(())
    }

    /// Base URL of the API.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The admin user's name and password.
    pub fn admin(&self) -> (&str, &str) {
        ("admin", &self.admin_password)
    }

    /// The `services` user's password (role write).
    pub fn services_password(&self) -> &str {
        &self.services_password
    }

    /// `admin:<password>`, for `basic.auth.user.info` and `--registry-auth`.
    pub fn user_info(&self) -> String {
        format!("admin:{}", self.admin_password)
    }

    /// Client settings of the admin user.
    pub fn client_config(&self) -> RegistryConfig {
        RegistryConfig::new(self.url()).with_basic_auth("admin", Secret::new(&self.admin_password))
    }

    /// A client of the admin user.
    pub fn client(&self) -> Result<RegistryClient> {
        Ok(RegistryClient::new(&self.client_config())?)
    }

    /// The `[registry]` section of a service's configuration (the `services` user).
    pub fn section(&self) -> String {
        format!(
            "[registry]\nurl = \"{}\"\nusername = \"services\"\npassword = \"{}\"\n",
            self.url(),
            self.services_password
        )
    }

    /// `TRIBUTARY__REGISTRY__*` variables for a process taking `[registry]` from its
    /// environment (the CLI): the admin user.
    pub fn env(&self) -> [(&'static str, String); 3] {
        [
            ("TRIBUTARY__REGISTRY__URL", self.url()),
            ("TRIBUTARY__REGISTRY__USERNAME", "admin".to_string()),
            ("TRIBUTARY__REGISTRY__PASSWORD", self.admin_password.clone()),
        ]
    }

    /// The schemas topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Kills the registry with SIGKILL.
    pub fn kill(&mut self) -> Result<()> {
        kill_child(&mut self.child)
    }

    /// Kills and starts the registry again on the same port and topic.
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn()
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.kill();
    }
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

/// The repository's topic catalog.
pub fn repo_catalog() -> Result<tributary_core::schema::catalog::Catalog> {
    Ok(tributary_core::schema::catalog::Catalog::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas"),
    )?)
}

/// Creates every topic of the repository's catalog (and the dead-letter topics) on `broker`,
/// as `tributary topics apply` does.
pub async fn create_catalog_topics(broker: &Broker) -> Result<()> {
    let specs = repo_catalog()?.topic_specs(1);
    tributary_core::bus::create_topics(&broker.kafka(), &specs).await?;
    Ok(())
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
        let config = std::fs::read_to_string(self._dir.path().join("ingest.toml"))?;
        let addr = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("admin_addr = \""))
            .and_then(|rest| rest.strip_suffix('"'))
            .context("no admin_addr in the generated ingest config")?;
        Ok(format!("http://{addr}"))
    }
}

// Broker accessor for the ingest benchmark (src/bin/bench-ingest.rs): CPU accounting.
impl Broker {
    /// Process id of the running broker, for CPU accounting (`None` while it is stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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
        let config = std::fs::read_to_string(&self.config)?;
        let addr = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("admin_addr = \""))
            .and_then(|rest| rest.strip_suffix('"'))
            .with_context(|| format!("no admin_addr in the generated {} config", self.binary))?;
        Ok(format!("http://{addr}"))
    }
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

// Benchmark helpers (src/bin/bench-archive.rs): services beside a release binary, the archive's
// admin server.

/// Set by [`run_beside_services`] on the program it re-runs, so that it never loops.
const BESIDE_REEXEC_VAR: &str = "TRIBUTARY_BENCH_REEXEC";

/// Lets a benchmark binary started as `target/<profile>/<name>` use the harness.
///
/// [`workspace_bin`] looks for the services in the parent of the executable's folder, which
/// suits test executables in `target/<profile>/deps/` but not binaries in `target/<profile>/`.
/// Cargo hard-links every binary into `target/<profile>/deps/` too: when `services` are beside
/// this executable and not where [`workspace_bin`] looks, this runs that twin instead (same
/// arguments; it does not return then). Returns `Ok` when nothing needs doing.
pub fn run_beside_services(services: &[&str]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;

    if services.iter().all(|name| workspace_bin(name).is_ok()) {
        return Ok(());
    }
    let exe = std::env::current_exe().context("locate this executable")?;
    let dir = exe.parent().context("this executable has no folder")?;
    let beside = services.iter().all(|name| dir.join(name).exists());
    if !beside || std::env::var_os(BESIDE_REEXEC_VAR).is_some() {
        bail!(
            "{} not built beside {}: cargo build --release -p {}",
            services.join(" and "),
            exe.display(),
            services.join(" -p ")
        );
    }
    let me = std::fs::metadata(&exe)?;
    let twin = std::fs::read_dir(dir.join("deps"))
        .with_context(|| format!("list {}/deps", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            std::fs::metadata(path).is_ok_and(|m| m.dev() == me.dev() && m.ino() == me.ino())
        })
        .with_context(|| {
            format!(
                "no hard link of {} in {}/deps",
                exe.display(),
                dir.display()
            )
        })?;
    let error = Command::new(&twin)
        .args(std::env::args_os().skip(1))
        .env(BESIDE_REEXEC_VAR, "1")
        .exec();
    Err(error).with_context(|| format!("run {}", twin.display()))
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Value (empty for a tombstone).
    pub payload: Vec<u8>,
    /// Headers as text.
    pub headers: BTreeMap<String, String>,
    /// Kafka timestamp in milliseconds since the epoch (when the record was produced, unless
    /// the topic uses LogAppendTime).
    pub timestamp_ms: Option<i64>,
}

/// SIGKILLs a child process, if running, and reaps it.
fn kill_child(child: &mut Option<Child>) -> Result<()> {
    if let Some(mut child) = child.take() {
        child.kill()?;
        child.wait()?;
    }
    Ok(())
}

/// Reads every partition of `topic` from the start until `count` records arrived or `wait`
/// passed, whichever is first; returns what arrived.
pub fn read_all(
    broker: &Broker,
    topic: &str,
    count: usize,
    wait: Duration,
) -> Result<Vec<ReadRecord>> {
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = broker
        .kafka()
        .client_config()
        .set("group.id", unique("g-read"))
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)?;
        }
    }
    if tpl.count() == 0 {
        bail!("topic {topic} has no partitions");
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    while out.len() < count && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        let headers = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(ReadRecord {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
            timestamp_ms: message.timestamp().to_millis(),
        });
    }
    Ok(out)
}

/// Reads every record of `topic` written before the call (up to each partition's high-water
/// mark then), waiting up to `wait` for them.
pub fn read_to_end(broker: &Broker, topic: &str, wait: Duration) -> Result<Vec<ReadRecord>> {
    let consumer: BaseConsumer = broker.kafka().client_config().create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut total = 0usize;
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            total += usize::try_from(high - low).unwrap_or(0);
        }
    }
    let records = read_all(broker, topic, total, wait)?;
    if records.len() < total {
        bail!(
            "{topic}: read {} of {total} records within {wait:?}",
            records.len()
        );
    }
    Ok(records)
}

/// The group's committed position per partition of `topic` (-1 for none), and the
/// partition's end offset.
pub fn committed_and_end(
    broker: &Broker,
    group: &str,
    topic: &str,
) -> Result<Vec<(i32, i64, i64)>> {
    let consumer: BaseConsumer = broker
        .kafka()
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    partitions
        .iter()
        .map(|p| {
            let position = match committed.find_partition(topic, *p).map(|e| e.offset()) {
                Some(rdkafka::Offset::Offset(o)) => o,
                _ => -1,
            };
            let (_, high) = consumer.fetch_watermarks(topic, *p, timeout)?;
            Ok((*p, position, high))
        })
        .collect()
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

// The archive's lake as the archive writes it, and its exactly-once check: shared by the tests
// that archive through failures (tests/failover.rs; tests/archive.rs has an older copy of its
// own that could move here).

/// The lineage of one row of an archived Parquet file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LakeRow {
    /// `_kafka_partition`.
    pub partition: i32,
    /// `_kafka_offset`.
    pub offset: i64,
    /// `_schema_id`.
    pub schema_id: i32,
}

/// One Parquet object of a local lake as read at some moment.
#[derive(Debug, Clone)]
pub struct LakeFile {
    /// Size in bytes.
    pub size: u64,
    /// FNV-1a of the content.
    pub hash: u64,
    /// When it was written (the file's modification time).
    pub modified: std::time::SystemTime,
    /// Every row's lineage, in file order.
    pub rows: Vec<LakeRow>,
    /// The `tributary.*` key/value metadata of the footer.
    pub meta: BTreeMap<String, String>,
}

/// (size, FNV-1a hash) of a file's content.
pub type LakeFingerprint = (u64, u64);

fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl LakeFile {
    /// Reads a Parquet file: fingerprint, footer metadata, lineage columns.
    pub fn read(path: &Path) -> Result<Self> {
        use std::io::Read;
        let mut file = std::fs::File::open(path)?;
        let modified = file.metadata()?.modified()?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (size, hash) = (bytes.len() as u64, fnv1a_64(&bytes));
        // The same open file: its content is the one fingerprinted.
        Self::parse(file, size, hash, modified)
            .with_context(|| format!("{} is no whole Parquet file", path.display()))
    }

    fn parse(
        file: std::fs::File,
        size: u64,
        hash: u64,
        modified: std::time::SystemTime,
    ) -> Result<Self> {
        use arrow::array::{Int32Array, Int64Array};
        use parquet::arrow::ProjectionMask;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
        let meta = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .map(|kv| {
                kv.iter()
                    .filter(|k| k.key.starts_with("tributary."))
                    .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        let mask = ProjectionMask::columns(
            builder.parquet_schema(),
            ["_kafka_partition", "_kafka_offset", "_schema_id"],
        );
        let mut rows = Vec::new();
        for batch in builder.with_projection(mask).build()? {
            let batch = batch?;
            let int32s = |name: &str| {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_any().downcast_ref::<Int32Array>().cloned())
                    .with_context(|| format!("no Int32 column {name}"))
            };
            let partitions = int32s("_kafka_partition")?;
            let schema_ids = int32s("_schema_id")?;
            let offsets = batch
                .column_by_name("_kafka_offset")
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
                .context("no Int64 column _kafka_offset")?;
            for i in 0..batch.num_rows() {
                rows.push(LakeRow {
                    partition: partitions.value(i),
                    offset: offsets.value(i),
                    schema_id: schema_ids.value(i),
                });
            }
        }
        Ok(Self {
            size,
            hash,
            modified,
            rows,
            meta,
        })
    }

    fn meta_i64(&self, key: &str) -> Result<i64> {
        self.meta
            .get(key)
            .with_context(|| format!("no {key} in the footer"))?
            .parse()
            .with_context(|| format!("{key} is not a number"))
    }
}

/// Watches a local lake folder while the archive writes it: every file each time its content
/// may have changed, so that a file ever seen with two different contents is caught.
#[derive(Debug, Default)]
pub struct LakeWatch {
    /// Latest content of each `.parquet` file, by path relative to the watched root.
    pub files: BTreeMap<String, LakeFile>,
    /// (size, modification time, inode) of each file when last read: unchanged means unread.
    stamps: BTreeMap<String, (u64, std::time::SystemTime, u64)>,
    /// Files seen with two different contents: (key, before, after).
    pub overwritten: Vec<(String, LakeFingerprint, LakeFingerprint)>,
    /// Files that disappeared.
    pub deleted: Vec<String>,
    /// Files that could not be read as Parquet: (key, error).
    pub unreadable: BTreeMap<String, String>,
}

/// What [`LakeWatch::check_exactly_once`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LakeCheck {
    /// Rows in the lake, duplicates included.
    pub rows: usize,
    /// Rows whose (partition, offset) another row has too.
    pub duplicates: usize,
    /// Produced records missing from the lake.
    pub missing: usize,
    /// Rows of records that were not produced (by this test).
    pub extra: usize,
    /// Broken promises other than counts: overwritten, deleted or unreadable files, footers
    /// or names that disagree with the rows, overlapping files of a partition.
    pub problems: Vec<String>,
}

impl LakeCheck {
    /// Whether the lake holds every produced record exactly once, in sound files.
    pub fn exactly_once(&self) -> bool {
        self.duplicates == 0 && self.missing == 0 && self.extra == 0 && self.problems.is_empty()
    }
}

impl LakeWatch {
    /// Looks at every `.parquet` file under `root`, reading the new and changed ones.
    pub fn poll_dir(&mut self, root: &Path) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let mut present = std::collections::BTreeSet::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "parquet") {
                    continue;
                }
                let key = path.strip_prefix(root)?.to_string_lossy().into_owned();
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                let stamp = (meta.len(), meta.modified()?, meta.ino());
                present.insert(key.clone());
                if self.stamps.get(&key) == Some(&stamp) {
                    continue;
                }
                let file = match LakeFile::read(&path) {
                    Ok(file) => file,
                    // Gone between the listing and the read: the next poll sees what happened.
                    Err(e)
                        if e.downcast_ref::<std::io::Error>()
                            .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
                    {
                        present.remove(&key);
                        continue;
                    }
                    Err(e) => {
                        self.unreadable.insert(key.clone(), format!("{e:#}"));
                        continue;
                    }
                };
                self.stamps.insert(key.clone(), stamp);
                if let Some(old) = self.files.get(&key)
                    && (old.size, old.hash) != (file.size, file.hash)
                {
                    self.overwritten.push((
                        key.clone(),
                        (old.size, old.hash),
                        (file.size, file.hash),
                    ));
                }
                self.files.insert(key, file);
            }
        }
        let gone: Vec<String> = self
            .files
            .keys()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.files.remove(&key);
            self.stamps.remove(&key);
            self.deleted.push(key);
        }
        Ok(())
    }

    /// Rows in the lake, duplicates included.
    pub fn row_count(&self) -> usize {
        self.files.values().map(|f| f.rows.len()).sum()
    }

    /// Compares the lake of `topic` with the `produced` records (partition, offset): each once,
    /// in files whose names, footers and offset ranges agree and that were never overwritten.
    pub fn check_exactly_once(&self, topic: &str, produced: &[(i32, i64)]) -> Result<LakeCheck> {
        use std::collections::BTreeSet;
        let mut problems = Vec::new();
        for (key, before, after) in &self.overwritten {
            problems.push(format!("{key} overwritten: {before:?} -> {after:?}"));
        }
        for key in &self.deleted {
            problems.push(format!("{key} deleted"));
        }
        for (key, error) in &self.unreadable {
            problems.push(format!("{key} unreadable: {error}"));
        }
        let mut all: Vec<(i32, i64)> = Vec::new();
        let mut ranges: BTreeMap<i64, Vec<(i64, i64, &str)>> = BTreeMap::new();
        for (key, file) in &self.files {
            let partition = file.meta_i64("tributary.partition")?;
            let first = file.meta_i64("tributary.offset.first")?;
            let last = file.meta_i64("tributary.offset.last")?;
            let schema_id = file.meta_i64("tributary.schema.id")?;
            if file.meta.get("tributary.topic").map(String::as_str) != Some(topic) {
                problems.push(format!("{key}: footer topic is not {topic}"));
            }
            let offsets: Vec<i64> = file.rows.iter().map(|r| r.offset).collect();
            if offsets.is_empty() {
                problems.push(format!("{key} holds no row"));
            }
            if !offsets.windows(2).all(|w| w[0] < w[1]) {
                problems.push(format!("{key}: offsets not increasing"));
            }
            if (offsets.first(), offsets.last()) != (Some(&first), Some(&last)) {
                problems.push(format!(
                    "{key}: footer offsets {first}..={last} disagree with the rows"
                ));
            }
            if file
                .rows
                .iter()
                .any(|r| i64::from(r.partition) != partition || i64::from(r.schema_id) != schema_id)
            {
                problems.push(format!(
                    "{key}: rows of another partition or schema than its footer's"
                ));
            }
            if !key.ends_with(&format!("/{topic}+{partition}+{first}.parquet")) {
                problems.push(format!(
                    "{key} is not named after its partition and first offset"
                ));
            }
            ranges
                .entry(partition)
                .or_default()
                .push((first, last, key.as_str()));
            all.extend(file.rows.iter().map(|r| (r.partition, r.offset)));
        }
        for (partition, list) in &mut ranges {
            list.sort();
            for w in list.windows(2) {
                if w[0].1 >= w[1].0 {
                    problems.push(format!(
                        "partition {partition}: {} ({}..={}) overlaps {} ({}..={})",
                        w[0].2, w[0].0, w[0].1, w[1].2, w[1].0, w[1].1
                    ));
                }
            }
        }
        let distinct: BTreeSet<(i32, i64)> = all.iter().copied().collect();
        let expected: BTreeSet<(i32, i64)> = produced.iter().copied().collect();
        Ok(LakeCheck {
            rows: all.len(),
            duplicates: all.len() - distinct.len(),
            missing: expected.difference(&distinct).count(),
            extra: distinct.difference(&expected).count(),
            problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_handed_out_once_per_process() -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        // Far more than the birthday bound of 20,000 random ports (about 170 draws).
        for _ in 0..2_000 {
            let port = free_port()?;
            assert!(seen.insert(port), "port {port} handed out twice");
        }
        Ok(())
    }
}
