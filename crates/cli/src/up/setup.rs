//! What a run needs before anything starts: the services' binaries, the stack's secrets, the
//! data folder's lock and this command's log.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::plan::{Layout, Service};
use super::process;
use crate::usage;

/// The folder holding the service binaries: this executable's (cargo builds them side by side).
pub(super) fn service_binaries() -> Result<PathBuf> {
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
pub(super) fn secret_file(path: &Path, prefix: &str) -> Result<String> {
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
pub(super) struct PidFile(PathBuf);

impl PidFile {
    pub(super) fn take(path: &Path) -> Result<Self> {
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
pub(super) fn init_logs(layout: &Layout) -> Result<()> {
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
