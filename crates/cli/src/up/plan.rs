//! What `tributary up` runs where: the data folder's layout, the ports, and the configuration
//! file written for each service.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tributary_core::schema::catalog::Catalog;
use tributary_core::schema::sources::SourceDecl;

/// The data folder and what lives in it.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The folder, absolute.
    pub(crate) data: PathBuf,
}

impl Layout {
    /// Creates the folder and its subfolders if missing.
    pub(crate) fn create(data: &Path) -> Result<Self> {
        std::fs::create_dir_all(data)
            .with_context(|| format!("create the data folder {}", data.display()))?;
        let data = data
            .canonicalize()
            .with_context(|| format!("resolve the data folder {}", data.display()))?;
        let layout = Self { data };
        // The broker's folder is made when it starts (only the chosen broker's).
        for dir in [
            layout.logs(),
            layout.config(),
            layout.lake(),
            layout.products(),
            layout.incoming(),
        ] {
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        }
        Ok(layout)
    }

    /// Tansu's working folder (its SQLite database `tansu.db`).
    pub(crate) fn tansu(&self) -> PathBuf {
        self.data.join("broker")
    }
    /// Apache Kafka's folder (`server.properties`, the data in `data/`).
    pub(crate) fn kafka(&self) -> PathBuf {
        self.data.join("kafka")
    }
    /// Which broker the folder belongs to (`tansu` or `kafka`), written at its first start.
    pub(crate) fn broker_kind_file(&self) -> PathBuf {
        self.data.join("broker-kind")
    }
    /// One log file per process.
    pub(crate) fn logs(&self) -> PathBuf {
        self.data.join("logs")
    }
    /// The generated service configurations (rewritten at every start).
    pub(crate) fn config(&self) -> PathBuf {
        self.data.join("config")
    }
    /// The archive's lake.
    pub(crate) fn lake(&self) -> PathBuf {
        self.data.join("lake")
    }
    /// `TRIBUTARY_LANDING`: the root of the catalog's file sources.
    pub(crate) fn landing(&self) -> PathBuf {
        self.data.join("landing")
    }
    /// Where the catalog's `products_files` source looks.
    pub(crate) fn products(&self) -> PathBuf {
        self.landing().join("products")
    }
    /// Where the demo writes a file before moving it into `products` whole.
    pub(crate) fn incoming(&self) -> PathBuf {
        self.landing().join(".incoming")
    }
    /// The API key of the local stack: ingest (the `raw.*` topics) and the feature lookup.
    pub(crate) fn api_key(&self) -> PathBuf {
        self.data.join("api-key")
    }
    /// The registry password of user `admin` (`tributary` commands, applying the catalog).
    pub(crate) fn registry_admin_password(&self) -> PathBuf {
        self.data.join("registry-admin-password")
    }
    /// The registry password of user `services` (role write: the services).
    pub(crate) fn registry_services_password(&self) -> PathBuf {
        self.data.join("registry-services-password")
    }
    /// `[kafka]`, `[registry]` and `[lake]` of the running stack, for `tributary status`
    /// (removed when the stack stops).
    pub(crate) fn stack_file(&self) -> PathBuf {
        self.data.join(STACK_FILE)
    }
    /// The process id of the `tributary up` using the folder.
    pub(crate) fn pid_file(&self) -> PathBuf {
        self.data.join("up.pid")
    }
    /// Present once the demo replayed its history (it is replayed once per folder).
    pub(crate) fn demo_marker(&self) -> PathBuf {
        self.data.join("demo-history-sent")
    }
    /// The name of the demo's shop database on the PostgreSQL server (one per folder).
    pub(crate) fn demo_database(&self) -> PathBuf {
        self.data.join("demo-database")
    }
    /// The lake as a URL.
    pub(crate) fn lake_url(&self) -> Result<String> {
        file_url(&self.lake())
    }
}

/// Name of the stack file inside the data folder.
pub(crate) const STACK_FILE: &str = "tributary.toml";

