//! Embeds the kernels component: the build-dependency `taskhost-guest-artifacts` compiles
//! `examples/guests` (the kernels crate among them) for wasm32-wasip2 from source; this copies
//! the kernels component into `OUT_DIR`, where `include_bytes!` takes it.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("taskhost_kernels.wasm");
    std::fs::copy(taskhost_guest_artifacts::KERNELS_GUEST, &out).unwrap_or_else(|err| {
        panic!(
            "cannot copy the kernels component {}: {err}",
            taskhost_guest_artifacts::KERNELS_GUEST
        )
    });
    println!(
        "cargo:rerun-if-changed={}",
        taskhost_guest_artifacts::KERNELS_GUEST
    );
    println!("cargo:rerun-if-changed=build.rs");
}
