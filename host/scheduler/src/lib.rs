//! taskhost-scheduler.