/// A `file://` URL of an absolute folder.
pub(crate) fn file_url(dir: &Path) -> Result<String> {
    let url = url::Url::from_file_path(dir)
        .map_err(|()| anyhow::anyhow!("{} is not an absolute path", dir.display()))?;
    Ok(url.to_string())
}

/// The processes of the stack, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Registry,
    Ingest,
    Transform,
    Feature,
    TrainTrigger,
    Archive,
}

impl Service {
    /// Every service, in start order.
    pub(crate) const ALL: [Service; 6] = [
        Service::Registry,
        Service::Ingest,
        Service::Transform,
        Service::Feature,
        Service::TrainTrigger,
        Service::Archive,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Registry => "registry",
            Self::Ingest => "ingest",
            Self::Transform => "transform",
            Self::Feature => "feature",
            Self::TrainTrigger => "train-trigger",
            Self::Archive => "archive",
        }
    }

    pub(crate) fn binary(self) -> String {
        format!("tributary-{}", self.name())
    }

    /// The service's default admin port (its `config.rs`).
    fn default_admin_port(self) -> u16 {
        match self {
            Self::Ingest => 9090,
            Self::Registry => 9091,
            Self::Archive => 9093,
            Self::Transform => 9094,
            Self::Feature => 9095,
            Self::TrainTrigger => 9096,
        }
    }
}

/// The ports of a stack.
#[derive(Debug, Clone)]
pub(crate) struct Ports {
    pub(crate) broker: u16,
    /// Apache Kafka's controller listener (Tansu has none).
    pub(crate) controller: Option<u16>,
    pub(crate) registry: u16,
    pub(crate) ingest: u16,
    pub(crate) feature: u16,
    /// Admin port per service, in [`Service::ALL`] order.
    admin: [u16; 6],
}

impl Ports {
    /// The default ports, each replaced by a free one when taken (or always, with
    /// `free_only`); a controller port too when `controller` (Apache Kafka). The ports are held
    /// while choosing, so no two are the same.
    pub(crate) fn pick(free_only: bool, controller: bool) -> Result<Self> {
        let mut held = Vec::new();
        let mut take = |default: u16| -> Result<u16> {
            if !free_only && let Ok(listener) = TcpListener::bind(("127.0.0.1", default)) {
                held.push(listener);
                return Ok(default);
            }
            let listener = TcpListener::bind(("127.0.0.1", 0)).context("find a free port")?;
            let port = listener.local_addr()?.port();
            held.push(listener);
            Ok(port)
        };
        let broker = take(9092)?;
        let controller = if controller { Some(take(9097)?) } else { None };
        let registry = take(8081)?;
        let ingest = take(8080)?;
        let feature = take(8083)?;
        let mut admin = [0; 6];
        for (slot, service) in admin.iter_mut().zip(Service::ALL) {
            *slot = take(service.default_admin_port())?;
        }
        Ok(Self {
            broker,
            controller,
            registry,
            ingest,
            feature,
            admin,
        })
    }

    pub(crate) fn admin(&self, service: Service) -> u16 {
        let index = Service::ALL
            .iter()
            .position(|s| *s == service)
            .unwrap_or_default();
        self.admin[index]
    }

    /// The port a service answers its users on, for those that have one besides the admin
    /// port.
    pub(crate) fn listen(&self, service: Service) -> Option<u16> {
        match service {
            Service::Registry => Some(self.registry),
            Service::Ingest => Some(self.ingest),
            Service::Feature => Some(self.feature),
            Service::Transform | Service::TrainTrigger | Service::Archive => None,
        }
    }

    pub(crate) fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.broker)
    }

    pub(crate) fn registry_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.registry)
    }

    pub(crate) fn ingest_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ingest)
    }

    pub(crate) fn feature_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.feature)
    }
}

/// Files older than this in an archive file are written out (the service's default is 5
/// minutes; a local stack shows its lake filling sooner).
const ARCHIVE_MAX_OPEN_SECONDS: u64 = 30;

/// A TOML string literal.
fn quoted(text: &str) -> String {
    // A JSON string is a valid TOML basic string.
    serde_json::Value::String(text.to_string()).to_string()
}

