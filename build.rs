//! Generates the C header for the FFI layer with cbindgen.
//!
//! The header is written to `$OUT_DIR/nkv.h`; `tests/c_header.rs` fails when
//! the committed `include/nkv.h` differs from it. Set `NKV_UPDATE_HEADER=1`
//! to also write `include/nkv.h` (then commit it).

use std::path::{Path, PathBuf};

/// Must equal `nkv::ffi::ABI_VERSION` (checked by `tests/c_header.rs`).
const ABI_VERSION: u32 = 0;

/// Written into the header after the includes: the ABI version, the key
/// length that means "NUL-terminated", and the macros programs call, which
/// pass the header's ABI version for the library to check.
const ABI_MACROS: &str = "/** The C ABI this header describes (the N in the SONAME libnkv.so.N). */
#define NKV_ABI_VERSION 0

/** A key or prefix length meaning: the string is NUL-terminated. */
#define NKV_NUL ((size_t)-1)

/** New options with the defaults (NULL if the library has another ABI). */
#define nkv_options_new() nkv_options_new_abi(NKV_ABI_VERSION)
/** Connects with the default options; see nkv_connect_abi. */
#define nkv_connect(addr, out) nkv_connect_abi(NKV_ABI_VERSION, (addr), NULL, (out))
/** Connects with options; see nkv_connect_abi. */
#define nkv_connect_opts(addr, options, out) \\
    nkv_connect_abi(NKV_ABI_VERSION, (addr), (options), (out))
";

/// Puts `libnkv.so.N -> libnkv.so` beside the library cargo builds
/// (`target/<profile>/` and its `deps/`), so that programs linked with
/// `-lnkv` against it find their SONAME at run time. Best effort: a layout
/// other than cargo's usual one is left alone.
fn link_soname(_crate_dir: &Path) {
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    // OUT_DIR is target/<profile>/build/<pkg>-<hash>/out.
    let Some(profile) = out.ancestors().nth(3) else {
        return;
    };
    for dir in [profile.to_path_buf(), profile.join("deps")] {
        if !dir.is_dir() {
            continue;
        }
        let link = dir.join(format!("libnkv.so.{ABI_VERSION}"));
        if std::fs::symlink_metadata(&link).is_err() {
            let _ = std::os::unix::fs::symlink("libnkv.so", &link);
        }
    }
}

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
         #define NKV_VERSION_PATCH {patch}\n#define NKV_VERSION_STRING \"{version}\"\n\n\
         {ABI_MACROS}"
    ));
    // The SONAME carries the ABI version: a program linked against
    // libnkv.so.N never loads a library with another ABI.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnkv.so.{ABI_VERSION}");
    link_soname(&crate_dir);
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
