//! Generates the gRPC code from `proto/` with a vendored protoc, so that no
//! system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure()
        // Deterministic map order: environments are compared and hashed.
        .btree_map(".")
        .compile_protos(
            &["proto/floe/v1/floe.proto", "proto/floe/v1/internal.proto"],
            &["proto"],
        )?;
    Ok(())
}
