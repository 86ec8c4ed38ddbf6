//! The runtime: its engines (one without fuel metering, and one with it for tasks that set a
//! fuel limit), a cache of ready-to-instantiate modules per engine, and task execution.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use taskhost_proto::ModuleId;
use wasmtime::component::{Component, ComponentExportIndex, HasSelf, InstancePre, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};

use crate::bindings::{self, TaskModule, TaskModulePre};
use crate::cancel::{CancelState, CancelToken, Cancelled, DeadlineReached};
use crate::error::{RuntimeError, TaskError, chain_text};
use crate::sandbox::{OutputBounds, TaskState, subscribe_bounded, task_clock_now};
use crate::store::{ModuleStore, write_atomically};

/// The name of the interface task modules export.
const TASKS_INTERFACE: &str = "taskhost:task/tasks@0.1.0";

/// The `wasi:clocks/monotonic-clock` interface as wasmtime-wasi defines it in the linker (its
/// WIT package version). Guests importing older 0.2 versions are linked to it by semver.
const MONOTONIC_CLOCK_INTERFACE: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// How much of the guest's stderr a trap message quotes.
const STDERR_TAIL: usize = 1024;

/// Settings of a [`Runtime`], fixed for its lifetime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The data directory: modules go to `<dir>/modules`, compiled artifacts to
    /// `<dir>/artifacts/<engine fingerprint>` (one directory per engine).
    pub data_dir: PathBuf,
    /// How many component instances may be alive at once (the size of the pooling allocator).
    /// Each running task holds one; a task started beyond this fails with
    /// [`RuntimeError::PoolExhausted`]. Size it to the number of execution slots plus a margin.
    pub max_instances: u32,
    /// The largest memory cap any task may be given, in bytes (at most 4 GiB). Each pool slot
    /// reserves this much address space (not memory).
    pub max_memory: u64,
    /// Whether tasks may set a fuel limit ([`Limits::fuel`]); without it, a task that sets
    /// one is refused. Such tasks run on code compiled with fuel metering, by a second engine
    /// that the first of them creates (and that compiles each module on its first such task);
    /// tasks without a fuel limit always run on code compiled without it, which is faster (a
    /// fuel counter update per basic block: 2-30% of a kernel's time).
    pub fuel_metering: bool,
    /// How often the epoch ticker thread checks running tasks' deadlines.
    pub epoch_tick: Duration,
    /// How many bytes of stdout and of stderr a task may write; the rest is dropped.
    pub stdio_limit: usize,
    /// How many records a task may log through the `host` interface.
    pub log_records: usize,
    /// How many bytes (messages and fields) a task may log through the `host` interface.
    pub log_bytes: usize,
    /// How many bytes of each linear memory stay resident (dirty pages reset in place rather
    /// than unmapped) when an instance slot is reused; this is what makes instantiation and
    /// large arguments cheap (no page faults on reuse). It bounds the memory a warm, unused
    /// slot keeps: at most this much per slot that was ever used.
    pub memory_keep_resident: usize,
}

impl RuntimeConfig {
    /// The default settings, with data under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            max_instances: 100,
            max_memory: 4 << 30,
            fuel_metering: true,
            epoch_tick: Duration::from_millis(10),
            stdio_limit: 64 * 1024,
            log_records: 1000,
            log_bytes: 256 * 1024,
            memory_keep_resident: 64 << 20,
        }
    }
}

/// Per-task limits, checked by the runtime while the task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The wall-clock time the task may take, counted from the start of the call (after the
    /// module is loaded). Past it the task is interrupted with
    /// [`RuntimeError::DeadlineExceeded`].
    pub timeout: Duration,
    /// The most linear memory, in bytes, the task's instance may use in total.
    pub memory: u64,
    /// The fuel (roughly, wasm instructions) the task may consume, or `None` for no limit.
    pub fuel: Option<u64>,
}

impl Default for Limits {
    /// One minute, 256 MiB, no fuel limit.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            memory: 256 << 20,
            fuel: None,
        }
    }
}

/// One task function a module exports, as the module describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionInfo {
    /// The name the function is called by, such as `add`.
    pub name: String,
    /// A short human description.
    pub doc: String,
    /// The signature as the guest declares it, such as `add(a: f64, b: f64) -> f64`.
    pub signature: String,
}

/// Counters of what a [`Runtime`] has done since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Modules compiled from their bytes (a cache miss of the artifact cache).
    pub compilations: u64,
    /// Modules loaded from a compiled artifact on disk.
    pub artifact_loads: u64,
    /// Task attempts started (instances created).
    pub instantiations: u64,
}

