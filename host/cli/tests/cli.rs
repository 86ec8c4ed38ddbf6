//! The `taskhost` binary end to end: module store commands and `exec` on the example guest,
//! including every failure's message and exit code.

use std::path::Path;
use std::process::{Command, Output};

use taskhost_guest_artifacts::EXAMPLE_GUEST;

fn taskhost(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taskhost"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the taskhost binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs a command that must succeed and returns its trimmed stdout.
fn ok(data_dir: &Path, args: &[&str]) -> String {
    let output = taskhost(data_dir, args);
    assert!(
        output.status.success(),
        "taskhost {args:?} failed: {}",
        stderr(&output)
    );
    stdout(&output).trim().to_owned()
}

/// Runs a command that must fail with exit code 1 and returns its stderr.
fn fails(data_dir: &Path, args: &[&str]) -> String {
    let output = taskhost(data_dir, args);
    assert_eq!(
        output.status.code(),
        Some(1),
        "taskhost {args:?} should fail; stdout: {}; stderr: {}",
        stdout(&output),
        stderr(&output)
    );
    let err = stderr(&output);
    assert!(err.contains("error: "), "{err}");
    assert!(!err.contains("Stack backtrace"), "{err}");
    err
}

#[test]
fn module_add_list_and_describe() {
    let dir = tempfile::tempdir().unwrap();
    let id = ok(dir.path(), &["module", "add", EXAMPLE_GUEST]);
    let bytes = std::fs::read(EXAMPLE_GUEST).unwrap();
    assert_eq!(id, blake3::hash(&bytes).to_hex().to_string());
    assert!(ok(dir.path(), &["module", "list"]).starts_with(&id));

    let by_id = ok(dir.path(), &["module", "describe", &id]);
    assert!(by_id.contains("add(a: f64, b: f64) -> f64"), "{by_id}");
    assert!(by_id.contains("Returns `a + b`."), "{by_id}");
    let by_file = ok(dir.path(), &["module", "describe", EXAMPLE_GUEST]);
    assert_eq!(by_id, by_file);

    let err = fails(dir.path(), &["module", "describe", &"0".repeat(64)]);
    assert!(err.contains("unknown module"), "{err}");
    let not_wasm = dir.path().join("not.wasm");
    std::fs::write(&not_wasm, b"hello").unwrap();
    let err = fails(dir.path(), &["module", "add", not_wasm.to_str().unwrap()]);
    assert!(
        err.contains("invalid component: not a WebAssembly binary"),
        "{err}"
    );
    let err = fails(dir.path(), &["module", "add", "/nonexistent.wasm"]);
    assert!(err.contains("reading /nonexistent.wasm"), "{err}");
}

#[test]
fn exec_encodes_arguments_and_decodes_results() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(ok(d, &["exec", EXAMPLE_GUEST, "add", "1.5", "2"]), "3.5");
    assert_eq!(ok(d, &["exec", EXAMPLE_GUEST, "inc", "-5"]), "-4");
    assert_eq!(ok(d, &["exec", EXAMPLE_GUEST, "sum", "[1, 2, 3.5]"]), "6.5");
    assert_eq!(
        ok(d, &["exec", EXAMPLE_GUEST, "echo", "hello world"]),
        "hello world"
    );
    assert_eq!(ok(d, &["exec", EXAMPLE_GUEST, "noop"]), "");
    let input = d.join("input.bin");
    std::fs::write(&input, [0u8, 1, 2, 255]).unwrap();
    let arg = format!("@{}", input.display());
    assert_eq!(ok(d, &["exec", EXAMPLE_GUEST, "echo", &arg]), "000102ff");
    let out = d.join("out.bin");
    ok(
        d,
        &[
            "exec",
            EXAMPLE_GUEST,
            "echo",
            &arg,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read(&out).unwrap(), [0u8, 1, 2, 255]);
    // By id, once stored; and with --raw.
    let id = ok(d, &["module", "add", EXAMPLE_GUEST]);
    assert_eq!(ok(d, &["exec", &id, "inc", "41"]), "42");
    assert_eq!(ok(d, &["exec", "--raw", &id, "echo", "abc"]), "abc");
}

#[test]
fn exec_reports_every_failure_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let g = EXAMPLE_GUEST;
    let err = fails(d, &["exec", g, "fail", "out of luck"]);
    assert!(err.contains("task error: failed: out of luck"), "{err}");
    let err = fails(d, &["exec", g, "panic", "the sky fell"]);
    assert!(
        err.contains("task trapped") && err.contains("the sky fell"),
        "{err}"
    );
    let err = fails(d, &["exec", g, "spin", "--timeout", "200ms"]);
    assert!(err.contains("task exceeded its deadline of 200ms"), "{err}");
    let err = fails(d, &["exec", g, "hog", "1048576", "--memory-limit", "64MiB"]);
    assert!(
        err.contains("task exceeded its memory limit of 67108864 bytes"),
        "{err}"
    );
    let err = fails(d, &["exec", g, "spin", "--fuel", "1000"]);
    assert!(err.contains("task ran out of fuel (1000 units)"), "{err}");
    let err = fails(d, &["exec", g, "nope"]);
    assert!(
        err.contains("exports no task function \"nope\"; it exports: noop, echo"),
        "{err}"
    );
    let err = fails(d, &["exec", g, "add", "1"]);
    assert!(
        err.contains("add takes 2 arguments (add(a: f64, b: f64) -> f64), 1 given"),
        "{err}"
    );
    let err = fails(d, &["exec", g, "add", "1", "x"]);
    assert!(
        err.contains("argument b: \"x\" is not a JSON value"),
        "{err}"
    );
    let err = fails(d, &["exec", "--raw", g, "inc", "xyz"]);
    assert!(err.contains("task error: invalid input"), "{err}");
    let err = fails(d, &["exec", g, "read_file", "/etc/passwd"]);
    assert!(
        err.contains("task error: failed: cannot read /etc/passwd"),
        "{err}"
    );
    let err = fails(d, &["exec", "/nonexistent.wasm", "noop"]);
    assert!(
        err.contains("neither a module id nor a readable component file"),
        "{err}"
    );
    // Usage errors exit with 2, as clap does.
    let output = taskhost(d, &["exec", g, "add", "1", "2", "--timeout", "soon"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("invalid duration \"soon\""),
        "{}",
        stderr(&output)
    );
}

#[test]
fn guest_output_goes_to_stderr_not_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let output = taskhost(dir.path(), &["exec", EXAMPLE_GUEST, "print", "2"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "2");
    let err = stderr(&output);
    assert!(
        err.contains("stdout line 1") && err.contains("stderr line 1"),
        "{err}"
    );
    let output = taskhost(dir.path(), &["exec", EXAMPLE_GUEST, "log", "hello host"]);
    assert!(
        stderr(&output).contains("hello host"),
        "{}",
        stderr(&output)
    );
}
