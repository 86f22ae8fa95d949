//! Compiles `proto/` with protox (pure Rust, so no system `protoc` is needed)
//! and generates tonic clients and servers from the resulting descriptors.

use std::path::PathBuf;

use prost::Message;

const FILES: &[&str] = &[
    "concord/v1/coordinator.proto",
    "concord/v1/admin.proto",
    "concord/participant/v1/participant.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files: Vec<PathBuf> = FILES.iter().map(|f| root.join(f)).collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("concord_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
