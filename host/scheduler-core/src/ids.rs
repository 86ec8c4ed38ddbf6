//! Public identifiers the daemon uses, the virtual time type, and the core's internal dense ids.

use std::fmt;

/// Virtual time in microseconds since an epoch the caller chooses (for example the daemon's
/// start). The core never reads a clock: every input carries `now`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub u64);

impl Micros {
    /// Zero.
    pub const ZERO: Micros = Micros(0);

    /// `self + d`, saturating.
    pub fn plus(self, d: Micros) -> Micros {
        Micros(self.0.saturating_add(d.0))
    }

    /// `self - earlier`, or zero when `earlier` is later.
    pub fn since(self, earlier: Micros) -> Micros {
        Micros(self.0.saturating_sub(earlier.0))
    }

    /// From milliseconds.
    pub fn from_millis(ms: u64) -> Micros {
        Micros(ms.saturating_mul(1000))
    }
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}us", self.0)
    }
}

/// A worker's identity, chosen by the daemon (for example a connection counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(pub u64);

/// A client's identity, chosen by the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

/// An opaque handle to literal argument bytes that the daemon stores; the core never sees the
/// bytes. The daemon may free them once the core reports the task as forgotten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LiteralHandle(pub u64);

/// Index of a task slot in the core's arena.
pub(crate) type Tid = u32;
/// Index of a worker slot in the core's arena.
pub(crate) type Wid = u32;
/// Marks "no worker" in compact fields.
pub(crate) const NO_WORKER: Wid = u32::MAX;
