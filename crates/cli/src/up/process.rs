//! The stack's child processes: each in its own process group (so that Ctrl-C in the terminal
//! reaches `tributary up` alone, which then stops them in order), its output in a log file.
//! Each runs under `tributary __watchdog` (see [`super::watchdog`]) holding a pipe from us as
//! its standard input: when `tributary up` ends in any way, `kill -9` included, the pipe closes
//! and the watchdog stops the process.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, ChildStdin, Command};

/// How a process ended when it was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// It exited with code 0 after SIGTERM.
    Clean,
    /// It exited with another status after SIGTERM.
    Failed(ExitStatus),
    /// It did not exit within the grace period and was killed.
    Killed,
    /// It had exited before it was asked to.
    Exited(ExitStatus),
}

/// A child process of the stack, killed if dropped while running.
#[derive(Debug)]
pub(crate) struct Process {
    /// What it is, for messages: `broker`, `ingest`, ...
    pub(crate) name: String,
    /// Its log file.
    pub(crate) log: PathBuf,
    child: Child,
    exited: Option<ExitStatus>,
    /// Whether exit code 143 after SIGTERM counts as a clean stop.
    sigterm_exit_is_clean: bool,
    /// The watchdog's standard input: closing it (dropping this) stops the process.
    _lifeline: Option<ChildStdin>,
}

/// What to start.
#[derive(Debug)]
pub(crate) struct Spec<'a> {
    pub(crate) name: &'a str,
    pub(crate) program: &'a Path,
    pub(crate) args: Vec<OsString>,
    pub(crate) cwd: Option<&'a Path>,
    pub(crate) env: Vec<(&'a str, OsString)>,
    pub(crate) log: PathBuf,
    /// Exit code 143 (128 + SIGTERM) after our SIGTERM is a clean stop: a JVM's exit code
    /// once its shutdown hooks ran (Apache Kafka).
    pub(crate) sigterm_exit_is_clean: bool,
}

impl Process {
    /// Starts a process, appending its output to its log file. `TRIBUTARY__*` variables of our
    /// environment are not passed on: the stack's configuration files say everything.
    pub(crate) fn spawn(spec: Spec<'_>) -> Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .with_context(|| format!("open {}", spec.log.display()))?;
        let me = std::env::current_exe().context("locate the tributary executable")?;
        let mut command = Command::new(me);
        command
            .arg("__watchdog")
            .arg("--")
            .arg(spec.program)
            .args(&spec.args)
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRIBUTARY__") {
                command.env_remove(key);
            }
        }
        for (key, value) in spec.env {
            command.env(key, value);
        }
        if let Some(dir) = spec.cwd {
            command.current_dir(dir);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("start {} ({})", spec.name, spec.program.display()))?;
        let lifeline = child.stdin.take();
        Ok(Self {
            name: spec.name.to_string(),
            log: spec.log,
            child,
            exited: None,
            sigterm_exit_is_clean: spec.sigterm_exit_is_clean,
            _lifeline: lifeline,
        })
    }

    /// Its exit status, if it has exited.
    pub(crate) fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exited = Some(status);
        }
        self.exited
    }

    /// Fails when the process has exited, naming its log.
    pub(crate) fn check_running(&mut self) -> Result<()> {
        match self.exit_status() {
            Some(status) => bail!(
                "{} exited with {status}; see {}",
                self.name,
                self.log.display()
            ),
            None => Ok(()),
        }
    }

    /// Sends SIGTERM and waits up to `grace` for the exit, then kills it.
    pub(crate) async fn stop(&mut self, grace: Duration) -> Stopped {
        if let Some(status) = self.exit_status() {
            return Stopped::Exited(status);
        }
        if let Some(pid) = self.child.id() {
            super::watchdog::signal_process("-TERM", &pid.to_string()).await;
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.exited = Some(status);
                if status.success() || (self.sigterm_exit_is_clean && status.code() == Some(143)) {
                    Stopped::Clean
                } else {
                    Stopped::Failed(status)
                }
            }
            Ok(Err(_)) | Err(_) => {
                // The whole group: the watchdog and the program it runs.
                if let Some(pid) = self.child.id() {
                    super::watchdog::signal_process("-KILL", &format!("-{pid}")).await;
                }
                let _ = self.child.kill().await;
                Stopped::Killed
            }
        }
    }
}

/// Waits until something accepts connections on `port`, failing if `process` exits first or
/// `timeout` passes.
pub(crate) async fn wait_for_port(
    process: &mut Process,
    port: u16,
    timeout: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        process.check_running()?;
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{} did not listen on port {port} within {timeout:?}; see {}",
                process.name,
                process.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An executable named `name` on `PATH`.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is an executable file.
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
