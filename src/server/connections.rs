//! The one port: accepts TCP connections and serves each — TLS first when configured — with
//! HTTP/1.1 and HTTP/2 (h2c or ALPN h2) alike, until shutdown; then lets calls in flight finish
//! within a grace period and ends whatever is still open. At most `max_open` connections are
//! served at once (one more is closed as soon as it is accepted), and a connection that sends
//! nothing within `first_byte_timeout` is closed: silent connections hold nothing for long.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tonic::transport::server::TcpConnectInfo;
use tower::ServiceExt;

use crate::config::ConnectionLimits;

/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The open connections of a server.
pub(super) struct Connections {
    router: axum::Router,
    local_addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    graceful: GracefulShutdown,
    /// Connection tasks, so that those still open after the grace period can be ended.
    tasks: JoinSet<()>,
    /// One permit per connection served.
    open: Arc<Semaphore>,
    limits: ConnectionLimits,
    /// When a connection over the limit was last logged (at most one line a second).
    refused_logged: Option<Instant>,
}

impl Connections {
    pub(super) fn new(
        router: axum::Router,
        local_addr: SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
        limits: ConnectionLimits,
    ) -> Connections {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new());
        builder
            .http2()
            .timer(TokioTimer::new())
            // Many watch streams share one connection (a CLI, a dashboard, a proxy).
            .max_concurrent_streams(10_000)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        Connections {
            router,
            local_addr,
            tls,
            builder,
            graceful: GracefulShutdown::new(),
            tasks: JoinSet::new(),
            open: Arc::new(Semaphore::new(limits.max_open.max(1))),
            limits,
            refused_logged: None,
        }
    }

    /// Accepts and serves connections until `shutdown` resolves; the listener is then closed.
    pub(super) async fn accept_until(
        &mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => match self.open.clone().try_acquire_owned() {
                        Ok(permit) => self.serve(stream, peer, permit),
                        Err(_) => self.refuse(stream, peer),
                    },
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = &mut shutdown => return,
            }
            // Reap finished connection tasks as we go.
            while self.tasks.try_join_next().is_some() {}
        }
    }

    /// Closes a connection over the limit at once, so its client learns it now.
    fn refuse(&mut self, stream: TcpStream, peer: SocketAddr) {
        drop(stream);
        if self
            .refused_logged
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            self.refused_logged = Some(Instant::now());
            tracing::warn!(
                %peer,
                max_connections = self.limits.max_open,
                "too many open connections: closed a new one (--max-connections)"
            );
        }
    }

    /// Serves one connection in a task of its own, holding `permit` while it is open.
    fn serve(&mut self, stream: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit) {
        let _ = stream.set_nodelay(true);
        let info = TcpConnectInfo {
            local_addr: Some(self.local_addr),
            remote_addr: Some(peer),
        };
        let service = self.router.clone().map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(info.clone());
                request
            },
        );
        let service = TowerToHyperService::new(service);
        let (watcher, builder, tls) = (
            self.graceful.watcher(),
            self.builder.clone(),
            self.tls.clone(),
        );
        let first_byte_timeout = self.limits.first_byte_timeout;
        self.tasks.spawn(async move {
            let _permit = permit;
            if !speaks_within(&stream, first_byte_timeout, peer).await {
                return;
            }
            let served = match tls {
                None => {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
                Some(acceptor) => {
                    let Some(stream) = handshake(&acceptor, stream, peer).await else {
                        return;
                    };
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }

    /// Lets calls in flight finish (up to `grace`), then ends every connection still open (a
    /// client that stopped reading its stream), which also releases any database connection
    /// its call was holding.
    pub(super) async fn close(mut self, grace: Duration) {
        if tokio::time::timeout(grace, self.graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "calls still running after the grace period; closing anyway"
            );
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Whether the client sends its first byte within `timeout` (a client that connects and says
/// nothing is closed; one that closes first needs no answer).
async fn speaks_within(stream: &TcpStream, timeout: Duration, peer: SocketAddr) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(timeout, stream.peek(&mut byte)).await {
        Ok(Ok(n)) => n > 0,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, %peer, "connection failed before its first byte");
            false
        }
        Err(_) => {
            tracing::debug!(%peer, ?timeout, "connection sent nothing: closed");
            false
        }
    }
}

/// The TLS handshake; a client that never finishes it holds nothing for long.
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, %peer, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}
