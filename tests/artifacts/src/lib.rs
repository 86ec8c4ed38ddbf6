//! Paths of the example guest components.
