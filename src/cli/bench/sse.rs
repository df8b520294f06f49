//! Server-Sent Events watchers for `--op fanout --sse`: each on its own HTTP/1.1 connection, as
//! `curl -N` or an `EventSource` holds one.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Opens `count` streams of `path` on `server` (`http://host:port`); each event goes to
/// `on_event(type, data)` in the stream's own task. Returns when every stream has sent SYNCED.
pub(super) async fn open_watchers(
    server: &str,
    path: &str,
    count: usize,
    on_event: impl Fn(&str, serde_json::Value) + Send + Sync + Clone + 'static,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let host = server
        .strip_prefix("http://")
        .ok_or("--sse needs an http:// server")?
        .trim_end_matches('/')
        .to_string();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(count.max(1));
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let (host, path, ready, on_event) = (
            host.clone(),
            path.to_string(),
            ready_tx.clone(),
            on_event.clone(),
        );
        tasks.push(tokio::spawn(async move {
            if let Err(e) = follow(&host, &path, &ready, on_event).await {
                let _ = ready.send(Err(e)).await;
            }
        }));
    }
    super::all_ready(&mut ready_rx, count, "Server-Sent Events stream").await?;
    Ok(tasks)
}

/// One stream: the request, the headers, then the chunked body, event by event.
async fn follow(
    host: &str,
    path: &str,
    ready: &tokio::sync::mpsc::Sender<Result<(), String>>,
    on_event: impl Fn(&str, serde_json::Value),
) -> Result<(), String> {
    let err = |e: std::io::Error| e.to_string();
    let mut stream = TcpStream::connect(host).await.map_err(err)?;
    let _ = stream.set_nodelay(true);
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(err)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await.map_err(err)?;
    if !line.starts_with("HTTP/1.1 200") {
        return Err(format!("answered {}", line.trim_end()));
    }
    loop {
        line.clear();
        reader.read_line(&mut line).await.map_err(err)?;
        if line.trim_end().is_empty() {
            break;
        }
    }
    let mut buffer = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await.map_err(err)? == 0 {
            return Ok(());
        }
        let size = usize::from_str_radix(line.trim_end(), 16).map_err(|e| e.to_string())?;
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).await.map_err(err)?;
        if size == 0 {
            return Ok(());
        }
        buffer.push_str(&String::from_utf8_lossy(&chunk[..size]));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut kind, mut data) = ("", serde_json::Value::Null);
            for field in block.lines() {
                if let Some(k) = field.strip_prefix("event: ") {
                    kind = k;
                } else if let Some(d) = field.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap_or_default();
                }
            }
            if kind == "synced" {
                let _ = ready.send(Ok(())).await;
            }
            if !kind.is_empty() {
                on_event(kind, data);
            }
        }
    }
}
