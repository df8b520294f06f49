//! TLS on the one port (--tls-cert, --tls-key): gRPC over HTTP/2, and gRPC-web and REST over
//! HTTP/1.1, all with a self-signed certificate made by the test; plain HTTP is refused.

use std::sync::Arc;

use jobtrack::pb;
use jobtrack::pb::job_service_client::JobServiceClient;
use prost::Message;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::helpers::*;

struct Tls {
    cert_pem: String,
    _dir: tempfile::TempDir,
    cert: String,
    key: String,
}

fn self_signed() -> Tls {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("a certificate");
    let dir = tempfile::tempdir().expect("a directory");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write");
    Tls {
        cert_pem: certified.cert.pem(),
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        _dir: dir,
    }
}

/// One HTTP/1.1 exchange over TLS; returns the raw response bytes.
async fn https(addr: std::net::SocketAddr, tls: &Tls, head: String, body: &[u8]) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes()) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut stream = connector.connect(name, tcp).await.expect("TLS handshake");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_grpc_web_and_rest_all_run_over_tls_on_the_one_port() {
    let tls = self_signed();
    let app = spawn_app_with(|c| {
        c.tls_cert = Some(tls.cert.clone());
        c.tls_key = Some(tls.key.clone());
    })
    .await;
    let port = app.addr.port();

    // gRPC over HTTP/2 with TLS.
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .expect("url")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&tls.cert_pem))
                .domain_name("localhost"),
        )
        .expect("tls config")
        .connect()
        .await
        .expect("a TLS connection");
    let mut client = JobServiceClient::new(channel);
    let created = client
        .create_job(pb::CreateJobRequest {
            job: Some(job(JobType::K8sCopy, JobState::Running)),
        })
        .await
        .expect("CreateJob over TLS")
        .into_inner();

    // REST over HTTP/1.1 with TLS.
    let reply = https(
        app.addr,
        &tls,
        format!(
            "GET /api/v1/jobs/{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            created.id
        ),
        b"",
    )
    .await;
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(&created.etag));

    // gRPC-web over HTTP/1.1 with TLS: one framed GetJob.
    let message = pb::GetJobRequest {
        id: created.id.clone(),
    }
    .encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend((message.len() as u32).to_be_bytes());
    frame.extend(&message);
    let reply = https(
        app.addr,
        &tls,
        format!(
            "POST /jobtrack.v1.JobService/GetJob HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            frame.len()
        ),
        &frame,
    )
    .await;
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("grpc-status:0") || text.contains("grpc-status: 0"),
        "{text}"
    );
    assert!(text.contains(&created.id));

    // Plain HTTP on the TLS port gets no HTTP answer (at most a TLS alert), and is closed.
    let plain = crate::http::request_raw(
        app.addr,
        "GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(!plain.starts_with("HTTP/"), "{plain}");
    app.stop().await;
}
