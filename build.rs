//! Compiles the contracts in `proto/` into Rust with protox (pure Rust, no
//! system `protoc`) and tonic-prost-build, and writes the encoded descriptor
//! set that the library exposes for reflection, validation, authorization and
//! REST transcoding.
//!
//! The descriptor set is encoded by protox itself: re-encoding prost-types'
//! value would drop the extension options (`google.api.http`, Safra's own).

use std::{
    env,
    error::Error,
    fs,
    path::{Path, PathBuf},
};

fn main() -> Result<(), Box<dyn Error>> {
    compile_contracts()?;
    if env::var_os("CARGO_FEATURE_TEST_CONTRACTS").is_some() {
        compile_test_contracts()?;
    }
    Ok(())
}

/// `proto/`: every generated package and the descriptor set production serves.
fn compile_contracts() -> Result<(), Box<dyn Error>> {
    let proto_root = Path::new("proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let mut files = Vec::new();
    collect_protos(proto_root, &mut files)?;
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let mut compiler = protox::Compiler::new([proto_root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&files)?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("safra_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .build_server(env::var_os("CARGO_FEATURE_SERVER").is_some())
        .include_file("safra_proto.rs")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

/// `proto-test/`: test-only contracts in a separate descriptor set, whose
/// generated code refers to the production types instead of copying them.
fn compile_test_contracts() -> Result<(), Box<dyn Error>> {
    let test_root = Path::new("proto-test");
    println!("cargo:rerun-if-changed={}", test_root.display());
    let mut files = Vec::new();
    collect_protos(test_root, &mut files)?;
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let mut compiler = protox::Compiler::new([test_root, Path::new("proto")])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&files)?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("safra_test_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    // Imported packages map to crate::proto rather than being generated
    // again; the output goes to its own folder so nothing production uses is
    // overwritten.
    let test_out = out_dir.join("test");
    fs::create_dir_all(&test_out)?;
    tonic_prost_build::configure()
        .out_dir(&test_out)
        .build_client(true)
        .build_server(true)
        .extern_path(".safra.type", "crate::testing::safra_type")
        .extern_path(".safra.options", "crate::proto::safra::options")
        .extern_path(".google.api", "crate::proto::google::api")
        .extern_path(".google.rpc", "crate::proto::google::rpc")
        .extern_path(".google.type", "crate::testing::google_type")
        .include_file("safra_test_proto.rs")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

/// Every `.proto` file under `dir`, as paths relative to the crate root.
fn collect_protos(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), Box<dyn Error>> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(path);
        }
    }
    Ok(())
}
