//! The C, Python and JavaScript example guests, built from source for this build.
//!
//! The build script compiles `examples/guests/c` with clang and wasi-libc, `examples/guests/python`
//! with componentize-py and `examples/guests/js` with componentize-js, each into a component of
//! the `task-module` world of `wit/`, and names each component's path here. Components are cached
//! under `~/.cache/taskhost/guests` by a hash of their sources and toolchain, so an unchanged
//! guest is not rebuilt. A missing toolchain fails the build with the command that installs it
//! (`.ci/install-guest-toolchains`).

include!(concat!(env!("OUT_DIR"), "/polyglot_guests.rs"));

/// Every guest built here, with its language's name: `("c", C_GUEST)`, ...
pub const GUESTS: &[(&str, &str)] = &[("c", C_GUEST), ("python", PYTHON_GUEST), ("js", JS_GUEST)];

/// Reads a guest component's bytes.
///
/// # Panics
/// If the file is missing, which means the build script's output was removed.
pub fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|err| panic!("cannot read guest component {path}: {err}"))
}
