//! End-to-end tests of taskhost live in `tests/`.