#[derive(Default)]
struct Counters {
    compilations: AtomicU64,
    artifact_loads: AtomicU64,
    instantiations: AtomicU64,
}

/// A module ready to instantiate.
struct Loaded {
    pre: TaskModulePre<TaskState>,
    instance_pre: InstancePre<TaskState>,
    call: ComponentExportIndex,
    short: String,
}

/// One wasmtime `Engine` and what depends on it: its linker, its epoch ticker, the directory
/// of the artifacts it compiled and the modules loaded for it.
struct EngineSlot {
    engine: Engine,
    linker: Linker<TaskState>,
    artifacts_dir: PathBuf,
    fingerprint: String,
    /// Whether the engine compiles fuel metering in.
    metered: bool,
    loaded: RwLock<HashMap<ModuleId, Arc<Loaded>>>,
    loading: Mutex<HashMap<ModuleId, Arc<Mutex<()>>>>,
    _ticker: Ticker,
}

impl EngineSlot {
    /// Creates the engine (with fuel metering compiled in if `metered`), its linker, its
    /// artifacts directory and its epoch ticker thread.
    fn new(config: &RuntimeConfig, metered: bool) -> Result<Self, RuntimeError> {
        let engine = Engine::new(&engine_config(config, metered)).map_err(|e| {
            RuntimeError::Internal(format!("creating the engine: {}", chain_text(&e)))
        })?;
        let fingerprint = engine_fingerprint(&engine);

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| RuntimeError::Internal(format!("linking WASI: {}", chain_text(&e))))?;
        TaskModule::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state).map_err(|e| {
            RuntimeError::Internal(format!("linking the host interface: {}", chain_text(&e)))
        })?;
        bound_clock_waits(&mut linker).map_err(|e| {
            RuntimeError::Internal(format!("linking the bounded clocks: {}", chain_text(&e)))
        })?;

        let artifacts_dir = config.data_dir.join("artifacts").join(&fingerprint);
        std::fs::create_dir_all(&artifacts_dir)
            .map_err(|e| RuntimeError::io(format!("creating {}", artifacts_dir.display()), e))?;
        let ticker = Ticker::start(&engine, config.epoch_tick)?;
        Ok(Self {
            engine,
            linker,
            artifacts_dir,
            fingerprint,
            metered,
            loaded: RwLock::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            _ticker: ticker,
        })
    }

    fn artifact_path(&self, id: &ModuleId) -> PathBuf {
        self.artifacts_dir.join(format!("{id}.cwasm"))
    }
}

