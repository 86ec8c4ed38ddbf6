//! taskhost-runtime.
