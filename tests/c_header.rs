//! The committed `include/nkv.h` must be exactly what cbindgen generates
//! from `src/ffi` now (build.rs writes it to `$OUT_DIR/nkv.h`).

#[test]
fn committed_header_is_current() {
    let generated = std::fs::read_to_string(concat!(env!("OUT_DIR"), "/nkv.h"))
        .expect("build.rs generated nkv.h");
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/nkv.h"))
        .expect("include/nkv.h is committed");
    assert!(
        generated == committed,
        "include/nkv.h is stale: regenerate it with `NKV_UPDATE_HEADER=1 cargo build` and commit it"
    );
}

/// The header's `NKV_ABI_VERSION` (written by build.rs) is the library's:
/// programs pass it to `nkv_connect_abi`, which refuses any other.
#[test]
fn header_abi_version_is_the_librarys() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/nkv.h"))
        .expect("include/nkv.h is committed");
    let line = format!("#define NKV_ABI_VERSION {}\n", nkv::ffi::ABI_VERSION);
    assert!(
        committed.contains(&line),
        "include/nkv.h lacks `{}`",
        line.trim()
    );
}