/// The catalog's sources the local stack always runs: its file sources, which read the landing
/// folder. The demo adds the catalog's `shop_db` when a PostgreSQL server can host its database
/// (`super::shop_db`); other PostgreSQL sources name databases the local stack does not have.
pub(crate) fn local_sources(catalog: &Catalog) -> Vec<String> {
    catalog
        .sources
        .iter()
        .filter(|s| matches!(s, SourceDecl::Files(_)))
        .map(|s| s.name().to_string())
        .collect()
}

/// The configuration file of `service` (TOML), for the stack's ports and folders; ingest runs
/// the sources named in `sources`.
pub(crate) fn service_config(
    service: Service,
    layout: &Layout,
    ports: &Ports,
    schemas: &Path,
    sources: &[String],
) -> Result<String> {
    let schemas = quoted(&schemas.display().to_string());
    let lake = quoted(&layout.lake_url()?);
    let mut out = match service {
        Service::Registry => format!(
            "[schema_registry]\nlisten = \"127.0.0.1:{}\"\n\n\
             [[schema_registry.users]]\nname = \"admin\"\npassword = {{ file = {} }}\nrole = \"admin\"\n\n\
             [[schema_registry.users]]\nname = \"services\"\npassword = {{ file = {} }}\nrole = \"write\"\n",
            ports.registry,
            quoted(&layout.registry_admin_password().display().to_string()),
            quoted(&layout.registry_services_password().display().to_string()),
        ),
        Service::Ingest => format!(
            "[ingest]\nlisten = \"127.0.0.1:{}\"\nschemas = {schemas}\nsources = [{}]\n\n\
             [[ingest.credentials]]\nname = \"local\"\nsecret = {{ file = {} }}\ntopics = [\"raw.*\"]\n",
            ports.ingest,
            sources
                .iter()
                .map(|s| quoted(s))
                .collect::<Vec<_>>()
                .join(", "),
            quoted(&layout.api_key().display().to_string())
        ),
        Service::Transform => format!("[transform]\nschemas = {schemas}\n"),
        Service::Feature => format!(
            "[feature]\nschemas = {schemas}\nlisten = \"127.0.0.1:{}\"\n\n\
             [[feature.credentials]]\nname = \"local\"\nsecret = {{ file = {} }}\nviews = [\"*\"]\n",
            ports.feature,
            quoted(&layout.api_key().display().to_string())
        ),
        Service::TrainTrigger => {
            format!("[train_trigger]\nschemas = {schemas}\narchive_root = {lake}\n")
        }
        Service::Archive => format!(
            "[archive]\nschemas = {schemas}\nmax_open_seconds = {ARCHIVE_MAX_OPEN_SECONDS}\n\n\
             [lake]\nurl = {lake}\n"
        ),
    };
    out.push_str(&format!(
        "\n[kafka]\nbootstrap_servers = \"{}\"\n",
        ports.bootstrap()
    ));
    if service != Service::Registry {
        out.push_str(&format!(
            "\n[registry]\nurl = \"{}\"\nusername = \"services\"\npassword = {{ file = {} }}\n",
            ports.registry_url(),
            quoted(&layout.registry_services_password().display().to_string())
        ));
    }
    out.push_str(&format!(
        "\n[telemetry]\nadmin_addr = \"127.0.0.1:{}\"\nlog_filter = \"info,librdkafka=warn\"\n",
        ports.admin(service)
    ));
    Ok(format!(
        "# Written by `tributary up` at each start; edits are overwritten.\n{out}"
    ))
}

