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
