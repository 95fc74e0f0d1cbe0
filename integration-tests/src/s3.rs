//! The object store harness: moto's S3 server as a child process, with a fresh bucket.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::util::{free_port, unique, wait_for_port};

/// moto's S3 server on loopback, with one fresh bucket; killed when dropped.
#[derive(Debug)]
pub struct S3 {
    port: u16,
    child: Child,
    /// The bucket created for the test.
    pub bucket: String,
}

impl S3 {
    /// Starts `moto_server` on a free port and creates a bucket.
    pub async fn start() -> Result<Self> {
        let port = free_port()?;
        let mut child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "start moto_server (pip install 'moto[server]'; integration-tests/run.sh does)",
            )?;
        wait_for_port(port, &mut child, "moto_server", Duration::from_secs(30))?;
        let s3 = Self {
            port,
            child,
            bucket: unique("lake"),
        };
        let response = reqwest::Client::new()
            .put(format!("{}/{}", s3.endpoint(), s3.bucket))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "creating bucket {} answered {}",
                s3.bucket,
                response.status()
            );
        }
        Ok(s3)
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's port (for a proxy in front of it).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Lake settings for `s3://<bucket>/<prefix>` on this server.
    pub fn lake(&self, prefix: &str) -> tributary_core::lake::LakeConfig {
        let mut c = tributary_core::lake::LakeConfig::new(format!("s3://{}/{prefix}", self.bucket));
        c.s3_endpoint = Some(self.endpoint());
        c.s3_region = Some("us-east-1".into());
        c.s3_access_key_id = Some(tributary_core::config::Secret::new("test"));
        c.s3_secret_access_key = Some(tributary_core::config::Secret::new("test"));
        c.allow_http = true;
        c
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
