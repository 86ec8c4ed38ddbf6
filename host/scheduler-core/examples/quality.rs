//! Prints the scheduling-quality table: taskhost's policies against random and round-robin
//! placement in the simulator.
//!
//! `cargo run --release -p taskhost-scheduler-core --example quality [workers]`

use taskhost_scheduler_core::sim::{format_quality, quality_table};

fn main() {
    let workers = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(8);
    let rows = quality_table(1, workers, false);
    println!("{workers} workers x 2 slots, 1 GB/s links, 100 us latency\n");
    print!("{}", format_quality(&rows));
}
