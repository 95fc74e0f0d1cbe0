//! Small helpers every harness uses: unique names, test logs, free ports, waiting for a port,
//! killing a child process.

use std::net::TcpListener;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::Rng;

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
pub(crate) fn free_port() -> Result<u16> {
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

pub(crate) fn wait_for_port(
    port: u16,
    child: &mut Child,
    what: &str,
    timeout: Duration,
) -> Result<()> {
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

/// SIGKILLs a child process, if running, and reaps it.
pub(crate) fn kill_child(child: &mut Option<Child>) -> Result<()> {
    if let Some(mut child) = child.take() {
        child.kill()?;
        child.wait()?;
    }
    Ok(())
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
