//! Builds the C, Python and JavaScript example guests from source into components of the
//! `task-module` world, and writes constants naming them (`C_GUEST`, `PYTHON_GUEST`, `JS_GUEST`).
//!
//! - C: bindings from `wit-bindgen-c`, compiled and linked by clang/wasm-ld against wasi-libc,
//!   then made a component by `wit-component` (with the WASI preview1 adapter if needed).
//! - Python: `componentize-py` from the venv in `~/.cache/taskhost/py`.
//! - JavaScript: `componentize-js` (through its library API, `examples/guests/js/componentize.mjs`)
//!   from `~/.cache/taskhost/js`.
//!
//! Each component is cached in `~/.cache/taskhost/guests` under a hash of its sources, the WIT,
//! this script and the toolchain's version, so an unchanged guest is copied, not rebuilt (the
//! Python and JavaScript builds take seconds). `.ci/install-guest-toolchains` installs the
//! toolchains; when one is missing the build fails and says how to install it.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What to run when a toolchain is missing.
const INSTALL_HINT: &str = "run `.ci/install-guest-toolchains` from the repository root \
     (it installs Debian's clang, lld, wasi-libc and libclang-rt-dev-wasm32, componentize-py into \
     ~/.cache/taskhost/py and @bytecodealliance/componentize-js into ~/.cache/taskhost/js)";

/// The world every guest implements.
const WORLD: &str = "task-module";

struct Ctx {
    root: PathBuf,
    out_dir: PathBuf,
    /// `~/.cache/taskhost` (or `$TASKHOST_CACHE`): toolchains and built components.
    cache: PathBuf,
    wit: PathBuf,
    /// Bytes that every guest's cache key includes: this script and the WIT contract.
    common_key: Vec<u8>,
}

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-env-changed=TASKHOST_CACHE");
    println!("cargo:rerun-if-changed=build.rs");
    let cache = match env::var_os("TASKHOST_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => match env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".cache/taskhost"),
            None => out_dir.join("cache"),
        },
    };
    let wit = root.join("wit");
    for watched in [
        "wit",
        "examples/guests/c",
        "examples/guests/python",
        "examples/guests/js",
    ] {
        rerun_if_changed(&root.join(watched));
    }
    let mut common_key =
        std::fs::read(manifest_dir.join("build.rs")).expect("build.rs is readable");
    hash_tree(&wit, &mut common_key);
    let ctx = Ctx {
        root,
        out_dir,
        cache,
        wit,
        common_key,
    };

    // The three builds are independent; componentize-py and componentize-js take seconds each.
    let (c, python, js) = std::thread::scope(|scope| {
        let c = scope.spawn(|| build_c(&ctx));
        let python = scope.spawn(|| build_python(&ctx));
        let js = scope.spawn(|| build_js(&ctx));
        (join(c), join(python), join(js))
    });
    let guests = [
        ("C_GUEST", "c", c),
        ("PYTHON_GUEST", "python", python),
        ("JS_GUEST", "js", js),
    ];
    let mut code = String::new();
    for (constant, lang, path) in guests {
        writeln!(
            code,
            "/// Path of the {lang} guest component, built from `examples/guests/{lang}`."
        )
        .unwrap();
        writeln!(
            code,
            "pub const {constant}: &str = {:?};",
            path.display().to_string()
        )
        .unwrap();
    }
    std::fs::write(ctx.out_dir.join("polyglot_guests.rs"), code).expect("OUT_DIR is writable");
}

