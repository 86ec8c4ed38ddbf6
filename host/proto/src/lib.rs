//! taskhost-proto.
