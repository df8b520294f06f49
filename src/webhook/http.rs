//! One webhook request: a POST to an address already checked ([`super::target`]), over plain
//! TCP or TLS (the Mozilla roots of `webpki-roots`), HTTP/1.1, no redirects followed, the whole
//! exchange bounded by a timeout and the answer's body read to at most 64 KiB and dropped.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::domain::subscription::Target;

/// The most of an answer's body read before the connection is dropped.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How a receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP status, with the `Retry-After` it asked for (seconds or an HTTP date).
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused or reset, TLS failure, timeout.
    Failed(String),
}

static TLS: LazyLock<Option<tokio_rustls::TlsConnector>> = LazyLock::new(|| {
    use tokio_rustls::rustls;
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
});

/// One receiver's connection, kept open between requests while the receiver keeps it.
#[derive(Default)]
pub struct Client {
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    /// POSTs `body` with `headers` to `target`: on the open connection if there is one, else on
    /// a new one to a checked address ([`super::target::resolve`]).
    pub async fn post(
        &mut self,
        target: &Target,
        allow_private: bool,
        headers: &[(&'static str, String)],
        body: Bytes,
        timeout: Duration,
    ) -> Answer {
        let exchange = async {
            if let Some(sender) = &mut self.sender
                && sender.ready().await.is_err()
            {
                self.sender = None;
            }
            let sender = match &mut self.sender {
                Some(sender) => sender,
                None => {
                    let addrs = super::target::resolve(target, allow_private)
                        .await
                        .map_err(|e| e.public_message())?;
                    self.sender.insert(open(target, &addrs).await?)
                }
            };
            let result = exchange(sender, target, headers, body).await;
            match result {
                Ok((answer, true)) => Ok(answer),
                Ok((answer, false)) => {
                    self.sender = None;
                    Ok(answer)
                }
                Err(e) => {
                    self.sender = None;
                    Err(e)
                }
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => Answer::Failed(e),
            Err(_) => {
                self.sender = None;
                Answer::Failed(format!("no answer within {timeout:?}"))
            }
        }
    }
}

/// A new HTTP/1.1 connection to the first of `addrs` that accepts one (TLS for https).
async fn open(target: &Target, addrs: &[SocketAddr]) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = connect(addrs).await?;
    if target.https {
        let name = rustls_pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| format!("not a TLS server name: {e}"))?;
        let connector = TLS.as_ref().ok_or("TLS is not available")?;
        let tls = connector
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        handshake(tls).await
    } else {
        handshake(stream).await
    }
}

async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, String> {
    let mut last = String::from("no address");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = format!("connecting to {addr}: {e}"),
        }
    }
    Err(last)
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    // Ends when the connection closes (the sender dropped, or the receiver hung up).
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    headers: &[(&'static str, String)],
    body: Bytes,
) -> Result<(Answer, bool), String> {
    let default_port = if target.https { 443 } else { 80 };
    let bracketed = match target.literal_ip() {
        Some(std::net::IpAddr::V6(_)) => format!("[{}]", target.host),
        _ => target.host.clone(),
    };
    let host = if target.port == default_port {
        bracketed
    } else {
        format!("{bracketed}:{}", target.port)
    };
    let mut request = hyper::Request::post(target.path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("jobtrack/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let code = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let mut body = response.into_body();
    let mut read = 0;
    while read < MAX_ANSWER_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            Some(Err(e)) => return Err(format!("reading the answer: {e}")),
            None => return Ok((Answer::Status { code, retry_after }, true)),
        }
    }
    // Too long an answer: the status counts, the rest is not read and the connection not reused.
    Ok((Answer::Status { code, retry_after }, false))
}

/// `Retry-After`: a number of seconds, or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