/// Waits for a build thread; its panic (a failed build, already printed) fails the build script.
fn join(handle: std::thread::ScopedJoinHandle<'_, PathBuf>) -> PathBuf {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Returns `OUT_DIR/<lang>_guest.wasm`, copied from the cache when a component of the same key
/// was built before, else built by `build` (which writes the component to the path it is given)
/// and stored in the cache.
fn cached(ctx: &Ctx, lang: &str, toolchain: &str, build: impl FnOnce(&Path)) -> PathBuf {
    let mut key = ctx.common_key.clone();
    key.extend_from_slice(toolchain.as_bytes());
    hash_tree(&ctx.root.join("examples/guests").join(lang), &mut key);
    let hash = blake3::hash(&key).to_hex();
    let cached = ctx
        .cache
        .join("guests")
        .join(format!("{lang}-{}.wasm", &hash[..16]));
    let out = ctx.out_dir.join(format!("{lang}_guest.wasm"));
    if cached.is_file() && std::fs::copy(&cached, &out).is_ok() {
        return out;
    }
    let _ = std::fs::remove_file(&out);
    build(&out);
    assert!(
        out.is_file(),
        "the {lang} guest build did not produce {}",
        out.display()
    );
    // Best effort: a read-only cache only costs a rebuild next time.
    if std::fs::create_dir_all(cached.parent().expect("the cache path has a parent")).is_ok() {
        let tmp = cached.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::copy(&out, &tmp).is_ok() {
            let _ = std::fs::rename(&tmp, &cached);
        }
        let _ = std::fs::remove_file(&tmp);
        prune(cached.parent().expect("the cache path has a parent"), lang);
    }
    out
}

/// How many components of each language the cache keeps (other branches or worktrees may
/// build other versions).
const CACHE_KEEP: usize = 4;

/// Removes all but the [`CACHE_KEEP`] newest cached components of `lang`.
fn prune(dir: &Path, lang: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{lang}-");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix) && name.ends_with(".wasm")
        })
        .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
        .collect();
    found.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, path) in found.into_iter().skip(CACHE_KEEP) {
        let _ = std::fs::remove_file(path);
    }
}

// --- C -------------------------------------------------------------------------------------

fn build_c(ctx: &Ctx) -> PathBuf {
    let clang = env::var("TASKHOST_CLANG").unwrap_or_else(|_| "clang".to_owned());
    println!("cargo:rerun-if-env-changed=TASKHOST_CLANG");
    let version = tool_version(&clang, &["--version"], "the C guest needs clang");
    let src = ctx.root.join("examples/guests/c");
    cached(ctx, "c", &version, |out| {
        let work = ctx.out_dir.join("c");
        let generated = work.join("bindings");
        std::fs::create_dir_all(&generated).expect("OUT_DIR is writable");
        generate_c_bindings(&ctx.wit, &generated);

        let mut sources: Vec<PathBuf> = std::fs::read_dir(&src)
            .expect("examples/guests/c exists")
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "c"))
            .collect();
        sources.sort();
        let core = work.join("guest.core.wasm");
        let mut cmd = Command::new(&clang);
        cmd.args([
            "--target=wasm32-wasi",
            "-mexec-model=reactor",
            "-O2",
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-Wno-unused-parameter",
            "-fno-exceptions",
            "-Wl,--strip-debug",
        ])
        .arg("-I")
        .arg(&generated)
        .arg("-I")
        .arg(&src)
        .args(&sources)
        .arg(generated.join("task_module.c"))
        .arg(generated.join("task_module_component_type.o"))
        .arg("-o")
        .arg(&core);
        run(
            &mut cmd,
            "compiling the C guest (needs clang, lld's wasm-ld, wasi-libc and libclang-rt-dev-wasm32)",
        );

        let module = std::fs::read(&core).expect("clang wrote the core module");
        let component = wit_component::ComponentEncoder::default()
            .module(&module)
            .and_then(|encoder| {
                encoder.adapter(
                    "wasi_snapshot_preview1",
                    wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
                )
            })
            .and_then(|encoder| encoder.validate(true).encode())
            .unwrap_or_else(|err| panic!("making a component of the C guest's core module failed: {err:?}"));
        std::fs::write(out, component).expect("OUT_DIR is writable");
    })
}

fn generate_c_bindings(wit: &Path, out: &Path) {
    use wit_bindgen_core::wit_parser::Resolve;
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_dir(wit)
        .unwrap_or_else(|err| panic!("cannot parse the WIT in {}: {err:?}", wit.display()));
    let world = resolve
        .select_world(&[package], Some(WORLD))
        .unwrap_or_else(|err| panic!("the WIT has no world {WORLD}: {err:?}"));
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .unwrap_or_else(|err| panic!("generating the C bindings failed: {err:?}"));
    for (name, contents) in files.iter() {
        std::fs::write(out.join(name), contents).expect("OUT_DIR is writable");
    }
}

