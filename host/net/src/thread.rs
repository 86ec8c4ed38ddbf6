//! A thread of its own with a single-threaded tokio runtime, for a daemon's networking.

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
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                body(
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build(),
                )
            })
        })?;
    Ok(())
}
