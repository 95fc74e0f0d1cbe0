//! `tributary up`: the whole pipeline on one machine, no Docker. The broker (Tansu with SQLite
//! storage by default, or Apache Kafka with `--broker kafka`; its data in the data folder), the
//! registry and the five services run as child processes of this command, each with a
//! configuration file written for it and its own log; topics and schemas come from the catalog
//! as `tributary topics apply` makes them; the lake and the file sources' landing folder are
//! folders of the data folder. Ctrl-C stops the services first, the registry next and the
//! broker last; a later run on the same folder continues from there.

mod broker;
mod demo;
mod plan;
mod process;
mod setup;
mod shop;
mod shop_db;
mod stack;
mod watch;
pub(crate) mod watchdog;

pub(crate) use broker::BrokerKind;

use std::path::PathBuf;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use tracing::info;
use tributary_core::schema::catalog::Catalog;

use plan::{Layout, Ports, Service};
pub(crate) use plan::{STACK_FILE, file_url};
use setup::{PidFile, init_logs, secret_file, service_binaries};
use stack::{Stack, StackInputs, run_stack};

/// Options of `tributary up`.
#[derive(Debug)]
pub(crate) struct UpOptions {
    /// The data folder.
    pub(crate) data: PathBuf,
    /// Which broker to run.
    pub(crate) broker: BrokerKind,
    /// The broker's program (Tansu's binary, Kafka's launcher), when given.
    pub(crate) broker_bin: Option<PathBuf>,
    /// Whether to run the demo traffic.
    pub(crate) demo: bool,
    /// Use free ports instead of the defaults.
    pub(crate) free_ports: bool,
    /// The catalog folder.
    pub(crate) schemas: PathBuf,
}

/// Runs the stack until `shutdown`; `Ok(true)` when everything stopped cleanly.
pub(crate) async fn run(
    options: UpOptions,
    catalog: &Catalog,
    shutdown: CancellationToken,
) -> Result<bool> {
    let layout = Layout::create(&options.data)?;
    init_logs(&layout)?;
    let _lock = PidFile::take(&layout.pid_file())?;
    let broker_program = broker::find(options.broker, options.broker_bin.as_deref())?;
    broker::claim(&layout, options.broker)?;
    let binaries = service_binaries()?;
    let schemas = options
        .schemas
        .canonicalize()
        .with_context(|| format!("resolve {}", options.schemas.display()))?;
    let api_key = secret_file(&layout.api_key(), "dev")?;
    let registry_admin = secret_file(&layout.registry_admin_password(), "admin")?;
    secret_file(&layout.registry_services_password(), "services")?;
    let ports = Ports::pick(options.free_ports, options.broker == BrokerKind::Kafka)?;
    let mut sources = plan::local_sources(catalog);
    let shop_db = if options.demo {
        match shop_db::prepare(catalog, &layout.demo_database()).await? {
            shop_db::Prepared::Ready(db) => {
                sources.push(db.source.clone());
                Some(*db)
            }
            shop_db::Prepared::Off(reason) => {
                println!("demo: no shop database: {reason}");
                info!(reason, "demo: no shop database");
                None
            }
        }
    } else {
        None
    };
    for service in Service::ALL {
        let file = layout.config().join(format!("{}.toml", service.name()));
        std::fs::write(
            &file,
            plan::service_config(service, &layout, &ports, &schemas, &sources)?,
        )
        .with_context(|| format!("write {}", file.display()))?;
    }
    std::fs::write(layout.stack_file(), plan::stack_file(&layout, &ports)?)
        .with_context(|| format!("write {}", layout.stack_file().display()))?;

    let mut stack = Stack::default();
    let inputs = StackInputs {
        options: &options,
        catalog,
        layout: &layout,
        ports: &ports,
        broker_program: &broker_program,
        binaries: &binaries,
        api_key: &api_key,
        registry_admin: &registry_admin,
        shop_db: shop_db.as_ref(),
    };
    let result = run_stack(&mut stack, &inputs, &shutdown).await;
    let clean = stack.stop().await;
    // The stack file describes a running stack.
    let _ = std::fs::remove_file(layout.stack_file());
    match result {
        Ok(crashed) => {
            println!(
                "{}",
                if clean && !crashed {
                    "stopped cleanly; run `tributary up` again on the same folder to continue"
                } else {
                    "stopped, not cleanly: see the logs"
                }
            );
            Ok(clean && !crashed)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    /// #18: an existing key file others could read was reused as it was.
    #[test]
    fn the_api_key_file_is_made_and_kept_at_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-key");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let key = super::secret_file(&path, "dev").unwrap();
        assert!(key.starts_with("dev-"), "{key}");
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            super::secret_file(&path, "dev").unwrap(),
            key,
            "the same key, kept"
        );
        assert_eq!(mode(&path), 0o600);
    }
}
