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

    /// Benchmark kernel with no dependencies, for `taskhost-bench`: `params` is `spins: u64`,
    /// `bytes: u32`, `salt: u64` (little-endian); runs `spins` rounds of a compute-bound loop
    /// (the driver calibrates rounds per microsecond) and returns at least 8 and at least
    /// `bytes` bytes, the first 8 being `salt + 1` (little-endian u64).
    raw fn bench_spin0(params: &[u8]) -> Result<Vec<u8>, String> {
        bench_spin(params, &[])
    }

    /// Benchmark kernel with 1 dependency: as `bench_spin0`, the value being `salt + 1` plus the
    /// first 8 bytes of each dependency read as little-endian u64 (wrapping).
    raw fn bench_spin1(params: &[u8], a: &[u8]) -> Result<Vec<u8>, String> {
        bench_spin(params, &[a])
    }

    /// Benchmark kernel with 2 dependencies: as `bench_spin0`, the value being `salt + 1` plus the
    /// first 8 bytes of each dependency read as little-endian u64 (wrapping).
    raw fn bench_spin2(params: &[u8], a: &[u8], b: &[u8]) -> Result<Vec<u8>, String> {
        bench_spin(params, &[a, b])
    }

    /// Benchmark kernel with 3 dependencies: as `bench_spin0`, the value being `salt + 1` plus the
    /// first 8 bytes of each dependency read as little-endian u64 (wrapping).
    raw fn bench_spin3(params: &[u8], a: &[u8], b: &[u8], c: &[u8]) -> Result<Vec<u8>, String> {
        bench_spin(params, &[a, b, c])
    }

    /// Benchmark kernel with 4 dependencies: as `bench_spin0`, the value being `salt + 1` plus the
    /// first 8 bytes of each dependency read as little-endian u64 (wrapping).
    raw fn bench_spin4(params: &[u8], a: &[u8], b: &[u8], c: &[u8], d: &[u8]) -> Result<Vec<u8>, String> {
        bench_spin(params, &[a, b, c, d])
    }

    /// Benchmark kernel with 5 dependencies: as `bench_spin0`, the value being `salt + 1` plus the
    /// first 8 bytes of each dependency read as little-endian u64 (wrapping).
    raw fn bench_spin5(params: &[u8], a: &[u8], b: &[u8], c: &[u8], d: &[u8], e: &[u8]) -> Result<Vec<u8>, String> {
        bench_spin(params, &[a, b, c, d, e])
    }

    /// Benchmark kernel with 6 dependencies: as `bench_spin0`, the value being `salt + 1` plus the
    /// first 8 bytes of each dependency read as little-endian u64 (wrapping).
    raw fn bench_spin6(params: &[u8], a: &[u8], b: &[u8], c: &[u8], d: &[u8], e: &[u8], f: &[u8]) -> Result<Vec<u8>, String> {
        bench_spin(params, &[a, b, c, d, e, f])
    }

    /// Benchmark kernel with 7 dependencies: as `bench_spin0`, the value being `salt + 1` plus the
    /// first 8 bytes of each dependency read as little-endian u64 (wrapping).
    raw fn bench_spin7(params: &[u8], a: &[u8], b: &[u8], c: &[u8], d: &[u8], e: &[u8], f: &[u8], g: &[u8]) -> Result<Vec<u8>, String> {
        bench_spin(params, &[a, b, c, d, e, f, g])
    }

    /// Benchmark kernel with 8 dependencies: as `bench_spin0`, the value being `salt + 1` plus the
    /// first 8 bytes of each dependency read as little-endian u64 (wrapping).
    raw fn bench_spin8(params: &[u8], a: &[u8], b: &[u8], c: &[u8], d: &[u8], e: &[u8], f: &[u8], g: &[u8], h: &[u8]) -> Result<Vec<u8>, String> {
        bench_spin(params, &[a, b, c, d, e, f, g, h])
    }
}

/// The body of the `bench_spin*` functions: decodes the parameters, spins and returns the value
/// of the task followed by padding up to the requested size.
fn bench_spin(params: &[u8], deps: &[&[u8]]) -> Result<Vec<u8>, String> {
    let field = |range: std::ops::Range<usize>| params.get(range).unwrap_or_default();
    if params.len() != 20 {
        return Err(format!(
            "bench kernel parameters are 20 bytes, got {}",
            params.len()
        ));
    }
    let spins = u64::from_le_bytes(field(0..8).try_into().unwrap_or_default());
    let bytes = u32::from_le_bytes(field(8..12).try_into().unwrap_or_default()) as usize;
    let salt = u64::from_le_bytes(field(12..20).try_into().unwrap_or_default());
    let mut value = salt.wrapping_add(1);
    for (i, dep) in deps.iter().enumerate() {
        let head: [u8; 8] = dep
            .get(0..8)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| format!("dependency {i} has {} bytes, fewer than 8", dep.len()))?;
        value = value.wrapping_add(u64::from_le_bytes(head));
    }
    if spins > 0 {
        std::hint::black_box(spin(spins, salt));
    }
    let mut out = vec![0u8; bytes.max(8)];
    out[0..8].copy_from_slice(&value.to_le_bytes());
    Ok(out)
}

/// `rounds` rounds of a xorshift-multiply mix, each depending on the one before: a loop that
/// does the same work on any input and that the compiler can neither shorten nor vectorise.
fn spin(rounds: u64, seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..rounds {
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    }
    x
}
