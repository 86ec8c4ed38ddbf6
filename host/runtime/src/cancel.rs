//! Cancelling a running task from another thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use wasmtime::{Engine, EngineWeak};

/// A handle that cancels the tasks it was given to ([`crate::Runtime::execute_cancellable`]).
///
/// Clone it freely: every clone cancels the same tasks. [`CancelToken::cancel`] may be called
/// from any thread, before or while the task runs; it is idempotent and cannot be undone. A
/// cancelled task stops at its next interruption check (it is not left to run to its end) and
/// its `execute_cancellable` returns [`crate::RuntimeError::Cancelled`]:
/// - a task running guest code stops within microseconds (cancelling bumps the engine's epoch,
///   so the task checks at once rather than at the next epoch tick);
/// - a task waiting on a `wasi:clocks` subscription (a guest `sleep`) is woken at once;
/// - a task not started yet is not started.
///
/// A token is meant for one task (or one group of tasks cancelled together) on one
/// [`crate::Runtime`]; used with a second runtime it still cancels, but only at that
/// runtime's next epoch tick.
#[derive(Clone, Default)]
pub struct CancelToken {
    pub(crate) state: Arc<CancelState>,
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl CancelToken {
    /// A token that has not been cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels every task this token was or will be given to.
    pub fn cancel(&self) {
        self.state.cancelled.store(true, Ordering::SeqCst);
        // Wakes tasks waiting on a clock subscription.
        self.state.wake.notify_waiters();
        if let Some(engine) = self.state.engine.get().and_then(EngineWeak::upgrade) {
            // Every running store of this engine checks its interruption now instead of at the
            // next tick; the others just continue.
            engine.increment_epoch();
        }
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.state.is_cancelled()
    }
}

/// The shared state behind a [`CancelToken`].
#[derive(Default)]
pub(crate) struct CancelState {
    cancelled: AtomicBool,
    /// Notified on cancellation, for clock waits.
    pub(crate) wake: tokio::sync::Notify,
    /// The engine of the first runtime the token was used with, whose epoch `cancel` bumps.
    engine: OnceLock<EngineWeak>,
}

impl CancelState {
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    pub fn attach(&self, engine: &Engine) {
        if self.engine.get().is_none() {
            let _ = self.engine.set(engine.weak());
        }
    }
}

/// Returned by the epoch callback (and clock subscriptions) when the wall-clock deadline has
/// passed.
#[derive(Debug)]
pub(crate) struct DeadlineReached;

impl std::fmt::Display for DeadlineReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline reached")
    }
}

impl std::error::Error for DeadlineReached {}

/// Returned by the epoch callback (and clock subscriptions) when the task was cancelled.
#[derive(Debug)]
pub(crate) struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("task cancelled")
    }
}

impl std::error::Error for Cancelled {}
