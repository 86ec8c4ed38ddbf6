//! A lean task module: built for `wasm32-unknown-unknown` (no WASI), its core module imports
//! only `taskhost:task/host`; `tests/artifacts/build.rs` turns it into a component with
//! `wit-component`. Instantiating it wires no WASI interfaces, which is what makes a task of
//! a trivial function cheaper than the same function in the `wasm32-wasip2` example guest.
//!
//! Without WASI there is no stdout, stderr, clock or randomness: logging goes through
//! `taskhost_guest::log`, and a panic's message reaches the host's log through the panic hook
//! the guest SDK installs on the first call. The guest SDK's arena allocator keeps small tasks
//! from growing their memory (std's allocator here grows it on every instance's first
//! allocation).

/// Small allocations come from the initial memory: a small task never grows its memory.
#[global_allocator]
static ALLOCATOR: taskhost_guest::ArenaAllocator = taskhost_guest::ArenaAllocator::new();

taskhost_guest::export_tasks! {
    /// Returns nothing, at once: measures the cost of a task call itself.
    raw fn noop() -> Vec<u8> {
        Vec::new()
    }

    /// Returns `x + 1`.
    fn inc(x: i64) -> i64 {
        x.wrapping_add(1)
    }

    /// Returns `a + b`.
    fn add(a: f64, b: f64) -> f64 {
        a + b
    }

    /// Returns its argument's bytes unchanged (the argument's own buffer: no copy in the guest).
    raw fn echo(data: Vec<u8>) -> Vec<u8> {
        data
    }

    /// Sends `message` to the host's log at info level and returns its length in bytes.
    fn log(message: String) -> u64 {
        taskhost_guest::log::info(&message);
        message.len() as u64
    }

    /// Panics with `message`: the host gets the message through its log, and a trap.
    fn panic(message: String) -> u64 {
        panic!("{message}")
    }

    /// The zero-work benchmark kernel of `taskhost-bench` (as the example guest's
    /// `bench_kernel0`, without its busy-wait: this guest has no clock). `params` is
    /// `micros: u64` (must be 0), `bytes: u32`, `salt: u64`, little-endian; returns at least 8
    /// and at least `bytes` bytes, the first 8 being `salt + 1`.
    raw fn bench_kernel0(params: &[u8]) -> Result<Vec<u8>, String> {
        let field = |range: std::ops::Range<usize>| params.get(range).unwrap_or_default();
        if params.len() != 20 {
            return Err(format!("bench kernel parameters are 20 bytes, got {}", params.len()));
        }
        let micros = u64::from_le_bytes(field(0..8).try_into().unwrap_or_default());
        if micros != 0 {
            return Err("the lean guest has no clock: busy-wait kernels run on the example guest".into());
        }
        let bytes = u32::from_le_bytes(field(8..12).try_into().unwrap_or_default()) as usize;
        let salt = u64::from_le_bytes(field(12..20).try_into().unwrap_or_default());
        let mut out = vec![0u8; bytes.max(8)];
        out[0..8].copy_from_slice(&salt.wrapping_add(1).to_le_bytes());
        Ok(out)
    }
}
