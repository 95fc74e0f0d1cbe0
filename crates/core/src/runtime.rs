//! The service runtime: the lifecycle every service shares, so that a service supplies only its
//! own parts (its metrics, its batch handler or HTTP routes, its extra tasks).
//!
//! # Lifecycle
//!
//! 1. **Set up** ([`Runtime::builder`]): a Prometheus registry (prefix `tributary`) and a
//!    [`Readiness`], not ready. [`RuntimeBuilder::with_kafka`] registers the [`BusMetrics`] and
//!    creates the service's one [`Producer`]. The service registers its own metrics on
//!    [`RuntimeBuilder::registry`]: the registry is frozen once the admin server serves it.
//! 2. **Start** ([`RuntimeBuilder::start`]): the admin server (`/metrics`, `/healthz`, `/readyz`)
//!    binds its address and serves; `/readyz` answers 503 until the service runs. The service
//!    finishes its own start (plans, restores state, binds its API) and hands work to the runtime:
//!    [`Runtime::spawn`] for a task, [`Runtime::spawn_http`] for an HTTP listener of its own
//!    (feature's lookup API), each under a name. Tasks take [`Runtime::shutdown`] to know when to
//!    stop.
//! 3. **Run**: one main part, which marks the service ready as it begins and runs until shutdown:
//!    [`Runtime::run_consumer`] (the consumer loop with the service's [`BatchHandler`]),
//!    [`Runtime::run_http`] (an HTTP API: ingest, the registry) or [`Runtime::run`] (any future).
//! 4. **Stop**, in this order, whether the main part ended on the shutdown signal or with an
//!    error:
//!    - the main part has ended: on SIGTERM the consumer loop finished the batch in hand, the
//!      handler's open work was finished ([`BatchHandler::finish`]) and the offsets committed; an
//!      HTTP server answered the requests in flight;
//!    - the service is no longer ready (`/readyz` answers 503), and [`Runtime::shutdown`] is
//!      cancelled (also when the main part failed without a signal); every spawned task is
//!      joined in the order spawned, within [`DEFAULT_STOP_TIMEOUT`] in all (then aborted). A task that failed, panicked or did not stop is logged and named in the
//!      error returned;
//!    - the producer is flushed, so what the tasks produced last is delivered too;
//!    - the admin server stops last: `/metrics` can be scraped until the end.
//!
//!    The main part's error comes first; else the tasks' failures (the admin server's among
//!    them); else a failed flush.
//!
//! A runtime dropped without running (a start step after [`RuntimeBuilder::start`] failed) stops
//! its admin server and signals its tasks to stop, without waiting for them.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, error};

use crate::bus::{
    BatchHandler, BusError, BusMetrics, ConsumerLoopConfig, KafkaConfig, LoopStats, Producer,
    run_consumer,
};
use crate::telemetry::{AdminServer, Readiness, TelemetryConfig, TelemetryError, new_registry};

/// How long the spawned tasks may take, in all, to stop once the main part has ended.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the producer may take to deliver what is still queued when the service stops.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// The name the admin server's task is reported under.
const ADMIN_TASK: &str = "admin server";

/// An error as tasks and main parts return it.
pub use crate::bus::BoxError;

