//! Build script of every function package (`build = ` in its Cargo.toml):
//! link flags for the arm64 release bootstrap only (host builds and tests are
//! untouched). README, "Binary size": with `panic = "abort"` nothing
//! unwinds, so the DWARF call-frame tables (`.eh_frame`, `.eh_frame_hdr`)
//! are dropped at link time by `discard-eh-frame.ld`.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("set by Cargo");
    let script = std::path::Path::new(&dir).join("../../scripts/discard-eh-frame.ld");
    println!("cargo::rerun-if-changed={}", script.display());
    let target = std::env::var("TARGET").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    if target == "aarch64-unknown-linux-gnu" && profile == "release" {
        println!("cargo::rustc-link-arg-bins=-Wl,--no-eh-frame-hdr");
        println!("cargo::rustc-link-arg-bins=-Wl,-T,{}", script.display());
    }
}
