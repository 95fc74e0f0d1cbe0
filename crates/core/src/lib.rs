//! The shared library of the Tributary services.
//!
//! Every service is a thin binary over this crate: configuration ([`config`]), logs and metrics
//! ([`telemetry`]), the Kafka client and the one consume/produce loop ([`bus`]), the topic catalog,
//! Confluent wire format, registry client and Avro/Arrow codecs ([`schema`]), and object storage
//! with Parquet ([`lake`]); [`runtime`] runs a service's lifecycle on top of them.

pub mod auth;
pub mod bus;
pub mod config;
pub mod lake;
pub mod runtime;
pub mod schema;
pub mod shutdown;
pub mod sketch;
pub mod telemetry;
