//! The Kubernetes manifests in `deploy/`: parsed and checked for fit by
//! `scripts/check_deploy.py` (PyYAML), then held to the real binary and server — the arguments
//! and environment are ones `jobtrack serve` knows, the probes ask services the health server
//! reports SERVING, on the port the server is told to listen on.

use std::process::Command;

use crate::helpers::spawn_app;
use crate::rest_openapi::python;

#[tokio::test(flavor = "multi_thread")]
async fn the_kubernetes_manifests_fit_together_and_fit_the_server() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(python())
        .arg(root.join("scripts/check_deploy.py"))
        .arg(root.join("deploy"))
        .output()
        .expect("the checker runs");
    assert!(
        output.status.success(),
        "deploy/ does not fit together:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let facts: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON facts");
    assert!(facts["replicas"].as_u64().expect("replicas") >= 2);

    // The container's arguments and environment are the binary's own.
    let help = Command::new(env!("CARGO_BIN_EXE_jobtrack"))
        .args(["serve", "--help"])
        .output()
        .expect("jobtrack serve --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let args: Vec<&str> = facts["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("a string"))
        .collect();
    assert_eq!(args.first(), Some(&"serve"));
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(help.contains(flag), "jobtrack serve has no flag {flag}");
    }
    let listen = args
        .iter()
        .position(|a| *a == "--listen")
        .and_then(|i| args.get(i + 1))
        .expect("--listen is given");
    let listen: std::net::SocketAddr = listen.parse().expect("--listen is an address");
    assert_eq!(
        u64::from(listen.port()),
        facts["container_port"].as_u64().expect("port")
    );
    assert!(
        listen.ip().is_unspecified(),
        "the pod listens on every interface"
    );
    for name in facts["env"].as_object().expect("env").keys() {
        assert!(
            name == "RUST_LOG" || help.contains(&format!("env: {name}=")),
            "jobtrack serve reads no {name}"
        );
    }
    assert!(
        help.contains("DATABASE_URL"),
        "serve --help mentions DATABASE_URL"
    );

    // Every probe asks a service the health server answers SERVING.
    let app = spawn_app().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in facts["probe_services"].as_array().expect("services") {
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.as_str().expect("a string").to_string(),
            })
            .await
            .expect("the probe's service is known")
            .into_inner();
        assert_eq!(
            reply.status,
            tonic_health::ServingStatus::Serving as i32,
            "{service}"
        );
    }
    app.stop().await;
}
