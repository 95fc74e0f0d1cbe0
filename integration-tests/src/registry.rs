//! The registry harness: the schema registry service as a child process, with its users.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tributary_core::config::Secret;
use tributary_core::schema::registry::{RegistryClient, RegistryConfig};

use crate::broker::Broker;
use crate::services::{shared_environment, workspace_bin};
use crate::util::{free_port, kill_child, unique, wait_for_port};

/// The registry service as a child process on a free port, storing schemas on `broker` in a
/// topic of its own; killed when dropped. Two users with random passwords: `admin` (role
/// admin, for tests and the CLI) and `services` (role write, for the services).
#[derive(Debug)]
pub struct Registry {
    port: u16,
    bootstrap: String,
    topic: String,
    admin_password: String,
    services_password: String,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry with a fresh schemas topic.
    pub fn start(broker: &Broker) -> Result<Self> {
        Self::start_on(broker, &unique("_schemas"))
    }

    /// Starts a registry on an existing (or new) schemas topic, e.g. a second replica.
    pub fn start_on(broker: &Broker, topic: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut registry = Self {
            port: free_port()?,
            bootstrap: broker.bootstrap(),
            topic: topic.to_string(),
            admin_password: unique("admin-pw"),
            services_password: unique("services-pw"),
            child: None,
            log: dir.path().join("registry.log"),
            _dir: dir,
        };
        registry.spawn()?;
        Ok(registry)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::File::create(&self.log)?;
        let config = self.log.with_file_name("registry.toml");
        std::fs::write(
            &config,
            format!(
                "[[schema_registry.users]]\nname = \"admin\"\npassword = \"{}\"\nrole = \"admin\"\n\n\
                 [[schema_registry.users]]\nname = \"services\"\npassword = \"{}\"\nrole = \"write\"\n",
                self.admin_password, self.services_password
            ),
        )?;
        let mut child = Command::new(workspace_bin("tributary-registry")?)
            .arg(&config)
            .envs(shared_environment("tributary-registry"))
            .env(
                "TRIBUTARY__SCHEMA_REGISTRY__LISTEN",
                format!("127.0.0.1:{}", self.port),
            )
            .env("TRIBUTARY__SCHEMA_REGISTRY__TOPIC", &self.topic)
            .env("TRIBUTARY__KAFKA__BOOTSTRAP_SERVERS", &self.bootstrap)
            .env(
                "TRIBUTARY__TELEMETRY__ADMIN_ADDR",
                format!("127.0.0.1:{}", free_port()?),
            )
            .env("TRIBUTARY__TELEMETRY__LOG_FILTER", "info,librdkafka=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start tributary-registry")?;
        if let Err(e) = wait_for_port(
            self.port,
            &mut child,
            "tributary-registry",
            Duration::from_secs(60),
        ) {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let _ = child.kill();
            bail!("{e}\nregistry log:\n{log}");
        }
        self.child = Some(child);
        Ok(())
    }

    /// Base URL of the API.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The admin user's name and password.
    pub fn admin(&self) -> (&str, &str) {
        ("admin", &self.admin_password)
    }

    /// The `services` user's password (role write).
    pub fn services_password(&self) -> &str {
        &self.services_password
    }

    /// `admin:<password>`, for `basic.auth.user.info` and `--registry-auth`.
    pub fn user_info(&self) -> String {
        format!("admin:{}", self.admin_password)
    }

    /// Client settings of the admin user.
    pub fn client_config(&self) -> RegistryConfig {
        RegistryConfig::new(self.url()).with_basic_auth("admin", Secret::new(&self.admin_password))
    }

    /// A client of the admin user.
    pub fn client(&self) -> Result<RegistryClient> {
        Ok(RegistryClient::new(&self.client_config())?)
    }

    /// The `[registry]` section of a service's configuration (the `services` user).
    pub fn section(&self) -> String {
        format!(
            "[registry]\nurl = \"{}\"\nusername = \"services\"\npassword = \"{}\"\n",
            self.url(),
            self.services_password
        )
    }

    /// `TRIBUTARY__REGISTRY__*` variables for a process taking `[registry]` from its
    /// environment (the CLI): the admin user.
    pub fn env(&self) -> [(&'static str, String); 3] {
        [
            ("TRIBUTARY__REGISTRY__URL", self.url()),
            ("TRIBUTARY__REGISTRY__USERNAME", "admin".to_string()),
            ("TRIBUTARY__REGISTRY__PASSWORD", self.admin_password.clone()),
        ]
    }

    /// The schemas topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Kills the registry with SIGKILL.
    pub fn kill(&mut self) -> Result<()> {
        kill_child(&mut self.child)
    }

    /// Kills and starts the registry again on the same port and topic.
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn()
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
