//! The per-task sandbox: what a guest can reach (nothing but its captured stdio and the host
//! log), and the bookkeeping that bounds it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasmtime::StoreContextMut;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::clocks::HostMonotonicClock;
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::taskhost::task::host;
use crate::cancel::{CancelState, Cancelled, DeadlineReached};

/// How much output and logging one task may produce before the rest is dropped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutputBounds {
    pub stream_bytes: usize,
    pub log_records: usize,
    pub log_bytes: usize,
}

/// The data of one task attempt's `Store`.
pub(crate) struct TaskState {
    /// Built on the guest's first WASI call: most tasks make none, and building a context
    /// (random number generators, clocks, stdio and socket settings) is a good part of the
    /// per-task setup.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub stdout: Capture,
    pub stderr: Capture,
    pub log: LogBudget,
    /// `module/function`, for log records.
    pub task: Arc<str>,
    /// When the task started; the origin of its monotonic clock.
    pub started: Instant,
    /// When the task must be finished.
    pub deadline: Instant,
    /// Set when the task's cancellation token fires.
    pub cancel: Option<Arc<CancelState>>,
    /// Whether a clock subscription was cut short at the deadline or by cancellation, so that
    /// a task that then returns normally is still reported as interrupted.
    pub wait_cut_short: bool,
    /// The last error-level record the guest logged (bounded), quoted by a trap message: a
    /// guest without stderr (no WASI) reports its panic this way.
    pub last_error: Option<String>,
}

impl TaskState {
    pub fn new(
        task: Arc<str>,
        memory_limit: u64,
        bounds: OutputBounds,
        started: Instant,
        timeout: Duration,
        cancel: Option<Arc<CancelState>>,
    ) -> Self {
        Self {
            wasi: None,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_limit),
            stdout: Capture::new(bounds.stream_bytes),
            stderr: Capture::new(bounds.stream_bytes),
            log: LogBudget {
                records_left: bounds.log_records,
                bytes_left: bounds.log_bytes,
                dropped: 0,
            },
            task,
            started,
            // A timeout too large to represent is no deadline at all.
            deadline: started
                .checked_add(timeout)
                .unwrap_or_else(|| started + Duration::from_secs(100 * 365 * 86_400)),
            cancel,
            wait_cut_short: false,
            last_error: None,
        }
    }

    /// Whether the task's cancellation token fired.
    pub fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.is_cancelled())
    }

    /// The error that interrupts the task now, if any: cancelled, or past its deadline.
    pub fn interruption(&self) -> Option<wasmtime::Error> {
        if self.cancelled() {
            Some(wasmtime::Error::new(Cancelled))
        } else if Instant::now() >= self.deadline {
            Some(wasmtime::Error::new(DeadlineReached))
        } else {
            None
        }
    }
}

/// The WASI context of a task: grants nothing.
fn build_wasi(stdout: &Capture, stderr: &Capture, started: Instant) -> WasiCtx {
    let mut builder = WasiCtxBuilder::new();
    // Grant nothing: no preopened directories, no environment, no arguments (the builder's
    // defaults), stdin empty, and no network of any kind.
    builder
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .monotonic_clock(TaskClock { started })
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    builder.build()
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (stdout, stderr, started) = (&self.stdout, &self.stderr, self.started);
        WasiCtxView {
            ctx: self
                .wasi
                .get_or_insert_with(|| build_wasi(stdout, stderr, started)),
            table: &mut self.table,
        }
    }
}

/// The task's `wasi:clocks/monotonic-clock`: nanoseconds since the task started.
struct TaskClock {
    started: Instant,
}

impl HostMonotonicClock for TaskClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A `wasi:clocks/monotonic-clock` subscription bounded by the task's deadline and its
/// cancellation: the only way a guest can block in the sandbox (there are no files, sockets
/// or stdin to wait on), so it must not outlive the task.
struct BoundedWait {
    /// When the pollable is ready: what the guest asked for, or the task's deadline if that is
    /// earlier.
    until: tokio::time::Instant,
    cancel: Option<Arc<CancelState>>,
}

#[wasmtime_wasi::async_trait]
impl Pollable for BoundedWait {
    async fn ready(&mut self) {
        let Some(cancel) = &self.cancel else {
            tokio::time::sleep_until(self.until).await;
            return;
        };
        // Register for the wake-up before looking at the flag, so that a cancellation between
        // the two is not missed.
        let woken = cancel.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if cancel.is_cancelled() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(self.until) => {}
            _ = woken => {}
        }
    }
}

