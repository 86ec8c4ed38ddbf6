//! The C, Python and JavaScript guests run through the runtime exactly like the Rust example
//! guest: the same results byte for byte, the same error causes, a trap for `panic`, and each
//! compiled once per data directory.

use std::path::Path;

use taskhost_runtime::{Limits, ModuleId, Runtime, RuntimeConfig, RuntimeError, TaskError};

/// The functions every guest exports with the Rust guest's signature.
const SHARED: &[&str] = &["inc", "add", "sum", "fail", "panic"];

/// The postcard encoding of a typed argument, as the Rust client makes it.
fn enc<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard encodes plain values")
}

/// A small deterministic generator of test values (xorshift), so that runs are reproducible.
struct Values(u64);

impl Values {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn f64(&mut self) -> f64 {
        // Mixed magnitudes and signs, all finite.
        let mantissa = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let exponent = (self.next() % 40) as i32 - 20;
        let sign = if self.next() & 1 == 0 { 1.0 } else { -1.0 };
        sign * mantissa * 2f64.powi(exponent)
    }
}

/// Calls for which every guest must return exactly the Rust guest's bytes.
fn equal_result_cases() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let mut values = Values(0x9e37_79b9_7f4a_7c15);
    let mut cases = Vec::new();
    for x in [
        0i64,
        1,
        -1,
        63,
        64,
        -65,
        300,
        1 << 40,
        i64::MAX,
        i64::MIN,
        i64::MAX - 1,
    ] {
        cases.push(("inc", vec![enc(&x)]));
    }
    for _ in 0..20 {
        cases.push(("inc", vec![enc(&(values.next() as i64))]));
    }
    let specials = [
        0.0,
        -0.0,
        1.5,
        -2.25,
        0.1,
        0.2,
        f64::MAX,
        f64::MIN_POSITIVE,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    for a in specials {
        for b in [0.0, -0.0, 0.2, 1e300, f64::MAX] {
            cases.push(("add", vec![enc(&a), enc(&b)]));
        }
    }
    for _ in 0..20 {
        cases.push(("add", vec![enc(&values.f64()), enc(&values.f64())]));
    }
    cases.push(("sum", vec![enc(&Vec::<f64>::new())]));
    cases.push(("sum", vec![enc::<[f64]>(&[-0.0])]));
    cases.push(("sum", vec![enc::<[f64]>(&[0.1, 0.2, 0.3])]));
    cases.push(("sum", vec![enc::<[f64]>(&[1e100, 1.0, -1e100])]));
    for len in [1usize, 2, 127, 128, 1000] {
        let xs: Vec<f64> = (0..len).map(|_| values.f64()).collect();
        cases.push(("sum", vec![enc(&xs)]));
    }
    cases
}

fn execute(
    runtime: &Runtime,
    id: &ModuleId,
    function: &str,
    args: &[Vec<u8>],
) -> Result<Vec<u8>, RuntimeError> {
    let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    runtime.execute(id, function, &args, &Limits::default())
}

fn runtime(dir: &Path) -> Runtime {
    let mut config = RuntimeConfig::new(dir);
    config.max_instances = 8;
    Runtime::new(config).expect("runtime starts")
}

