//! Example task functions: the arithmetic the tests and benchmarks need, and misbehaving tasks
//! that prove the sandbox contains them.

use std::hint::black_box;
use std::time::{Duration, Instant};

taskhost_guest::export_tasks! {
    /// Returns nothing, at once: measures the cost of a task call itself.
    raw fn noop() -> Vec<u8> {
        Vec::new()
    }

    /// Returns its argument's bytes unchanged.
    raw fn echo(data: &[u8]) -> Vec<u8> {
        data.to_vec()
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
