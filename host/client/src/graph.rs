//! Lazy task graphs with typed handles.
//!
//! A [`Graph`] collects calls; each call returns a [`Handle<T>`] naming its (future) result of
//! type `T`. Arguments are literal values (anything `Serialize`, postcard-encoded once and
//! stored once per graph however many calls use them), handles of other calls, futures of
//! submitted work, or raw bytes ([`Raw`]). Every call's [`TaskKey`] is derived from its content,
//! so identical calls are one task, in this graph and across clients.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use taskhost_proto::{Arg, Blob, INLINE_LITERAL, TaskKey, TaskKeyBuilder, TaskLimits, TaskSpec};

use crate::error::{Error, Result};
use crate::future::{Future, FutureShared};
use crate::module::Module;

/// A hasher for values that are already uniformly random (blake3 hashes).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        if bytes.len() >= 8 {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[..8]);
            self.0 ^= u64::from_le_bytes(word);
        } else {
            for &b in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(b);
            }
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = self.0.rotate_left(7) ^ n as u64;
    }

    fn write_u32(&mut self, n: u32) {
        // Small integers would leave the high bits (the table's tags) empty: spread them.
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// The first 4 bytes of a hash, as an index key. Four bytes keep the index entries at 8 bytes
/// (half the memory and page faults of 8-byte prefixes); the ~100 prefix collisions of a
/// million-call graph go to the spill maps.
fn prefix(hash: &[u8; 32]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&hash[..4]);
    u32::from_le_bytes(word)
}

/// The literal index key of `bytes`: for a literal longer than [`INLINE_LITERAL`] the first 8
/// bytes of its blake3 `hash`; for a shorter one (which enters task keys by its bytes and is
/// never hashed with blake3 on the way) a quick mix of its bytes and length. Index hits are
/// confirmed by comparing bytes, so a weak mix only costs time.
fn literal_index_key(bytes: &[u8], hash: Option<&[u8; 32]>) -> u32 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    match hash {
        Some(h) if bytes.len() > INLINE_LITERAL => prefix(h),
        _ => {
            let mut h = (bytes.len() as u64).wrapping_mul(K);
            for chunk in bytes.chunks(8) {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                h = (h ^ u64::from_le_bytes(word))
                    .wrapping_mul(K)
                    .rotate_left(29);
            }
            // The map's hasher keeps low bits low: fold the high bits down.
            h ^= h >> 32;
            h = h.wrapping_mul(0xD6E8_FEB8_6659_FD93);
            (h >> 32) as u32
        }
    }
}

/// Raw bytes, passed to a task or returned by it without any encoding: for bulk data, and for
/// guest functions declared `raw fn`.
///
/// As an argument, `Raw` is given to the task verbatim; as a result type (`Handle<Raw>`,
/// `Future<Raw>`), the task's output bytes are returned as they are.
///
/// ```
/// use taskhost_client::{Graph, Module, Raw};
/// let m = Module::from_bytes(b"guest");
/// let g = Graph::new();
/// let echoed = g.call::<Raw>(&m, "echo", (Raw::from(vec![1u8, 2, 3]),)).unwrap();
/// # let _ = echoed;
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Raw(pub Bytes);

impl fmt::Debug for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Raw({} bytes)", self.0.len())
    }
}

impl std::ops::Deref for Raw {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Raw {
    fn from(v: Vec<u8>) -> Self {
        Raw(Bytes::from(v))
    }
}

impl From<&[u8]> for Raw {
    fn from(v: &[u8]) -> Self {
        Raw(Bytes::copy_from_slice(v))
    }
}

impl From<Bytes> for Raw {
    fn from(v: Bytes) -> Self {
        Raw(v)
    }
}

/// A type a task's output bytes decode into: any `DeserializeOwned` type (postcard), or
/// [`Raw`] for the bytes as they are.
///
/// ```
/// use taskhost_client::TaskOutput;
/// let bytes = postcard::to_allocvec(&2.5f64).unwrap();
/// assert_eq!(f64::decode(bytes.into()).unwrap(), 2.5);
/// ```
pub trait TaskOutput: Sized + Send + 'static {
    /// Decodes a task's output.
    fn decode(bytes: Bytes) -> std::result::Result<Self, String>;
}

impl<T: DeserializeOwned + Send + 'static> TaskOutput for T {
    fn decode(bytes: Bytes) -> std::result::Result<Self, String> {
        match postcard::take_from_bytes::<T>(&bytes) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(format!("{} trailing bytes", rest.len())),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl TaskOutput for Raw {
    fn decode(bytes: Bytes) -> std::result::Result<Self, String> {
        Ok(Raw(bytes))
    }
}

pub(crate) enum PendingArg {
    /// `bytes[start..end]` of the sink.
    Literal {
        start: usize,
        end: usize,
    },
    Bytes(Bytes),
    Handle {
        graph: Graph,
        node: u32,
        key: TaskKey,
    },
    External {
        shared: Arc<FutureShared>,
    },
}

/// Where arguments are collected while a call is built (see [`IntoArg`]).
#[derive(Default)]
pub struct ArgSink {
    bytes: Vec<u8>,
    args: Vec<PendingArg>,
    hashes: Vec<[u8; 32]>,
}

thread_local! {
    static SINK: std::cell::RefCell<ArgSink> = std::cell::RefCell::new(ArgSink::default());
}

impl fmt::Debug for ArgSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArgSink")
            .field("args", &self.args.len())
            .finish()
    }
}

