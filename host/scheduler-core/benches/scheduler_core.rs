//! Scheduler-core benchmark (filled in below).

fn main() {}
