//! The runtime against the example guest: results, every error case, the sandbox, and the
//! compiled-artifact cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use taskhost_guest_artifacts::EXAMPLE_GUEST;
use taskhost_runtime::{
    CancelToken, Limits, ModuleId, Runtime, RuntimeConfig, RuntimeError, TaskError,
};

fn guest_bytes() -> Vec<u8> {
    taskhost_guest_artifacts::read(EXAMPLE_GUEST)
}

/// A runtime in a fresh directory with the example guest stored in it.
fn setup() -> (tempfile::TempDir, Runtime, ModuleId) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(small_config(dir.path())).unwrap();
    let id = runtime.put(&guest_bytes()).unwrap();
    (dir, runtime, id)
}

fn small_config(dir: &std::path::Path) -> RuntimeConfig {
    let mut config = RuntimeConfig::new(dir);
    config.max_instances = 16;
    config.max_memory = 256 << 20;
    config
}

fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(20),
        memory: 64 << 20,
        fuel: None,
    }
}

fn enc<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap()
}

fn call(
    runtime: &Runtime,
    id: &ModuleId,
    function: &str,
    args: &[Vec<u8>],
) -> Result<Vec<u8>, RuntimeError> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    runtime.execute(id, function, &args, &limits())
}

fn guest_failure(result: Result<Vec<u8>, RuntimeError>) -> String {
    match result {
        Err(RuntimeError::Guest(TaskError::Failed(message))) => message,
        other => panic!("expected a failed task, got {other:?}"),
    }
}

#[test]
fn typed_and_raw_functions_return_their_results() {
    let (_dir, runtime, id) = setup();
    assert_eq!(call(&runtime, &id, "noop", &[]).unwrap(), Vec::<u8>::new());
    assert_eq!(
        call(&runtime, &id, "echo", &[b"hello".to_vec()]).unwrap(),
        b"hello"
    );
    let out = call(&runtime, &id, "inc", &[enc(&41i64)]).unwrap();
    assert_eq!(postcard::from_bytes::<i64>(&out).unwrap(), 42);
    let out = call(&runtime, &id, "add", &[enc(&1.5f64), enc(&2.25f64)]).unwrap();
    assert_eq!(postcard::from_bytes::<f64>(&out).unwrap(), 3.75);
    let out = call(&runtime, &id, "sum", &[enc(&vec![1.0f64, 2.0, 3.5])]).unwrap();
    assert_eq!(postcard::from_bytes::<f64>(&out).unwrap(), 6.5);
    let out = call(&runtime, &id, "busy_wait", &[enc(&1000u64)]).unwrap();
    assert!(postcard::from_bytes::<u64>(&out).unwrap() > 0);
}

#[test]
fn describe_lists_functions_with_signatures_and_docs() {
    let (_dir, runtime, id) = setup();
    let functions = runtime.describe(&id).unwrap();
    let add = functions
        .iter()
        .find(|f| f.name == "add")
        .expect("add is exported");
    assert_eq!(add.signature, "add(a: f64, b: f64) -> f64");
    assert_eq!(add.doc, "Returns `a + b`.");
    for name in ["noop", "echo", "inc", "sum", "spin", "hog", "read_file"] {
        assert!(functions.iter().any(|f| f.name == name), "{name} missing");
    }
}

#[test]
fn store_rejects_mismatched_and_invalid_bytes() {
    let (_dir, runtime, id) = setup();
    assert!(runtime.modules().contains(&id));
    assert_eq!(runtime.modules().list().unwrap(), vec![id]);
    assert_eq!(runtime.modules().get(&id).unwrap(), guest_bytes());

    let wrong = ModuleId::of(b"something else");
    match runtime.put_with_id(&wrong, &guest_bytes()) {
        Err(RuntimeError::HashMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, id);
        }
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
    runtime.put_with_id(&id, &guest_bytes()).unwrap();

    let mut truncated = guest_bytes();
    truncated.truncate(truncated.len() / 2);
    match runtime.put(&truncated) {
        Err(RuntimeError::InvalidComponent(message)) => {
            assert!(!message.is_empty());
            let err = RuntimeError::InvalidComponent(message);
            assert!(err.to_string().starts_with("invalid component: "), "{err}");
        }
        other => panic!("expected an invalid component, got {other:?}"),
    }
    assert_eq!(runtime.modules().list().unwrap(), vec![id]);
}

