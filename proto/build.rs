//! Generates the gRPC code from `proto/nasfleet.proto` with a vendored protoc, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free by design: build scripts are single-threaded, so setting the env var is sound here.
    unsafe { std::env::set_var("PROTOC", protoc) };
    // No generated `connect` constructors: clients dial through `dial.rs`, and one
    // would clash with the `Connect` RPC method.
    tonic_prost_build::configure()
        .build_transport(false)
        .codec_path("crate::codec::LeanCodec")
        // Written by hand (`list_systems.rs`): a controller sends one
        // encoded list to many callers.
        .extern_path(
            ".nasfleet.v1.ListSystemsResponse",
            "crate::list_systems::ListSystemsResponse",
        )
        .compile_protos(&["proto/nasfleet.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/nasfleet.proto");
    Ok(())
}