impl ArgSink {
    fn literal<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> std::result::Result<(), postcard::Error> {
        let start = self.bytes.len();
        let bytes = std::mem::take(&mut self.bytes);
        match postcard::to_extend(value, bytes) {
            Ok(bytes) => {
                self.bytes = bytes;
                self.args.push(PendingArg::Literal {
                    start,
                    end: self.bytes.len(),
                });
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// One argument of a call: a literal value (any `T: Serialize`, encoded with postcard), a
/// [`Handle`] of another call (`&handle` or `handle`), a [`Future`] of submitted work, or
/// [`Raw`] bytes.
///
/// ```
/// use taskhost_client::{Graph, Module};
/// let m = Module::from_bytes(b"guest");
/// let g = Graph::new();
/// let x = g.call::<f64>(&m, "add", (1.0, 2.0)).unwrap();     // two literals
/// let y = g.call::<f64>(&m, "add", (&x, 3.0)).unwrap();      // a handle and a literal
/// let s = g.call::<f64>(&m, "sum", (vec![1.0, 2.0],)).unwrap(); // one literal list
/// # let _ = (y, s);
/// ```
pub trait IntoArg {
    /// Appends this argument to `sink`.
    fn push_arg(self, sink: &mut ArgSink) -> std::result::Result<(), postcard::Error>;
}

impl<T: Serialize> IntoArg for T {
    fn push_arg(self, sink: &mut ArgSink) -> std::result::Result<(), postcard::Error> {
        sink.literal(&self)
    }
}

impl<U> IntoArg for &Handle<U> {
    fn push_arg(self, sink: &mut ArgSink) -> std::result::Result<(), postcard::Error> {
        sink.args.push(PendingArg::Handle {
            graph: self.graph.clone(),
            node: self.node,
            key: self.key,
        });
        Ok(())
    }
}

impl<U> IntoArg for Handle<U> {
    fn push_arg(self, sink: &mut ArgSink) -> std::result::Result<(), postcard::Error> {
        (&self).push_arg(sink)
    }
}

impl<U> IntoArg for &Future<U> {
    fn push_arg(self, sink: &mut ArgSink) -> std::result::Result<(), postcard::Error> {
        sink.args.push(PendingArg::External {
            shared: self.shared().clone(),
        });
        Ok(())
    }
}

impl IntoArg for Raw {
    fn push_arg(self, sink: &mut ArgSink) -> std::result::Result<(), postcard::Error> {
        sink.args.push(PendingArg::Bytes(self.0));
        Ok(())
    }
}

impl IntoArg for &Raw {
    fn push_arg(self, sink: &mut ArgSink) -> std::result::Result<(), postcard::Error> {
        sink.args.push(PendingArg::Bytes(self.0.clone()));
        Ok(())
    }
}

/// The arguments of a call: a tuple of up to 8 [`IntoArg`] values (`()` for none, `(x,)` for
/// one), or an [`Args`] list built at run time.
///
/// ```
/// use taskhost_client::{Args, Graph, Module};
/// let m = Module::from_bytes(b"guest");
/// let g = Graph::new();
/// g.call::<u64>(&m, "noop", ()).unwrap();
/// g.call::<i64>(&m, "inc", (41i64,)).unwrap();
/// g.call::<f64>(&m, "add", Args::new().arg(1.0).arg(2.0)).unwrap();
/// ```
pub trait IntoArgs {
    /// Appends every argument to `sink`, in order.
    fn push_args(self, sink: &mut ArgSink) -> std::result::Result<(), postcard::Error>;
}

impl IntoArgs for () {
    fn push_args(self, _: &mut ArgSink) -> std::result::Result<(), postcard::Error> {
        Ok(())
    }
}

macro_rules! tuple_args {
    ($($name:ident),+) => {
        impl<$($name: IntoArg),+> IntoArgs for ($($name,)+) {
            #[allow(non_snake_case)]
            fn push_args(self, sink: &mut ArgSink) -> std::result::Result<(), postcard::Error> {
                let ($($name,)+) = self;
                $($name.push_arg(sink)?;)+
                Ok(())
            }
        }
    };
}

tuple_args!(A);
tuple_args!(A, B);
tuple_args!(A, B, C);
tuple_args!(A, B, C, D);
tuple_args!(A, B, C, D, E);
tuple_args!(A, B, C, D, E, F);
tuple_args!(A, B, C, D, E, F, G);
tuple_args!(A, B, C, D, E, F, G, H);

/// A list of arguments built at run time, for calls with many or a variable number of
/// arguments.
///
/// ```
/// use taskhost_client::{Args, Graph, Module};
/// let m = Module::from_bytes(b"guest");
/// let g = Graph::new();
/// let parts: Vec<_> = (0..4).map(|i| g.call::<f64>(&m, "add", (i as f64, 1.0)).unwrap()).collect();
/// let mut args = Args::new();
/// for p in &parts { args = args.arg(p); }
/// # let _ = args;
/// ```
#[derive(Default, Debug)]
pub struct Args {
    sink: ArgSink,
    error: Option<postcard::Error>,
}

impl Args {
    /// No arguments yet.
    ///
    /// ```
    /// # use taskhost_client::Args;
    /// let a = Args::new().arg(1i64).arg("text");
    /// # let _ = a;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an argument.
    ///
    /// ```
    /// # use taskhost_client::Args;
    /// let a = Args::new().arg(vec![1.0f64, 2.0]);
    /// # let _ = a;
    /// ```
    pub fn arg(mut self, arg: impl IntoArg) -> Self {
        if self.error.is_none()
            && let Err(e) = arg.push_arg(&mut self.sink)
        {
            self.error = Some(e);
        }
        self
    }
}

impl IntoArgs for Args {
    fn push_args(self, sink: &mut ArgSink) -> std::result::Result<(), postcard::Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let offset = sink.bytes.len();
        sink.bytes.extend_from_slice(&self.sink.bytes);
        for a in self.sink.args {
            sink.args.push(match a {
                PendingArg::Literal { start, end } => PendingArg::Literal {
                    start: start + offset,
                    end: end + offset,
                },
                other => other,
            });
        }
        Ok(())
    }
}

/// Options of one call: priority, retries, limits, worker restrictions and annotations.
///
/// ```
/// use std::time::Duration;
/// use taskhost_client::{CallOptions, Graph, Module};
/// let m = Module::from_bytes(b"guest");
/// let g = Graph::new();
/// let opts = CallOptions::new()
///     .priority(10)
///     .retries(2)
///     .timeout(Duration::from_secs(5))
///     .memory_limit(64 << 20)
///     .annotate("stage", "load");
/// let x = g.call_with::<f64>(&m, "add", (1.0, 2.0), &opts).unwrap();
/// # let _ = x;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// User priority: higher runs earlier among tasks of equal structural priority.
    pub priority: i32,
    /// How many times a failing attempt (guest error or trap) is retried.
    pub retries: u8,
    /// Wall-clock limit of one attempt (the worker's default when `None`).
    pub timeout: Option<Duration>,
    /// Cap on the guest's linear memory in bytes (the worker's default when `None`).
    pub memory_limit: Option<u64>,
    /// Fuel (roughly, wasm instructions) of one attempt; unlimited when `None`.
    pub fuel: Option<u64>,
    /// Names of the only workers the task may run on (any when empty).
    pub workers: Vec<String>,
    /// Free-form annotations, kept with the task and shown in status.
    pub annotations: Vec<(String, String)>,
}

impl CallOptions {
    /// The defaults: priority 0, no retries, the worker's limits, any worker.
    ///
    /// ```
    /// # use taskhost_client::CallOptions;
    /// assert_eq!(CallOptions::new(), CallOptions::default());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the user priority.
    ///
    /// ```
    /// # use taskhost_client::CallOptions;
    /// assert_eq!(CallOptions::new().priority(3).priority, 3);
    /// ```
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets how many times a failing attempt is retried.
    ///
    /// ```
    /// # use taskhost_client::CallOptions;
    /// assert_eq!(CallOptions::new().retries(2).retries, 2);
    /// ```
    pub fn retries(mut self, retries: u8) -> Self {
        self.retries = retries;
        self
    }

    /// Sets the wall-clock limit of one attempt.
    ///
    /// ```
    /// # use taskhost_client::CallOptions;
    /// # use std::time::Duration;
    /// let o = CallOptions::new().timeout(Duration::from_millis(500));
    /// # let _ = o;
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the cap on the guest's linear memory, in bytes.
    ///
    /// ```
    /// # use taskhost_client::CallOptions;
    /// let o = CallOptions::new().memory_limit(16 << 20);
    /// # let _ = o;
    /// ```
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Sets the fuel of one attempt.
    ///
    /// ```
    /// # use taskhost_client::CallOptions;
    /// let o = CallOptions::new().fuel(1_000_000);
    /// # let _ = o;
    /// ```
    pub fn fuel(mut self, fuel: u64) -> Self {
        self.fuel = Some(fuel);
        self
    }

    /// Restricts the task to the named workers.
    ///
    /// ```
    /// # use taskhost_client::CallOptions;
    /// let o = CallOptions::new().workers(["worker-0"]);
    /// # let _ = o;
    /// ```
    pub fn workers<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.workers = names.into_iter().map(Into::into).collect();
        self
    }

    /// Adds an annotation.
    ///
    /// ```
    /// # use taskhost_client::CallOptions;
    /// let o = CallOptions::new().annotate("owner", "me");
    /// # let _ = o;
    /// ```
    pub fn annotate(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.push((key.into(), value.into()));
        self
    }

    fn limits(&self) -> TaskLimits {
        TaskLimits {
            timeout_ms: self
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            memory_bytes: self.memory_limit,
            fuel: self.fuel,
        }
    }

    fn estimated_size(&self) -> usize {
        32 + self.workers.iter().map(|w| w.len() + 2).sum::<usize>()
            + self
                .annotations
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>()
    }
}

/// A lazy call's result of type `T`: use it as an argument of other calls, or compute it with
/// [`Client::compute`](crate::Client::compute) / [`Client::submit`](crate::Client::submit).
/// Cheap to clone; it keeps its graph alive.
///
/// ```
/// use taskhost_client::{Graph, Handle, Module};
/// let m = Module::from_bytes(b"guest");
/// let g = Graph::new();
/// let x: Handle<f64> = g.call(&m, "add", (1.0, 2.0)).unwrap();
/// println!("task {}", x.key());
/// ```
pub struct Handle<T> {
    pub(crate) graph: Graph,
    pub(crate) node: u32,
    pub(crate) key: TaskKey,
    _result: PhantomData<fn() -> T>,
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        Self {
            graph: self.graph.clone(),
            node: self.node,
            key: self.key,
            _result: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Handle<{}>({})",
            std::any::type_name::<T>(),
            self.key.short()
        )
    }
}

