//! jobtrack: the one place that records backup, copy and restore jobs and their per-volume (PVC)
//! progress, and tells everyone about every change.
//!
//! The map of the crate, from the wire inwards (an arrow only ever points down this list):
//!
//! - [`cli`]: the command line — `serve` starts the server; `watch`, `jobs`, `keys`, `whoami`,
//!   `simulate` and `bench` are client tools that speak the public gRPC API.
//! - [`server`]: binds the one port and serves everything on it (HTTP/1.1 and HTTP/2, TLS when
//!   configured) until a shutdown signal; its background tasks (health, key reloads, pruning).
//! - [`grpc`], [`rest`], [`dashboard`]: the transports — `jobtrack.v1` over gRPC and gRPC-web,
//!   the documented REST JSON, and the embedded dashboard page.
//! - [`app`]: the application layer, one method per operation, called by every transport; it
//!   authenticates callers and checks permissions ([`auth`]).
//! - [`watch`]: the hub that streams snapshots and changes to watchers, with resume tokens;
//!   [`upkeep`]: the sweeper that deletes expired finished jobs and marks silent ones stalled,
//!   then FAILED; [`webhook`]: the deliverer that calls each subscription's URL for the
//!   changes it wants, from its cursor in the change log.
//! - [`store`]: the only place with SQL — SQLite or Postgres behind one contract.
//! - [`domain`]: jobs, PVC records, their life cycles, aggregates and tables of fields, and the
//!   where/sort language; it knows nothing of tonic, axum or sqlx.
//! - Beside them: [`config`] (what the server needs to start), [`error`] (the one error type),
//!   [`interface`] (the names of RPCs, routes and transports), [`metrics`] (Prometheus),
//!   [`telemetry`] (logging), [`pb`] (the code generated from the proto).

// Functions short enough to read on one screen (the threshold is in clippy.toml).
#![warn(clippy::too_many_lines)]

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
pub mod upkeep;
pub mod watch;
pub mod webhook;

/// Code generated from `proto/jobtrack/v1/jobtrack.proto`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("jobtrack.v1");

    /// The encoded descriptors of our protos, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/jobtrack_descriptor.bin"));
}

/// The job service as it is served: generated again (build.rs) with [`grpc::SharedEvent`], an
/// event encoded once for all its watchers, in place of `pb::JobEvent` in the watch streams.
pub mod pb_server {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/served/jobtrack.v1.rs"));
}
