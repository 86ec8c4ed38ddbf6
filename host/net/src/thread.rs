//! A thread of its own with a single-threaded tokio runtime, for a daemon's networking.

use std::sync::Arc;

/// Starts a thread named `name` that builds a current-thread tokio runtime and hands it (or the
/// error building it) to `body`, with the caller's `tracing` dispatcher installed. A daemon's
/// event loop, connection tasks and QUIC drivers then pass work to each other without
/// cross-thread wake-ups.
///
/// ```
/// let (tx, rx) = std::sync::mpsc::channel();
/// taskhost_net::spawn_runtime_thread("example", move |runtime| {
///     let runtime = runtime.expect("a runtime");
///     tx.send(runtime.block_on(async { 6 * 7 })).unwrap();
/// })
/// .unwrap();
/// assert_eq!(rx.recv().unwrap(), 42);
/// ```
pub fn spawn_runtime_thread<F>(name: &str, body: F) -> std::io::Result<()>
where
    F: FnOnce(std::io::Result<tokio::runtime::Runtime>) + Send + 'static,
{
    spawn(name, None, body)
}

/// As [`spawn_runtime_thread`], and calls `on_idle` on the thread each time its runtime has run
/// every ready task and is about to look for I/O and sleep (tokio's `on_thread_park`). A task
/// the hook wakes runs before the thread sleeps, after the I/O found ready meanwhile (see
/// [`IdleSignal`]).
pub fn spawn_runtime_thread_with_idle_hook<F, I>(
    name: &str,
    on_idle: I,
    body: F,
) -> std::io::Result<()>
where
    F: FnOnce(std::io::Result<tokio::runtime::Runtime>) + Send + 'static,
    I: Fn() + Send + Sync + 'static,
{
    spawn(name, Some(Arc::new(on_idle)), body)
}

fn spawn<F>(
    name: &str,
    on_idle: Option<Arc<dyn Fn() + Send + Sync>>,
    body: F,
) -> std::io::Result<()>
where
    F: FnOnce(std::io::Result<tokio::runtime::Runtime>) + Send + 'static,
{
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                let mut builder = tokio::runtime::Builder::new_current_thread();
                builder.enable_all();
                if let Some(on_idle) = on_idle {
                    builder.on_thread_park(move || on_idle());
                }
                body(builder.build())
            })
        })?;
    Ok(())
}

/// Wakes tasks that wait for their runtime to have nothing else to do: a task that holds the
/// thread for long (a guest run on a network thread) waits for it first, so that every hop of
/// the work at hand (a request read, handed to its handler, answered) is done before it,
/// rather than one hop per turn of the task.
///
/// Install [`IdleSignal::notify`] as the runtime's idle hook
/// ([`spawn_runtime_thread_with_idle_hook`]).
#[derive(Debug, Default)]
pub struct IdleSignal {
    idle: tokio::sync::Notify,
}

/// Longest wait for the runtime to be idle: a runtime that always has a task ready never
/// calls its hook, and the waiter then goes on after this.
const MAX_IDLE_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

impl IdleSignal {
    /// The hook: wakes the current waiters.
    pub fn notify(&self) {
        self.idle.notify_waiters();
    }

    /// Waits until the runtime has run every other ready task, including those woken by I/O
    /// that was ready when this was called (or [`MAX_IDLE_WAIT`] passed).
    pub async fn wait(&self) {
        // Yielding lets the queued tasks run, then the runtime polls for I/O and queues the
        // tasks it wakes before this one. Their follow-ups (each hop of a request from task to
        // task) queue behind this one: the wait for the hook lets them run too.
        let _ = tokio::time::timeout(MAX_IDLE_WAIT, async {
            tokio::task::yield_now().await;
            self.idle.notified().await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Runs `waiter` beside a chain of three tasks, each spawning the next (the hops of a
    /// request from reader to handler), on a runtime thread with the idle hook; returns the
    /// order in which they logged.
    fn order_with(wait_idle: bool) -> Vec<&'static str> {
        let idle = Arc::new(IdleSignal::default());
        let hook = idle.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        spawn_runtime_thread_with_idle_hook(
            "idle-test",
            move || hook.notify(),
            move |runtime| {
                let log = Arc::new(Mutex::new(Vec::new()));
                runtime.expect("a runtime").block_on(async {
                    let chain = log.clone();
                    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                    tokio::spawn(async move {
                        chain.lock().unwrap().push("hop 1");
                        tokio::spawn(async move {
                            chain.lock().unwrap().push("hop 2");
                            tokio::spawn(async move {
                                chain.lock().unwrap().push("hop 3");
                                let _ = done_tx.send(());
                            });
                        });
                    });
                    let waiter_log = log.clone();
                    tokio::spawn(async move {
                        if wait_idle {
                            idle.wait().await;
                        } else {
                            tokio::task::yield_now().await;
                        }
                        waiter_log.lock().unwrap().push("waiter");
                    })
                    .await
                    .unwrap();
                    done_rx.await.unwrap();
                });
                let order = log.lock().unwrap().clone();
                tx.send(order).unwrap();
            },
        )
        .unwrap();
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap()
    }

    #[test]
    fn a_task_waiting_for_idle_runs_after_every_hop_of_the_work_at_hand() {
        assert_eq!(order_with(true), ["hop 1", "hop 2", "hop 3", "waiter"]);
        // A yield lets only the first hop go first.
        assert_ne!(order_with(false).last(), Some(&"hop 3"));
    }
}
