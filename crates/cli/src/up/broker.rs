//! The local broker: Tansu with its SQLite storage engine (the default, no JVM needed), or
//! Apache Kafka as one KRaft node (broker and controller) started by the `kafka-local` launcher
//! of `deploy/local/install-kafka.sh`. Each keeps its data in its own folder of the data folder,
//! and the data folder remembers which broker it belongs to.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tributary_core::bus::{BrokerInspector, KafkaConfig};

use super::plan::{Layout, Ports};
use super::process::{Process, Spec, is_executable, on_path, wait_for_port};
use crate::usage;

/// The Tansu version the stack is tested with (integration-tests/run.sh installs it).
pub(crate) const TANSU_VERSION: &str = "0.6.0";

/// The Apache Kafka version `deploy/local/install-kafka.sh` installs: `<kafka.version>` of
/// `deploy/local/kafka/pom.xml` (a test checks that they agree).
pub(crate) const KAFKA_VERSION: &str = "4.1.1";

/// How long the broker may take to listen, then again to answer metadata requests with a
/// broker (Apache Kafka takes 4-8 s on an idle 2-core machine, a JVM start on a loaded one more).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Which broker `tributary up` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum BrokerKind {
    /// Tansu with SQLite storage: the embedded default.
    #[default]
    Tansu,
    /// Apache Kafka, one KRaft node (broker and controller).
    Kafka,
}

impl BrokerKind {
    /// `tansu` or `kafka`, as `--broker` spells it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Tansu => "tansu",
            Self::Kafka => "kafka",
        }
    }

    /// The broker and its version, for people.
    pub(crate) fn label(self) -> String {
        match self {
            Self::Tansu => format!("Tansu {TANSU_VERSION}"),
            Self::Kafka => format!("Apache Kafka {KAFKA_VERSION}"),
        }
    }

    /// The variable that names the broker's program when `--broker-bin` does not.
    fn env_var(self) -> &'static str {
        match self {
            Self::Tansu => "TANSU_BIN",
            Self::Kafka => "KAFKA_LAUNCHER",
        }
    }

    /// Where the install script puts the broker's program in the cache.
    fn cached(self) -> Option<PathBuf> {
        let cache = cache_dir()?;
        Some(match self {
            Self::Tansu => cache.join(format!("tansu-{TANSU_VERSION}/bin/tansu")),
            Self::Kafka => cache.join(format!("kafka-{KAFKA_VERSION}/bin/kafka-local")),
        })
    }

    fn install_hint(self) -> &'static str {
        match self {
            Self::Tansu => {
                "install it with `bash deploy/local/install-tansu.sh` (cargo install tansu \
                 --locked --version 0.6.0 --features libsql, about 8 minutes on 2 cores, once), \
                 or run `bash deploy/local/up.sh`, which installs what is missing"
            }
            Self::Kafka => {
                "install it with `bash deploy/local/install-kafka.sh` (its jars from Maven \
                 Central, once; it needs Java 17+ and installs Maven and a JRE when missing), \
                 or run `bash deploy/local/up.sh --broker kafka`, which installs what is missing"
            }
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "tansu" => Some(Self::Tansu),
            "kafka" => Some(Self::Kafka),
            _ => None,
        }
    }
}

/// The cache the install scripts use: `TRIBUTARY_CACHE`, else `~/.cache/tributary`.
fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("TRIBUTARY_CACHE") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => Some(PathBuf::from(std::env::var_os("HOME")?).join(".cache/tributary")),
    }
}

/// The broker's program: `--broker-bin`, else the variable of the broker (`TANSU_BIN`,
/// `KAFKA_LAUNCHER`), else (Tansu) `tansu` on `PATH`, else the cached install. A usage error
/// saying how to install it when there is none.
pub(crate) fn find(kind: BrokerKind, given: Option<&Path>) -> Result<PathBuf> {
    let from_env = std::env::var_os(kind.env_var())
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let (source, path) = match (given, from_env) {
        (Some(path), _) => ("--broker-bin", Some(path.to_path_buf())),
        (None, Some(path)) => (kind.env_var(), Some(path)),
        (None, None) => ("", None),
    };
    if let Some(path) = path {
        if is_executable(&path) {
            return Ok(path);
        }
        return Err(usage(format!(
            "{source} {}: not an executable file (the {} {}); {}",
            path.display(),
            kind.label(),
            match kind {
                BrokerKind::Tansu => "binary",
                BrokerKind::Kafka => "launcher kafka-local",
            },
            kind.install_hint()
        )));
    }
    if kind == BrokerKind::Tansu
        && let Some(path) = on_path("tansu")
    {
        return Ok(path);
    }
    if let Some(path) = kind.cached().filter(|p| is_executable(p)) {
        return Ok(path);
    }
    let cached = kind
        .cached()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "~/.cache/tributary".into());
    Err(usage(format!(
        "the broker ({}) is not installed (looked at --broker-bin, {}{} and {cached}); {}",
        kind.label(),
        kind.env_var(),
        if kind == BrokerKind::Tansu {
            ", PATH"
        } else {
            ""
        },
        kind.install_hint()
    )))
}

