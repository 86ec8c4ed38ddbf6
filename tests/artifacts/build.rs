//! Compiles the guest crates in `examples/guests` and writes constants naming the resulting
//! components, so tests and benchmarks always run guests built from this source.
//!
//! Most guests are built for `wasm32-wasip2`, which emits components directly. The lean guest is
//! built for `wasm32-unknown-unknown` (no WASI imports) and its core module is turned into a
//! component here with `wit-component`, from the WIT world its bindings embed in the module.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `wasm32-wasip2` guest components to build: (constant name, crate's library name).
const GUESTS: &[(&str, &str)] = &[
    ("EXAMPLE_GUEST", "taskhost_example_guest"),
    ("KERNELS_GUEST", "taskhost_kernels"),
];

/// The lean guest: (constant name, package name, library name), built for
/// `wasm32-unknown-unknown` and made a component here.
const LEAN_GUEST: (&str, &str, &str) = ("LEAN_GUEST", "taskhost-lean-guest", "taskhost_lean_guest");

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists");
    let guests = root.join("examples/guests");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = out_dir.join("guests");

    for watched in ["examples/guests", "guest-sdk", "wit", "host/array-format"] {
        rerun_if_changed(&root.join(watched));
    }

    let (lean_constant, lean_package, lean_lib) = LEAN_GUEST;
    cargo_build(
        &guests,
        &target_dir,
        "wasm32-wasip2",
        &["--workspace", "--exclude", lean_package],
    );
    cargo_build(
        &guests,
        &target_dir,
        "wasm32-unknown-unknown",
        &["--package", lean_package],
    );

    let mut components = Vec::new();
    for (constant, lib) in GUESTS {
        let path = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{lib}.wasm"));
        assert!(
            path.exists(),
            "the guest build did not produce {}",
            path.display()
        );
        components.push((*constant, *lib, path));
    }

    let core = target_dir
        .join("wasm32-unknown-unknown/release")
        .join(format!("{lean_lib}.wasm"));
    let module = std::fs::read(&core).unwrap_or_else(|err| {
        panic!(
            "the lean guest build did not produce {}: {err}",
            core.display()
        )
    });
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|encoder| encoder.encode())
        .unwrap_or_else(|err| {
            panic!("making a component of the lean guest's core module failed: {err:?}")
        });
    let path = target_dir.join(format!("{lean_lib}.component.wasm"));
    std::fs::write(&path, component).expect("OUT_DIR is writable");
    components.push((lean_constant, lean_lib, path));

    let mut code = String::new();
    for (constant, lib, path) in components {
        writeln!(
            code,
            "/// Path of the `{lib}` component, built from `examples/guests`."
        )
        .unwrap();
        writeln!(
            code,
            "pub const {constant}: &str = {:?};",
            path.display().to_string()
        )
        .unwrap();
    }
    std::fs::write(out_dir.join("guests.rs"), code).expect("OUT_DIR is writable");
}

/// Builds guest crates of the `guests` workspace in release for `target`.
fn cargo_build(guests: &Path, target_dir: &Path, target: &str, packages: &[&str]) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(guests)
        .args(["build", "--release", "--target", target])
        .args(packages)
        .arg("--manifest-path")
        .arg(guests.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    // The outer build's settings are for the host, not for guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("cargo can be started to build the guest components");
    if !status.success() {
        panic!(
            "building the guest components in {} for {target} failed ({status}); is the target \
             installed? Run `rustup target add {target}`.",
            guests.display()
        );
    }
}

fn rerun_if_changed(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    println!("cargo:rerun-if-changed={}", dir.display());
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rerun_if_changed(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
