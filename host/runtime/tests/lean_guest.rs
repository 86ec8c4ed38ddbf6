//! The runtime against the lean guest (`examples/guests/lean`): a Rust guest built for
//! `wasm32-unknown-unknown` and made a component with `wit-component`, importing nothing but
//! `taskhost:task/host`. Its functions work like the example guest's, and a panic's message,
//! with no stderr to go to, reaches the host's log through the guest SDK's panic hook (and the
//! trap's message quotes it).

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskhost_guest_artifacts::{EXAMPLE_GUEST, LEAN_GUEST};
use taskhost_runtime::{Limits, ModuleId, Runtime, RuntimeConfig, RuntimeError, TaskError};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber, span};

/// A runtime in a fresh directory with the lean guest stored in it.
fn setup() -> (tempfile::TempDir, Runtime, ModuleId) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = RuntimeConfig::new(dir.path());
    config.max_instances = 16;
    config.max_memory = 256 << 20;
    let runtime = Runtime::new(config).unwrap();
    let id = runtime
        .put(&taskhost_guest_artifacts::read(LEAN_GUEST))
        .unwrap();
    (dir, runtime, id)
}

fn call(
    runtime: &Runtime,
    id: &ModuleId,
    function: &str,
    args: &[Vec<u8>],
) -> Result<Vec<u8>, RuntimeError> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    let limits = Limits {
        timeout: Duration::from_secs(20),
        memory: 64 << 20,
        fuel: None,
    };
    runtime.execute(id, function, &args, &limits)
}

fn enc<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap()
}

/// The names a component imports from the host: its top-level imports (modules and
/// components nested inside it, whose imports it wires itself, are skipped).
fn component_imports(bytes: &[u8]) -> Vec<String> {
    let mut imports = Vec::new();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.unwrap() {
            wasmparser::Payload::Version { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth -= 1,
            wasmparser::Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    imports.push(import.unwrap().name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    imports
}

#[test]
fn the_lean_guest_imports_only_the_host_interface() {
    let lean = component_imports(&taskhost_guest_artifacts::read(LEAN_GUEST));
    assert_eq!(lean, ["taskhost:task/host@0.1.0"]);
    // The check has teeth: the wasm32-wasip2 example guest imports WASI interfaces.
    let example = component_imports(&taskhost_guest_artifacts::read(EXAMPLE_GUEST));
    assert!(
        example.iter().any(|name| name.starts_with("wasi:")),
        "{example:?}"
    );
}

#[test]
fn lean_functions_return_their_results() {
    let (_dir, runtime, id) = setup();
    assert_eq!(call(&runtime, &id, "noop", &[]).unwrap(), Vec::<u8>::new());
    let out = call(&runtime, &id, "inc", &[enc(&41i64)]).unwrap();
    assert_eq!(postcard::from_bytes::<i64>(&out).unwrap(), 42);
    let out = call(&runtime, &id, "add", &[enc(&1.5f64), enc(&2.25f64)]).unwrap();
    assert_eq!(postcard::from_bytes::<f64>(&out).unwrap(), 3.75);
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    assert_eq!(
        call(&runtime, &id, "echo", std::slice::from_ref(&data)).unwrap(),
        data
    );
    let out = call(&runtime, &id, "log", &[enc(&"hello")]).unwrap();
    assert_eq!(postcard::from_bytes::<u64>(&out).unwrap(), 5);

    match call(&runtime, &id, "inc", &[]) {
        Err(RuntimeError::Guest(TaskError::InvalidInput(message))) => {
            assert!(message.contains("inc takes 1 argument"), "{message}")
        }
        other => panic!("expected invalid input, got {other:?}"),
    }
    assert!(matches!(
        call(&runtime, &id, "no_such_function", &[]),
        Err(RuntimeError::UnknownFunction { .. })
    ));

    let names: Vec<String> = runtime
        .describe(&id)
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    for name in ["noop", "inc", "add", "echo", "log", "panic"] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
}

#[test]
fn a_lean_panic_traps_and_logs_its_message() {
    let (_dir, runtime, id) = setup();
    let records = Arc::new(Mutex::new(Vec::new()));
    let subscriber = GuestRecords(records.clone());
    let result = tracing::subscriber::with_default(subscriber, || {
        call(&runtime, &id, "panic", &[enc(&"the sky fell")])
    });
    match result {
        Err(RuntimeError::Trap { message }) => {
            assert!(message.contains("unreachable"), "{message}");
            // With no stderr, the trap quotes the panic the guest logged.
            assert!(
                message.contains("guest error log") && message.contains("the sky fell"),
                "{message}"
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    let records = records.lock().unwrap();
    assert!(
        records.iter().any(|(level, message)| *level == Level::ERROR
            && message.contains("the sky fell")
            && message.contains("panicked at")),
        "{records:?}"
    );
    // The runtime is unaffected.
    assert!(call(&runtime, &id, "noop", &[]).is_ok());
}

/// A `tracing` subscriber that keeps the level and message of the guests' records (target
/// `taskhost::guest`) emitted on this thread.
struct GuestRecords(Arc<Mutex<Vec<(Level, String)>>>);

impl Subscriber for GuestRecords {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        if event.metadata().target() != "taskhost::guest" {
            return;
        }
        let mut message = MessageField(String::new());
        event.record(&mut message);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), message.0));
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

/// Reads the `message` field of an event.
struct MessageField(String);

impl Visit for MessageField {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}