impl<T> PartialEq for Handle<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl<T> Eq for Handle<T> {}

impl<T> Handle<T> {
    /// The task's key.
    ///
    /// ```
    /// # use taskhost_client::{Graph, Module};
    /// # let m = Module::from_bytes(b"guest");
    /// let g = Graph::new();
    /// let a = g.call::<f64>(&m, "add", (1.0, 2.0)).unwrap();
    /// let b = g.call::<f64>(&m, "add", (1.0, 2.0)).unwrap();
    /// assert_eq!(a.key(), b.key()); // the same call is the same task
    /// ```
    pub fn key(&self) -> TaskKey {
        self.key
    }

    /// The graph this handle's call belongs to.
    ///
    /// ```
    /// # use taskhost_client::{Graph, Module};
    /// # let m = Module::from_bytes(b"guest");
    /// let g = Graph::new();
    /// let a = g.call::<f64>(&m, "add", (1.0, 2.0)).unwrap();
    /// assert!(a.graph().same_as(&g));
    /// ```
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The same task with its result read as another type (for example [`Raw`]).
    ///
    /// ```
    /// # use taskhost_client::{Graph, Module, Raw};
    /// # let m = Module::from_bytes(b"guest");
    /// let g = Graph::new();
    /// let a = g.call::<f64>(&m, "add", (1.0, 2.0)).unwrap();
    /// let bytes = a.cast::<Raw>();
    /// assert_eq!(bytes.key(), a.key());
    /// ```
    pub fn cast<U>(&self) -> Handle<U> {
        Handle {
            graph: self.graph.clone(),
            node: self.node,
            key: self.key,
            _result: PhantomData,
        }
    }
}

#[derive(Clone, Copy)]
enum NodeArg {
    Node(u32),
    Literal(u32),
    External(u32),
}

struct Node {
    key: TaskKey,
    function: u32,
    args_start: u32,
    args_len: u32,
    options: u32,
}

struct Function {
    module: u32,
    name: Arc<str>,
    prefix: TaskKeyBuilder,
}

struct GraphInner {
    nodes: Vec<Node>,
    args: Vec<NodeArg>,
    /// Every distinct literal's bytes, back to back; literal `l` ends at `literal_ends[l]`.
    literal_data: Vec<u8>,
    literal_ends: Vec<usize>,
    /// Literals by the index key (see `literal_index_key`) (compact, so that it stays cache-friendly);
    /// the bytes are compared on a hit, and the rare different literal with the same prefix
    /// goes to `literal_spill`.
    literal_index: IdMap<u32, u32>,
    literal_spill: HashMap<[u8; 32], u32>,
    /// Calls by the first 4 bytes of their key; full keys are compared on a hit, and the rare
    /// different key with the same prefix goes to `key_spill`.
    keys: IdMap<u32, u32>,
    key_spill: HashMap<TaskKey, u32>,
    modules: Vec<Module>,
    functions: Vec<Function>,
    function_index: HashMap<(u32, Arc<str>), u32>,
    options: Vec<CallOptions>,
    externals: Vec<Arc<FutureShared>>,
    external_index: IdMap<TaskKey, u32>,
}

/// A graph of lazy calls. Cheap to clone (clones share the graph); safe to use from several
/// threads.
///
/// Calls are appended with [`call`](Self::call) / [`call_with`](Self::call_with); each
/// returns a [`Handle`]. Nothing runs until handles are computed or submitted by a
/// [`Client`](crate::Client); only the calls the wanted handles need are sent.
///
/// ```
/// use taskhost_client::{Graph, Module};
/// let m = Module::from_bytes(b"guest");
/// let g = Graph::new();
/// let x = g.call::<f64>(&m, "add", (1.0f64, 2.0f64))?;
/// let y = g.call::<f64>(&m, "add", (&x, 3.0))?;
/// assert_eq!(g.len(), 2);
/// # let _ = y;
/// # Ok::<(), taskhost_client::Error>(())
/// ```
#[derive(Clone)]
pub struct Graph {
    inner: Arc<Mutex<GraphInner>>,
}