/// Makes sure the data folder belongs to `kind`: a folder remembers its broker in
/// `broker-kind` (written at the first start; for folders older than that file, a Tansu
/// database or a Kafka storage folder says it). A folder of the other broker is refused: its
/// lake, consumer offsets and demo progress describe topics the other broker does not have.
pub(crate) fn claim(layout: &Layout, kind: BrokerKind) -> Result<()> {
    let file = layout.broker_kind_file();
    let recorded = match std::fs::read_to_string(&file) {
        Ok(text) => Some(BrokerKind::parse(&text).ok_or_else(|| {
            usage(format!(
                "{}: expected `tansu` or `kafka`, found {:?}",
                file.display(),
                text.trim()
            ))
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tansu = layout.tansu().join("tansu.db").exists();
            let kafka = layout.kafka().join("data/meta.properties").exists();
            match (tansu, kafka) {
                (true, false) => Some(BrokerKind::Tansu),
                (false, true) => Some(BrokerKind::Kafka),
                (false, false) => None,
                (true, true) => {
                    return Err(usage(format!(
                        "the data folder {} holds the data of both brokers ({} and {}); \
                         give another --data folder",
                        layout.data.display(),
                        layout.tansu().display(),
                        layout.kafka().display()
                    )));
                }
            }
        }
        Err(e) => return Err(e).with_context(|| format!("read {}", file.display())),
    };
    if let Some(recorded) = recorded
        && recorded != kind
    {
        return Err(usage(format!(
            "the data folder {} belongs to {} (see {}): its lake, consumer offsets and demo \
             progress go with that broker's topics; run `tributary up --broker {}` on it, or \
             give another --data folder for {} (delete the folder to start afresh)",
            layout.data.display(),
            recorded.label(),
            file.display(),
            recorded.name(),
            kind.label()
        )));
    }
    std::fs::write(&file, format!("{}\n", kind.name()))
        .with_context(|| format!("write {}", file.display()))?;
    Ok(())
}

/// Starts the broker on the stack's ports with its data in the data folder, and waits until it
/// answers metadata requests with a broker.
pub(crate) async fn start(
    kind: BrokerKind,
    program: &Path,
    layout: &Layout,
    ports: &Ports,
    log: PathBuf,
) -> Result<Process> {
    let url = format!("tcp://127.0.0.1:{}", ports.broker);
    let (dir, args, env): (PathBuf, Vec<String>, _) = match kind {
        BrokerKind::Tansu => (
            layout.tansu(),
            vec![
                "broker".into(),
                "--listener-url".into(),
                url.clone(),
                "--advertised-listener-url".into(),
                url,
                // The SQLite path is relative to the working directory.
                "--storage-engine".into(),
                "sqlite://tansu.db".into(),
            ],
            vec![("RUST_LOG", "warn".into())],
        ),
        BrokerKind::Kafka => {
            let controller = ports
                .controller
                .context("no controller port was picked for apache kafka")?;
            // kafka-local DIR PORT CONTROLLER_PORT: the data in DIR/data, KAFKA_HEAP (ours,
            // when set) bounds the heap.
            (
                layout.kafka(),
                vec![
                    layout.kafka().display().to_string(),
                    ports.broker.to_string(),
                    controller.to_string(),
                ],
                Vec::new(),
            )
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let mut process = Process::spawn(Spec {
        name: "broker",
        program,
        args: args.into_iter().map(Into::into).collect(),
        cwd: Some(&dir),
        env,
        log,
        // The JVM exits with 143 (128 + SIGTERM) once its shutdown hook stopped Kafka cleanly.
        sigterm_exit_is_clean: kind == BrokerKind::Kafka,
    })?;
    wait_for_port(&mut process, ports.broker, READY_TIMEOUT).await?;
    let kafka = KafkaConfig::new(ports.bootstrap());
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        process.check_running()?;
        // A new client each time: one kept would back its reconnections off.
        let answer = match BrokerInspector::new(&kafka) {
            Ok(inspector) => inspector
                .with_timeout(Duration::from_secs(2))
                .cluster()
                .await
                .map(|cluster| cluster.brokers),
            Err(e) => Err(e),
        }
        .map_err(crate::kafka_error);
        match answer {
            Ok(brokers) if brokers > 0 => return Ok(process),
            _ if tokio::time::Instant::now() > deadline => bail!(
                "the broker ({}) does not answer metadata requests with a broker after {} s \
                 ({:?}); see {}",
                kind.label(),
                READY_TIMEOUT.as_secs(),
                answer.err(),
                process.log.display()
            ),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn kafka_version_is_the_poms() {
        let pom = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/kafka/pom.xml");
        let text = std::fs::read_to_string(&pom).unwrap();
        let version = text
            .split_once("<kafka.version>")
            .and_then(|(_, rest)| rest.split_once("</kafka.version>"))
            .map(|(v, _)| v.trim())
            .unwrap();
        assert_eq!(version, KAFKA_VERSION, "{}", pom.display());
    }

    #[test]
    fn a_folder_keeps_its_broker() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        claim(&layout, BrokerKind::Kafka).unwrap();
        claim(&layout, BrokerKind::Kafka).unwrap();
        let refused = claim(&layout, BrokerKind::Tansu).unwrap_err();
        assert!(
            refused.is::<crate::Usage>() && refused.to_string().contains("--broker kafka"),
            "{refused}"
        );
    }

    #[test]
    fn an_older_folder_is_known_by_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        std::fs::create_dir_all(layout.tansu()).unwrap();
        std::fs::write(layout.tansu().join("tansu.db"), "").unwrap();
        let refused = claim(&layout, BrokerKind::Kafka).unwrap_err();
        assert!(refused.to_string().contains("--broker tansu"), "{refused}");
        claim(&layout, BrokerKind::Tansu).unwrap();
        assert_eq!(
            std::fs::read_to_string(layout.broker_kind_file()).unwrap(),
            "tansu\n"
        );
    }

    #[test]
    fn a_missing_broker_is_a_usage_error_saying_how_to_install_it() {
        let refused = find(
            BrokerKind::Kafka,
            Some(Path::new("/nonexistent/kafka-local")),
        )
        .unwrap_err();
        assert!(refused.is::<crate::Usage>());
        assert!(
            refused
                .to_string()
                .contains("deploy/local/install-kafka.sh"),
            "{refused}"
        );
    }
}
