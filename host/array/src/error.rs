//! Errors of the array collection.

/// What can go wrong building or computing an array.
#[derive(Debug, thiserror::Error)]
pub enum ArrayError {
    /// Bytes that are not a valid chunk.
    #[error("invalid chunk: {0}")]
    BadChunk(String),
    /// Shapes or chunkings that do not fit the operation.
    #[error("{0}")]
    Shape(String),
    /// The client failed: registering the kernels, submitting, or a task failed.
    #[error(transparent)]
    Client(#[from] taskhost_client::Error),
}
