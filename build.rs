//! Generates the C header for the FFI layer with cbindgen.
//!
//! The header is written to `$OUT_DIR/nkv.h`; `tests/c_header.rs` fails when
//! the committed `include/nkv.h` differs from it. Set `NKV_UPDATE_HEADER=1`
//! to also write `include/nkv.h` (then commit it).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=include/nkv.h");
    println!("cargo:rerun-if-env-changed=NKV_UPDATE_HEADER");
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("nkv.h");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    let version = std::env::var("CARGO_PKG_VERSION").expect("cargo sets it");
    let mut parts = version.split(['.', '-']);
    let mut next = || parts.next().unwrap_or("0").to_owned();
    let (major, minor, patch) = (next(), next(), next());
    let mut config = config;
    config.after_includes = Some(format!(
        "\n#define NKV_VERSION_MAJOR {major}\n#define NKV_VERSION_MINOR {minor}\n\
         #define NKV_VERSION_PATCH {patch}\n#define NKV_VERSION_STRING \"{version}\"\n"
    ));
    // Only the FFI module (cbindgen follows its `mod` items): the rest of
    // the crate is not C API.
    match cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        .generate()
    {
        Ok(bindings) => {
            bindings.write_to_file(&out);
            if std::env::var_os("NKV_UPDATE_HEADER").is_some() {
                bindings.write_to_file(crate_dir.join("include/nkv.h"));
            }
        }
        // A syntax error in the crate is reported better by rustc itself.
        Err(e) => println!("cargo:warning=cbindgen could not generate nkv.h: {e}"),
    }
}