#[test]
fn unknown_module_and_function_are_reported() {
    let (_dir, runtime, id) = setup();
    let missing = ModuleId::of(b"missing");
    match call(&runtime, &missing, "noop", &[]) {
        Err(RuntimeError::UnknownModule(m)) => assert_eq!(m, missing),
        other => panic!("expected an unknown module, got {other:?}"),
    }
    let err = call(&runtime, &id, "nope", &[]).unwrap_err();
    match &err {
        RuntimeError::UnknownFunction { module, function } => {
            assert_eq!(*module, id);
            assert_eq!(function, "nope");
        }
        other => panic!("expected an unknown function, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("exports no task function \"nope\""),
        "{err}"
    );
}

#[test]
fn guest_errors_keep_their_kind_and_message() {
    let (_dir, runtime, id) = setup();
    assert_eq!(
        guest_failure(call(&runtime, &id, "fail", &[enc(&"out of luck")])),
        "out of luck"
    );
    let err = call(&runtime, &id, "fail", &[enc(&"out of luck")]).unwrap_err();
    assert_eq!(err.to_string(), "task error: failed: out of luck");
    match call(&runtime, &id, "add", &[enc(&1.0f64)]) {
        Err(RuntimeError::Guest(TaskError::InvalidInput(message))) => {
            assert!(message.contains("add"), "{message}")
        }
        other => panic!("expected invalid input, got {other:?}"),
    }
    match call(&runtime, &id, "inc", &[vec![0xff; 12]]) {
        Err(RuntimeError::Guest(TaskError::InvalidInput(message))) => {
            assert!(message.contains("inc"), "{message}")
        }
        other => panic!("expected invalid input, got {other:?}"),
    }
}

