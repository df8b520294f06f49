//! Builds the server and runs it until a shutdown signal: gRPC (JobService, grpc.health.v1,
//! reflection v1 and v1alpha), the REST gateway and `/metrics` on one port, HTTP/1.1 and HTTP/2
//! (h2c) alike.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tonic::transport::server::TcpConnectInfo;
use tonic_health::ServingStatus;
use tower::ServiceExt;

use crate::app::App;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::grpc::GrpcJobService;
use crate::metrics::Metrics;
use crate::pb::access_service_server::AccessServiceServer;
use crate::pb::job_service_server::JobServiceServer;
use crate::store::Store;
use crate::watch::{JobHub, WatchConfig};

/// Largest gRPC message accepted (4 MiB, gRPC's usual limit); larger ones get RESOURCE_EXHAUSTED.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

pub struct Application {
    listener: TcpListener,
    /// Tells every watch stream to end (UNAVAILABLE) when the server stops.
    stop_watchers: tokio::sync::watch::Sender<bool>,
    history: HistoryRetention,
    local_addr: SocketAddr,
    router: axum::Router,
    store: Store,
    health: tonic_health::server::HealthReporter,
    shutdown_grace: Duration,
    health_every: Duration,
    keys: crate::auth::Keys,
    /// TLS on the one port, when a certificate is configured.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Application {
    /// Opens the store (running migrations), builds every service and binds the port.
    pub async fn build(config: Config) -> Result<Application> {
        let store = Store::open(&config.database).await?;
        let metrics = Arc::new(Metrics::default());
        let (stop_watchers, watchers_stopped) = tokio::sync::watch::channel(false);
        let hub = JobHub::new(
            store.clone(),
            WatchConfig {
                heartbeat: config.heartbeat,
                snapshot_page: config.watch_snapshot_page,
            },
            watchers_stopped,
        );
        let keys = crate::auth::Keys::new(config.insecure_no_auth, config.key_limits);
        keys.replace(store.list_keys().await?);
        let app = App::new(store.clone(), hub, config.max_page_size, keys.clone());

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<JobServiceServer<GrpcJobService>>()
            .await;
        health
            .set_serving::<AccessServiceServer<GrpcJobService>>()
            .await;
        health.set_service_status("", ServingStatus::Serving).await;

        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| Error::Internal(format!("reflection v1: {e}")))?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| Error::Internal(format!("reflection v1alpha: {e}")))?;

        let rest = crate::rest::router(app.clone(), metrics.clone());
        let access_service =
            AccessServiceServer::new(GrpcJobService::new(app.clone(), metrics.clone()));
        let job_service = JobServiceServer::new(GrpcJobService::new(app, metrics.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let grpc = tonic::service::Routes::new(job_service)
            .add_service(access_service)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .into_axum_router()
            // gRPC-web (HTTP/1.1 and HTTP/2) for browsers, translated in front of every service.
            .layer(tonic_web::GrpcWebLayer::new());

        let metrics_store = store.clone();
        let router = grpc
            .route(
                "/metrics",
                get(move || {
                    let (metrics, store) = (metrics.clone(), metrics_store.clone());
                    async move {
                        let states = store.count_jobs_by_state().await.unwrap_or_default();
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4",
                            )],
                            metrics.render(&states),
                        )
                    }
                }),
            )
            .merge(rest)
            .merge(crate::dashboard::router())
            .fallback(crate::rest::not_found);
        let router = match cors(&config.cors_origins)? {
            Some(cors) => router.layer(cors),
            None => router,
        };

        check_auth_is_safe(&config, &keys)?;
        let tls = tls_acceptor(&config)?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|e| Error::Unavailable(format!("cannot listen on {}: {e}", config.listen)))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::Internal(format!("local address: {e}")))?;
        Ok(Application {
            listener,
            stop_watchers,
            history: HistoryRetention {
                max_age: config.history_retention,
                max_changes: config.history_max_changes,
                every: config.history_prune_interval,
            },
            local_addr,
            router,
            store,
            health,
            shutdown_grace: config.shutdown_grace,
            health_every: config.health_check_interval,
            keys,
            tls,
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
        let Application {
            listener,
            stop_watchers,
            history,
            local_addr,
            router,
            store,
            health,
            shutdown_grace,
            health_every,
            keys,
            tls,
        } = self;
        tracing::info!(%local_addr, "jobtrack listening (gRPC, gRPC health, reflection, REST /api/v1, /metrics)");

        let monitor = tokio::spawn(monitor_health(store.clone(), health, health_every));
        let key_refresher = tokio::spawn(refresh_keys(store.clone(), keys.clone()));
        let pruner = tokio::spawn(prune_history(store.clone(), history));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new());
        builder
            .http2()
            .timer(TokioTimer::new())
            // Many watch streams share one connection (a CLI, a dashboard, a proxy).
            .max_concurrent_streams(10_000)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        let graceful = GracefulShutdown::new();
        // Connection tasks, so that those still open after the grace period can be ended.
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);

        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Out of file descriptors and the like: back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let info = TcpConnectInfo { local_addr: Some(local_addr), remote_addr: Some(peer) };
                    let service = router.clone().map_request(move |mut request: axum::http::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(info.clone());
                        request
                    });
                    let (watcher, builder, tls) = (graceful.watcher(), builder.clone(), tls.clone());
                    connections.spawn(async move {
                        let service = TowerToHyperService::new(service);
                        let served = match tls {
                            None => {
                                let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                                watcher.watch(connection.into_owned()).await
                            }
                            Some(acceptor) => {
                                // A client that never finishes its handshake holds nothing for long.
                                let stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                                    Ok(Ok(stream)) => stream,
                                    Ok(Err(e)) => {
                                        tracing::debug!(error = %e, %peer, "TLS handshake failed");
                                        return;
                                    }
                                    Err(_) => return,
                                };
                                let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                                watcher.watch(connection.into_owned()).await
                            }
                        };
                        if let Err(e) = served {
                            tracing::debug!(error = %e, %peer, "connection ended with an error");
                        }
                    });
                    // Reap finished connection tasks as we go.
                    while connections.try_join_next().is_some() {}
                }
                () = &mut shutdown => break,
            }
        }

        tracing::info!("shutting down: no new connections; finishing calls in flight");
        drop(listener);
        monitor.abort();
        key_refresher.abort();
        pruner.abort();
        // Watch streams never finish by themselves: end them first, so connections can close.
        let _ = stop_watchers.send(true);
        if tokio::time::timeout(shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?shutdown_grace, "calls still running after the grace period; closing anyway");
        }
        // Whatever is still open (a client that stopped reading its stream) is ended now, which
        // also releases any database connection its call was holding.
        connections.abort_all();
        while connections.join_next().await.is_some() {}
        if tokio::time::timeout(shutdown_grace, store.close())
            .await
            .is_err()
        {
            tracing::warn!("the store did not close within the grace period");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// How long the change log keeps history for resuming watchers.
#[derive(Clone, Copy, Debug)]
struct HistoryRetention {
    max_age: Duration,
    max_changes: u64,
    every: Duration,
}

/// Prunes the change log in the background: entries older than the retention, or beyond the
/// newest `max_changes`. A watcher resuming from before the retained history gets a snapshot.
async fn prune_history(store: Store, retention: HistoryRetention) {
    loop {
        tokio::time::sleep(retention.every).await;
        let older_than = crate::domain::now_micros() - retention.max_age.as_micros() as i64;
        loop {
            match store.prune_history(older_than, retention.max_changes).await {
                // Pruning goes in bounded chunks; a full chunk means there may be more.
                Ok(removed) if removed >= 50_000 => continue,
                Ok(removed) => {
                    if removed > 0 {
                        tracing::debug!(removed, "pruned the change log");
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning the change log failed");
                    break;
                }
            }
        }
    }
}

/// Reports NOT_SERVING while the database does not answer, SERVING once it does again.
async fn monitor_health(
    store: Store,
    health: tonic_health::server::HealthReporter,
    every: Duration,
) {
    let mut serving = true;
    loop {
        tokio::time::sleep(every).await;
        // A dead database must not hold the check up: no answer in time is NOT_SERVING.
        let ok = matches!(tokio::time::timeout(every, store.ping()).await, Ok(Ok(())));
        if ok != serving {
            serving = ok;
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            tracing::warn!(?status, "database health changed");
            health.set_service_status("", status).await;
            health
                .set_service_status("jobtrack.v1.JobService", status)
                .await;
        }
    }
}

/// Safe by default: a server reachable from other machines needs API keys unless told
/// `--insecure-no-auth`; on loopback it may run without (and says so).
fn check_auth_is_safe(config: &Config, keys: &crate::auth::Keys) -> Result<()> {
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

/// The TLS acceptor for `--tls-cert` / `--tls-key` (PEM), offering HTTP/2 and HTTP/1.1 by ALPN.
fn tls_acceptor(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => return Err(Error::invalid("--tls-cert and --tls-key go together")),
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::invalid(format!("--tls-cert {cert}: {e}")))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::invalid(format!("--tls-key {key}: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::invalid(format!("TLS certificate and key: {e}")))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}

/// Reloads the keys every second, so a created or revoked key takes effect on every replica.
async fn refresh_keys(store: Store, keys: crate::auth::Keys) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match store.list_keys().await {
            Ok(list) => keys.replace(list),
            Err(e) => {
                tracing::debug!(error = %e, "reloading API keys failed; keeping the last ones")
            }
        }
    }
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

/// CORS for browsers on other origins: gRPC-web and REST calls, with the headers gRPC-web needs.
/// `None` (no origins configured): no CORS headers, so only same-origin pages can call.
fn cors(origins: &[String]) -> Result<Option<tower_http::cors::CorsLayer>> {
    use axum::http::{HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o)
                    .map_err(|_| Error::invalid(format!("--cors-origin {o:?} is not an origin")))
            })
            .collect::<Result<Vec<_>>>()?;
        AllowOrigin::list(values)
    };
    let headers = [
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "connect-protocol-version",
        "authorization",
        "if-none-match",
        "if-match",
    ];
    let exposed = [
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "etag",
        "x-total-count",
        "link",
    ];
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::HEAD, Method::OPTIONS])
            .allow_headers(headers.map(HeaderName::from_static))
            .expose_headers(exposed.map(HeaderName::from_static))
            .max_age(Duration::from_secs(3600)),
    ))
}
