//! taskhost-guest.
