//! taskhost-scheduler-core.
