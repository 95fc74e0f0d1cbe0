//! A TCP proxy that injects faults between a client and an HTTP server: the fault suite's
//! object-store outage (docs/reliability.md) puts it in front of moto's S3 server.
//!
//! While it passes traffic, connections are relayed both ways. When a fault is set, the live
//! connections are cut (an HTTP client's pooled keep-alive connections would otherwise dodge
//! it), and each new connection meets the fault: an HTTP 500 answer, a reset, or a stall.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use rand::SeedableRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The fault suite's random schedule: seeded from `TRIBUTARY_FAULT_SEED` when set (to replay a
/// failed run), else at random; the seed is returned so that the test prints it.
pub fn fault_rng() -> Result<(u64, rand::rngs::StdRng)> {
    let seed: u64 = match std::env::var("TRIBUTARY_FAULT_SEED") {
        Ok(s) => s.parse().context("TRIBUTARY_FAULT_SEED")?,
        Err(_) => rand::random(),
    };
    Ok((seed, rand::rngs::StdRng::seed_from_u64(seed)))
}

/// What the proxy does to connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Relay traffic.
    Pass,
    /// Read the request, answer `500 Internal Server Error` (an S3 `InternalError`), close.
    ServerError,
    /// Reset the connection at once.
    Reset,
    /// Accept, then answer nothing for this long before closing.
    Stall(Duration),
}

/// How many connections met each fault.
#[derive(Debug, Default)]
pub struct FaultCounts {
    /// Connections relayed.
    pub passed: AtomicU64,
    /// Live connections cut when a fault was set.
    pub cut: AtomicU64,
    /// Requests answered 500.
    pub server_errors: AtomicU64,
    /// Connections reset.
    pub resets: AtomicU64,
    /// Connections stalled.
    pub stalls: AtomicU64,
}

impl FaultCounts {
    /// `passed, cut, 500s, resets, stalls` as text.
    pub fn summary(&self) -> String {
        format!(
            "{} connections relayed, {} cut, {} answered 500, {} reset, {} stalled",
            self.passed.load(Ordering::Relaxed),
            self.cut.load(Ordering::Relaxed),
            self.server_errors.load(Ordering::Relaxed),
            self.resets.load(Ordering::Relaxed),
            self.stalls.load(Ordering::Relaxed)
        )
    }
}

/// The proxy; it stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    mode: watch::Sender<Fault>,
    task: tokio::task::JoinHandle<()>,
    /// What happened to the connections so far.
    pub counts: Arc<FaultCounts>,
}

impl FaultProxy {
    /// Listens on a free loopback port and relays to `upstream` (a loopback port).
    pub async fn start(upstream: u16) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the fault proxy")?;
        let port = listener.local_addr()?.port();
        let (mode, _) = watch::channel(Fault::Pass);
        let counts = Arc::new(FaultCounts::default());
        let task = tokio::spawn({
            let (mode, counts) = (mode.clone(), counts.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(serve(client, upstream, mode.subscribe(), counts.clone()));
                }
            }
        });
        Ok(Self {
            port,
            mode,
            task,
            counts,
        })
    }

    /// `http://127.0.0.1:<port>`: the endpoint clients use instead of the server's.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// From now on, `fault` (live connections are cut unless it is [`Fault::Pass`]).
    pub fn set(&self, fault: Fault) {
        self.mode.send_replace(fault);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One client connection, under the fault set when it arrived.
async fn serve(
    mut client: TcpStream,
    upstream: u16,
    mut mode: watch::Receiver<Fault>,
    counts: Arc<FaultCounts>,
) {
    let fault = *mode.borrow_and_update();
    match fault {
        Fault::Pass => {
            let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                reset(client);
                return;
            };
            counts.passed.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                () = fault_set(&mut mode) => {
                    counts.cut.fetch_add(1, Ordering::Relaxed);
                    reset(client);
                }
            }
        }
        Fault::ServerError => {
            counts.server_errors.fetch_add(1, Ordering::Relaxed);
            // Read the request (head and body) so that the answer, not a reset, reaches the
            // client; give up on a slow or odd one.
            let _ = tokio::time::timeout(Duration::from_secs(5), read_request(&mut client)).await;
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code>\
                        <Message>injected by the fault proxy</Message></Error>";
            let answer = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(answer.as_bytes()).await;
            let _ = client.shutdown().await;
        }
        Fault::Reset => {
            counts.resets.fetch_add(1, Ordering::Relaxed);
            reset(client);
        }
        Fault::Stall(how_long) => {
            counts.stalls.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(how_long).await;
            drop(client);
        }
    }
}

/// Waits until a fault is set (forever if the proxy goes away).
async fn fault_set(mode: &mut watch::Receiver<Fault>) {
    while mode.changed().await.is_ok() {
        if *mode.borrow_and_update() != Fault::Pass {
            return;
        }
    }
    std::future::pending::<()>().await;
}

/// Closes with a TCP reset (SO_LINGER 0) rather than an orderly close.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Reads one HTTP/1.1 request: its head, then `Content-Length` bytes of body.
async fn read_request(client: &mut TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        if client.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let length: u64 = String::from_utf8_lossy(&head)
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    tokio::io::copy(&mut client.take(length), &mut tokio::io::sink()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers every request `200 ok`.
    async fn upstream() -> Result<u16> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    while read_request(&mut conn).await.is_ok() {
                        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if conn.write_all(ok.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(port)
    }

    #[tokio::test]
    async fn relays_then_injects_each_fault() -> Result<()> {
        let proxy = FaultProxy::start(upstream().await?).await?;
        let url = format!("{}/bucket/key", proxy.endpoint());
        // No pooled connections: each request meets the fault set when it is sent.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(0)
            .build()?;
        let put = || client.put(&url).body("payload").send();
        assert_eq!(put().await?.status(), 200);

        proxy.set(Fault::ServerError);
        assert_eq!(put().await?.status(), 500);
        proxy.set(Fault::Reset);
        assert!(put().await.is_err(), "a reset connection gives no answer");
        proxy.set(Fault::Stall(Duration::from_secs(5)));
        assert!(
            put().await.is_err_and(|e| e.is_timeout()),
            "a stalled connection times out"
        );
        proxy.set(Fault::Pass);
        assert_eq!(put().await?.status(), 200);
        let counts = &proxy.counts;
        assert_eq!(counts.server_errors.load(Ordering::Relaxed), 1);
        assert!(counts.resets.load(Ordering::Relaxed) >= 1);
        assert_eq!(counts.stalls.load(Ordering::Relaxed), 1);
        Ok(())
    }
}
