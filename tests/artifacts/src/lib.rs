//! Paths of the guest components built from `examples/guests` for this build.
//!
//! The build script compiles every guest crate for `wasm32-wasip2` (in a target directory of its
//! own) and names each component here, so tests and benchmarks run guests built from this very
//! source tree. [`LEAN_GUEST`] is built for `wasm32-unknown-unknown` instead and made a
//! component with `wit-component`: it imports nothing but `taskhost:task/host`.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// Reads a guest component's bytes.
///
/// # Panics
/// If the file is missing, which means the build script's output was removed.
pub fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|err| panic!("cannot read guest component {path}: {err}"))
}
