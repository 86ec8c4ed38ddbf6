//! Example task functions: the arithmetic the tests and benchmarks need, and misbehaving tasks
//! that prove the sandbox contains them.

use std::hint::black_box;
use std::time::{Duration, Instant};

taskhost_guest::export_tasks! {
    /// Returns nothing, at once: measures the cost of a task call itself.
    raw fn noop() -> Vec<u8> {
        Vec::new()
    }

    /// Returns its argument's bytes unchanged (the argument's own buffer: no copy in the guest).
    raw fn echo(data: Vec<u8>) -> Vec<u8> {
        data
    }

    /// Returns the length of its argument as 8 little-endian bytes: bulk data in, nothing out.
    raw fn byte_len(data: &[u8]) -> Vec<u8> {
        (data.len() as u64).to_le_bytes().to_vec()
    }

    /// Returns `n` bytes (`n` given as 8 little-endian bytes) of value 0xa5 (one `memory.fill`):
    /// nothing in, bulk data out.
    raw fn bytes(n: &[u8]) -> Result<Vec<u8>, String> {
        let n: [u8; 8] = n.try_into().map_err(|_| "expected 8 bytes".to_string())?;
        let n = usize::try_from(u64::from_le_bytes(n)).map_err(|e| e.to_string())?;
        Ok(vec![0xa5; n])
    }

    /// Sleeps `millis` milliseconds on the WASI monotonic clock (the one way a guest can block
    /// in the sandbox), then returns how many milliseconds passed.
    fn sleep(millis: u64) -> u64 {
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(millis));
        started.elapsed().as_millis() as u64
    }

    /// Returns `x + 1`.
    fn inc(x: i64) -> i64 {
        x.wrapping_add(1)
    }

    /// Returns `a + b`.
    fn add(a: f64, b: f64) -> f64 {
        a + b
    }

    /// Keeps the CPU busy for `micros` microseconds, then returns `a + b`: a task of a chosen
    /// duration whose result depends on its inputs.
    fn slow_add(a: f64, b: f64, micros: u64) -> f64 {
        busy_wait(micros);
        a + b
    }

    /// Returns the sum of a list of numbers.
    fn sum(xs: Vec<f64>) -> f64 {
        xs.iter().sum()
    }

    /// Keeps the CPU busy for `micros` microseconds and returns how many loop rounds it made.
    fn busy_wait(micros: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_micros(micros);
        let mut rounds = 0u64;
        while Instant::now() < deadline {
            rounds = black_box(rounds + 1);
        }
        rounds
    }

    /// Benchmark kernel with no dependencies: `params` is `micros: u64`, `bytes: u32`,
    /// `salt: u64` (little-endian); busy-waits `micros` microseconds and returns at least 8 and
    /// at least `bytes` bytes, the first 8 being `salt + 1` (little-endian u64).
    raw fn bench_kernel0(params: &[u8]) -> Result<Vec<u8>, String> {
        bench_kernel(params, &[])
    }

    /// Benchmark kernel with 1 dependency: as `bench_kernel0`, the value being `salt + 1` plus
    /// the first 8 bytes of each dependency read as little-endian u64 (wrapping).
    raw fn bench_kernel1(params: &[u8], a: &[u8]) -> Result<Vec<u8>, String> {
        bench_kernel(params, &[a])
    }

    /// Benchmark kernel with 2 dependencies: as `bench_kernel0`, the value being `salt + 1` plus
    /// the first 8 bytes of each dependency read as little-endian u64 (wrapping).
    raw fn bench_kernel2(params: &[u8], a: &[u8], b: &[u8]) -> Result<Vec<u8>, String> {
        bench_kernel(params, &[a, b])
    }

    /// Benchmark kernel with 3 dependencies: as `bench_kernel0`, the value being `salt + 1` plus
    /// the first 8 bytes of each dependency read as little-endian u64 (wrapping).
    raw fn bench_kernel3(params: &[u8], a: &[u8], b: &[u8], c: &[u8]) -> Result<Vec<u8>, String> {
        bench_kernel(params, &[a, b, c])
    }

    /// Benchmark kernel with 4 dependencies: as `bench_kernel0`, the value being `salt + 1` plus
    /// the first 8 bytes of each dependency read as little-endian u64 (wrapping).
    raw fn bench_kernel4(params: &[u8], a: &[u8], b: &[u8], c: &[u8], d: &[u8]) -> Result<Vec<u8>, String> {
        bench_kernel(params, &[a, b, c, d])
    }

    /// Benchmark kernel with 5 dependencies: as `bench_kernel0`, the value being `salt + 1` plus
    /// the first 8 bytes of each dependency read as little-endian u64 (wrapping).
    raw fn bench_kernel5(params: &[u8], a: &[u8], b: &[u8], c: &[u8], d: &[u8], e: &[u8]) -> Result<Vec<u8>, String> {
        bench_kernel(params, &[a, b, c, d, e])
    }

    /// Benchmark kernel with 6 dependencies: as `bench_kernel0`, the value being `salt + 1` plus
    /// the first 8 bytes of each dependency read as little-endian u64 (wrapping).
    raw fn bench_kernel6(params: &[u8], a: &[u8], b: &[u8], c: &[u8], d: &[u8], e: &[u8], f: &[u8]) -> Result<Vec<u8>, String> {
        bench_kernel(params, &[a, b, c, d, e, f])
    }

    /// Benchmark kernel with 7 dependencies: as `bench_kernel0`, the value being `salt + 1` plus
    /// the first 8 bytes of each dependency read as little-endian u64 (wrapping).
    raw fn bench_kernel7(params: &[u8], a: &[u8], b: &[u8], c: &[u8], d: &[u8], e: &[u8], f: &[u8], g: &[u8]) -> Result<Vec<u8>, String> {
        bench_kernel(params, &[a, b, c, d, e, f, g])
    }

    /// Benchmark kernel with 8 dependencies: as `bench_kernel0`, the value being `salt + 1` plus
    /// the first 8 bytes of each dependency read as little-endian u64 (wrapping).
    raw fn bench_kernel8(params: &[u8], a: &[u8], b: &[u8], c: &[u8], d: &[u8], e: &[u8], f: &[u8], g: &[u8], h: &[u8]) -> Result<Vec<u8>, String> {
        bench_kernel(params, &[a, b, c, d, e, f, g, h])
    }

    /// Always fails with `message`.
    fn fail(message: String) -> Result<u64, String> {
        Err(message)
    }

    /// Panics with `message`: the host sees a trap.
    fn panic(message: String) -> u64 {
        panic!("{message}")
    }

    /// Loops forever: the host must stop it at its deadline.
    fn spin() -> u64 {
        let mut rounds = 0u64;
        loop {
            rounds = black_box(rounds.wrapping_add(1));
        }
    }

    /// Allocates and touches `step_bytes` at a time without bound: the host must stop it at its
    /// memory limit.
    fn hog(step_bytes: u64) -> u64 {
        let step = usize::try_from(step_bytes.max(1)).unwrap_or(usize::MAX);
        let mut held: Vec<Vec<u8>> = Vec::new();
        loop {
            held.push(black_box(vec![1u8; step]));
            black_box(&held);
        }
    }

    /// Tries to read a file: the sandbox grants no filesystem, so this returns the error.
    fn read_file(path: String) -> Result<String, String> {
        std::fs::read_to_string(&path).map_err(|err| format!("cannot read {path}: {err}"))
    }

    /// Tries to open a TCP connection: the sandbox grants no network, so this returns the error.
    fn open_socket(addr: String) -> Result<String, String> {
        std::net::TcpStream::connect(&addr)
            .map(|stream| format!("connected to {:?}", stream.peer_addr()))
            .map_err(|err| format!("cannot connect to {addr}: {err}"))
    }

    /// Tries to read an environment variable: the sandbox grants an empty environment.
    fn read_env(name: String) -> Result<String, String> {
        let count = std::env::vars_os().count();
        std::env::var(&name).map_err(|err| format!("cannot read {name} ({count} variables visible): {err}"))
    }

    /// Logs `message` through the host and returns 1.
    fn log(message: String) -> u64 {
        taskhost_guest::log::log(taskhost_guest::log::Level::Info, &message, &[("source", "example")]);
        1
    }

    /// Prints `lines` lines to stdout and to stderr and returns how many it printed.
    fn print(lines: u64) -> u64 {
        for i in 0..lines {
            println!("stdout line {i}");
            eprintln!("stderr line {i}");
        }
        lines
    }
}

/// The body of the `bench_kernel*` functions: decodes the parameters, busy-waits and returns the
/// value of the task followed by padding up to the requested size.
fn bench_kernel(params: &[u8], deps: &[&[u8]]) -> Result<Vec<u8>, String> {
    if params.len() != 20 {
        return Err(format!("bench kernel parameters are 20 bytes, got {}", params.len()));
    }
    let micros = u64::from_le_bytes(params[0..8].try_into().unwrap_or_default());
    let bytes = u32::from_le_bytes(params[8..12].try_into().unwrap_or_default()) as usize;
    let salt = u64::from_le_bytes(params[12..20].try_into().unwrap_or_default());
    let mut value = salt.wrapping_add(1);
    for (i, dep) in deps.iter().enumerate() {
        let head: [u8; 8] = dep
            .get(0..8)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| format!("dependency {i} has {} bytes, fewer than 8", dep.len()))?;
        value = value.wrapping_add(u64::from_le_bytes(head));
    }
    if micros > 0 {
        busy_wait(micros);
    }
    let mut out = vec![0u8; bytes.max(8)];
    out[0..8].copy_from_slice(&value.to_le_bytes());
    Ok(out)
}