#[test]
fn a_panic_is_a_trap_that_quotes_the_panic_message() {
    let (_dir, runtime, id) = setup();
    match call(&runtime, &id, "panic", &[enc(&"the sky fell")]) {
        Err(RuntimeError::Trap { message }) => {
            assert!(message.contains("the sky fell"), "{message}");
            assert!(message.contains("unreachable"), "{message}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // The runtime is unaffected.
    assert!(call(&runtime, &id, "noop", &[]).is_ok());
}

#[test]
fn an_endless_loop_is_stopped_at_its_deadline() {
    let (_dir, runtime, id) = setup();
    // Compile first: under load compiling alone can take longer than the bound below.
    runtime.prepare(&id).unwrap();
    let limits = Limits {
        timeout: Duration::from_millis(200),
        ..limits()
    };
    let started = Instant::now();
    let result = runtime.execute(&id, "spin", &[], &limits);
    let elapsed = started.elapsed();
    match result {
        Err(RuntimeError::DeadlineExceeded(timeout)) => assert_eq!(timeout, limits.timeout),
        other => panic!("expected a deadline error, got {other:?}"),
    }
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(
        RuntimeError::DeadlineExceeded(limits.timeout).to_string(),
        "task exceeded its deadline of 200ms"
    );
}

#[test]
fn a_short_sleep_returns_and_a_long_one_is_cut_at_the_deadline() {
    let (_dir, runtime, id) = setup();
    runtime.prepare(&id).unwrap();
    // A sleep that fits in the deadline just sleeps.
    let out = call(&runtime, &id, "sleep", &[enc(&20u64)]).unwrap();
    assert!(postcard::from_bytes::<u64>(&out).unwrap() >= 20);

    // A guest blocked in a WASI clock wait does not outlive its deadline.
    let limits = Limits {
        timeout: Duration::from_millis(200),
        ..limits()
    };
    let started = Instant::now();
    let result = runtime.execute(&id, "sleep", &[&enc(&3_600_000u64)], &limits);
    let elapsed = started.elapsed();
    match result {
        Err(RuntimeError::DeadlineExceeded(timeout)) => assert_eq!(timeout, limits.timeout),
        other => panic!("expected a deadline error, got {other:?}"),
    }
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    // The runtime is fine afterwards.
    assert_eq!(call(&runtime, &id, "noop", &[]).unwrap(), Vec::<u8>::new());
}

/// Runs `function` with a token cancelled from another thread after `after`; returns the
/// result and how long after the cancellation it came back.
fn cancel_after(
    runtime: &Runtime,
    id: &ModuleId,
    function: &str,
    args: &[Vec<u8>],
    after: Duration,
) -> (Result<Vec<u8>, RuntimeError>, Duration) {
    runtime.prepare(id).unwrap();
    let token = CancelToken::new();
    let canceller = {
        let token = token.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            token.cancel();
            Instant::now()
        })
    };
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    let result = runtime.execute_cancellable(id, function, &args, &limits(), &token);
    let returned = Instant::now();
    let cancelled_at = canceller.join().unwrap();
    assert!(token.is_cancelled());
    (result, returned.saturating_duration_since(cancelled_at))
}

#[test]
fn cancelling_stops_a_running_task() {
    let (_dir, runtime, id) = setup();
    // The limits give 20 s; the cancellation comes after 100 ms.
    let (result, latency) = cancel_after(&runtime, &id, "spin", &[], Duration::from_millis(100));
    assert!(
        matches!(result, Err(RuntimeError::Cancelled)),
        "expected a cancellation, got {result:?}"
    );
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    assert_eq!(RuntimeError::Cancelled.to_string(), "task cancelled");
    // Other tasks, with or without a token, still run.
    assert_eq!(call(&runtime, &id, "noop", &[]).unwrap(), Vec::<u8>::new());
    let token = CancelToken::new();
    let out = runtime
        .execute_cancellable(&id, "inc", &[&enc(&1i64)], &limits(), &token)
        .unwrap();
    assert_eq!(postcard::from_bytes::<i64>(&out).unwrap(), 2);
    assert!(!token.is_cancelled());
}

#[test]
fn cancelling_wakes_a_sleeping_task() {
    let (_dir, runtime, id) = setup();
    let (result, latency) = cancel_after(
        &runtime,
        &id,
        "sleep",
        &[enc(&3_600_000u64)],
        Duration::from_millis(100),
    );
    assert!(
        matches!(result, Err(RuntimeError::Cancelled)),
        "expected a cancellation, got {result:?}"
    );
    assert!(latency < Duration::from_secs(1), "{latency:?}");
}

#[test]
fn a_cancelled_token_does_not_start_its_task() {
    let (_dir, runtime, id) = setup();
    runtime.prepare(&id).unwrap();
    let token = CancelToken::new();
    token.cancel();
    token.cancel();
    let before = runtime.stats().instantiations;
    assert!(matches!(
        runtime.execute_cancellable(&id, "noop", &[], &limits(), &token),
        Err(RuntimeError::Cancelled)
    ));
    assert_eq!(runtime.stats().instantiations, before);
}

#[test]
fn cancelling_one_task_leaves_the_others_running() {
    let (_dir, runtime, id) = setup();
    runtime.prepare(&id).unwrap();
    let runtime = Arc::new(runtime);
    let token = CancelToken::new();
    let victim = {
        let (runtime, token) = (runtime.clone(), token.clone());
        std::thread::spawn(move || runtime.execute_cancellable(&id, "spin", &[], &limits(), &token))
    };
    // Another task keeps running busy work while the first one is cancelled.
    let bystander = {
        let runtime = runtime.clone();
        std::thread::spawn(move || {
            runtime.execute_cancellable(
                &id,
                "busy_wait",
                &[&enc(&300_000u64)],
                &limits(),
                &CancelToken::new(),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    token.cancel();
    assert!(matches!(
        victim.join().unwrap(),
        Err(RuntimeError::Cancelled)
    ));
    let out = bystander.join().unwrap().unwrap();
    assert!(postcard::from_bytes::<u64>(&out).unwrap() > 0);
}

#[test]
fn unbounded_allocation_hits_the_memory_limit() {
    let (_dir, runtime, id) = setup();
    let limits = Limits {
        memory: 64 << 20,
        ..limits()
    };
    match runtime.execute(&id, "hog", &[&enc(&(1u64 << 20))], &limits) {
        Err(RuntimeError::MemoryLimitExceeded { limit }) => assert_eq!(limit, 64 << 20),
        other => panic!("expected a memory limit error, got {other:?}"),
    }
    // A cap below the module's initial memory fails at instantiation, the same way.
    let tiny = Limits {
        memory: 64 * 1024,
        ..limits
    };
    match runtime.execute(&id, "noop", &[], &tiny) {
        Err(RuntimeError::MemoryLimitExceeded { limit }) => assert_eq!(limit, 64 * 1024),
        other => panic!("expected a memory limit error, got {other:?}"),
    }
    // A cap above the runtime's maximum is refused up front.
    let huge = Limits {
        memory: 1 << 32,
        ..limits
    };
    assert!(matches!(
        runtime.execute(&id, "noop", &[], &huge),
        Err(RuntimeError::InvalidLimits(_))
    ));
    assert!(call(&runtime, &id, "noop", &[]).is_ok());
}

#[test]
fn fuel_limits_stop_long_computations() {
    let (_dir, runtime, id) = setup();
    let limits = Limits {
        fuel: Some(100_000),
        ..limits()
    };
    match runtime.execute(&id, "spin", &[], &limits) {
        Err(RuntimeError::OutOfFuel { fuel }) => assert_eq!(fuel, 100_000),
        other => panic!("expected out of fuel, got {other:?}"),
    }
    let out = runtime
        .execute(&id, "inc", &[&enc(&1i64)], &limits)
        .unwrap();
    assert_eq!(postcard::from_bytes::<i64>(&out).unwrap(), 2);
}

#[test]
fn the_sandbox_denies_files_sockets_and_environment() {
    let (_dir, runtime, id) = setup();
    let message = guest_failure(call(&runtime, &id, "read_file", &[enc(&"/etc/passwd")]));
    assert!(message.starts_with("cannot read /etc/passwd"), "{message}");
    let message = guest_failure(call(&runtime, &id, "read_file", &[enc(&"Cargo.toml")]));
    assert!(message.starts_with("cannot read Cargo.toml"), "{message}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let message = guest_failure(call(&runtime, &id, "open_socket", &[enc(&addr)]));
    assert!(
        message.starts_with(&format!("cannot connect to {addr}")),
        "{message}"
    );
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "no connection may have reached the listener"
    );

    // SAFETY-free check: the host has PATH set, the guest must not see it.
    assert!(std::env::var_os("PATH").is_some());
    let message = guest_failure(call(&runtime, &id, "read_env", &[enc(&"PATH")]));
    assert!(message.contains("(0 variables visible)"), "{message}");
}

#[test]
fn guest_output_and_logs_are_bounded() {
    let (_dir, runtime, id) = setup();
    // Far more output than the 64 KiB bound: the guest must not notice the truncation.
    let out = call(&runtime, &id, "print", &[enc(&20_000u64)]).unwrap();
    assert_eq!(postcard::from_bytes::<u64>(&out).unwrap(), 20_000);
    let out = call(&runtime, &id, "log", &[enc(&"hello from the guest")]).unwrap();
    assert_eq!(postcard::from_bytes::<u64>(&out).unwrap(), 1);
}

#[test]
fn many_tasks_run_concurrently_on_several_threads() {
    let (_dir, runtime, id) = setup();
    let runtime = Arc::new(runtime);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let runtime = runtime.clone();
            std::thread::spawn(move || {
                for i in 0..100i64 {
                    let x = t * 1000 + i;
                    let out = runtime.execute(&id, "inc", &[&enc(&x)], &limits()).unwrap();
                    assert_eq!(postcard::from_bytes::<i64>(&out).unwrap(), x + 1);
                    if i % 25 == 0 {
                        // Failures interleaved with successes do not disturb other tasks.
                        assert!(matches!(
                            runtime.execute(&id, "panic", &[&enc(&"boom")], &limits()),
                            Err(RuntimeError::Trap { .. })
                        ));
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(runtime.stats().compilations, 1);
}

#[test]
fn compiled_artifacts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let runtime = Runtime::new(small_config(dir.path())).unwrap();
        let id = runtime.put(&guest_bytes()).unwrap();
        let out = runtime
            .execute(&id, "inc", &[&enc(&1i64)], &limits())
            .unwrap();
        assert_eq!(postcard::from_bytes::<i64>(&out).unwrap(), 2);
        assert_eq!(runtime.stats().compilations, 1);
        assert_eq!(runtime.stats().artifact_loads, 0);
        id
    };
    // A new runtime on the same directory, as after a restart.
    let runtime = Runtime::new(small_config(dir.path())).unwrap();
    assert!(!runtime.is_prepared(&id));
    runtime.prepare(&id).unwrap();
    let out = runtime
        .execute(&id, "inc", &[&enc(&2i64)], &limits())
        .unwrap();
    assert_eq!(postcard::from_bytes::<i64>(&out).unwrap(), 3);
    assert_eq!(
        runtime.stats().compilations,
        0,
        "the second load must not compile"
    );
    assert_eq!(runtime.stats().artifact_loads, 1);

    // A task with a fuel limit runs on the fuel-metering engine, which compiles the module
    // once more and keeps its artifact apart (another engine fingerprint).
    let fuel = Limits {
        fuel: Some(10_000_000),
        ..limits()
    };
    let out = runtime.execute(&id, "inc", &[&enc(&3i64)], &fuel).unwrap();
    assert_eq!(postcard::from_bytes::<i64>(&out).unwrap(), 4);
    assert_eq!(runtime.stats().compilations, 1);
    let engines = std::fs::read_dir(dir.path().join("artifacts"))
        .unwrap()
        .count();
    assert_eq!(engines, 2, "one artifacts directory per engine");
    // Tasks without a fuel limit still run on the code compiled without it.
    let out = runtime
        .execute(&id, "inc", &[&enc(&4i64)], &limits())
        .unwrap();
    assert_eq!(postcard::from_bytes::<i64>(&out).unwrap(), 5);
    assert_eq!(runtime.stats().compilations, 1);

    // A runtime without fuel metering runs tasks on that same engine (the same artifacts)
    // and refuses fuel limits.
    let mut config = small_config(dir.path());
    config.fuel_metering = false;
    let other = Runtime::new(config).unwrap();
    assert_eq!(other.engine_fingerprint(), runtime.engine_fingerprint());
    other.prepare(&id).unwrap();
    assert_eq!(other.stats().compilations, 0);
    assert_eq!(other.stats().artifact_loads, 1);
    match other.execute(
        &id,
        "inc",
        &[&enc(&1i64)],
        &Limits {
            fuel: Some(10),
            ..limits()
        },
    ) {
        Err(RuntimeError::InvalidLimits(_)) => {}
        r => panic!("expected invalid limits, got {r:?}"),
    }
}

#[test]
fn a_corrupt_artifact_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let runtime = Runtime::new(small_config(dir.path())).unwrap();
        let id = runtime.put(&guest_bytes()).unwrap();
        runtime.prepare(&id).unwrap();
        let artifacts = dir
            .path()
            .join("artifacts")
            .join(runtime.engine_fingerprint());
        std::fs::write(artifacts.join(format!("{id}.cwasm")), b"garbage").unwrap();
        id
    };
    let runtime = Runtime::new(small_config(dir.path())).unwrap();
    assert!(call(&runtime, &id, "noop", &[]).is_ok());
    assert_eq!(runtime.stats().compilations, 1);
}

#[test]
fn a_full_instance_pool_is_reported_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path());
    config.max_instances = 1;
    let runtime = Arc::new(Runtime::new(config).unwrap());
    let id = runtime.put(&guest_bytes()).unwrap();
    runtime.prepare(&id).unwrap();
    let spinning = {
        let runtime = runtime.clone();
        std::thread::spawn(move || {
            let limits = Limits {
                timeout: Duration::from_millis(1500),
                ..limits()
            };
            runtime.execute(&id, "spin", &[], &limits)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    match call(&runtime, &id, "noop", &[]) {
        Err(RuntimeError::PoolExhausted(message)) => assert!(!message.is_empty()),
        other => panic!("expected an exhausted pool, got {other:?}"),
    }
    assert!(matches!(
        spinning.join().unwrap(),
        Err(RuntimeError::DeadlineExceeded(_))
    ));
    // The slot is free again.
    assert!(call(&runtime, &id, "noop", &[]).is_ok());
}
