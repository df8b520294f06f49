//! One test binary: every test starts the real server on port 0 against a fresh SQLite file and
//! talks to it with a real tonic client.

mod auth;
mod bad_input;
mod cancel;
mod cli;
mod concurrency;
mod deploy;
mod durability;
mod grpc_web;
mod helpers;
mod http;
mod jobs;
mod lifecycle;
mod metrics;
mod paging;
mod pvc_progress;
mod query;
mod replicas;
mod rest;
mod rest_openapi;
mod server;
mod tls;
mod totals;
mod watch;
