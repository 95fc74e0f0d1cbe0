//! The test harness: real services on loopback for integration tests.
//!
//! - [`Broker`]: Apache Kafka (one KRaft node) or Tansu (SQLite storage), as
//!   `TRIBUTARY_TEST_BROKER` says, with its data in a temporary folder, on free ports (both are
//!   installed by `integration-tests/run.sh`; `KAFKA_LAUNCHER` and `TANSU_BIN` override where).
//! - [`S3`]: moto's S3 server on a free port, with a fresh bucket.
//! - [`TestDatabase`]: a fresh database on the machine's PostgreSQL, dropped afterwards.
//! - [`unique`]: random topic and group names, so tests never share state and can run twice.
//!
//! The modules, by concern (everything is re-exported here): `broker` (the broker processes),
//! `registry` (the schema registry process), `services` (ingest and the other services as
//! processes), `topics` (creating topics, reading them back, committed positions), `lake` (the
//! archive's lake and its exactly-once check), `s3` and `postgres` (the stores), `stack` (a
//! broker and registry with a catalog's topics, JSON records as Avro), `util` (free ports,
//! unique names, logs), and the public `bench` and `faults`.

pub mod bench;
mod broker;
pub mod faults;
mod lake;
mod postgres;
mod registry;
mod s3;
mod services;
mod stack;
mod topics;
mod util;

pub use bench::run_beside_services;
pub use broker::{Broker, BrokerKind, KAFKA_VERSION, TANSU_VERSION, kafka_launcher, tansu_binary};
pub use lake::{
    FileStamp, LakeCheck, LakeFile, LakeFingerprint, LakeRow, LakeWatch, parquet_files,
};
pub use postgres::{TestDatabase, postgres_base};
pub use registry::Registry;
pub use s3::S3;
pub use services::{
    Archive, Feature, Ingest, Service, TrainTrigger, Transform, assigned_partitions,
    service_config, workspace_bin,
};
pub use stack::{Stack, key_of, to_json};
pub use topics::{
    ReadRecord, committed_and_end, create_catalog_topics, read_all, read_to_end, repo_catalog,
};
pub use util::{init_logs, unique};
