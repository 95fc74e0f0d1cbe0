//! The PostgreSQL harness: a fresh database on the machine's PostgreSQL, dropped afterwards.

use anyhow::{Context, Result};

use crate::util::unique;

/// Address of the machine's PostgreSQL (`TRIBUTARY_TEST_PG` overrides), trust auth as `postgres`.
pub fn postgres_base() -> String {
    std::env::var("TRIBUTARY_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres".to_string())
}

/// A fresh database on the machine's PostgreSQL, dropped when the value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    /// Database name.
    pub name: String,
}

impl TestDatabase {
    /// Creates a database with a random name.
    pub async fn create() -> Result<Self> {
        let name = unique("t").replace('-', "_");
        let client = connect(&postgres_base()).await?;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .context("create test database")?;
        Ok(Self { name })
    }

    /// Connection string of the database.
    pub fn connection_string(&self) -> String {
        format!("{} dbname={}", postgres_base(), self.name)
    }

    /// Connects to the database.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        connect(&self.connection_string()).await
    }
}

async fn connect(conn: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connect to postgresql ({conn})"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs outside async context: a short-lived thread with its own runtime.
        let base = postgres_base();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let client = connect(&base).await?;
                // Replication slots of the database (a change data capture test's) keep it
                // from being dropped, and WAL from being recycled: drop them first.
                client
                    .execute(
                        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                         WHERE database = $1 AND active_pid IS NOT NULL",
                        &[&name],
                    )
                    .await?;
                for _ in 0..50 {
                    let left = client
                        .query(
                            "SELECT slot_name::text FROM pg_replication_slots WHERE database = $1",
                            &[&name],
                        )
                        .await?;
                    if left.is_empty() {
                        break;
                    }
                    for row in left {
                        let slot: String = row.try_get(0)?;
                        let _ = client
                            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                            .await;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
    }
}
