//! End-to-end tests of taskhost live in `e2e/`: they start the `taskhost` binary as separate
//! scheduler and worker processes on loopback and drive them with the Rust client.