/// The sandboxed task runtime of one process: a module store, a shared wasmtime `Engine`
/// (and a second one, with fuel metering, for tasks that set a fuel limit), compiled modules
/// cached on disk and in memory, and task execution with per-task limits.
///
/// `Runtime` is `Send + Sync`; share it in an `Arc`. [`Runtime::execute`] is synchronous and
/// CPU-bound: call it from blocking threads (one per execution slot, or
/// `tokio::task::spawn_blocking`), never directly on an async executor.
pub struct Runtime {
    config: RuntimeConfig,
    /// The engine of tasks without a fuel limit (no fuel metering).
    plain: EngineSlot,
    /// The engine of tasks with a fuel limit, created by the first of them.
    metered: OnceLock<EngineSlot>,
    metered_init: Mutex<()>,
    store: ModuleStore,
    counters: Counters,
    bounds: OutputBounds,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("data_dir", &self.config.data_dir)
            .field("fingerprint", &self.plain.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime with the default settings and its data under `data_dir`.
    pub fn open(data_dir: impl Into<PathBuf>) -> Result<Self, RuntimeError> {
        Self::new(RuntimeConfig::new(data_dir))
    }

    /// Creates the engine of tasks without a fuel limit (and its epoch ticker thread) and
    /// opens the data directory. The engine of tasks with a fuel limit is created by the
    /// first of them.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        if config.max_memory > 4 << 30 {
            return Err(RuntimeError::InvalidLimits(format!(
                "max_memory {} exceeds 4 GiB, the largest 32-bit linear memory",
                config.max_memory
            )));
        }
        let plain = EngineSlot::new(&config, false)?;
        let store = ModuleStore::open(&config.data_dir)?;
        let bounds = OutputBounds {
            stream_bytes: config.stdio_limit,
            log_records: config.log_records,
            log_bytes: config.log_bytes,
        };
        Ok(Self {
            config,
            plain,
            metered: OnceLock::new(),
            metered_init: Mutex::new(()),
            store,
            counters: Counters::default(),
            bounds,
        })
    }

    /// The engine a task with these limits runs on: the metered one (created now if this is
    /// the first such task) when it sets a fuel limit.
    fn slot(&self, limits: &Limits) -> Result<&EngineSlot, RuntimeError> {
        if limits.fuel.is_none() {
            return Ok(&self.plain);
        }
        if !self.config.fuel_metering {
            return Err(RuntimeError::InvalidLimits(
                "a fuel limit was given but this runtime was created without fuel metering".into(),
            ));
        }
        if let Some(slot) = self.metered.get() {
            return Ok(slot);
        }
        let _guard = self.metered_init.lock();
        if self.metered.get().is_none() {
            let slot = EngineSlot::new(&self.config, true)?;
            tracing::debug!(fingerprint = %slot.fingerprint, "created the fuel-metering engine");
            let _ = self.metered.set(slot);
        }
        Ok(self.metered.get().expect("set above"))
    }

    /// The settings this runtime was created with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The content-addressed module store.
    pub fn modules(&self) -> &ModuleStore {
        &self.store
    }

    /// Validates and stores module bytes; see [`ModuleStore::put`].
    pub fn put(&self, bytes: &[u8]) -> Result<ModuleId, RuntimeError> {
        self.store.put(bytes)
    }

    /// Stores module bytes received under `id`; see [`ModuleStore::put_with_id`].
    pub fn put_with_id(&self, id: &ModuleId, bytes: &[u8]) -> Result<(), RuntimeError> {
        self.store.put_with_id(id, bytes)
    }

    /// A short hash of the settings of the engine that runs tasks without a fuel limit (the
    /// one [`Runtime::prepare`] compiles for), on which compiled artifacts depend; its
    /// artifacts are cached under it. The fuel-metering engine has another.
    pub fn engine_fingerprint(&self) -> &str {
        &self.plain.fingerprint
    }

    /// What this runtime has done so far.
    pub fn stats(&self) -> RuntimeStats {
        RuntimeStats {
            compilations: self.counters.compilations.load(Ordering::Relaxed),
            artifact_loads: self.counters.artifact_loads.load(Ordering::Relaxed),
            instantiations: self.counters.instantiations.load(Ordering::Relaxed),
        }
    }

    /// Makes the module `id` ready to run for tasks without a fuel limit: loads its compiled
    /// artifact from disk, or compiles it (and writes the artifact) if there is none.
    /// [`Runtime::execute`] does this on first use; calling it ahead of time takes the
    /// compilation off the first task's path. (A task with a fuel limit compiles the module
    /// for the fuel-metering engine on its first run.)
    pub fn prepare(&self, id: &ModuleId) -> Result<(), RuntimeError> {
        self.load(&self.plain, id).map(|_| ())
    }

    /// Whether the module `id` is loaded in memory, ready to instantiate for tasks without a
    /// fuel limit.
    pub fn is_prepared(&self, id: &ModuleId) -> bool {
        self.plain.loaded.read().contains_key(id)
    }

    fn load(&self, slot: &EngineSlot, id: &ModuleId) -> Result<Arc<Loaded>, RuntimeError> {
        if let Some(loaded) = slot.loaded.read().get(id) {
            return Ok(loaded.clone());
        }
        // One loader per module; loads of different modules proceed in parallel.
        let lock = slot.loading.lock().entry(*id).or_default().clone();
        let _guard = lock.lock();
        if let Some(loaded) = slot.loaded.read().get(id) {
            return Ok(loaded.clone());
        }
        let result = self.load_uncached(slot, id);
        if let Ok(loaded) = &result {
            slot.loaded.write().insert(*id, loaded.clone());
        }
        slot.loading.lock().remove(id);
        result
    }

    fn load_uncached(&self, slot: &EngineSlot, id: &ModuleId) -> Result<Arc<Loaded>, RuntimeError> {
        let component = self.component(slot, id)?;
        let instance_pre = slot.linker.instantiate_pre(&component).map_err(|e| {
            RuntimeError::InvalidComponent(format!(
                "the component cannot run in the taskhost sandbox: {}",
                chain_text(&e)
            ))
        })?;
        let pre = TaskModulePre::new(instance_pre.clone()).map_err(|e| {
            RuntimeError::InvalidComponent(format!(
                "the component does not export the {TASKS_INTERFACE} interface: {}",
                chain_text(&e)
            ))
        })?;
        let call = component
            .get_export_index(None, TASKS_INTERFACE)
            .and_then(|tasks| component.get_export_index(Some(&tasks), "call"))
            .ok_or_else(|| {
                RuntimeError::InvalidComponent(format!(
                    "the component does not export {TASKS_INTERFACE}#call"
                ))
            })?;
        Ok(Arc::new(Loaded {
            pre,
            instance_pre,
            call,
            short: id.short(),
        }))
    }

    fn component(&self, slot: &EngineSlot, id: &ModuleId) -> Result<Component, RuntimeError> {
        let artifact = slot.artifact_path(id);
        if artifact.is_file() {
            match deserialize_artifact(&slot.engine, &artifact) {
                Ok(component) => {
                    self.counters.artifact_loads.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(module = %id.short(), "loaded compiled artifact");
                    return Ok(component);
                }
                Err(e) => tracing::warn!(
                    module = %id.short(),
                    "ignoring unusable compiled artifact {}: {}",
                    artifact.display(),
                    chain_text(&e)
                ),
            }
        }
        let bytes = self.store.get(id)?;
        let started = Instant::now();
        let component = Component::new(&slot.engine, &bytes)
            .map_err(|e| RuntimeError::InvalidComponent(chain_text(&e)))?;
        self.counters.compilations.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            module = %id.short(),
            metered = slot.metered,
            elapsed = ?started.elapsed(),
            "compiled module"
        );
        match component.serialize() {
            Ok(serialized) => {
                if let Err(e) = write_atomically(&artifact, &serialized) {
                    tracing::warn!(module = %id.short(), "cannot cache the compiled artifact: {e}");
                }
            }
            Err(e) => tracing::warn!(
                module = %id.short(),
                "cannot serialize the compiled module: {}",
                chain_text(&e)
            ),
        }
        Ok(component)
    }

    /// Lists the task functions the module `id` exports (by calling its `functions` export
    /// in a fresh sandbox with default limits).
    pub fn describe(&self, id: &ModuleId) -> Result<Vec<FunctionInfo>, RuntimeError> {
        let loaded = self.load(&self.plain, id)?;
        let limits = Limits::default();
        let mut store = self.new_store(&self.plain, &loaded, "functions", &limits, None)?;
        let result = loaded
            .pre
            .instantiate(&mut store)
            .and_then(|module| module.taskhost_task_tasks().call_functions(&mut store));
        let outcome = match result {
            Ok(functions) => Ok(functions
                .into_iter()
                .map(|f| FunctionInfo {
                    name: f.name,
                    doc: f.doc,
                    signature: f.signature,
                })
                .collect()),
            Err(e) => Err(self.classify(e, &store, &limits)),
        };
        emit_output(&store);
        outcome
    }

    /// Runs the task function `function` of module `id` on `args` (one byte string per
    /// argument) in a fresh instance, within `limits`, and returns its result bytes.
    ///
    /// Synchronous and safe to call from many threads at once. Each call gets its own store
    /// and instance: a trap, timeout or memory cap ends this task only. The guest's stdout,
    /// stderr and log records go to `tracing` (target `taskhost::guest`).
    pub fn execute(
        &self,
        id: &ModuleId,
        function: &str,
        args: &[&[u8]],
        limits: &Limits,
    ) -> Result<Vec<u8>, RuntimeError> {
        self.run(id, function, args, limits, None)
    }

    /// [`Runtime::execute`], cancellable: when `cancel` fires (before or while the task
    /// runs), the task is stopped and this returns [`RuntimeError::Cancelled`]. See
    /// [`CancelToken`] for how quickly a task stops.
    ///
    /// A task that finished before the cancellation reached it returns its result (a task that
    /// waited on a clock may be reported `Cancelled` if the cancellation races with its
    /// return). A cancellation never leaves the runtime in a bad state: the task's store is
    /// dropped as after a trap, and other tasks are not affected.
    pub fn execute_cancellable(
        &self,
        id: &ModuleId,
        function: &str,
        args: &[&[u8]],
        limits: &Limits,
        cancel: &CancelToken,
    ) -> Result<Vec<u8>, RuntimeError> {
        if let Ok(slot) = self.slot(limits) {
            cancel.state.attach(&slot.engine);
        }
        if cancel.is_cancelled() {
            return Err(RuntimeError::Cancelled);
        }
        self.run(id, function, args, limits, Some(&cancel.state))
    }

    fn run(
        &self,
        id: &ModuleId,
        function: &str,
        args: &[&[u8]],
        limits: &Limits,
        cancel: Option<&Arc<CancelState>>,
    ) -> Result<Vec<u8>, RuntimeError> {
        let slot = self.slot(limits)?;
        let loaded = self.load(slot, id)?;
        let mut store = self.new_store(slot, &loaded, function, limits, cancel)?;
        let result = loaded
            .instance_pre
            .instantiate(&mut store)
            .and_then(|instance| {
                let call = instance
                    .get_typed_func::<(&str, &[&[u8]]), (Result<Vec<u8>, bindings::TaskError>,)>(
                        &mut store,
                        &loaded.call,
                    )?;
                let (result,) = call.call(&mut store, (function, args))?;
                Ok(result)
            });
        let result = match result {
            // A guest whose clock wait was cut short at the deadline or by cancellation is
            // interrupted even if it then returned normally.
            Ok(_) if store.data().wait_cut_short => match store.data().interruption() {
                Some(error) => Err(error),
                None => result,
            },
            _ => result,
        };
        let outcome = match result {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(bindings::TaskError::UnknownFunction(_))) => {
                Err(RuntimeError::UnknownFunction {
                    module: *id,
                    function: function.to_owned(),
                })
            }
            Ok(Err(bindings::TaskError::InvalidInput(message))) => {
                Err(RuntimeError::Guest(TaskError::InvalidInput(message)))
            }
            Ok(Err(bindings::TaskError::Failed(message))) => {
                Err(RuntimeError::Guest(TaskError::Failed(message)))
            }
            Err(e) => Err(self.classify(e, &store, limits)),
        };
        emit_output(&store);
        outcome
    }

    fn new_store(
        &self,
        slot: &EngineSlot,
        loaded: &Loaded,
        function: &str,
        limits: &Limits,
        cancel: Option<&Arc<CancelState>>,
    ) -> Result<Store<TaskState>, RuntimeError> {
        if limits.memory > self.config.max_memory {
            return Err(RuntimeError::InvalidLimits(format!(
                "memory limit {} exceeds this runtime's maximum of {} bytes",
                limits.memory, self.config.max_memory
            )));
        }
        let task: Arc<str> = format!("{}/{function}", loaded.short).into();
        let state = TaskState::new(
            task,
            limits.memory,
            self.bounds,
            Instant::now(),
            limits.timeout,
            cancel.cloned(),
        );
        let mut store = Store::new(&slot.engine, state);
        store.limiter(|state| &mut state.limiter);
        if slot.metered {
            store
                .set_fuel(limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| RuntimeError::Internal(chain_text(&e)))?;
        }
        // Checked at every epoch tick (and when a cancellation bumps the epoch): the deadline
        // is exact to one tick and independent of how many tasks run.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|context| match context.data().interruption() {
            Some(error) => Err(error),
            None => Ok(UpdateDeadline::Continue(1)),
        });
        self.counters.instantiations.fetch_add(1, Ordering::Relaxed);
        Ok(store)
    }

    /// Turns a wasmtime error from instantiating or calling a guest into what happened.
    fn classify(
        &self,
        error: wasmtime::Error,
        store: &Store<TaskState>,
        limits: &Limits,
    ) -> RuntimeError {
        let state = store.data();
        tracing::debug!(task = &*state.task, "guest error: {error:?}");
        if error.is::<Cancelled>() {
            return RuntimeError::Cancelled;
        }
        if error.is::<DeadlineReached>() {
            return RuntimeError::DeadlineExceeded(limits.timeout);
        }
        if state.limiter.refused {
            return RuntimeError::MemoryLimitExceeded {
                limit: limits.memory,
            };
        }
        if error.is::<wasmtime::PoolConcurrencyLimitError>() {
            return RuntimeError::PoolExhausted(chain_text(&error));
        }
        let mut message = match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => {
                return RuntimeError::OutOfFuel {
                    fuel: limits.fuel.unwrap_or(u64::MAX),
                };
            }
            Some(Trap::Interrupt) if state.cancelled() => return RuntimeError::Cancelled,
            Some(Trap::Interrupt) => return RuntimeError::DeadlineExceeded(limits.timeout),
            Some(trap) => trap.to_string(),
            None => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => format!("the guest called exit({})", exit.0),
                None => chain_text(&error),
            },
        };
        let stderr = state.stderr.tail(STDERR_TAIL);
        let stderr = stderr.trim();
        if !stderr.is_empty() {
            message.push_str("; guest stderr: ");
            message.push_str(stderr);
        } else if let Some(error) = &state.last_error {
            // A guest without stderr (built without WASI) logs its panic as an error record.
            message.push_str("; guest error log: ");
            message.push_str(error);
        }
        RuntimeError::Trap { message }
    }
}

