//! Compiles the protos with protox (pure Rust), so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/jobtrack/v1/jobtrack.proto",
        "proto/jobtrack/v1/subscriptions.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    // sqlx::migrate! embeds the migrations at compile time: a new file must trigger a rebuild.
    println!("cargo:rerun-if-changed=migrations");

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(protos)?;

    // Reflection serves this set, so clients need no .proto file in hand.
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("jobtrack_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    let fds = compiler.file_descriptor_set();
    tonic_prost_build::configure().compile_fds(fds.clone())?;
    // The service once more, for serving only: its watch streams send events already encoded
    // (crate::grpc::SharedEvent, one encoding for every watcher of a change) and each response
    // stream starts with a small buffer (crate::grpc::ServedCodec); every other type is the one
    // generated above.
    let served = out_dir.join("served");
    std::fs::create_dir_all(&served)?;
    tonic_prost_build::configure()
        .build_client(false)
        .codec_path("crate::grpc::ServedCodec")
        .out_dir(&served)
        .extern_path(".jobtrack.v1.JobEvent", "crate::grpc::SharedEvent")
        .extern_path(".jobtrack.v1", "crate::pb")
        .compile_fds(fds)?;
    Ok(())
}
