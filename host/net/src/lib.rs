//! taskhost-net.