/// `subscribe-duration` and `subscribe-instant` of `wasi:clocks/monotonic-clock`: a pollable
/// ready after `wait`, or at the task's deadline or cancellation if that comes first. Traps at
/// once if the task is already past its deadline or cancelled.
pub(crate) fn subscribe_bounded(
    mut store: StoreContextMut<'_, TaskState>,
    wait: Duration,
) -> wasmtime::Result<Resource<DynPollable>> {
    let state = store.data_mut();
    if let Some(error) = state.interruption() {
        return Err(error);
    }
    let now = Instant::now();
    let left = state.deadline.saturating_duration_since(now);
    if wait >= left || state.cancel.is_some() {
        // The wait may end early; if it does, the task is interrupted.
        state.wait_cut_short = true;
    }
    let until = tokio::time::Instant::from_std(now + wait.min(left));
    let cancel = state.cancel.clone();
    let wait = state.table.push(BoundedWait { until, cancel })?;
    wasmtime_wasi::p2::subscribe(&mut state.table, wait)
}

/// The task's monotonic clock reading, for `subscribe-instant`.
pub(crate) fn task_clock_now(state: &TaskState) -> u64 {
    TaskClock {
        started: state.started,
    }
    .now()
}

/// Caps the total linear memory of a store and remembers whether a growth was refused, so that
/// the trap that usually follows (a guest allocator aborting) is reported as
/// [`crate::RuntimeError::MemoryLimitExceeded`].
pub(crate) struct MemoryLimiter {
    limit: u64,
    used: u64,
    pub refused: bool,
}

/// Table growth is capped independently of the memory limit.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl MemoryLimiter {
    fn new(limit: u64) -> Self {
        Self {
            limit,
            used: 0,
            refused: false,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current) as u64;
        if self.used.saturating_add(grow) > self.limit {
            self.refused = true;
            return Ok(false);
        }
        self.used += grow;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.refused = true;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// How much of an error record's message (and of its fields) a trap message quotes.
const LAST_ERROR_CHARS: usize = 2048;

/// What a task may still log through the `host` interface.
pub(crate) struct LogBudget {
    records_left: usize,
    bytes_left: usize,
    pub dropped: u64,
}

impl host::Host for TaskState {
    fn log(&mut self, level: host::Level, message: String, fields: Vec<host::Field>) {
        let size = message.len()
            + fields
                .iter()
                .map(|f| f.key.len() + f.value.len())
                .sum::<usize>();
        if self.log.records_left == 0 || size > self.log.bytes_left {
            self.log.dropped += 1;
            return;
        }
        self.log.records_left -= 1;
        self.log.bytes_left -= size;
        let mut fields_text = String::new();
        for field in &fields {
            if !fields_text.is_empty() {
                fields_text.push(' ');
            }
            fields_text.push_str(&field.key);
            fields_text.push('=');
            fields_text.push_str(&field.value);
        }
        let task = &*self.task;
        match level {
            host::Level::Trace => {
                tracing::trace!(target: "taskhost::guest", task, fields = %fields_text, "{message}")
            }
            host::Level::Debug => {
                tracing::debug!(target: "taskhost::guest", task, fields = %fields_text, "{message}")
            }
            host::Level::Info => {
                tracing::info!(target: "taskhost::guest", task, fields = %fields_text, "{message}")
            }
            host::Level::Warn => {
                tracing::warn!(target: "taskhost::guest", task, fields = %fields_text, "{message}")
            }
            host::Level::Error => {
                tracing::error!(target: "taskhost::guest", task, fields = %fields_text, "{message}");
                let mut text: String = message.chars().take(LAST_ERROR_CHARS).collect();
                if !fields_text.is_empty() {
                    text.push_str(" (");
                    text.extend(fields_text.chars().take(LAST_ERROR_CHARS));
                    text.push(')');
                }
                self.last_error = Some(text);
            }
        }
    }
}

/// A guest output stream captured in memory up to a bound; what goes past the bound is counted
/// and silently dropped (an error would make a Rust guest's `println!` panic).
#[derive(Clone)]
pub(crate) struct Capture {
    inner: Arc<Mutex<CaptureBuf>>,
}

struct CaptureBuf {
    data: Vec<u8>,
    limit: usize,
    dropped: u64,
}

/// How many bytes a guest may write at once.
const WRITE_PERMIT: usize = 64 * 1024;

impl Capture {
    fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(CaptureBuf {
                data: Vec::new(),
                limit,
                dropped: 0,
            })),
        }
    }

    fn append(&self, bytes: &[u8]) {
        let mut buf = self.inner.lock();
        let room = buf.limit.saturating_sub(buf.data.len());
        let take = room.min(bytes.len());
        buf.data.extend_from_slice(&bytes[..take]);
        buf.dropped += (bytes.len() - take) as u64;
    }

    /// The captured bytes and how many were dropped past the bound.
    pub fn take(&self) -> (Vec<u8>, u64) {
        let mut buf = self.inner.lock();
        let dropped = buf.dropped;
        buf.dropped = 0;
        (std::mem::take(&mut buf.data), dropped)
    }

    /// The last `max` bytes captured, as text.
    pub fn tail(&self, max: usize) -> String {
        let buf = self.inner.lock();
        let start = buf.data.len().saturating_sub(max);
        String::from_utf8_lossy(&buf.data[start..]).into_owned()
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.append(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