impl Default for Graph {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("Graph")
            .field("calls", &inner.nodes.len())
            .field("literals", &inner.literal_ends.len())
            .finish()
    }
}

/// One task of a lineage copied out of another graph.
struct ImportedTask {
    key: TaskKey,
    module: Module,
    function: Arc<str>,
    args: Vec<ImportedArg>,
    options: CallOptions,
}

enum ImportedArg {
    Task(TaskKey),
    /// A literal's bytes and, if it is longer than [`INLINE_LITERAL`], its blake3 hash.
    Literal(Blob, Option<[u8; 32]>),
    External(Arc<FutureShared>),
}

/// Submission plan: which nodes to send, in how many messages, and which keys must be wanted
/// temporarily so that later messages can refer to them.
pub(crate) struct Plan {
    /// Needed nodes, in order.
    order: Vec<u32>,
    /// End (exclusive, index into `order`) of each batch.
    batch_ends: Vec<usize>,
    /// Per batch: the caller's wanted nodes it creates (the scheduler forgets a task that is
    /// not wanted in the message that creates it).
    wanted: Vec<Vec<u32>>,
    /// Per batch: its nodes referenced from a later batch (wanted until the last batch is sent).
    boundary: Vec<Vec<u32>>,
    /// Scratch of [`Graph::batch`]: per literal, the batch it was last put in and its index there.
    literal_slots: Vec<(u32, u32)>,
}

/// Largest estimated size of one submitted message; the control stream refuses frames over
/// 16 MiB.
pub(crate) const BATCH_BYTES: usize = 4 << 20;
const MAX_MESSAGE: usize = 15 << 20;