/// The stack file: what `tributary status --config` needs, and the addresses for people.
pub(crate) fn stack_file(layout: &Layout, ports: &Ports) -> Result<String> {
    Ok(format!(
        "# The local stack started by `tributary up` (rewritten at each start).\n\
         # ingest API: {} (X-API-Key: the contents of {})\n\
         # feature lookups: {} (the same key)\n\n\
         [kafka]\nbootstrap_servers = \"{}\"\n\n\
         [registry]\nurl = \"{}\"\nusername = \"admin\"\npassword = {{ file = {} }}\n\n[lake]\nurl = {}\n",
        ports.ingest_url(),
        layout.api_key().display(),
        ports.feature_url(),
        ports.bootstrap(),
        ports.registry_url(),
        quoted(&layout.registry_admin_password().display().to_string()),
        quoted(&layout.lake_url()?)
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_local_stack_runs_the_file_sources() {
        let catalog =
            Catalog::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")).unwrap();
        assert!(local_sources(&catalog).contains(&"products_files".to_string()));
    }

    #[test]
    fn ports_are_distinct() {
        let ports = Ports::pick(true, true).unwrap();
        let mut all = vec![ports.broker, ports.registry, ports.ingest, ports.feature];
        all.extend(ports.controller);
        all.extend(Service::ALL.iter().map(|s| ports.admin(*s)));
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    /// Parses TOML text as the services do (figment), into JSON for the checks.
    fn parse(text: &str) -> serde_json::Value {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, text).unwrap();
        tributary_core::config::load::<serde_json::Value>("", Some(&file)).unwrap()
    }

    #[test]
    fn configs_parse_and_name_the_stack() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(&dir.path().join("da\"ta")).unwrap();
        let ports = Ports::pick(true, false).unwrap();
        assert_eq!(ports.controller, None);
        let schemas = Path::new("/s");
        let archive =
            parse(&service_config(Service::Archive, &layout, &ports, schemas, &[]).unwrap());
        assert_eq!(archive["archive"]["max_open_seconds"], 30);
        assert_eq!(archive["kafka"]["bootstrap_servers"], ports.bootstrap());
        let lake = archive["lake"]["url"].as_str().unwrap();
        assert!(
            lake.starts_with("file:///") && lake.ends_with("da%22ta/lake"),
            "{lake}"
        );
        let ingest = parse(
            &service_config(
                Service::Ingest,
                &layout,
                &ports,
                schemas,
                &["products_files".into()],
            )
            .unwrap(),
        );
        assert_eq!(ingest["ingest"]["sources"][0], "products_files");
        let secret = &ingest["ingest"]["credentials"][0]["secret"]["file"];
        assert_eq!(secret.as_str().unwrap(), layout.api_key().to_str().unwrap());
        assert_eq!(ingest["registry"]["url"], ports.registry_url());
        // The local key writes the raw topics only (not db.shop.*, not train.requests).
        assert_eq!(
            ingest["ingest"]["credentials"][0]["topics"],
            serde_json::json!(["raw.*"])
        );
        let services_password = layout.registry_services_password();
        for service in &Service::ALL[1..] {
            let config = parse(&service_config(*service, &layout, &ports, schemas, &[]).unwrap());
            assert_eq!(config["registry"]["username"], "services", "{config}");
            assert_eq!(
                config["registry"]["password"]["file"].as_str().unwrap(),
                services_password.to_str().unwrap()
            );
        }
        let feature =
            parse(&service_config(Service::Feature, &layout, &ports, schemas, &[]).unwrap());
        let secret = &feature["feature"]["credentials"][0]["secret"]["file"];
        assert_eq!(secret.as_str().unwrap(), layout.api_key().to_str().unwrap());
        let registry =
            parse(&service_config(Service::Registry, &layout, &ports, schemas, &[]).unwrap());
        assert!(registry.get("registry").is_none(), "{registry}");
        let users = &registry["schema_registry"]["users"];
        assert_eq!(users[0]["name"], "admin");
        assert_eq!(users[0]["role"], "admin");
        assert_eq!(users[1]["name"], "services");
        assert_eq!(users[1]["role"], "write");
        let stack = parse(&stack_file(&layout, &ports).unwrap());
        assert_eq!(stack["lake"]["url"].as_str().unwrap(), lake);
        assert_eq!(stack["registry"]["username"], "admin");
        assert_eq!(
            stack["registry"]["password"]["file"].as_str().unwrap(),
            layout.registry_admin_password().to_str().unwrap()
        );
    }
}
