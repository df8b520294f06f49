//! A small HTTP/1.1 client over a plain TCP socket, for the REST gateway: the request target goes
//! on the wire byte for byte (raw JSON in the query, as real clients send it, or URL-encoded),
//! and the answer is read exactly as the server sent it.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; the test fails with the body shown if it is not.
    pub fn json(&self) -> serde_json::Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Checks the framework's error envelope with `status` and returns its message.
    pub fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        let body = self.json();
        assert_eq!(body["_status"], "ERR", "{body}");
        assert_eq!(body["_error"]["code"], status, "{body}");
        assert_eq!(body.as_object().map(|o| o.len()), Some(2), "{body}");
        let message = body["_error"]["message"].as_str().expect("a message");
        assert!(!message.is_empty());
        message.to_string()
    }
}

/// Sends one request on a new connection and reads the whole answer.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");

    let mut parsed_headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut parsed_headers);
    let header_len = match response.parse(&raw) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "not an HTTP response ({other:?}): {}",
            String::from_utf8_lossy(&raw)
        ),
    };
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let reply = Reply {
        status: response.code.expect("a status"),
        headers,
        body: raw[header_len..].to_vec(),
    };
    if method != "HEAD" && reply.status != 304 && reply.status != 204 {
        let length: usize = reply
            .header("content-length")
            .unwrap_or_else(|| panic!("no content-length: {reply:?}"))
            .parse()
            .expect("a number");
        assert_eq!(length, reply.body.len(), "body length");
    } else {
        assert!(
            reply.body.is_empty(),
            "{method} with status {}: a body",
            reply.status
        );
    }
    reply
}

pub async fn get(addr: SocketAddr, target: &str) -> Reply {
    request(addr, "GET", target, &[], b"").await
}

/// `where` (and any JSON value) URL-encoded, as careful clients send it.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends `raw` bytes and returns all that comes back until the server closes the connection
/// (for protocol-level checks).
pub async fn request_raw(addr: SocketAddr, raw: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(raw.as_bytes()).await;
    let mut out = Vec::new();
    let _ = crate::helpers::within(
        "the server to close the connection",
        stream.read_to_end(&mut out),
    )
    .await;
    String::from_utf8_lossy(&out).into_owned()
}
