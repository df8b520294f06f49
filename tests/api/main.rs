//! One test binary: every test starts the real server on port 0 against a fresh database — a
//! SQLite file, or with `JOBTRACK_TEST_POSTGRES` a new database on that Postgres server — and
//! talks to it with real clients (tonic for gRPC and gRPC-web, raw HTTP/1.1 for REST).

mod auth;
mod bad_input;
mod cancel;
mod cli;
mod concurrency;
mod connections;
mod deploy;
mod durability;
mod estimates;
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
mod resume;
mod server;
mod sse;
mod terminal;
mod tls;
mod totals;
mod traces;
mod upkeep;
mod watch;
mod webhooks;
