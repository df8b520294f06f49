//! Fuzzing the REST layer through the query language's harness
//! ([`crate::domain::query::tests::fuzz`]): the query string's parsing in process (with its
//! projection and paging links), and raw bytes — invalid UTF-8, control characters and broken
//! framing included — in the request target of real HTTP/1.1 requests to a real server, on both
//! collections. Every input is answered: parsed, or refused as a client error (4xx), never a
//! panic, never a 5xx, never a connection closed without an answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::params::ListParams;
use super::render::{self, Projection};
use crate::config::Config;
use crate::domain::Job;
use crate::domain::query::tests::fuzz::{Verdict, answer, filter_kind, fuzz, rounds, text};
use crate::domain::query::{ListQuery, PageAt};
use crate::error::Error;
use crate::server::Server;

/// Everything the gateway parses from a list request's query string.
fn parse_all(query: &str) -> Result<String, Error> {
    let params = ListParams::parse(Some(query))?;
    Projection::parse(&params.projection, &render::projectable::<Job>())?;
    let list = ListQuery::<Job>::parse(
        &params.where_,
        &params.sort,
        params.max_results,
        PageAt::Number(params.page),
        1000,
        None,
    )?;
    let _ = params.envelope_links("jobs", 25, 1_000_000);
    let _ = params.link_header("jobs", 25, 1_000_000);
    Ok(filter_kind(&list.filter))
}

#[test]
fn rest_query_strings_never_panic_and_refuse_only_with_invalid_argument() {
    fuzz("query", rounds(100_000), |input| match text(input) {
        Some(query) => answer(parse_all(query)),
        None => Ok("not UTF-8".into()),
    });
}

/// A blocking HTTP/1.1 client that keeps its connection while the server does.
struct Client {
    addr: SocketAddr,
    conn: Option<TcpStream>,
}

impl Client {
    /// `GET <target>`; answers the status and the body, or why there is no answer.
    fn get(&mut self, target: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let conn = TcpStream::connect(self.addr).map_err(|e| format!("connect: {e}"))?;
                conn.set_read_timeout(Some(Duration::from_secs(30)))
                    .map_err(|e| e.to_string())?;
                self.conn.insert(conn)
            }
        };
        let mut request = b"GET ".to_vec();
        request.extend_from_slice(target);
        request.extend_from_slice(b" HTTP/1.1\r\nHost: fuzz\r\n\r\n");
        let answer = conn
            .write_all(&request)
            .map_err(|e| e.to_string())
            .and_then(|()| read_response(conn));
        match &answer {
            Ok((_, _, close)) if !close => {}
            _ => self.conn = None,
        }
        answer.map(|(status, body, _)| (status, body))
    }
}

/// Reads one response: (status, body, whether the server closes the connection).
fn read_response(conn: &mut TcpStream) -> Result<(u16, Vec<u8>, bool), String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(0) => {
                return Err(format!(
                    "the connection closed without an answer after {head:?}"
                ));
            }
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(format!("no answer: {e}")),
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {head}"))?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    conn.read_exact(&mut body)
        .map_err(|e| format!("a short body: {e}"))?;
    Ok((status, body, head.contains("connection: close")))
}

/// A real server on an in-memory database, for as long as the test runs.
fn serve(runtime: &tokio::runtime::Runtime) -> SocketAddr {
    let server = runtime
        .block_on(Server::build(Config::for_database("sqlite::memory:")))
        .expect("the server starts");
    let addr = server.local_addr();
    runtime.spawn(server.run_until_stopped(std::future::pending()));
    addr
}

#[test]
fn raw_bytes_in_a_rest_request_are_answered_and_never_a_server_error() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut client = Client {
        addr: serve(&runtime),
        conn: None,
    };
    let mut n = 0u64;
    fuzz("query", rounds(100_000) / 10 + 1, |input| -> Verdict {
        n += 1;
        let collection = if n.is_multiple_of(2) {
            "jobs"
        } else {
            "kubepvcprogress"
        };
        let mut target = format!("/api/v1/{collection}?").into_bytes();
        target.extend_from_slice(input);
        let (status, body) = client.get(&target)?;
        if status >= 500 {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
        }
        // The server refuses in its own threads: here the kind of an answer is its status and
        // the parameter the message begins with.
        let about = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|b| {
                let message = b["_error"]["message"].as_str()?;
                message.split_whitespace().next().map(str::to_string)
            })
            .unwrap_or_default();
        Ok(format!("{collection} {status} {about}"))
    });
}
