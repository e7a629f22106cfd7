//! Compiles `proto/` and the vendored Envoy rate limit service
//! (`third_party/envoy/`) with protox (pure Rust, no system protoc) and
//! writes the encoded FileDescriptorSet that server reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut files: Vec<PathBuf> =
        fs::read_dir("proto/coord/v1")?.map(|entry| entry.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|ext| ext == "proto"));
    files.sort();
    files.push("third_party/envoy/envoy/service/ratelimit/v3/rls.proto".into());

    let fds = protox::compile(&files, ["proto", "third_party/envoy"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("coord_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .type_attribute(".", "#[allow(clippy::all)]")
        // Payloads are shared by every subscriber's copy of a message.
        .bytes(".coord.v1.Message.payload")
        .bytes(".coord.v1.PublishRequest.payload")
        // Undecodable requests are INVALID_ARGUMENT, not tonic's INTERNAL.
        .codec_path("crate::codec::Codec")
        .compile_fds(fds)?;

    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=third_party/envoy");
    Ok(())
}
