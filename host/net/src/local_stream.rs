//! A same-host stream socket watched by the runtime for reading only.
//!
//! tokio's `UnixStream` registers its socket for both directions, edge-triggered. A Unix
//! stream socket signals "writable" each time its peer reads (the kernel frees the sent
//! bytes and wakes whoever watches for room), so every message the other side read woke this
//! side's runtime for nothing: in a 4 x 300 stencil, 880 of the 3,880 blocking `epoll_wait`
//! returns of the embedded cluster carried nothing but `EPOLLOUT`, each a thread woken and a
//! CPU taken out of its idle state (20-40 us on the 2-vCPU machine we measure on).
//!
//! [`LocalStream`] registers the socket for readability only. A write goes straight to the
//! non-blocking socket; only when one would block (an answer larger than the socket's buffer)
//! is a duplicate of the socket registered for writability, and that registration is kept for
//! the stream's life.

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream as StdStream;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A connected Unix stream socket, registered with the runtime for reading only.
#[derive(Debug)]
pub(crate) struct LocalStream(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    /// The socket, registered for readability.
    read: AsyncFd<StdStream>,
    /// A duplicate registered for writability, made the first time a write would block.
    write: OnceLock<AsyncFd<StdStream>>,
}

impl LocalStream {
    /// Takes over a connected socket (made non-blocking here).
    pub(crate) fn from_std(stream: StdStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self(Arc::new(Shared {
            read: register(stream, Interest::READABLE)?,
            write: OnceLock::new(),
        })))
    }

    /// Takes over a socket accepted or connected through tokio.
    pub(crate) fn from_tokio(stream: tokio::net::UnixStream) -> io::Result<Self> {
        Self::from_std(stream.into_std()?)
    }

    /// Connects to the socket at `path`.
    pub(crate) async fn connect(path: &Path) -> io::Result<Self> {
        Self::from_tokio(tokio::net::UnixStream::connect(path).await?)
    }

    /// The socket itself (for options, duplicates and shutdown).
    pub(crate) fn socket(&self) -> &StdStream {
        self.0.read.get_ref()
    }

    /// Splits the stream into a reading and a writing handle on the same socket; dropping the
    /// writing handle shuts the socket's writing direction down, as tokio's halves do.
    pub(crate) fn into_split(self) -> (LocalStream, LocalWriteHalf) {
        let write = LocalWriteHalf(LocalStream(self.0.clone()));
        (self, write)
    }

    /// The registration for writability, made on first use.
    fn writer(&self) -> io::Result<&AsyncFd<StdStream>> {
        if let Some(writer) = self.0.write.get() {
            return Ok(writer);
        }
        let registered = register(self.socket().try_clone()?, Interest::WRITABLE)?;
        // Another handle may have registered meanwhile: then ours is dropped (deregistered).
        Ok(self.0.write.get_or_init(|| registered))
    }

    fn poll_read_inner(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.read.poll_read_ready(cx))?;
            // SAFETY: only `read_uninit` writes into it, and nothing de-initialises it.
            #[allow(unsafe_code)]
            let unfilled = unsafe { buf.unfilled_mut() };
            let room = unfilled.len();
            match guard.try_io(|fd| read_uninit(fd.get_ref(), unfilled)) {
                Ok(Ok(n)) => {
                    // SAFETY: `read_uninit` initialised the first `n` bytes of the unfilled part.
                    #[allow(unsafe_code)]
                    unsafe {
                        buf.assume_init(n)
                    };
                    buf.advance(n);
                    if n > 0 && n < room {
                        // A short read emptied the socket (a Unix stream read takes all that
                        // is queued; only passed credentials or descriptors, which these
                        // sockets never carry, end one early): the next read would only fail
                        // with `WouldBlock`, a system call per message. Readiness is cleared
                        // only if no new data was signalled since it was observed, and new
                        // data signals again.
                        guard.clear_ready();
                    }
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_write_inner(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match { self.socket() }.write(data) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return Poll::Ready(done),
        }
        let writer = self.writer()?;
        loop {
            let mut guard = ready!(writer.poll_write_ready(cx))?;
            match guard.try_io(|fd| { fd.get_ref() }.write(data)) {
                Ok(done) => return Poll::Ready(done),
                Err(_would_block) => continue,
            }
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        match self.socket().shutdown(std::net::Shutdown::Write) {
            // Already disconnected: nothing left to shut.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        }
    }
}

/// Registers `socket` with the runtime for `interest`.
#[allow(unsafe_code)]
fn register(socket: StdStream, interest: Interest) -> io::Result<AsyncFd<StdStream>> {
    // SAFETY: the `UnixStream` owns its file descriptor, which stays open and the same until
    // the `AsyncFd` (which owns the stream) is dropped.
    unsafe { AsyncFd::register_with_interest(socket, interest) }.map_err(|e| e.into_parts().1)
}

/// `read(2)` into possibly uninitialised memory, as tokio's own sockets do (no zeroing of a
/// buffer about to be overwritten: bulk bodies are read into 8 MiB of spare capacity).
#[allow(unsafe_code)]
fn read_uninit(socket: &StdStream, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    // SAFETY: `read` only writes into the buffer (never reads it), and writes at most
    // `buf.len()` bytes; a `MaybeUninit<u8>` slice has the layout of a `u8` slice.
    let bytes = unsafe { &mut *(buf as *mut [MaybeUninit<u8>] as *mut [u8]) };
    { socket }.read(bytes)
}

impl AsFd for LocalStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket().as_fd()
    }
}

impl AsyncRead for LocalStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.poll_read_inner(cx, buf)
    }
}

impl AsyncWrite for LocalStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_inner(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown_write())
    }
}

/// The writing handle of a split [`LocalStream`].
#[derive(Debug)]
pub(crate) struct LocalWriteHalf(LocalStream);

impl AsyncWrite for LocalWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_write_inner(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.0.shutdown_write())
    }
}

impl Drop for LocalWriteHalf {
    fn drop(&mut self) {
        let _ = self.0.shutdown_write();
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn small_and_large_messages_cross_both_ways() {
        let (a, b) = StdStream::pair().unwrap();
        let (mut a, mut b) = (
            LocalStream::from_std(a).unwrap(),
            LocalStream::from_std(b).unwrap(),
        );
        a.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        // Larger than any socket buffer: the writer waits for room while the reader reads.
        let big: Vec<u8> = (0..(16 << 20)).map(|i| (i % 251) as u8).collect();
        let expected = big.clone();
        let writer = tokio::spawn(async move {
            b.write_all(&big).await.unwrap();
            b
        });
        let mut received = Vec::with_capacity(expected.len());
        while received.len() < expected.len() {
            let n = a.read_buf(&mut received).await.unwrap();
            assert!(n > 0);
        }
        assert_eq!(received, expected);
        let b = writer.await.unwrap();
        assert!(b.0.write.get().is_some(), "the large write waited for room");
        assert!(
            a.0.write.get().is_none(),
            "the reader never waited to write"
        );
    }

    #[tokio::test]
    async fn dropping_the_write_half_ends_the_peers_stream() {
        let (a, b) = StdStream::pair().unwrap();
        let (mut a, b) = (
            LocalStream::from_std(a).unwrap(),
            LocalStream::from_std(b).unwrap(),
        );
        let (_read, mut write) = b.into_split();
        write.write_all(b"last").await.unwrap();
        drop(write);
        let mut rest = Vec::new();
        a.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"last");
    }
}