fn check_language(language: &str, path: &str) {
    let dir = tempfile::tempdir().unwrap();
    let bytes = taskhost_polyglot_guests::read(path);
    let id = {
        let runtime = runtime(dir.path());
        let rust = runtime
            .put(&taskhost_guest_artifacts::read(
                taskhost_guest_artifacts::EXAMPLE_GUEST,
            ))
            .unwrap();
        let id = runtime.put(&bytes).unwrap();

        // functions(): the shared functions, described like the Rust guest's.
        let ours = runtime.describe(&id).unwrap();
        let theirs = runtime.describe(&rust).unwrap();
        for name in SHARED {
            let mine = ours
                .iter()
                .find(|f| f.name == *name)
                .unwrap_or_else(|| panic!("{language}: no function {name} in {ours:?}"));
            let reference = theirs.iter().find(|f| f.name == *name).unwrap();
            assert!(!mine.doc.is_empty(), "{language}: {name} has no doc");
            // The Rust SDK writes types as `stringify!` spells them (`Result < u64, String >`).
            let squeeze = |s: &str| s.replace(' ', "");
            assert_eq!(
                squeeze(&mine.signature),
                squeeze(&reference.signature),
                "{language}: signature of {name}"
            );
        }
        let names: Vec<&str> = ours.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, SHARED, "{language}: the exported functions");

        // Results equal to the Rust guest's, byte for byte.
        for (function, args) in equal_result_cases() {
            let expected = execute(&runtime, &rust, function, &args).unwrap();
            let actual = execute(&runtime, &id, function, &args)
                .unwrap_or_else(|err| panic!("{language}: {function}({args:?}) failed: {err}"));
            assert_eq!(actual, expected, "{language}: {function}({args:?})");
        }

        check_errors(language, &runtime, &id);
        check_errors("rust", &runtime, &rust);
        assert_eq!(
            runtime.stats().compilations,
            2,
            "{language}: each module compiled once"
        );
        id
    };

    // A second runtime on the same data directory loads the compiled artifact: no compilation.
    let runtime = runtime(dir.path());
    let result = execute(&runtime, &id, "add", &[enc(&1.5f64), enc(&2.25f64)]).unwrap();
    assert_eq!(result, enc(&3.75f64));
    let stats = runtime.stats();
    assert_eq!(
        stats.compilations, 0,
        "{language}: recompiled although the artifact was cached: {stats:?}"
    );
    assert_eq!(stats.artifact_loads, 1, "{language}: {stats:?}");
}

/// The error and trap cases, reported with the same cause by every language.
fn check_errors(language: &str, runtime: &Runtime, id: &ModuleId) {
    let invalid =
        |function: &str, args: &[Vec<u8>], what: &str| match execute(runtime, id, function, args) {
            Err(RuntimeError::Guest(TaskError::InvalidInput(message))) => {
                assert!(
                    message.contains(function),
                    "{language}: {what}: message {message:?} names no function"
                );
            }
            other => panic!("{language}: {what}: expected invalid input, got {other:?}"),
        };
    invalid("add", &[enc(&1.0f64)], "too few arguments");
    invalid("inc", &[enc(&1i64), enc(&2i64)], "too many arguments");
    invalid("add", &[vec![1, 2], enc(&1.0f64)], "a short f64");
    invalid(
        "add",
        &[enc(&1.0f64), [enc(&1.0f64), vec![0]].concat()],
        "a trailing byte",
    );
    invalid("inc", &[vec![0x80]], "a truncated varint");
    invalid("inc", &[vec![0xff; 11]], "an over-long varint");
    invalid("inc", &[vec![]], "no bytes");
    invalid(
        "sum",
        &[vec![3, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]],
        "a list shorter than its count",
    );
    invalid("fail", &[vec![2, 0xc3, 0x28]], "invalid UTF-8");

    match execute(runtime, id, "fail", &[enc("disk on fire")]) {
        Err(RuntimeError::Guest(TaskError::Failed(message))) => {
            assert_eq!(message, "disk on fire", "{language}")
        }
        other => panic!("{language}: fail: expected a failed task error, got {other:?}"),
    }
    match execute(runtime, id, "no_such_function", &[]) {
        Err(RuntimeError::UnknownFunction { function, .. }) => {
            assert_eq!(function, "no_such_function")
        }
        other => panic!("{language}: expected an unknown function, got {other:?}"),
    }
    match execute(runtime, id, "panic", &[enc("guest gave up")]) {
        Err(RuntimeError::Trap { message }) => {
            assert!(
                message.contains("guest gave up"),
                "{language}: the trap quotes no message: {message}"
            );
        }
        other => panic!("{language}: panic: expected a trap, got {other:?}"),
    }
    // A trap ends that task only: the module still works.
    assert_eq!(
        execute(runtime, id, "inc", &[enc(&41i64)]).unwrap(),
        enc(&42i64),
        "{language}"
    );
}

#[test]
fn c_guest_matches_the_rust_guest() {
    check_language("c", taskhost_polyglot_guests::C_GUEST);
}

#[test]
fn python_guest_matches_the_rust_guest() {
    check_language("python", taskhost_polyglot_guests::PYTHON_GUEST);
}

#[test]
fn js_guest_matches_the_rust_guest() {
    check_language("js", taskhost_polyglot_guests::JS_GUEST);
}
