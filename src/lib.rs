//! jobtrack: the one place that records backup, copy and restore jobs and their per-volume (PVC)
//! progress, and tells everyone about every change.
//!
//! The map of the crate, from the wire inwards:
//!
//! - [`startup`] binds the one port and serves gRPC, health, reflection and `/metrics` on it,
//!   until a shutdown signal arrives.
//! - [`grpc`] is the `jobtrack.v1.JobService` transport: proto <-> domain conversion, status
//!   mapping, one log line and one metrics sample per call.
//! - [`app`] is the application layer: one method per operation, called by every transport.
//! - [`domain`] holds the records, the job life cycle, the derived aggregates and the query
//!   language; it knows nothing of tonic, axum or sqlx.
//! - [`store`] is the only place with SQL (SQLite today, Postgres later) behind one interface.
//! - [`metrics`] keeps the Prometheus counters; [`config`] the command line; [`bench`] the load
//!   generator.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod interface;
pub mod metrics;
pub mod rest;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod watch;

/// Code generated from `proto/jobtrack/v1/jobtrack.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("jobtrack.v1");

    /// The encoded descriptors of our protos, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/jobtrack_descriptor.bin"));
}