/// Sends a finished task's captured stdout/stderr and dropped-log count to `tracing`.
fn emit_output(store: &Store<TaskState>) {
    let state = store.data();
    let task = &*state.task;
    for (stream, capture) in [("stdout", &state.stdout), ("stderr", &state.stderr)] {
        let (bytes, dropped) = capture.take();
        if bytes.is_empty() && dropped == 0 {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim_end();
        if dropped > 0 {
            tracing::info!(target: "taskhost::guest", task, stream, dropped, "{text}");
        } else {
            tracing::info!(target: "taskhost::guest", task, stream, "{text}");
        }
    }
    if state.log.dropped > 0 {
        tracing::warn!(
            target: "taskhost::guest",
            task,
            dropped = state.log.dropped,
            "the task logged more than allowed; records dropped"
        );
    }
}

/// Replaces wasmtime-wasi's `wasi:clocks/monotonic-clock` subscriptions with ones bounded by
/// the task's deadline and cancellation. A clock subscription (a guest `sleep`, or a `poll` on
/// a timeout) is the only way a guest can block inside a host call in this sandbox, and the
/// epoch deadline cannot interrupt a host call: unbounded, a guest sleeping for an hour would
/// hold its thread for an hour.
fn bound_clock_waits(linker: &mut Linker<TaskState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK_INTERFACE)?;
    clock.func_wrap("subscribe-duration", |store, (nanos,): (u64,)| {
        subscribe_bounded(store, Duration::from_nanos(nanos)).map(|pollable| (pollable,))
    })?;
    clock.func_wrap("subscribe-instant", |store, (when,): (u64,)| {
        let now = task_clock_now(store.data());
        subscribe_bounded(store, Duration::from_nanos(when.saturating_sub(now)))
            .map(|pollable| (pollable,))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The settings of an engine of this runtime; `metered`: whether it compiles fuel metering in.
fn engine_config(config: &RuntimeConfig, metered: bool) -> Config {
    let instances = config.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        // A component holds several core instances (its module plus adapter shims) but usually
        // one memory and a few tables.
        .total_core_instances(instances.saturating_mul(8))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(4))
        .max_memory_size(config.max_memory as usize)
        .linear_memory_keep_resident(config.memory_keep_resident)
        .table_keep_resident(64 * 1024)
        .pagemap_scan(Enabled::Auto);
    let mut engine = Config::new();
    engine
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_init_cow(true)
        .epoch_interruption(true)
        .consume_fuel(metered)
        .parallel_compilation(true)
        // Fixed rather than read from WASMTIME_BACKTRACE_DETAILS, so that the engine
        // fingerprint does not depend on the environment.
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);
    engine
}

/// A short, stable hash of the engine settings compiled code depends on.
fn engine_fingerprint(engine: &Engine) -> String {
    struct Blake3(blake3::Hasher);
    impl std::hash::Hasher for Blake3 {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            let hash = self.0.finalize();
            u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap_or_default())
        }
    }
    use std::hash::Hash;
    let mut hasher = Blake3(blake3::Hasher::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize().as_bytes()[..8])
}

#[allow(unsafe_code)]
fn deserialize_artifact(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize_file` trusts its input to be code wasmtime compiled.
    // The only files under `<data-dir>/artifacts/<fingerprint>/` are ones this runtime wrote
    // (atomically, via rename) from `Component::serialize` of an engine whose settings hash
    // to that same fingerprint (`Engine::precompile_compatibility_hash`); wasmtime itself
    // also checks the version and settings recorded in the artifact and rejects a mismatch.
    // The data directory is the runtime's own, as trusted as its binary.
    unsafe { Component::deserialize_file(engine, path) }
}

/// The thread that advances the engine's epoch, so that running tasks check their deadlines.
/// It stops when the engine is dropped.
struct Ticker;

impl Ticker {
    fn start(engine: &Engine, tick: Duration) -> Result<Self, RuntimeError> {
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("taskhost-epoch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| RuntimeError::io("starting the epoch ticker thread", e))?;
        Ok(Ticker)
    }
}