impl Graph {
    /// An empty graph.
    ///
    /// ```
    /// # use taskhost_client::Graph;
    /// assert!(Graph::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(GraphInner {
                nodes: Vec::new(),
                args: Vec::new(),
                literal_data: Vec::new(),
                literal_ends: Vec::new(),
                literal_index: IdMap::default(),
                literal_spill: HashMap::new(),
                keys: IdMap::default(),
                key_spill: HashMap::new(),
                modules: Vec::new(),
                functions: Vec::new(),
                function_index: HashMap::new(),
                options: vec![CallOptions::default()],
                externals: Vec::new(),
                external_index: IdMap::default(),
            })),
        }
    }

    /// An empty graph with room for `calls` calls.
    ///
    /// ```
    /// # use taskhost_client::Graph;
    /// let g = Graph::with_capacity(1_000_000);
    /// # let _ = g;
    /// ```
    pub fn with_capacity(calls: usize) -> Self {
        let g = Self::new();
        {
            let mut inner = g.inner.lock();
            inner.nodes.reserve(calls);
            inner.args.reserve(calls * 2);
            inner.keys.reserve(calls);
        }
        g
    }

    /// Whether `other` is this very graph (a clone of it), not merely an equal one.
    ///
    /// ```
    /// # use taskhost_client::Graph;
    /// let g = Graph::new();
    /// assert!(g.same_as(&g.clone()));
    /// assert!(!g.same_as(&Graph::new()));
    /// ```
    pub fn same_as(&self, other: &Graph) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Number of distinct calls (identical calls count once).
    ///
    /// ```
    /// # use taskhost_client::Graph;
    /// assert_eq!(Graph::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.inner.lock().nodes.len()
    }

    /// Whether the graph has no calls.
    ///
    /// ```
    /// # use taskhost_client::Graph;
    /// assert!(Graph::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of distinct literal values stored.
    ///
    /// ```
    /// # use taskhost_client::{Graph, Module};
    /// # let m = Module::from_bytes(b"guest");
    /// let g = Graph::new();
    /// g.call::<f64>(&m, "add", (1.0, 1.0)).unwrap();
    /// assert_eq!(g.literal_count(), 1); // 1.0 is stored once
    /// ```
    pub fn literal_count(&self) -> usize {
        self.inner.lock().literal_ends.len()
    }

    /// Calls `function` of `module` on `args`, with default options. The result type `T` is
    /// what the task's output decodes to (see [`TaskOutput`]).
    ///
    /// Fails if the module's function list is known and lacks `function`, or if a literal
    /// cannot be encoded.
    ///
    /// ```
    /// # use taskhost_client::{Graph, Module};
    /// # let m = Module::from_bytes(b"guest");
    /// let g = Graph::new();
    /// let x = g.call::<i64>(&m, "inc", (1i64,))?;
    /// let y = g.call::<i64>(&m, "inc", (&x,))?;
    /// # let _ = y;
    /// # Ok::<(), taskhost_client::Error>(())
    /// ```
    pub fn call<T>(
        &self,
        module: &Module,
        function: &str,
        args: impl IntoArgs,
    ) -> Result<Handle<T>> {
        self.call_inner(module, function, args, None)
    }

    /// Calls `function` of `module` on `args` with the given options.
    ///
    /// If an identical call is already in the graph, its handle is returned and `options` are
    /// ignored (the first call's options stand).
    ///
    /// ```
    /// # use taskhost_client::{CallOptions, Graph, Module};
    /// # let m = Module::from_bytes(b"guest");
    /// let g = Graph::new();
    /// let urgent = CallOptions::new().priority(100);
    /// let x = g.call_with::<f64>(&m, "add", (1.0, 2.0), &urgent)?;
    /// # let _ = x;
    /// # Ok::<(), taskhost_client::Error>(())
    /// ```
    pub fn call_with<T>(
        &self,
        module: &Module,
        function: &str,
        args: impl IntoArgs,
        options: &CallOptions,
    ) -> Result<Handle<T>> {
        self.call_inner(module, function, args, Some(options))
    }

    fn call_inner<T>(
        &self,
        module: &Module,
        function: &str,
        args: impl IntoArgs,
        options: Option<&CallOptions>,
    ) -> Result<Handle<T>> {
        module.check_function(function)?;
        // One sink per thread, reused: building a call allocates nothing in the common case.
        let mut sink = SINK.with(|s| {
            s.try_borrow_mut()
                .map(|mut s| std::mem::take(&mut *s))
                .unwrap_or_default()
        });
        let result = self.call_in(&mut sink, module, function, args, options);
        sink.args.clear();
        sink.hashes.clear();
        if sink.bytes.capacity() > 1 << 20 {
            sink.bytes = Vec::new();
        } else {
            sink.bytes.clear();
        }
        SINK.with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                *s = sink;
            }
        });
        result
    }

    fn call_in<T>(
        &self,
        sink: &mut ArgSink,
        module: &Module,
        function: &str,
        args: impl IntoArgs,
        options: Option<&CallOptions>,
    ) -> Result<Handle<T>> {
        args.push_args(sink).map_err(|source| Error::Encode {
            function: function.to_owned(),
            source,
        })?;
        // Lineages of handles from other graphs are copied out before this graph is locked, so
        // that two graphs are never locked at once.
        let mut imports = Vec::new();
        for a in &sink.args {
            if let PendingArg::Handle { graph, node, .. } = a
                && !graph.same_as(self)
            {
                imports.push(graph.lineage(*node));
            }
        }
        // Hashes of long literals are computed outside the lock as well (short ones enter the
        // key by their bytes).
        for a in &sink.args {
            let bytes = match a {
                PendingArg::Literal { start, end } => &sink.bytes[*start..*end],
                PendingArg::Bytes(b) => b,
                _ => continue,
            };
            if bytes.len() > INLINE_LITERAL {
                sink.hashes.push(*blake3::hash(bytes).as_bytes());
            }
        }

        let mut inner = self.inner.lock();
        for lineage in imports {
            inner.import(lineage);
        }
        let function_id = inner.function_id(module, function);
        let mut builder = inner.functions[function_id as usize].prefix.clone();
        let args_start = inner.args.len();
        let mut hashes = sink.hashes.iter();
        let mut literal = |inner: &mut GraphInner, builder: &mut TaskKeyBuilder, bytes: &[u8]| {
            if bytes.len() > INLINE_LITERAL {
                let hash = hashes.next().expect("one hash per long literal");
                builder.literal_arg_hashed(bytes, hash);
                NodeArg::Literal(inner.literal(bytes, Some(hash)))
            } else {
                builder.literal_arg(bytes);
                NodeArg::Literal(inner.literal(bytes, None))
            }
        };
        for a in sink.args.drain(..) {
            let arg = match a {
                PendingArg::Literal { start, end } => {
                    literal(&mut inner, &mut builder, &sink.bytes[start..end])
                }
                PendingArg::Bytes(bytes) => literal(&mut inner, &mut builder, &bytes),
                PendingArg::Handle { key, node, graph } => {
                    builder.task_arg(&key);
                    if graph.same_as(self) {
                        NodeArg::Node(node)
                    } else {
                        NodeArg::Node(inner.find(&key).expect("imported above"))
                    }
                }
                PendingArg::External { shared } => {
                    builder.task_arg(&shared.key);
                    NodeArg::External(inner.external(shared))
                }
            };
            inner.args.push(arg);
        }
        let key = builder.finish();
        let options = match options {
            None => 0,
            Some(o) => inner.options_id(o),
        };
        if inner.nodes.len() >= u32::MAX as usize {
            return Err(Error::Invalid("too many calls in one graph".into()));
        }
        let args_len = (inner.args.len() - args_start) as u32;
        let node = inner.intern_node(Node {
            key,
            function: function_id,
            args_start: args_start as u32,
            args_len,
            options,
        });
        Ok(self.handle(node, key))
    }

    fn handle<T>(&self, node: u32, key: TaskKey) -> Handle<T> {
        Handle {
            graph: self.clone(),
            node,
            key,
            _result: PhantomData,
        }
    }

    /// Copies out the lineage of `node` (the node and everything it depends on), in order.
    fn lineage(&self, node: u32) -> Vec<ImportedTask> {
        let inner = self.inner.lock();
        let mut needed = vec![false; node as usize + 1];
        needed[node as usize] = true;
        for n in (0..=node as usize).rev() {
            if needed[n] {
                for a in inner.node_args(n as u32) {
                    if let NodeArg::Node(d) = a {
                        needed[*d as usize] = true;
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (n, is_needed) in needed.iter().enumerate() {
            if !is_needed {
                continue;
            }
            let node = &inner.nodes[n];
            let f = &inner.functions[node.function as usize];
            out.push(ImportedTask {
                key: node.key,
                module: inner.modules[f.module as usize].clone(),
                function: f.name.clone(),
                args: inner
                    .node_args(n as u32)
                    .iter()
                    .map(|a| match *a {
                        NodeArg::Node(d) => ImportedArg::Task(inner.nodes[d as usize].key),
                        NodeArg::Literal(l) => {
                            let bytes = inner.literal_bytes(l);
                            ImportedArg::Literal(
                                Blob(bytes.to_vec()),
                                (bytes.len() > INLINE_LITERAL)
                                    .then(|| *blake3::hash(bytes).as_bytes()),
                            )
                        }
                        NodeArg::External(e) => {
                            ImportedArg::External(inner.externals[e as usize].clone())
                        }
                    })
                    .collect(),
                options: inner.options[node.options as usize].clone(),
            });
        }
        out
    }

    /// Plans the submission of `wanted` (nodes of this graph): the needed nodes, split into
    /// messages of at most `batch_bytes` (estimated).
    pub(crate) fn plan(&self, wanted: &[u32], batch_bytes: usize) -> Result<Plan> {
        let inner = self.inner.lock();
        let n = inner.nodes.len();
        let mut needed = vec![false; n];
        for &w in wanted {
            needed[w as usize] = true;
        }
        for i in (0..n).rev() {
            if needed[i] {
                for a in inner.node_args(i as u32) {
                    if let NodeArg::Node(d) = a {
                        needed[*d as usize] = true;
                    }
                }
            }
        }
        let mut order = Vec::new();
        let mut batch_ends = Vec::new();
        // For each node: the batch it is sent in.
        let mut batch_of = vec![u32::MAX; n];
        // Literal -> the last batch it was counted in.
        let mut literal_batch = vec![u32::MAX; inner.literal_ends.len()];
        let mut is_boundary = vec![false; n];
        let mut boundary: Vec<Vec<u32>> = vec![Vec::new()];
        let mut batch = 0u32;
        let mut size = 0usize;
        for (i, _) in needed.iter().enumerate().filter(|(_, n)| **n) {
            let node = &inner.nodes[i];
            let f = &inner.functions[node.function as usize];
            let mut task_size =
                80 + f.name.len() + inner.options[node.options as usize].estimated_size();
            for a in inner.node_args(i as u32) {
                task_size += 34;
                if let NodeArg::Literal(l) = *a
                    && literal_batch[l as usize] != batch
                {
                    task_size += inner.literal_bytes(l).len() + 10;
                }
            }
            if task_size > MAX_MESSAGE {
                return Err(Error::TooLarge {
                    what: format!("a call of {} with its literals", f.name),
                    size: task_size,
                    limit: MAX_MESSAGE,
                });
            }
            if size > 0 && size + task_size > batch_bytes {
                batch_ends.push(order.len());
                boundary.push(Vec::new());
                batch += 1;
                size = 0;
                // Literals count again in the new batch.
                task_size =
                    80 + f.name.len() + inner.options[node.options as usize].estimated_size();
                for a in inner.node_args(i as u32) {
                    task_size += 34;
                    if let NodeArg::Literal(l) = *a
                        && literal_batch[l as usize] != batch
                    {
                        task_size += inner.literal_bytes(l).len() + 10;
                    }
                }
            }
            for a in inner.node_args(i as u32) {
                match *a {
                    NodeArg::Literal(l) => literal_batch[l as usize] = batch,
                    NodeArg::Node(d) => {
                        let home = batch_of[d as usize];
                        if home != batch && !is_boundary[d as usize] {
                            is_boundary[d as usize] = true;
                            boundary[home as usize].push(d);
                        }
                    }
                    NodeArg::External(_) => {}
                }
            }
            batch_of[i] = batch;
            size += task_size;
            order.push(i as u32);
        }
        batch_ends.push(order.len());
        let mut by_batch: Vec<Vec<u32>> = vec![Vec::new(); batch_ends.len()];
        let mut seen = vec![false; n];
        for &w in wanted {
            if !std::mem::replace(&mut seen[w as usize], true) {
                by_batch[batch_of[w as usize] as usize].push(w);
            }
        }
        Ok(Plan {
            order,
            batch_ends,
            wanted: by_batch,
            boundary,
            literal_slots: Vec::new(),
        })
    }

    /// The wire message of batch `b` of `plan`.
    pub(crate) fn batch(&self, plan: &mut Plan, b: usize) -> taskhost_proto::Graph {
        let inner = self.inner.lock();
        let start = if b == 0 { 0 } else { plan.batch_ends[b - 1] };
        let end = plan.batch_ends[b];
        let nodes = &plan.order[start..end];
        // Literal -> (batch, its index in this batch's literals).
        let slots = &mut plan.literal_slots;
        if slots.len() < inner.literal_ends.len() {
            slots.resize(inner.literal_ends.len(), (u32::MAX, 0));
        }
        let mut literals: Vec<Blob> = Vec::new();
        let mut tasks = Vec::with_capacity(nodes.len());
        for &i in nodes {
            let node = &inner.nodes[i as usize];
            let f = &inner.functions[node.function as usize];
            let options = &inner.options[node.options as usize];
            let args = inner
                .node_args(i)
                .iter()
                .map(|a| match *a {
                    NodeArg::Node(d) => Arg::Task(inner.nodes[d as usize].key),
                    NodeArg::External(e) => Arg::Task(inner.externals[e as usize].key),
                    NodeArg::Literal(l) => {
                        let slot = &mut slots[l as usize];
                        if slot.0 != b as u32 {
                            literals.push(Blob(inner.literal_bytes(l).to_vec()));
                            *slot = (b as u32, (literals.len() - 1) as u32);
                        }
                        Arg::Literal(slot.1)
                    }
                })
                .collect();
            tasks.push(TaskSpec {
                key: node.key,
                module: inner.modules[f.module as usize].id(),
                function: f.name.to_string(),
                args,
                priority: options.priority,
                retries: options.retries,
                limits: options.limits(),
                workers: options.workers.clone(),
                annotations: options.annotations.clone(),
            });
        }
        let mut wanted: Vec<TaskKey> = plan.wanted[b]
            .iter()
            .map(|&w| inner.nodes[w as usize].key)
            .collect();
        // Keys later messages refer to stay wanted until the last message is sent.
        wanted.extend(
            plan.boundary[b]
                .iter()
                .map(|&d| inner.nodes[d as usize].key),
        );
        taskhost_proto::Graph {
            literals,
            tasks,
            wanted,
        }
    }

    pub(crate) fn keys_of(&self, nodes: &[u32]) -> Vec<TaskKey> {
        let inner = self.inner.lock();
        nodes.iter().map(|&n| inner.nodes[n as usize].key).collect()
    }

    /// The wire form of what submitting `wanted` sends: one or more graph messages (large graphs
    /// are split so that each message stays well below the frame limit). For inspection and
    /// measurement; [`Client::submit`](crate::Client::submit) sends exactly this.
    ///
    /// ```
    /// # use taskhost_client::{Graph, Module};
    /// # let m = Module::from_bytes(b"guest");
    /// let g = Graph::new();
    /// let x = g.call::<f64>(&m, "add", (1.0, 2.0))?;
    /// let msgs = g.to_wire(&[x])?;
    /// assert_eq!(msgs.len(), 1);
    /// assert_eq!(msgs[0].tasks.len(), 1);
    /// # Ok::<(), taskhost_client::Error>(())
    /// ```
    pub fn to_wire<T>(&self, wanted: &[Handle<T>]) -> Result<Vec<taskhost_proto::Graph>> {
        let mut nodes = Vec::with_capacity(wanted.len());
        for h in wanted {
            if !h.graph.same_as(self) {
                return Err(Error::Invalid("a handle of another graph".into()));
            }
            nodes.push(h.node);
        }
        let mut plan = self.plan(&nodes, BATCH_BYTES)?;
        Ok((0..plan.batches())
            .map(|b| self.batch(&mut plan, b))
            .collect())
    }
}

impl Plan {
    pub(crate) fn batches(&self) -> usize {
        self.batch_ends.len()
    }

    /// Every node wanted only so that a later message can refer to it.
    pub(crate) fn boundary(&self) -> impl Iterator<Item = u32> + '_ {
        self.boundary.iter().flatten().copied()
    }
}

impl GraphInner {
    fn node_args(&self, node: u32) -> &[NodeArg] {
        let n = &self.nodes[node as usize];
        &self.args[n.args_start as usize..(n.args_start + n.args_len) as usize]
    }

    fn literal_bytes(&self, l: u32) -> &[u8] {
        let start = match l {
            0 => 0,
            l => self.literal_ends[l as usize - 1],
        };
        &self.literal_data[start..self.literal_ends[l as usize]]
    }

    /// The literal of `bytes`, added unless the graph has it; `hash` is their blake3 hash,
    /// needed only for literals longer than [`INLINE_LITERAL`].
    fn literal(&mut self, bytes: &[u8], hash: Option<&[u8; 32]>) -> u32 {
        let new = self.literal_ends.len() as u32;
        // One probe of the (large, cache-cold) index for both the lookup and the insertion.
        let found = match self.literal_index.entry(literal_index_key(bytes, hash)) {
            Entry::Vacant(v) => {
                v.insert(new);
                None
            }
            Entry::Occupied(e) => Some(*e.get()),
        };
        if let Some(l) = found {
            if self.literal_bytes(l) == bytes {
                return l;
            }
            // A different literal with the same index key (rare): the spill map, by full hash.
            let full = match hash {
                Some(h) => *h,
                None => *blake3::hash(bytes).as_bytes(),
            };
            if let Some(&l) = self.literal_spill.get(&full) {
                return l;
            }
            self.literal_spill.insert(full, new);
        }
        self.literal_data.extend_from_slice(bytes);
        self.literal_ends.push(self.literal_data.len());
        new
    }

    /// The node of `key`, if the graph has it.
    fn find(&self, key: &TaskKey) -> Option<u32> {
        let n = *self.keys.get(&prefix(&key.0))?;
        if self.nodes[n as usize].key == *key {
            Some(n)
        } else {
            self.key_spill.get(key).copied()
        }
    }

    /// Adds `node` unless a node of its key exists (then its arguments are dropped); returns
    /// the node's index.
    fn intern_node(&mut self, node: Node) -> u32 {
        let new = self.nodes.len() as u32;
        let found = match self.keys.entry(prefix(&node.key.0)) {
            Entry::Vacant(v) => {
                v.insert(new);
                None
            }
            Entry::Occupied(e) => Some(*e.get()),
        };
        if let Some(n) = found {
            let existing = if self.nodes[n as usize].key == node.key {
                Some(n)
            } else {
                self.key_spill.get(&node.key).copied()
            };
            if let Some(n) = existing {
                self.args.truncate(node.args_start as usize);
                return n;
            }
            self.key_spill.insert(node.key, new);
        }
        self.nodes.push(node);
        new
    }

    fn external(&mut self, shared: Arc<FutureShared>) -> u32 {
        if let Some(&e) = self.external_index.get(&shared.key) {
            return e;
        }
        let e = self.externals.len() as u32;
        self.external_index.insert(shared.key, e);
        self.externals.push(shared);
        e
    }

    fn module_id(&mut self, module: &Module) -> u32 {
        // Graphs use few modules: a scan beats hashing.
        if let Some(i) = self.modules.iter().position(|m| m.id() == module.id()) {
            return i as u32;
        }
        self.modules.push(module.clone());
        (self.modules.len() - 1) as u32
    }

    fn function_id(&mut self, module: &Module, function: &str) -> u32 {
        let m = self.module_id(module);
        // The last function used is the likeliest.
        if let Some(last) = self.functions.last()
            && last.module == m
            && &*last.name == function
        {
            return (self.functions.len() - 1) as u32;
        }
        for (i, f) in self.functions.iter().enumerate().take(8) {
            if f.module == m && &*f.name == function {
                return i as u32;
            }
        }
        let name: Arc<str> = Arc::from(function);
        if let Some(&f) = self.function_index.get(&(m, name.clone())) {
            return f;
        }
        let f = self.functions.len() as u32;
        self.functions.push(Function {
            module: m,
            name: name.clone(),
            prefix: TaskKey::builder(&module.id(), function),
        });
        self.function_index.insert((m, name), f);
        f
    }

    fn options_id(&mut self, options: &CallOptions) -> u32 {
        if let Some(i) = self.options.iter().rposition(|o| o == options) {
            return i as u32;
        }
        self.options.push(options.clone());
        (self.options.len() - 1) as u32
    }

    fn import(&mut self, lineage: Vec<ImportedTask>) {
        for task in lineage {
            if self.find(&task.key).is_some() {
                continue;
            }
            let function = self.function_id(&task.module, &task.function);
            let args_start = self.args.len();
            for a in task.args {
                let arg = match a {
                    ImportedArg::Task(k) => {
                        NodeArg::Node(self.find(&k).expect("lineages are in order"))
                    }
                    ImportedArg::Literal(blob, hash) => {
                        NodeArg::Literal(self.literal(&blob.0, hash.as_ref()))
                    }
                    ImportedArg::External(shared) => NodeArg::External(self.external(shared)),
                };
                self.args.push(arg);
            }
            let options = self.options_id(&task.options);
            self.intern_node(Node {
                key: task.key,
                function,
                args_start: args_start as u32,
                args_len: (self.args.len() - args_start) as u32,
                options,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskhost_proto::ModuleId;

    fn module() -> Module {
        Module::from_bytes(b"test module")
    }

    #[test]
    fn keys_are_derived_like_the_scheduler_derives_them() {
        let m = module();
        let g = Graph::new();
        let x = g.call::<f64>(&m, "add", (1.0f64, 2.0f64)).unwrap();
        let y = g.call::<f64>(&m, "add", (&x, 3.0f64)).unwrap();
        let one = postcard::to_allocvec(&1.0f64).unwrap();
        let two = postcard::to_allocvec(&2.0f64).unwrap();
        let three = postcard::to_allocvec(&3.0f64).unwrap();
        let kx = TaskKey::builder(&m.id(), "add")
            .literal_arg(&one)
            .literal_arg(&two)
            .finish();
        assert_eq!(x.key(), kx);
        let ky = TaskKey::builder(&m.id(), "add")
            .task_arg(&kx)
            .literal_arg(&three)
            .finish();
        assert_eq!(y.key(), ky);
        let wire = g.to_wire(&[y]).unwrap();
        assert_eq!(wire.len(), 1);
        let w = &wire[0];
        assert_eq!(w.tasks.len(), 2);
        assert_eq!(w.tasks[0].key, kx);
        assert_eq!(w.tasks[1].args, vec![Arg::Task(kx), Arg::Literal(2)]);
        assert_eq!(w.literals.len(), 3);
        assert_eq!(w.wanted, vec![ky]);
    }

    #[test]
    fn identical_calls_and_literals_are_stored_once() {
        let m = module();
        let g = Graph::new();
        let a = g.call::<f64>(&m, "add", (1.0, 1.0)).unwrap();
        let b = g.call::<f64>(&m, "add", (1.0, 1.0)).unwrap();
        assert_eq!(a, b);
        assert_eq!(g.len(), 1);
        assert_eq!(g.literal_count(), 1);
        let w = g.to_wire(&[a]).unwrap();
        assert_eq!(w[0].tasks[0].args, vec![Arg::Literal(0), Arg::Literal(0)]);
    }

    #[test]
    fn only_needed_calls_are_sent() {
        let m = module();
        let g = Graph::new();
        let a = g.call::<i64>(&m, "inc", (1i64,)).unwrap();
        let _unrelated = g.call::<i64>(&m, "inc", (2i64,)).unwrap();
        let b = g.call::<i64>(&m, "inc", (&a,)).unwrap();
        let w = g.to_wire(std::slice::from_ref(&b)).unwrap();
        let keys: Vec<_> = w[0].tasks.iter().map(|t| t.key).collect();
        assert_eq!(keys, vec![a.key(), b.key()]);
        assert_eq!(w[0].literals.len(), 1);
    }

    #[test]
    fn raw_literals_are_sent_verbatim() {
        let m = module();
        let g = Graph::new();
        let e = g
            .call::<Raw>(&m, "echo", (Raw::from(vec![9u8, 8, 7]),))
            .unwrap();
        assert_eq!(
            e.key(),
            TaskKey::builder(&m.id(), "echo")
                .literal_arg(&[9, 8, 7])
                .finish()
        );
        let w = g.to_wire(&[e]).unwrap();
        assert_eq!(w[0].literals[0].0, vec![9, 8, 7]);
    }

    #[test]
    fn handles_of_other_graphs_bring_their_lineage() {
        let m = module();
        let g1 = Graph::new();
        let a = g1.call::<i64>(&m, "inc", (1i64,)).unwrap();
        let b = g1.call::<i64>(&m, "inc", (&a,)).unwrap();
        let g2 = Graph::new();
        let c = g2.call::<i64>(&m, "inc", (&b,)).unwrap();
        assert_eq!(g2.len(), 3);
        let w = g2.to_wire(&[c]).unwrap();
        let keys: Vec<_> = w[0].tasks.iter().map(|t| t.key).collect();
        assert_eq!(keys, vec![a.key(), b.key(), w[0].tasks[2].key]);
    }

    #[test]
    fn unknown_functions_are_refused_when_the_module_is_described() {
        let m = module().with_functions(vec![crate::FunctionInfo::named("add")]);
        let g = Graph::new();
        let err = g.call::<f64>(&m, "mul", (1.0, 2.0)).unwrap_err();
        assert!(matches!(err, Error::UnknownFunction { .. }), "{err}");
        assert!(err.to_string().contains("add"));
    }

    #[test]
    fn options_reach_the_wire() {
        let m = module();
        let g = Graph::new();
        let o = CallOptions::new()
            .priority(7)
            .retries(3)
            .timeout(Duration::from_millis(1500))
            .memory_limit(1 << 20)
            .workers(["w1"])
            .annotate("k", "v");
        let x = g.call_with::<f64>(&m, "add", (1.0, 2.0), &o).unwrap();
        let t = &g.to_wire(&[x]).unwrap()[0].tasks[0];
        assert_eq!(t.priority, 7);
        assert_eq!(t.retries, 3);
        assert_eq!(t.limits.timeout_ms, Some(1500));
        assert_eq!(t.limits.memory_bytes, Some(1 << 20));
        assert_eq!(t.workers, vec!["w1".to_string()]);
        assert_eq!(t.annotations, vec![("k".to_string(), "v".to_string())]);
    }

    #[test]
    fn large_graphs_are_split_with_boundary_keys_wanted() {
        let m = Module::from_id(ModuleId::of(b"m"));
        let g = Graph::new();
        let mut prev = g.call::<i64>(&m, "inc", (0i64,)).unwrap();
        for _ in 0..2000 {
            prev = g.call::<i64>(&m, "inc", (&prev,)).unwrap();
        }
        let mut plan = g.plan(&[prev.node], 16 * 1024).unwrap();
        assert!(plan.batches() > 5);
        let mut known = std::collections::HashSet::new();
        let mut wanted_total = 0;
        for b in 0..plan.batches() {
            let w = g.batch(&mut plan, b);
            for t in &w.tasks {
                for a in &t.args {
                    if let Arg::Task(k) = a {
                        assert!(known.contains(k), "dependency sent before use");
                    }
                }
                known.insert(t.key);
            }
            wanted_total += w.wanted.len();
            // Each message's wanted keys are its own tasks (boundary) or, last, the result.
            for k in &w.wanted {
                assert!(known.contains(k));
            }
        }
        assert_eq!(known.len(), 2001);
        assert_eq!(wanted_total, plan.boundary().count() + 1);
    }

    #[test]
    fn keys_sharing_an_index_prefix_stay_distinct() {
        let m = module();
        let g = Graph::new();
        let a = g.call::<i64>(&m, "inc", (1i64,)).unwrap();
        let mut inner = g.inner.lock();
        // A node whose key shares `a`'s first 4 bytes but differs after them.
        let mut twin = a.key();
        twin.0[31] ^= 1;
        let args_start = inner.args.len() as u32;
        let n = inner.intern_node(Node {
            key: twin,
            function: 0,
            args_start,
            args_len: 0,
            options: 0,
        });
        assert_ne!(n, a.node);
        assert_eq!(inner.find(&twin), Some(n));
        assert_eq!(inner.find(&a.key()), Some(a.node));
        // Literals likewise: the same prefix, other bytes.
        let (x, y) = ([b'x'; 40], [b'y'; 40]);
        let h = *blake3::hash(&x).as_bytes();
        let l1 = inner.literal(&x, Some(&h));
        let mut h2 = h;
        h2[31] ^= 1;
        let l2 = inner.literal(&y, Some(&h2));
        assert_ne!(l1, l2);
        assert_eq!(inner.literal(&y, Some(&h2)), l2);
        assert_eq!(inner.literal_bytes(l2), y);
        // Short literals are indexed by their bytes; long and short ones do not mix.
        let s1 = inner.literal(b"x", None);
        assert_ne!(s1, l1);
        assert_eq!(inner.literal(b"x", None), s1);
        assert_eq!(inner.literal_bytes(s1), b"x");
    }

    #[test]
    fn wanted_keys_are_wanted_in_the_message_that_creates_them() {
        let m = module();
        let g = Graph::new();
        let hs: Vec<Handle<f64>> = (0..200)
            .map(|i| g.call(&m, "sum", (vec![i as f64; 100],)).unwrap())
            .collect();
        let mut plan = g
            .plan(&hs.iter().map(|h| h.node).collect::<Vec<_>>(), 16 * 1024)
            .unwrap();
        assert!(plan.batches() > 5);
        let mut total = 0;
        for b in 0..plan.batches() {
            let w = g.batch(&mut plan, b);
            let created: std::collections::HashSet<_> = w.tasks.iter().map(|t| t.key).collect();
            assert_eq!(created.len(), w.wanted.len());
            assert!(w.wanted.iter().all(|k| created.contains(k)));
            total += w.wanted.len();
        }
        assert_eq!(total, 200);
    }
}
