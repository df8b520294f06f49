//! The one port: accepts TCP connections and serves each — TLS first when configured — with
//! HTTP/1.1 and HTTP/2 (h2c or ALPN h2) alike, until shutdown; then lets calls in flight finish
//! within a grace period and ends whatever is still open.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tonic::transport::server::TcpConnectInfo;
use tower::ServiceExt;

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
}

impl Connections {
    pub(super) fn new(
        router: axum::Router,
        local_addr: SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
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
                    Ok((stream, peer)) => self.serve(stream, peer),
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

    /// Serves one connection in a task of its own.
    fn serve(&mut self, stream: TcpStream, peer: SocketAddr) {
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
        self.tasks.spawn(async move {
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
