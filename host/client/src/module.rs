//! Modules: WebAssembly components registered with the scheduler by their hash.

use std::fmt;
use std::sync::Arc;

use taskhost_proto::ModuleId;

use crate::error::{Error, Result};

/// One task function a module exports, as the module describes itself.
///
/// ```
/// use taskhost_client::FunctionInfo;
/// let f = FunctionInfo::named("add");
/// assert_eq!(f.name, "add");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionInfo {
    /// The name the function is called by, such as `add`.
    pub name: String,
    /// A short human description.
    pub doc: String,
    /// The signature as the guest declares it, such as `add(a: f64, b: f64) -> f64`.
    pub signature: String,
}

impl FunctionInfo {
    /// A function known only by its name.
    ///
    /// ```
    /// # use taskhost_client::FunctionInfo;
    /// assert!(FunctionInfo::named("inc").doc.is_empty());
    /// ```
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            doc: String::new(),
            signature: String::new(),
        }
    }
}

/// A WebAssembly component whose task functions graphs call, named by its content hash.
///
/// Get one from [`Client::module`](crate::Client::module) (which uploads it to the scheduler if
/// needed and lists its functions), or build one offline with [`Module::from_bytes`] or
/// [`Module::from_id`]. Cheap to clone.
///
/// When the module's function list is known, calling a function it does not export is an error
/// when the graph is built, not when it runs.
///
/// ```
/// use taskhost_client::{FunctionInfo, Graph, Module};
/// let m = Module::from_bytes(b"not really a component")
///     .with_functions(vec![FunctionInfo::named("add")]);
/// let g = Graph::new();
/// assert!(g.call::<f64>(&m, "add", (1.0, 2.0)).is_ok());
/// assert!(g.call::<f64>(&m, "mul", (1.0, 2.0)).is_err());
/// ```
#[derive(Clone)]
pub struct Module {
    inner: Arc<ModuleInner>,
}

struct ModuleInner {
    id: ModuleId,
    size: Option<usize>,
    functions: Option<Vec<FunctionInfo>>,
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("id", &self.inner.id)
            .field("size", &self.inner.size)
            .field(
                "functions",
                &self
                    .inner
                    .functions
                    .as_ref()
                    .map(|fs| fs.iter().map(|f| f.name.as_str()).collect::<Vec<_>>()),
            )
            .finish()
    }
}

impl PartialEq for Module {
    fn eq(&self, other: &Self) -> bool {
        self.inner.id == other.inner.id
    }
}

impl Eq for Module {}

impl Module {
    /// A module named by the hash of `bytes`, with its functions unknown. It is not uploaded:
    /// use [`Client::module`](crate::Client::module) for that.
    ///
    /// ```
    /// # use taskhost_client::Module;
    /// let m = Module::from_bytes(b"bytes");
    /// assert_eq!(m.id(), taskhost_proto::ModuleId::of(b"bytes"));
    /// assert!(m.functions().is_none());
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self::new(ModuleId::of(bytes), Some(bytes.len()), None)
    }

    /// A module known only by its id (the scheduler must already store it).
    ///
    /// ```
    /// # use taskhost_client::Module;
    /// let id = taskhost_proto::ModuleId::of(b"bytes");
    /// assert_eq!(Module::from_id(id).id(), id);
    /// ```
    pub fn from_id(id: ModuleId) -> Self {
        Self::new(id, None, None)
    }

    pub(crate) fn new(
        id: ModuleId,
        size: Option<usize>,
        functions: Option<Vec<FunctionInfo>>,
    ) -> Self {
        Self {
            inner: Arc::new(ModuleInner {
                id,
                size,
                functions,
            }),
        }
    }

    /// The same module with its function list set (calls are then checked against it).
    ///
    /// ```
    /// # use taskhost_client::{FunctionInfo, Module};
    /// let m = Module::from_bytes(b"x").with_functions(vec![FunctionInfo::named("f")]);
    /// assert_eq!(m.has_function("f"), Some(true));
    /// ```
    pub fn with_functions(self, functions: Vec<FunctionInfo>) -> Self {
        Self::new(self.inner.id, self.inner.size, Some(functions))
    }

    /// The module's id (the blake3 hash of its bytes).
    ///
    /// ```
    /// # use taskhost_client::Module;
    /// println!("{}", Module::from_bytes(b"x").id());
    /// ```
    pub fn id(&self) -> ModuleId {
        self.inner.id
    }

    /// Size of the component in bytes, when known.
    ///
    /// ```
    /// # use taskhost_client::Module;
    /// assert_eq!(Module::from_bytes(b"abc").size(), Some(3));
    /// ```
    pub fn size(&self) -> Option<usize> {
        self.inner.size
    }

    /// The functions the module exports, if known.
    ///
    /// ```
    /// # use taskhost_client::Module;
    /// if let Some(fs) = Module::from_bytes(b"x").functions() {
    ///     for f in fs { println!("{}", f.signature); }
    /// }
    /// ```
    pub fn functions(&self) -> Option<&[FunctionInfo]> {
        self.inner.functions.as_deref()
    }

    /// Whether the module exports `name` (`None` when its functions are unknown).
    ///
    /// ```
    /// # use taskhost_client::Module;
    /// assert_eq!(Module::from_bytes(b"x").has_function("add"), None);
    /// ```
    pub fn has_function(&self, name: &str) -> Option<bool> {
        self.functions().map(|fs| fs.iter().any(|f| f.name == name))
    }

    pub(crate) fn check_function(&self, name: &str) -> Result<()> {
        match self.has_function(name) {
            Some(false) => Err(Error::UnknownFunction {
                module: self.inner.id,
                function: name.to_owned(),
                available: self
                    .functions()
                    .unwrap_or_default()
                    .iter()
                    .map(|f| f.name.clone())
                    .collect(),
            }),
            _ => Ok(()),
        }
    }
}
