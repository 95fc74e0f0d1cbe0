//! `tributary __watchdog -- <program> <args>`: how `tributary up` starts each process of the
//! stack. The watchdog runs the program and stops it (SIGTERM, then SIGKILL after a grace
//! period) when it is told to stop (SIGTERM or SIGINT) or when its standard input closes, which
//! happens when `tributary up` ends in any way, `kill -9` included: the stack never outlives
//! the command that started it. It exits with the program's exit code.

use std::ffi::OsString;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};

/// How long the program has to exit after SIGTERM.
const GRACE: Duration = Duration::from_secs(60);

/// Runs the watched program until it exits or the watchdog is told to stop.
pub(crate) async fn run(command: &[OsString]) -> Result<ExitCode> {
    let (program, args) = command.split_first().context("no program to watch")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", program.to_string_lossy()))?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let parent_gone = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::select! {
        status = child.wait() => return Ok(code(status.context("wait for the program")?)),
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
        () = parent_gone => {}
    }
    if let Some(pid) = child.id() {
        signal_process("-TERM", &pid.to_string()).await;
    }
    match tokio::time::timeout(GRACE, child.wait()).await {
        Ok(status) => Ok(code(status.context("wait for the program")?)),
        Err(_) => {
            let _ = child.kill().await;
            Ok(ExitCode::from(1))
        }
    }
}

/// Sends a signal (`-TERM`, `-KILL`) to a process, or to a process group given as `-<pgid>`,
/// with the `kill` command: std has no kill(2) with a signal, and unsafe code is forbidden here.
pub(crate) async fn signal_process(signal: &str, target: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

fn code(status: std::process::ExitStatus) -> ExitCode {
    match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1).max(1)),
        None => ExitCode::from(1),
    }
}
