//! Compiles `proto/**` with protox (a pure-Rust protobuf compiler: no `protoc` needed)
//! into Rust types, gRPC servers and clients, plus an encoded file descriptor set that
//! the reflection service serves.

use std::path::PathBuf;

use prost::Message as _;

const PROTO_ROOT: &str = "../../proto";
const PROTOS: &[&str] = &[
    "tenancy/common/v1/common.proto",
    "tenancy/identity/v1/identity.proto",
    "tenancy/policy/v1/policy.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(PROTO_ROOT);
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }

    let fds = protox::compile(PROTOS, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("tenancy_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
