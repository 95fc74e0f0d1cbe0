//! The local broker: Tansu with its SQLite storage engine, the database in the data folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tributary_core::bus::KafkaConfig;

use super::process::{Process, Spec, is_executable, on_path, wait_for_port};
use crate::usage;

/// The Tansu version the stack is tested with (integration-tests/run.sh installs it).
pub(crate) const TANSU_VERSION: &str = "0.6.0";

/// Where `deploy/local/install-tansu.sh` installs Tansu: `~/.cache/tributary/tansu-<version>`.
pub(crate) fn cached_tansu() -> Option<PathBuf> {
    let cache = match std::env::var_os("TRIBUTARY_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/tributary"),
    };
    Some(cache.join(format!("tansu-{TANSU_VERSION}/bin/tansu")))
}

/// The Tansu binary: `--broker-bin` (or `TANSU_BIN`), else `tansu` on `PATH`, else the cached
/// install. A usage error saying how to install it when there is none.
pub(crate) fn find_tansu(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        if is_executable(path) {
            return Ok(path.to_path_buf());
        }
        return Err(usage(format!(
            "--broker-bin/TANSU_BIN {}: not an executable file; {}",
            path.display(),
            INSTALL_HINT
        )));
    }
    if let Some(path) = on_path("tansu") {
        return Ok(path);
    }
    if let Some(path) = cached_tansu().filter(|p| is_executable(p)) {
        return Ok(path);
    }
    Err(usage(format!(
        "the Tansu broker is not installed (looked at --broker-bin, TANSU_BIN, PATH and {}); {}",
        cached_tansu()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "~/.cache/tributary".into()),
        INSTALL_HINT
    )))
}

const INSTALL_HINT: &str = "install it with `bash deploy/local/install-tansu.sh` (cargo install \
tansu --locked --version 0.6.0 --features libsql, about 8 minutes on 2 cores, once), or run \
`bash deploy/local/up.sh`, which installs what is missing";

/// Starts Tansu on `port` with its database `tansu.db` in `dir`, and waits until it answers
/// metadata requests.
pub(crate) async fn start(binary: &Path, dir: &Path, port: u16, log: PathBuf) -> Result<Process> {
    let url = format!("tcp://127.0.0.1:{port}");
    let mut process = Process::spawn(Spec {
        name: "broker",
        program: binary,
        args: [
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            // The SQLite path is relative to the working directory.
            "--storage-engine",
            "sqlite://tansu.db",
        ]
        .iter()
        .map(Into::into)
        .collect(),
        cwd: Some(dir),
        env: vec![("RUST_LOG", "warn".into())],
        log,
    })?;
    wait_for_port(&mut process, port, Duration::from_secs(60)).await?;
    let kafka = KafkaConfig::new(format!("127.0.0.1:{port}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        process.check_running()?;
        let answer = tokio::task::spawn_blocking({
            let kafka = kafka.clone();
            move || -> Result<usize> {
                let consumer: BaseConsumer = kafka.client_config().create()?;
                let metadata = consumer.fetch_metadata(None, Duration::from_secs(2))?;
                Ok(metadata.brokers().len())
            }
        })
        .await?;
        match answer {
            Ok(brokers) if brokers > 0 => return Ok(process),
            _ if tokio::time::Instant::now() > deadline => bail!(
                "the broker does not answer metadata requests after 60 s ({:?}); see {}",
                answer.err(),
                process.log.display()
            ),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
