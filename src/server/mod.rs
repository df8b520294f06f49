//! The server: [`Server::build`] opens the store, builds every service and binds the one port;
//! [`Server::run_until_stopped`] serves gRPC, gRPC-web, the REST gateway, the dashboard and
//! `/metrics` on it — HTTP/1.1 and HTTP/2 (h2c, or TLS with ALPN) alike — until a shutdown
//! signal, then ends every watch stream and closes the connections and the database gracefully.

mod background;
mod connections;
mod routes;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic_health::server::HealthReporter;

use crate::app::App;
use crate::auth::Keys;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::watch::{JobHub, WatchConfig};
use background::{Background, HistoryRetention, Upkeeping};
use connections::Connections;

/// A server bound to its port, ready to run.
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: axum::Router,
    /// Tells every watch stream to end (UNAVAILABLE) when the server stops.
    stop_watchers: tokio::sync::watch::Sender<bool>,
    store: Store,
    keys: Keys,
    health: HealthReporter,
    health_every: Duration,
    history: HistoryRetention,
    upkeep: Upkeeping,
    shutdown_grace: Duration,
    /// TLS on the one port, when a certificate is configured.
    tls: Option<tokio_rustls::TlsAcceptor>,
    connection_limits: crate::config::ConnectionLimits,
    webhooks: crate::webhook::WebhookConfig,
    webhook_wakeup: crate::webhook::Wakeup,
}

impl Server {
    /// Opens the store (running migrations), builds every service and binds the port.
    pub async fn build(config: Config) -> Result<Server> {
        let store = Store::open_with(&config.database, config.upkeep).await?;
        let (stop_watchers, watchers_stopped) = tokio::sync::watch::channel(false);
        let hub = JobHub::new(
            store.clone(),
            WatchConfig {
                heartbeat: config.heartbeat,
                snapshot_page: config.watch_snapshot_page,
            },
            watchers_stopped,
        );
        let keys = Keys::new(config.insecure_no_auth, config.key_limits);
        keys.replace(store.list_keys().await?);
        let metrics = Metrics::new(store.write_metrics());
        let webhook_wakeup = crate::webhook::Wakeup::default();
        let app = App::new(
            store.clone(),
            hub.clone(),
            config.max_page_size,
            keys.clone(),
            metrics.clone(),
            config.webhooks,
            webhook_wakeup.clone(),
        );
        let upkeep = Upkeeping {
            upkeep: config.upkeep,
            every: config.sweep_interval,
            metrics: metrics.clone(),
        };
        let observed = routes::Observed {
            metrics,
            store: store.clone(),
            hub,
        };
        let (router, health) = routes::router(app, observed, &config.cors_origins).await?;

        check_auth_is_safe(&config, &keys)?;
        let tls = tls::tls_acceptor(&config)?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|e| Error::Unavailable(format!("cannot listen on {}: {e}", config.listen)))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::Internal(format!("local address: {e}")))?;
        Ok(Server {
            listener,
            local_addr,
            router,
            stop_watchers,
            store,
            keys,
            health,
            health_every: config.health_check_interval,
            history: HistoryRetention {
                max_age: config.history_retention,
                max_changes: config.history_max_changes,
                every: config.history_prune_interval,
            },
            upkeep,
            shutdown_grace: config.shutdown_grace,
            tls,
            connection_limits: config.connections,
            webhooks: config.webhooks,
            webhook_wakeup,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then lets in-flight calls finish (up to the grace
    /// period), closes the connections and the database.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let local_addr = self.local_addr;
        tracing::info!(%local_addr, "jobtrack listening (gRPC, gRPC health, reflection, REST /api/v1, /metrics)");
        let background = Background::start(
            &self.store,
            self.health,
            self.health_every,
            self.keys,
            self.history,
            self.upkeep,
        );
        let deliverer = crate::webhook::Deliverer::start(
            self.store.clone(),
            self.webhooks,
            crate::rest::webhook_data,
            self.webhook_wakeup,
        )?;
        let mut connections =
            Connections::new(self.router, local_addr, self.tls, self.connection_limits);
        connections.accept_until(self.listener, shutdown).await;

        tracing::info!("shutting down: no new connections; finishing calls in flight");
        background.stop();
        deliverer.stop().await;
        // Watch streams never finish by themselves: end them first, so connections can close.
        let _ = self.stop_watchers.send(true);
        connections.close(self.shutdown_grace).await;
        if tokio::time::timeout(self.shutdown_grace, self.store.close())
            .await
            .is_err()
        {
            tracing::warn!("the store did not close within the grace period");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Safe by default: a server reachable from other machines needs API keys unless told
/// `--insecure-no-auth`; on loopback it may run without (and says so).
fn check_auth_is_safe(config: &Config, keys: &Keys) -> Result<()> {
    let loopback = config
        .listen
        .parse::<SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or_else(|_| config.listen.starts_with("localhost:"));
    if keys.required() {
        tracing::info!("API keys required on every interface");
    } else if config.insecure_no_auth {
        tracing::warn!("--insecure-no-auth: every caller may do everything");
    } else if loopback {
        tracing::warn!(
            "no API keys exist: authentication is off (allowed on a loopback address); create one with `jobtrack keys create`"
        );
    } else {
        return Err(Error::invalid(format!(
            "refusing to serve {} without API keys: create one with `jobtrack keys create --name <name> --role admin`, or pass --insecure-no-auth",
            config.listen
        )));
    }
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
