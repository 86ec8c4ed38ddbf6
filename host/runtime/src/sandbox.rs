//! The per-task sandbox: what a guest can reach (nothing but its captured stdio and the host
//! log), and the bookkeeping that bounds it.

use std::sync::Arc;

use parking_lot::Mutex;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::taskhost::task::host;

/// How much output and logging one task may produce before the rest is dropped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutputBounds {
    pub stream_bytes: usize,
    pub log_records: usize,
    pub log_bytes: usize,
}

/// The data of one task attempt's `Store`.
pub(crate) struct TaskState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub stdout: Capture,
    pub stderr: Capture,
    pub log: LogBudget,
    /// `module/function`, for log records.
    pub task: Arc<str>,
}

impl TaskState {
    pub fn new(task: Arc<str>, memory_limit: u64, bounds: OutputBounds) -> Self {
        let stdout = Capture::new(bounds.stream_bytes);
        let stderr = Capture::new(bounds.stream_bytes);
        let mut builder = WasiCtxBuilder::new();
        // Grant nothing: no preopened directories, no environment, no arguments (the builder's
        // defaults), stdin empty, and no network of any kind.
        builder
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        Self {
            wasi: builder.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_limit),
            stdout,
            stderr,
            log: LogBudget {
                records_left: bounds.log_records,
                bytes_left: bounds.log_bytes,
                dropped: 0,
            },
            task,
        }
    }
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
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
                tracing::error!(target: "taskhost::guest", task, fields = %fields_text, "{message}")
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