/// An error of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Creating the Kafka producer failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The admin server could not bind its address.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// The main part (the consumer loop, the HTTP API) failed.
    #[error("{what}")]
    Main {
        /// What the main part is, e.g. `archive consumer` or `serve the api`.
        what: String,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
    /// Tasks failed, panicked or did not stop in time (each was logged when joined).
    #[error("task failed: {}", failures_text(.0))]
    Tasks(Vec<TaskFailure>),
    /// The producer did not deliver what was queued when the service stopped.
    #[error("flush the producer")]
    Flush(#[source] BusError),
    /// The consumer loop needs Kafka: the runtime was built without [`RuntimeBuilder::with_kafka`].
    #[error("the service runtime has no Kafka producer (RuntimeBuilder::with_kafka)")]
    NoKafka,
}

impl RuntimeError {
    /// The names of the tasks that failed, for [`RuntimeError::Tasks`] (else empty).
    pub fn failed_tasks(&self) -> Vec<&str> {
        match self {
            Self::Tasks(failures) => failures.iter().map(|f| f.name.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

fn failures_text(failures: &[TaskFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A task that failed, panicked or did not stop in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct TaskFailure {
    /// The name it was spawned under.
    pub name: String,
    /// Its error, its panic message, or that it was aborted.
    pub reason: String,
}

/// What a task may return: `()`, or a `Result` whose error is reported when the task is joined.
pub trait TaskOutput: Send + 'static {
    /// The outcome as a `Result`.
    fn into_result(self) -> Result<(), BoxError>;
}

impl TaskOutput for () {
    fn into_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: Into<BoxError> + Send + 'static> TaskOutput for Result<(), E> {
    fn into_result(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}

/// The Kafka side of a runtime: the settings, the one producer and the bus metrics.
#[derive(Debug, Clone)]
struct Bus {
    kafka: KafkaConfig,
    producer: Producer,
    metrics: BusMetrics,
}

/// A service runtime being set up: the service registers its metrics, then starts it. See the
/// [module documentation](self).
#[derive(Debug)]
pub struct RuntimeBuilder {
    service: String,
    admin_addr: SocketAddr,
    shutdown: CancellationToken,
    registry: Registry,
    bus: Option<Bus>,
}

impl RuntimeBuilder {
    /// Registers the [`BusMetrics`] and creates the producer (which connects on first use).
    pub fn with_kafka(mut self, kafka: &KafkaConfig) -> Result<Self, RuntimeError> {
        let metrics = BusMetrics::register(&mut self.registry);
        let producer = Producer::new(kafka, metrics.clone())?;
        self.bus = Some(Bus {
            kafka: kafka.clone(),
            producer,
            metrics,
        });
        Ok(self)
    }

    /// The metrics registry, for the service's own metrics.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Binds the admin server and starts serving it (not ready yet).
    pub async fn start(self) -> Result<Runtime, RuntimeError> {
        let readiness = Readiness::default();
        let admin =
            AdminServer::bind(self.admin_addr, Arc::new(self.registry), readiness.clone()).await?;
        let admin_addr = admin.local_addr();
        let admin_stop = CancellationToken::new();
        let admin_task = tokio::spawn(admin.serve(admin_stop.clone()));
        // The tasks' token: cancelled by the service's shutdown, or by the runtime once the main
        // part ended.
        let shutdown = self.shutdown.child_token();
        Ok(Runtime {
            service: self.service,
            shutdown: shutdown.clone(),
            readiness,
            bus: self.bus,
            tasks: Vec::new(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            admin_addr,
            admin_task: Some(admin_task),
            admin_stop: admin_stop.clone(),
            _drop_guards: [shutdown.drop_guard(), admin_stop.drop_guard()],
        })
    }
}

/// A started service: the admin server serving, the producer, the readiness and the tasks the
/// service spawned. See the [module documentation](self) for the lifecycle.
#[derive(Debug)]
pub struct Runtime {
    service: String,
    shutdown: CancellationToken,
    readiness: Readiness,
    bus: Option<Bus>,
    tasks: Vec<(String, JoinHandle<Result<(), BoxError>>)>,
    stop_timeout: Duration,
    admin_addr: Option<SocketAddr>,
    admin_task: Option<JoinHandle<Result<(), TelemetryError>>>,
    admin_stop: CancellationToken,
    /// Dropped without running: the tasks are told to stop and the admin server stops.
    _drop_guards: [DropGuard; 2],
}

impl Runtime {
    /// Sets up the runtime of `service` (its name in logs): the admin server will listen on
    /// `telemetry.admin_addr`; `shutdown` (SIGTERM, see [`crate::shutdown`]) stops it.
    pub fn builder(
        service: impl Into<String>,
        telemetry: &TelemetryConfig,
        shutdown: CancellationToken,
    ) -> RuntimeBuilder {
        RuntimeBuilder {
            service: service.into(),
            admin_addr: telemetry.admin_addr,
            shutdown,
            registry: new_registry(),
            bus: None,
        }
    }

    /// Address the admin server listens on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The producer (built [`RuntimeBuilder::with_kafka`]); flushed when the service stops.
    pub fn producer(&self) -> Result<&Producer, RuntimeError> {
        self.bus
            .as_ref()
            .map(|b| &b.producer)
            .ok_or(RuntimeError::NoKafka)
    }

    /// The service's readiness, served at `/readyz`: set once the main part runs; parts of the
    /// service report problems through it ([`Readiness::fail`]).
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Cancelled on the service's shutdown signal, or once the main part ended: tasks and
    /// handlers stop at it.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// How long the spawned tasks may take, in all, to stop once the main part ended
    /// ([`DEFAULT_STOP_TIMEOUT`] unless set).
    pub fn set_stop_timeout(&mut self, timeout: Duration) {
        self.stop_timeout = timeout;
    }

    /// Runs `task` until it ends; it is joined when the service stops, and its error, panic or
    /// failure to stop in time is reported under `name`. It should stop at [`Runtime::shutdown`].
    pub fn spawn<F>(&mut self, name: impl Into<String>, task: F)
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        let name = name.into();
        debug!(service = %self.service, task = %name, "task started");
        let handle = tokio::spawn(async move { task.await.into_result() });
        self.tasks.push((name, handle));
    }

    /// Serves `router` on `listener` as a task named `name`, until [`Runtime::shutdown`] (then
    /// the requests in flight are answered).
    pub fn spawn_http(
        &mut self,
        name: impl Into<String>,
        listener: TcpListener,
        router: axum::Router,
    ) {
        let shutdown = self.shutdown.clone();
        self.spawn(
            name,
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .into_future(),
        );
    }

    /// Runs the consumer loop with `handler` as the main part (ready as it begins), until
    /// shutdown or an error; then stops (see the [module documentation](self)). A loop error is
    /// reported as `<stage> consumer`.
    pub async fn run_consumer<H: BatchHandler>(
        self,
        config: ConsumerLoopConfig,
        handler: &mut H,
    ) -> Result<LoopStats, RuntimeError> {
        let what = format!("{} consumer", config.stage);
        let Some(bus) = self.bus.clone() else {
            return self
                .finish(what, Err::<LoopStats, _>(RuntimeError::NoKafka))
                .await;
        };
        self.readiness.set(true);
        let result = run_consumer(
            &bus.kafka,
            &config,
            &bus.producer,
            &bus.metrics,
            handler,
            self.shutdown.clone(),
        )
        .await;
        self.finish(what, result).await
    }

    /// Serves `router` on `listener` as the main part (ready as it begins) until shutdown, the
    /// requests in flight answered; then stops. An error is reported as `serve the <name>`.
    pub async fn run_http(
        self,
        name: &str,
        listener: TcpListener,
        router: axum::Router,
    ) -> Result<(), RuntimeError> {
        let shutdown = self.shutdown.clone();
        self.run(
            format!("serve the {name}"),
            axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()),
        )
        .await
    }

    /// Runs `main` as the main part (ready as it begins); then stops. `main` should end at
    /// [`Runtime::shutdown`]; its error is reported as `what`.
    pub async fn run<T, E>(
        self,
        what: impl Into<String>,
        main: impl IntoFuture<Output = Result<T, E>>,
    ) -> Result<T, RuntimeError>
    where
        E: Into<BoxError>,
    {
        self.readiness.set(true);
        let result = main.await;
        self.finish(what.into(), result).await
    }

    /// Stops the runtime after its main part ended with `result`.
    async fn finish<T, E: Into<BoxError>>(
        self,
        what: String,
        result: Result<T, E>,
    ) -> Result<T, RuntimeError> {
        let stopped = self.stop().await;
        match result {
            Ok(value) => stopped.map(|()| value),
            Err(e) => {
                if let Err(also) = stopped {
                    error!(error = %also, "stopping after the {what} failed");
                }
                Err(RuntimeError::Main {
                    what,
                    source: e.into(),
                })
            }
        }
    }

    /// Tasks, producer, admin server: see the module documentation.
    async fn stop(mut self) -> Result<(), RuntimeError> {
        self.readiness.set(false);
        self.shutdown.cancel();
        let tasks = std::mem::take(&mut self.tasks);
        debug!(service = %self.service, tasks = tasks.len(), "stopping: joining the tasks");
        let deadline = tokio::time::Instant::now() + self.stop_timeout;
        let mut failures = Vec::new();
        for (name, mut task) in tasks {
            let reason = match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(joined) => outcome(joined),
                Err(_) => {
                    task.abort();
                    Some(format!(
                        "did not stop within {} s of the shutdown; aborted",
                        self.stop_timeout.as_secs_f64()
                    ))
                }
            };
            if let Some(reason) = reason {
                error!(service = %self.service, task = %name, error = %reason, "task failed");
                failures.push(TaskFailure { name, reason });
            }
        }
        // What the tasks produced last is delivered too.
        let flushed = match &self.bus {
            Some(bus) => bus.producer.flush(FLUSH_TIMEOUT),
            None => Ok(()),
        };
        if let Err(e) = &flushed {
            error!(service = %self.service, error = %e, "flushing the producer failed");
        }
        self.admin_stop.cancel();
        if let Some(admin) = self.admin_task.take()
            && let Some(reason) = outcome(admin.await.map(|r| r.map_err(BoxError::from)))
        {
            error!(service = %self.service, task = ADMIN_TASK, error = %reason, "task failed");
            failures.push(TaskFailure {
                name: ADMIN_TASK.to_string(),
                reason,
            });
        }
        debug!(service = %self.service, "stopped");
        if !failures.is_empty() {
            return Err(RuntimeError::Tasks(failures));
        }
        flushed.map_err(RuntimeError::Flush)
    }
}

/// Why a joined task failed, or `None` when it ended well.
fn outcome(joined: Result<Result<(), BoxError>, JoinError>) -> Option<String> {
    match joined {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(error_chain(&*e)),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_string());
            Some(format!("panicked: {message}"))
        }
        Err(e) => Some(e.to_string()),
    }
}

/// An error and its causes, as `error: cause: cause`.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn telemetry() -> TelemetryConfig {
        TelemetryConfig {
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Default::default()
        }
    }

    /// A task's bug.
    fn bug(message: &str) {
        panic!("{message}")
    }

    async fn status(addr: SocketAddr, path: &str) -> Option<u16> {
        reqwest::get(format!("http://{addr}{path}"))
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    #[tokio::test]
    async fn not_ready_until_the_main_part_runs() {
        let shutdown = CancellationToken::new();
        let mut builder = Runtime::builder("test", &telemetry(), shutdown.clone());
        let counter = prometheus_client::metrics::counter::Counter::<u64>::default();
        builder
            .registry()
            .register("test_things", "things", counter.clone());
        counter.inc();
        let runtime = builder.start().await.unwrap();
        let addr = runtime.admin_addr().unwrap();
        let readiness = runtime.readiness();
        assert_eq!(status(addr, "/healthz").await, Some(200));
        assert_eq!(status(addr, "/readyz").await, Some(503));
        assert!(!readiness.is_ready());
        let metrics = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("tributary_test_things_total 1"),
            "{metrics}"
        );

        let token = runtime.shutdown();
        let main = async move {
            assert_eq!(
                status(addr, "/readyz").await,
                Some(200),
                "ready while running"
            );
            shutdown.cancel();
            token.cancelled().await;
            Ok::<_, std::io::Error>(7)
        };
        assert_eq!(runtime.run("test main", main).await.unwrap(), 7);
        assert_eq!(
            status(addr, "/healthz").await,
            None,
            "the admin server stopped"
        );
    }

    #[tokio::test]
    async fn tasks_are_joined_before_run_returns() {
        let runtime = Runtime::builder("test", &telemetry(), CancellationToken::new());
        let mut runtime = runtime.start().await.unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let token = runtime.shutdown();
        runtime.spawn("slow", async move {
            token.cancelled().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            flag.store(true, Ordering::SeqCst);
        });
        // The main part ends by itself: the runtime stops the tasks and waits for them.
        runtime
            .run("test main", async { Ok::<_, std::io::Error>(()) })
            .await
            .unwrap();
        assert!(done.load(Ordering::SeqCst), "the task was waited for");
    }

    #[tokio::test]
    async fn a_failed_or_panicked_task_is_named() {
        let shutdown = CancellationToken::new();
        let runtime = Runtime::builder("test", &telemetry(), shutdown.clone());
        let mut runtime = runtime.start().await.unwrap();
        runtime.spawn("quiet", async {});
        runtime.spawn("broken", async { bug("a task's bug") });
        runtime.spawn("failing", async {
            Err::<(), _>(std::io::Error::other("disk on fire"))
        });
        shutdown.cancel();
        let token = runtime.shutdown();
        let error = runtime
            .run("test main", async move {
                token.cancelled().await;
                Ok::<_, std::io::Error>(())
            })
            .await
            .unwrap_err();
        assert_eq!(error.failed_tasks(), vec!["broken", "failing"]);
        let text = error.to_string();
        assert!(text.contains("broken: panicked: a task's bug"), "{text}");
        assert!(text.contains("failing: disk on fire"), "{text}");
    }

    #[tokio::test]
    async fn a_task_that_does_not_stop_is_aborted_and_named() {
        let runtime = Runtime::builder("test", &telemetry(), CancellationToken::new());
        let mut runtime = runtime.start().await.unwrap();
        runtime.set_stop_timeout(Duration::from_millis(100));
        runtime.spawn("stuck", std::future::pending::<()>());
        let started = std::time::Instant::now();
        let error = runtime
            .run("test main", async { Ok::<_, std::io::Error>(()) })
            .await
            .unwrap_err();
        assert_eq!(error.failed_tasks(), vec!["stuck"]);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_failed_main_part_stops_the_tasks_and_comes_first() {
        // No shutdown signal: the runtime itself tells the tasks to stop.
        let runtime = Runtime::builder("test", &telemetry(), CancellationToken::new());
        let mut runtime = runtime.start().await.unwrap();
        let token = runtime.shutdown();
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = stopped.clone();
        runtime.spawn("follower", async move {
            token.cancelled().await;
            flag.store(true, Ordering::SeqCst);
        });
        runtime.spawn("broken", async { bug("also broken") });
        let error = runtime
            .run("test consumer", async {
                Err::<(), _>(std::io::Error::other("handler failed"))
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&error, RuntimeError::Main { what, .. } if what == "test consumer"),
            "{error:?}"
        );
        assert_eq!(
            error_chain(&error),
            "test consumer: handler failed",
            "the cause is kept"
        );
        assert!(
            stopped.load(Ordering::SeqCst),
            "the follower was told to stop"
        );
    }

    #[tokio::test]
    async fn the_admin_server_stops_after_the_tasks() {
        let shutdown = CancellationToken::new();
        let runtime = Runtime::builder("test", &telemetry(), shutdown.clone());
        let mut runtime = runtime.start().await.unwrap();
        let addr = runtime.admin_addr().unwrap();
        let token = runtime.shutdown();
        let seen = Arc::new(std::sync::Mutex::new(None));
        let seen_by_task = seen.clone();
        runtime.spawn("draining", async move {
            token.cancelled().await;
            *seen_by_task.lock().unwrap() = Some((
                status(addr, "/metrics").await,
                status(addr, "/readyz").await,
            ));
        });
        shutdown.cancel();
        runtime
            .run("test main", async { Ok::<_, std::io::Error>(()) })
            .await
            .unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            Some((Some(200), Some(503))),
            "scraped while draining, no longer ready"
        );
    }

    #[tokio::test]
    async fn serves_its_own_http_routes() {
        let shutdown = CancellationToken::new();
        let runtime = Runtime::builder("test", &telemetry(), shutdown.clone());
        let mut runtime = runtime.start().await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new().route("/hello", axum::routing::get(|| async { "hi" }));
        runtime.spawn_http("hello API", listener, router);
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_addr = api.local_addr().unwrap();
        let main_router =
            axum::Router::new().route("/main", axum::routing::get(|| async { "main" }));
        let main = tokio::spawn(runtime.run_http("api", api, main_router));
        assert_eq!(status(addr, "/hello").await, Some(200));
        assert_eq!(status(api_addr, "/main").await, Some(200));
        shutdown.cancel();
        main.await.unwrap().unwrap();
        assert_eq!(status(addr, "/hello").await, None, "stopped");
        assert_eq!(status(api_addr, "/main").await, None, "stopped");
    }

    #[tokio::test]
    async fn the_consumer_loop_needs_kafka() {
        let runtime = Runtime::builder("test", &telemetry(), CancellationToken::new());
        let runtime = runtime.start().await.unwrap();
        assert!(matches!(runtime.producer(), Err(RuntimeError::NoKafka)));
        struct Nothing;
        impl BatchHandler for Nothing {
            async fn handle(
                &mut self,
                _: &[crate::bus::InboundRecord],
                _: &mut crate::bus::Output<'_>,
            ) -> Result<(), crate::bus::HandlerError> {
                Ok(())
            }
        }
        let config = ConsumerLoopConfig::new("g", vec!["t".into()], "test");
        let error = runtime
            .run_consumer(config, &mut Nothing)
            .await
            .unwrap_err();
        assert_eq!(
            error_chain(&error),
            "test consumer: the service runtime has no Kafka producer (RuntimeBuilder::with_kafka)"
        );
    }

    #[tokio::test]
    async fn with_kafka_the_bus_is_registered_and_the_loop_stops_at_shutdown() {
        // librdkafka does not connect before it has something to do: nothing here needs a broker.
        let shutdown = CancellationToken::new();
        let runtime = Runtime::builder("test", &telemetry(), shutdown.clone())
            .with_kafka(&KafkaConfig::new("127.0.0.1:1"))
            .unwrap();
        let mut runtime = runtime.start().await.unwrap();
        let addr = runtime.admin_addr().unwrap();
        runtime.producer().unwrap();
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("tributary_bus_batches_total"), "{text}");
        let token = runtime.shutdown();
        runtime.spawn("follower", async move { token.cancelled().await });
        shutdown.cancel();
        let started = std::time::Instant::now();
        struct Nothing;
        impl BatchHandler for Nothing {
            async fn handle(
                &mut self,
                _: &[crate::bus::InboundRecord],
                _: &mut crate::bus::Output<'_>,
            ) -> Result<(), crate::bus::HandlerError> {
                Ok(())
            }
        }
        let config = ConsumerLoopConfig::new("g", vec!["t".into()], "test");
        let stats = runtime.run_consumer(config, &mut Nothing).await.unwrap();
        assert_eq!(stats, LoopStats::default());
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[tokio::test]
    async fn a_runtime_dropped_unrun_stops_its_admin_server() {
        let runtime = Runtime::builder("test", &telemetry(), CancellationToken::new());
        let runtime = runtime.start().await.unwrap();
        let addr = runtime.admin_addr().unwrap();
        let token = runtime.shutdown();
        assert_eq!(status(addr, "/healthz").await, Some(200));
        drop(runtime);
        assert!(token.is_cancelled());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(status(addr, "/healthz").await, None);
    }
}
