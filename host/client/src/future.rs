//! Futures of submitted work, with Dask's reference counting: the scheduler keeps a result
//! while some future of its key is alive, and dropping the last one releases it.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::stream::{FuturesUnordered, Stream, StreamExt};
use taskhost_proto::TaskKey;

use crate::client::ClientInner;
use crate::error::Result;
use crate::graph::TaskOutput;

/// What the futures of one key share: the key and the client that holds its reference.
pub(crate) struct FutureShared {
    pub(crate) key: TaskKey,
    pub(crate) client: Arc<ClientInner>,
}

impl Drop for FutureShared {
    fn drop(&mut self) {
        self.client.release_ref(self.key);
    }
}

/// Where a submitted task stands, as this client knows it.
///
/// ```
/// use taskhost_client::FutureStatus;
/// assert_ne!(FutureStatus::Pending, FutureStatus::Finished);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FutureStatus {
    /// Not finished yet.
    Pending,
    /// The result is ready.
    Finished,
    /// The task (or a dependency) failed, was cancelled, or its graph was rejected.
    Error,
    /// The connection to the scheduler is gone.
    Lost,
}

/// A submitted task's result of type `T`, in the style of Dask's futures.
///
/// Await [`result`](Self::result) to get the value. Clones share one reference to the key:
/// when the last clone is dropped, the client tells the scheduler it no longer wants the
/// result, and the chunk is released from the workers' memory (unless another future or
/// client still wants it).
///
/// A future is also an argument of further calls (`g.call(&m, "f", (&future,))`): the new
/// tasks then depend on the submitted one.
///
/// ```no_run
/// # async fn demo(client: taskhost_client::Client, m: taskhost_client::Module) -> taskhost_client::Result<()> {
/// let g = taskhost_client::Graph::new();
/// let x = g.call::<f64>(&m, "add", (1.0, 2.0))?;
/// let futures = client.submit(&[x]).await?;
/// assert_eq!(futures[0].result().await?, 3.0);
/// # Ok(()) }
/// ```
pub struct Future<T> {
    shared: Arc<FutureShared>,
    _result: PhantomData<fn() -> T>,
}

impl<T> Clone for Future<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            _result: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Future<{}>({}, {:?})",
            std::any::type_name::<T>(),
            self.shared.key.short(),
            self.status()
        )
    }
}

impl<T> Future<T> {
    pub(crate) fn new(shared: Arc<FutureShared>) -> Self {
        Self {
            shared,
            _result: PhantomData,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<FutureShared> {
        &self.shared
    }

    /// The task's key.
    ///
    /// ```no_run
    /// # fn demo(f: taskhost_client::Future<f64>) {
    /// println!("{}", f.key());
    /// # }
    /// ```
    pub fn key(&self) -> TaskKey {
        self.shared.key
    }

    /// Where the task stands now (does not wait).
    ///
    /// ```no_run
    /// # fn demo(f: taskhost_client::Future<f64>) {
    /// if f.status() == taskhost_client::FutureStatus::Pending { println!("still running"); }
    /// # }
    /// ```
    pub fn status(&self) -> FutureStatus {
        self.shared.client.status_of(&self.shared.key)
    }

    /// Whether the task has finished, successfully or not (does not wait).
    ///
    /// ```no_run
    /// # fn demo(f: taskhost_client::Future<f64>) {
    /// let finished = f.done();
    /// # let _ = finished;
    /// # }
    /// ```
    pub fn done(&self) -> bool {
        self.status() != FutureStatus::Pending
    }

    /// Waits until the task has finished; `Ok` if it succeeded, its error otherwise. Does not
    /// fetch the result.
    ///
    /// ```no_run
    /// # async fn demo(f: taskhost_client::Future<f64>) {
    /// if let Err(e) = f.wait().await { eprintln!("{e}"); }
    /// # }
    /// ```
    pub async fn wait(&self) -> Result<()> {
        self.shared
            .client
            .wait_key(self.shared.key)
            .await
            .map(|_| ())
    }

    /// Cancels the task (and whatever only it needed). Waiting futures of this key fail with a
    /// `Cancelled` task error.
    ///
    /// ```no_run
    /// # async fn demo(f: taskhost_client::Future<u64>) -> taskhost_client::Result<()> {
    /// f.cancel().await?;
    /// assert!(f.result().await.is_err());
    /// # Ok(()) }
    /// ```
    pub async fn cancel(&self) -> Result<()> {
        self.shared.client.cancel_keys(&[self.shared.key])
    }

    /// The same future with its result read as another type (for example
    /// [`Raw`](crate::Raw)).
    ///
    /// ```no_run
    /// # fn demo(f: taskhost_client::Future<f64>) {
    /// let raw = f.cast::<taskhost_client::Raw>();
    /// # let _ = raw;
    /// # }
    /// ```
    pub fn cast<U>(&self) -> Future<U> {
        Future::new(self.shared.clone())
    }
}

impl<T: TaskOutput> Future<T> {
    /// Waits for the task and returns its result, fetching it from a worker if it is held
    /// there. A failure of the task or of any task it depends on is an
    /// [`Error::Task`](crate::Error::Task) naming the original cause.
    ///
    /// ```no_run
    /// # async fn demo(f: taskhost_client::Future<f64>) -> taskhost_client::Result<()> {
    /// let value: f64 = f.result().await?;
    /// # let _ = value; Ok(()) }
    /// ```
    pub async fn result(&self) -> Result<T> {
        let bytes = self.shared.client.result_bytes(self.shared.key).await?;
        T::decode(bytes).map_err(|message| crate::Error::Decode {
            key: self.shared.key,
            type_name: std::any::type_name::<T>(),
            message,
        })
    }
}

/// Yields futures as they finish (successfully or not), in completion order, like Dask's
/// `as_completed`.
///
/// ```no_run
/// # async fn demo(futures: Vec<taskhost_client::Future<f64>>) -> taskhost_client::Result<()> {
/// use futures::StreamExt;
/// let mut done = taskhost_client::as_completed(futures);
/// while let Some(f) = done.next().await {
///     println!("{} -> {:?}", f.key(), f.result().await);
/// }
/// # Ok(()) }
/// ```
pub fn as_completed<T: 'static>(
    futures: impl IntoIterator<Item = Future<T>>,
) -> impl Stream<Item = Future<T>> + Send + Unpin + 'static {
    let set: FuturesUnordered<_> = futures
        .into_iter()
        .map(|f| async move {
            let _ = f.shared.client.wait_key(f.shared.key).await;
            f
        })
        .collect();
    set.boxed()
}
