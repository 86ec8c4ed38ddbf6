//! taskhost-client.
