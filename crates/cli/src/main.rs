//! The `tributary` command: checks schema evolution, applies the topic catalog to a cluster
//! and a schema registry, runs the whole pipeline locally (`up`) and shows its figures
//! (`status`).
//!
//! Exit codes: 0 success; 1 a check failed (incompatible schema) or an operation failed (broker
//! or registry error); 2 bad usage, configuration or catalog (nothing was checked or changed).

mod apply;
mod check;
mod config;
mod display;
mod dlq;
mod figures;
mod status;
mod subjects;
mod up;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tributary_core::bus::BusError;
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::registry::RegistryClient;

use crate::check::Against;
use crate::config::CliConfig;

/// Tributary: topics and schemas of the pipeline, and the pipeline on one machine.
#[derive(Debug, Parser)]
#[command(name = "tributary", version, about)]
struct Cli {
    /// Folder holding catalog.toml and the .avsc schemas.
    #[arg(long, global = true, value_name = "DIR", default_value = "schemas")]
    schemas: PathBuf,
    /// TOML file with [kafka] and [registry] sections (TRIBUTARY__KAFKA__BOOTSTRAP_SERVERS,
    /// TRIBUTARY__REGISTRY__URL, ... override it).
    #[arg(long, global = true, value_name = "FILE", env = "TRIBUTARY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Schema evolution.
    Schemas {
        #[command(subcommand)]
        command: SchemasCommand,
    },
    /// The topics of the catalog.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Runs the whole pipeline on this machine: the broker (Tansu with SQLite storage, or
    /// Apache Kafka), the registry and the five services, until Ctrl-C. A later run on the same
    /// data folder continues where this one stopped.
    Up {
        /// Folder for the broker's data, the lake, the landing folder, configuration and logs.
        #[arg(long, value_name = "DIR", default_value = ".tributary")]
        data: PathBuf,
        /// The broker: Tansu (SQLite storage, no JVM) or Apache Kafka (one KRaft node; install
        /// it with `bash deploy/local/install-kafka.sh`). A data folder keeps the broker it was
        /// first run with.
        #[arg(long, value_enum, default_value_t = up::BrokerKind::Tansu)]
        broker: up::BrokerKind,
        /// The broker's program: Tansu's binary (default: env TANSU_BIN, else `tansu` on PATH,
        /// else ~/.cache/tributary/tansu-0.6.0/bin/tansu), or Kafka's launcher (default: env
        /// KAFKA_LAUNCHER, else ~/.cache/tributary/kafka-4.1.1/bin/kafka-local).
        #[arg(long, value_name = "FILE")]
        broker_bin: Option<PathBuf>,
        /// Also send demo traffic: web and mobile events to ingest, product files to the
        /// landing folder.
        #[arg(long)]
        demo: bool,
        /// Pick free ports instead of the defaults (broker 9092, Kafka's controller 9097,
        /// registry 8081, ingest 8080, feature 8083, admin 9090-9096); a default port that is
        /// taken is replaced anyway.
        #[arg(long)]
        free_ports: bool,
    },
    /// Runs a program and stops it when told to or when stdin closes (how `up` starts the
    /// processes of its stack, so they never outlive it).
    #[command(name = "__watchdog", hide = true)]
    Watchdog {
        /// The program and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Prints the figures of a running stack: records per topic, consumer lag per service,
    /// Parquet files in the lake, dead letters, training requests. The stack is the one in
    /// --config, else the one `tributary up` wrote to DIR/tributary.toml, else localhost.
    Status {
        /// The data folder of a `tributary up` stack.
        #[arg(long, value_name = "DIR", default_value = ".tributary")]
        data: PathBuf,
        /// Refresh every second until Ctrl-C.
        #[arg(long)]
        watch: bool,
    },
    /// Shows the latest dead letters (`dlq.<stage>`): when, which stage, the error class and
    /// message, the record's source topic, partition and offset, and the record itself,
    /// decoded through the registry. The stack is found as for `status`.
    Dlq {
        /// Only these stages (ingest, transform, feature, archive, train-trigger); all by
        /// default.
        #[arg(value_name = "STAGE")]
        stages: Vec<String>,
        /// How many, the latest over the stages shown.
        #[arg(long, default_value_t = 20)]
        last: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// The data folder of a `tributary up` stack.
        #[arg(long, value_name = "DIR", default_value = ".tributary")]
        data: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum SchemasCommand {
    /// Checks that every schema file is compatible with the previous versions of its subject,
    /// under the topic's compatibility level; exits with 1 if one is not.
    Check {
        /// Compare with the schema files at this git revision instead of the registry.
        #[arg(long, value_name = "REV")]
        against_git: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// Creates missing topics, raises partitions, sets topic settings and registers every
    /// schema; changes nothing that already matches.
    Apply {
        /// Print what would change without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
}

/// An error in how the command was called or configured (exit code 2).
#[derive(Debug)]
pub(crate) struct Usage(String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Marks an error as a usage or configuration error.
pub(crate) fn usage(message: impl fmt::Display) -> anyhow::Error {
    anyhow::Error::new(Usage(message.to_string()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `up` logs to a file in its data folder: the terminal shows its figures.
    match cli.command {
        Command::Up { .. } | Command::Watchdog { .. } => {}
        // Its report says when the broker is unreachable; librdkafka's retries would bury it.
        Command::Status { .. } | Command::Dlq { .. } => {
            init_logs("warn,librdkafka=off,rdkafka=off")
        }
        _ => init_logs("warn"),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::Watchdog { command } = &cli.command {
        let code = match runtime.block_on(up::watchdog::run(command)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {}", report(&e));
                ExitCode::from(1)
            }
        };
        // The read of stdin blocks a thread until the pipe closes: do not wait for it.
        runtime.shutdown_background();
        return code;
    }
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {}", report(&e));
            if e.chain().any(|c| c.is::<Usage>()) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text its parent already
/// includes (some errors print their source in their own message).
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// A bus error as the command reports it: when librdkafka failed, its error itself (not
/// wrapped in the bus's `kafka client:`, which repeats it as its cause); the bus's otherwise.
pub(crate) fn kafka_error(e: BusError) -> anyhow::Error {
    match e {
        BusError::Client(cause) => anyhow::Error::new(cause),
        other => anyhow::Error::new(other),
    }
}

/// Runs a command; `Ok(false)` when a check failed.
async fn run(cli: Cli) -> Result<bool> {
    let config =
        || CliConfig::load(cli.config.as_deref()).map_err(|e| usage(format!("configuration: {e}")));
    let catalog = Catalog::load(&cli.schemas).map_err(|e| usage(format!("catalog: {e}")))?;
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Schemas {
            command: SchemasCommand::Check { against_git },
        } => {
            let against = match against_git {
                Some(rev) => Against::Git(rev),
                None => Against::Registry(
                    RegistryClient::new(&config()?.registry)
                        .map_err(|e| usage(format!("[registry]: {e}")))?,
                ),
            };
            let passed = check::run(&catalog, &against, &mut stdout).await?;
            if !passed {
                eprintln!("error: incompatible schemas (see the FAIL lines)");
            }
            Ok(passed)
        }
        Command::Topics {
            command: TopicsCommand::Apply { dry_run },
        } => {
            apply::run(
                &catalog,
                &config()?,
                dry_run,
                &mut stdout,
                &mut std::io::stderr(),
            )
            .await?;
            Ok(true)
        }
        Command::Up {
            data,
            broker,
            broker_bin,
            demo,
            free_ports,
        } => {
            drop(stdout);
            let shutdown = tributary_core::shutdown::on_signals()
                .map_err(|e| anyhow::anyhow!("cannot handle signals: {e}"))?;
            let options = up::UpOptions {
                data,
                broker,
                broker_bin,
                demo,
                free_ports,
                schemas: cli.schemas.clone(),
            };
            up::run(options, &catalog, shutdown).await
        }
        Command::Watchdog { .. } => Err(usage("__watchdog is run by `tributary up`")),
        Command::Status { data, watch } => {
            let config = stack_config(cli.config.as_deref(), &data)?;
            let shutdown = tributary_core::shutdown::on_signals()
                .map_err(|e| anyhow::anyhow!("cannot handle signals: {e}"))?;
            status::run(&catalog, &config, &data, watch, shutdown, &mut stdout).await
        }
        Command::Dlq {
            stages,
            last,
            json,
            data,
        } => {
            let config = stack_config(cli.config.as_deref(), &data)?;
            dlq::run(
                &dlq::DlqOptions { stages, last, json },
                &config,
                &mut stdout,
            )
            .await
        }
    }
}

/// The configuration of `--config`, else of the stack `tributary up` runs on `data`, else the
/// defaults (localhost).
fn stack_config(config: Option<&std::path::Path>, data: &std::path::Path) -> Result<CliConfig> {
    let stack_file = data.join(up::STACK_FILE);
    let file = match config {
        Some(file) => Some(file.to_path_buf()),
        None => stack_file.is_file().then_some(stack_file),
    };
    CliConfig::load(file.as_deref()).map_err(|e| usage(format!("configuration: {e}")))
}

/// Logs (librdkafka's and ours) go to stderr, by `default` (warnings) unless `RUST_LOG` says
/// otherwise, so that stdout holds just the command's report.
fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
