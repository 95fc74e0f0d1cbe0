//! Logs, metrics and the admin HTTP server every service runs.
//!
//! Logs go through `tracing` as text or JSON lines. Metrics are Prometheus counters and histograms
//! registered on one [`prometheus_client::registry::Registry`] per process (prefix `tributary`),
//! served by [`AdminServer`] at `/metrics` beside `/healthz` (the process is alive) and `/readyz`
//! (the service is ready for traffic, set through [`Readiness`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Telemetry settings (`[telemetry]` in a service's configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Log line format: `text` for people, `json` for log collectors.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Log filter in `RUST_LOG` syntax, e.g. `info` or `info,tributary_core::bus=debug`.
    #[serde(default = "default_log_filter")]
    pub log_filter: String,
    /// Address of the admin HTTP server (`/metrics`, `/healthz`, `/readyz`).
    #[serde(default = "default_admin_addr")]
    pub admin_addr: SocketAddr,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::default(),
            log_filter: default_log_filter(),
            admin_addr: default_admin_addr(),
        }
    }
}

fn default_log_filter() -> String {
    "info".to_string()
}

fn default_admin_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9090))
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A telemetry error.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("invalid log filter {filter:?}: {message}")]
    Filter {
        /// The filter given.
        filter: String,
        /// Why it does not parse.
        message: String,
    },
    /// The admin server could not bind its address.
    #[error("cannot bind admin server to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The admin server failed while serving.
    #[error("admin server failed: {0}")]
    Serve(std::io::Error),
}

/// Installs the global tracing subscriber. A second call (tests) keeps the first subscriber.
pub fn init_tracing(config: &TelemetryConfig) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_new(&config.log_filter).map_err(|e| TelemetryError::Filter {
        filter: config.log_filter.clone(),
        message: e.to_string(),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    // try_init fails only when a subscriber is already installed, which is fine.
    let _ = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}

/// A new metrics registry; every metric name gets the `tributary_` prefix.
pub fn new_registry() -> Registry {
    Registry::with_prefix("tributary")
}

/// Whether the service is ready for traffic; served at `/readyz`. Starts not ready.
///
/// Besides the switch a service turns on once it runs, parts of a service report problems that
/// make it unready while they last (the lake refusing writes, say): `/readyz` answers 503 with
/// each problem's reason, and ready again once every part reported it recovered.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<ReadinessState>);

#[derive(Debug, Default)]
struct ReadinessState {
    ready: AtomicBool,
    /// Problems by the part that reported them.
    problems: Mutex<BTreeMap<String, String>>,
}

impl Readiness {
    /// Marks the service ready (or not).
    pub fn set(&self, ready: bool) {
        self.0.ready.store(ready, Ordering::Release);
    }

    /// Whether the service is ready: switched on, and no part reports a problem.
    pub fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::Acquire) && self.problems().is_empty()
    }

    /// `part` has a problem (replacing the one it reported before): unready until it recovers.
    pub fn fail(&self, part: &str, reason: impl Into<String>) {
        self.problems_mut().insert(part.to_string(), reason.into());
    }

    /// `part` works again.
    pub fn recover(&self, part: &str) {
        // Most calls find nothing to remove: take the lock only to look.
        let mut problems = self.problems_mut();
        if !problems.is_empty() {
            problems.remove(part);
        }
    }

    /// Each part's problem, as `part: reason`.
    pub fn problems(&self) -> Vec<String> {
        self.problems_mut()
            .iter()
            .map(|(part, reason)| format!("{part}: {reason}"))
            .collect()
    }

    fn problems_mut(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        // A panic while holding the lock leaves the map whole: go on with it.
        self.0
            .problems
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// The admin HTTP server: `/metrics`, `/healthz`, `/readyz`.
#[derive(Debug)]
pub struct AdminServer {
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    readiness: Readiness,
}

impl AdminServer {
    /// Binds the admin address (port 0 picks a free port; see [`AdminServer::local_addr`]).
    pub async fn bind(
        addr: SocketAddr,
        registry: Arc<Registry>,
        readiness: Readiness,
    ) -> Result<Self, TelemetryError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| TelemetryError::Bind { addr, source })?;
        Ok(Self {
            listener,
            registry,
            readiness,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), TelemetryError> {
        let state = AdminState {
            registry: self.registry,
            readiness: self.readiness,
        };
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .with_state(state);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(TelemetryError::Serve)
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics").into_response(),
    }
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let problems = state.readiness.problems();
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready".to_string())
    } else if problems.is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", problems.join("; ")),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let mut registry = new_registry();
        let counter: Counter = Counter::default();
        registry.register("test_records", "records seen", counter.clone());
        counter.inc_by(7);
        let readiness = Readiness::default();
        let server = AdminServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(registry),
            readiness.clone(),
        )
        .await
        .unwrap();
        let addr = server.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.serve(shutdown.clone()));
        let client = reqwest::Client::new();
        let base = format!("http://{addr}");

        let metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(metrics.status(), 200);
        let text = metrics.text().await.unwrap();
        assert!(text.contains("tributary_test_records_total 7"), "{text}");

        assert_eq!(
            client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .unwrap()
                .status(),
            503
        );
        readiness.set(true);
        assert_eq!(
            client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );

        // A part's problem makes the service unready, with the reason, until it recovers.
        readiness.fail("lake", "writing a file failed: No space left on device");
        let answer = client.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(answer.status(), 503);
        assert_eq!(
            answer.text().await.unwrap(),
            "not ready: lake: writing a file failed: No space left on device"
        );
        readiness.recover("registry");
        assert!(
            !readiness.is_ready(),
            "another part's recovery clears nothing"
        );
        readiness.recover("lake");
        assert_eq!(
            client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );

        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    #[test]
    fn rejects_a_bad_log_filter() {
        let config = TelemetryConfig {
            log_filter: "info,[=bad".into(),
            ..Default::default()
        };
        assert!(matches!(
            init_tracing(&config),
            Err(TelemetryError::Filter { .. })
        ));
    }
}