// --- Python --------------------------------------------------------------------------------

fn build_python(ctx: &Ctx) -> PathBuf {
    let tool = ctx.cache.join("py/bin/componentize-py");
    let version = tool_version(
        &tool.display().to_string(),
        &["--version"],
        "the Python guest needs componentize-py",
    );
    let src = ctx.root.join("examples/guests/python");
    cached(ctx, "python", &version, |out| {
        // componentize-py writes __pycache__ next to the sources: give it a copy.
        let copy = ctx.out_dir.join("python");
        let _ = std::fs::remove_dir_all(&copy);
        copy_tree(&src, &copy);
        let mut cmd = Command::new(&tool);
        cmd.arg("-d")
            .arg(&ctx.wit)
            .args(["-w", WORLD, "componentize", "-p"])
            .arg(&copy)
            .arg("app")
            .arg("-o")
            .arg(out);
        run(&mut cmd, "componentize-py failed on examples/guests/python");
    })
}

// --- JavaScript ----------------------------------------------------------------------------

fn build_js(ctx: &Ctx) -> PathBuf {
    let toolchain = ctx.cache.join("js");
    let package = toolchain.join("node_modules/@bytecodealliance/componentize-js/package.json");
    let node = tool_version("node", &["--version"], "the JavaScript guest needs Node.js");
    let Ok(manifest) = std::fs::read_to_string(&package) else {
        panic!(
            "the JavaScript guest needs @bytecodealliance/componentize-js in {}, which is missing: {INSTALL_HINT}",
            toolchain.display()
        );
    };
    let src = ctx.root.join("examples/guests/js");
    cached(ctx, "js", &format!("{node}\n{manifest}"), |out| {
        let mut cmd = Command::new("node");
        cmd.arg(src.join("componentize.mjs"))
            .arg(&toolchain)
            .arg(src.join("tasks.js"))
            .arg(&ctx.wit)
            .arg(WORLD)
            .arg(out);
        run(&mut cmd, "componentize-js failed on examples/guests/js");
    })
}

// --- helpers -------------------------------------------------------------------------------

/// Runs `tool args` and returns its first line of output, or fails the build with the hint.
fn tool_version(tool: &str, args: &[&str], what: &str) -> String {
    match Command::new(tool).args(args).output() {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        Ok(output) => panic!(
            "{what}, but `{tool} {}` failed ({}): {}\n{INSTALL_HINT}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(err) => panic!("{what}, but `{tool}` cannot be run ({err}): {INSTALL_HINT}"),
    }
}

/// Runs a build step, failing the build with its output if it fails.
fn run(cmd: &mut Command, what: &str) {
    let output: Output = cmd.output().unwrap_or_else(|err| {
        panic!(
            "{what}: cannot start {:?} ({err}); {INSTALL_HINT}",
            cmd.get_program()
        )
    });
    if !output.status.success() {
        panic!(
            "{what} ({}):\n{:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\nIf a tool is missing: {INSTALL_HINT}",
            output.status,
            cmd,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Appends the relative paths and contents of every file under `dir` (sorted) to `key`.
fn hash_tree(dir: &Path, key: &mut Vec<u8>) {
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    files.sort();
    for file in files {
        key.extend_from_slice(
            file.strip_prefix(dir)
                .unwrap_or(&file)
                .to_string_lossy()
                .as_bytes(),
        );
        key.push(0);
        key.extend_from_slice(&std::fs::read(&file).unwrap_or_default());
        key.push(0);
    }
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if skipped(&entry.file_name().to_string_lossy()) {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, files);
        } else {
            files.push(path);
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    let mut files = Vec::new();
    collect_files(from, &mut files);
    for file in files {
        let target = to.join(
            file.strip_prefix(from)
                .expect("files are under their directory"),
        );
        std::fs::create_dir_all(target.parent().expect("a file has a parent"))
            .expect("OUT_DIR is writable");
        std::fs::copy(&file, &target).expect("OUT_DIR is writable");
    }
}

fn skipped(name: &str) -> bool {
    name.starts_with('.') || name == "__pycache__" || name == "node_modules" || name == "target"
}

fn rerun_if_changed(dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    for file in files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
}
