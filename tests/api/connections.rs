//! The port's connections: one that sends nothing is closed after the first-byte timeout, and
//! no more than the configured number are open at once.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::http::get;

/// Reads until the server closes `stream`: the bytes it sent first (none, for a closed one).
async fn closed_by_the_server(stream: &mut TcpStream, what: &str) -> usize {
    let mut received = Vec::new();
    within(what, stream.read_to_end(&mut received))
        .await
        .expect("the connection ends with a close, not a reset");
    received.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_sends_nothing_is_closed_after_the_first_byte_timeout() {
    let app =
        spawn_app_with(|c| c.connections.first_byte_timeout = Duration::from_millis(300)).await;
    let mut silent = TcpStream::connect(app.addr).await.expect("connect");
    assert_eq!(
        closed_by_the_server(&mut silent, "the server to close a silent connection").await,
        0,
        "closed without a word"
    );
    // A connection that speaks is served as ever.
    assert_eq!(get(app.addr, "/api/v1/jobs").await.status, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_cap_are_closed_at_once_and_one_more_is_served_when_one_closes() {
    let app = spawn_app_with(|c| {
        c.connections.max_open = 3;
        c.connections.first_byte_timeout = Duration::from_secs(600);
    })
    .await;
    // The test's own gRPC client holds one connection; two silent ones fill the cap.
    let first = TcpStream::connect(app.addr).await.expect("connect");
    let _second = TcpStream::connect(app.addr).await.expect("connect");
    let mut over = TcpStream::connect(app.addr)
        .await
        .expect("the kernel accepts");
    assert_eq!(
        closed_by_the_server(&mut over, "the server to close a connection over the cap").await,
        0
    );
    // The gRPC client's connection still works.
    app.client()
        .list_jobs(jobtrack::pb::ListJobsRequest::default())
        .await
        .expect("the open connection is served");
    drop(first);
    // Once the server has seen it close, there is room for one more.
    let request = "GET /api/v1/jobs HTTP/1.1\r\nHost: jobtrack\r\nConnection: close\r\n\r\n";
    eventually("a new connection to be served", || async {
        let answer = crate::http::request_raw(app.addr, request).await;
        answer.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    app.stop().await;
}
