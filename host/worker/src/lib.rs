//! taskhost-worker.
