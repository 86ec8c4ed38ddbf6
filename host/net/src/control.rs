//! The framed control stream: typed, batched sender and incremental receiver.

use std::marker::PhantomData;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde::de::DeserializeOwned;
use taskhost_proto::{DEFAULT_MAX_FRAME, FrameDecoder, encode_into_limited};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::NetError;
use crate::endpoint::{CLOSE_PROTOCOL_ERROR, Link};
use crate::local_stream::{LocalStream, LocalWriteHalf};

/// Largest queue a sender writes to a same-host socket itself rather than through the writer.
const DIRECT_WRITE_MAX: usize = 64 * 1024;

/// Limits of a control stream.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// Largest frame payload sent or accepted; a peer announcing more is disconnected.
    pub max_frame: usize,
    /// Bytes queued but not yet handed to QUIC above which [`Sender::send`] waits.
    pub high_water: usize,
}

impl Default for ControlOptions {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            high_water: 8 * 1024 * 1024,
        }
    }
}

/// The long-lived bidirectional stream of a connection, not yet typed.
#[derive(Debug)]
pub struct ControlStream {
    pub(crate) conn: Link,
    pub(crate) send: WriteHalf,
    recv: ReadHalf,
    pub(crate) decoder: FrameDecoder,
}

/// The sending half of a control stream.
#[derive(Debug)]
pub(crate) enum WriteHalf {
    Quic(quinn::SendStream),
    Local(LocalWriteHalf),
}

impl WriteHalf {
    pub(crate) async fn write_all(&mut self, buf: &[u8]) -> Result<(), String> {
        match self {
            WriteHalf::Quic(s) => s.write_all(buf).await.map_err(|e| e.to_string()),
            WriteHalf::Local(s) => s.write_all(buf).await.map_err(|e| e.to_string()),
        }
    }

    async fn finish(&mut self) {
        match self {
            WriteHalf::Quic(s) => {
                let _ = s.finish();
            }
            WriteHalf::Local(s) => {
                let _ = s.shutdown().await;
            }
        }
    }
}

/// The receiving half of a control stream.
#[derive(Debug)]
enum ReadHalf {
    Quic(quinn::RecvStream),
    Local(LocalStream, Box<[u8]>),
}

impl ReadHalf {
    /// Reads what has arrived into `decoder`; `Ok(false)` at the end of the stream.
    async fn read_into(&mut self, decoder: &mut FrameDecoder) -> Result<bool, NetError> {
        match self {
            ReadHalf::Quic(recv) => match recv.read_chunk(256 * 1024, true).await? {
                Some(chunk) => {
                    decoder.push(&chunk.bytes);
                    Ok(true)
                }
                None => Ok(false),
            },
            ReadHalf::Local(read, buf) => {
                let n = read.read(buf).await?;
                decoder.push(&buf[..n]);
                Ok(n > 0)
            }
        }
    }
}

impl ControlStream {
    pub(crate) fn new(
        conn: Link,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        decoder: FrameDecoder,
    ) -> Self {
        Self {
            conn,
            send: WriteHalf::Quic(send),
            recv: ReadHalf::Quic(recv),
            decoder,
        }
    }

    /// A control stream over a same-host socket.
    pub(crate) fn local(
        conn: Link,
        read: LocalStream,
        write: LocalWriteHalf,
        decoder: FrameDecoder,
    ) -> Self {
        Self {
            conn,
            send: WriteHalf::Local(write),
            recv: ReadHalf::Local(read, vec![0u8; 256 * 1024].into_boxed_slice()),
            decoder,
        }
    }

    /// Splits into a sender of `Out` and a receiver of `In` with default limits.
    ///
    /// Spawns the writer task: call from within a tokio runtime.
    pub fn split<Out, In>(self) -> (Sender<Out>, Receiver<In>)
    where
        Out: Serialize + Send + 'static,
        In: DeserializeOwned + Send,
    {
        self.split_with(ControlOptions::default())
    }

    /// Splits into a sender of `Out` and a receiver of `In`.
    pub fn split_with<Out, In>(self, options: ControlOptions) -> (Sender<Out>, Receiver<In>)
    where
        Out: Serialize + Send + 'static,
        In: DeserializeOwned + Send,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: Vec::with_capacity(64 * 1024),
                queued: 0,
                written: 0,
                error: None,
                closed: false,
                messages: 0,
                writes: 0,
                writing: false,
            }),
            wake_writer: Notify::new(),
            progress: Notify::new(),
            options: options.clone(),
            direct: match &self.conn {
                Link::Local(link) => link.duplicate_socket(),
                Link::Quic(_) => None,
            },
            link: match &self.conn {
                Link::Local(link) => Some(link.clone()),
                Link::Quic(_) => None,
            },
        });
        if let Link::Local(link) = &self.conn {
            link.set_writer(true);
        }
        let (conn, writer_shared, send) = (self.conn.clone(), shared.clone(), self.send);
        tokio::spawn(async move {
            writer(writer_shared, send, conn.clone()).await;
            if let Link::Local(link) = &conn {
                link.set_writer(false);
            }
        });
        let sender = Sender {
            handle: Arc::new(Handle { shared }),
            _msg: PhantomData,
        };
        // Bytes that arrived right after the hello reply are already buffered in the decoder.
        let mut decoder = self.decoder;
        decoder.set_max_frame(options.max_frame);
        let receiver = Receiver {
            conn: self.conn,
            recv: self.recv,
            decoder,
            _msg: PhantomData,
        };
        (sender, receiver)
    }
}

struct State {
    buf: Vec<u8>,
    /// Total bytes ever appended to `buf`.
    queued: u64,
    /// Total bytes handed to QUIC.
    written: u64,
    error: Option<String>,
    closed: bool,
    messages: u64,
    writes: u64,
    /// The writer task holds bytes taken from `buf` that it has not finished writing.
    writing: bool,
}

struct Shared {
    state: Mutex<State>,
    wake_writer: Notify,
    progress: Notify,
    options: ControlOptions,
    /// On a same-host link, the socket (a duplicate of the writer's): a sender whose message
    /// finds the writer idle writes it itself, saving a wake-up of the writer's thread.
    direct: Option<std::os::unix::net::UnixStream>,
    /// The same-host link, whose closing stops senders at once.
    link: Option<Arc<crate::local::LocalLink>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` inconsistent in a way that matters.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why nothing more can be sent: the writer failed, or the same-host link was closed
    /// (at once, as over QUIC, not only once the writer notices).
    fn failure(&self, st: &State) -> Option<String> {
        if let Some(e) = &st.error {
            return Some(e.clone());
        }
        let link = self.link.as_ref()?;
        link.close_reason()
            .map(|reason| format!("connection closed: {reason}"))
    }

    fn fail(&self, reason: String) {
        let mut st = self.lock();
        if st.error.is_none() {
            st.error = Some(reason);
        }
        st.buf = Vec::new();
        drop(st);
        self.progress.notify_waiters();
    }
}

/// Dropping the last sender clone flushes what is queued and finishes the stream.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake_writer.notify_one();
    }
}

async fn writer(shared: Arc<Shared>, mut send: WriteHalf, conn: Link) {
    let mut spare: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let (n, closed) = {
            let mut st = shared.lock();
            if st.error.is_some() {
                return;
            }
            if !st.buf.is_empty() {
                std::mem::swap(&mut st.buf, &mut spare);
                st.writing = true;
            }
            (spare.len(), st.closed)
        };
        if n == 0 {
            if closed {
                send.finish().await;
                return;
            }
            tokio::select! {
                () = shared.wake_writer.notified() => {}
                e = conn.closed_reason() => {
                    // What was queued before the close goes first: it may end a frame that a
                    // sender began writing directly.
                    let rest = std::mem::take(&mut shared.lock().buf);
                    shared.fail(format!("connection closed: {e}"));
                    if let (Link::Local(link), WriteHalf::Local(write)) = (&conn, &mut send) {
                        // Tell the peer why, then close the socket.
                        let record = link.close_record().unwrap_or_default();
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                            write.write_all(&rest).await?;
                            write.write_all(&record).await
                        })
                        .await;
                        link.shutdown();
                    }
                    return;
                }
            }
            continue;
        }
        // One write for everything queued since the last one.
        if let Err(e) = send.write_all(&spare).await {
            shared.fail(format!("write failed: {e}"));
            if let Link::Local(link) = &conn {
                link.close(&format!("writing the control stream failed: {e}"));
            }
            return;
        }
        if spare.capacity() > 4 * 1024 * 1024 {
            spare = Vec::with_capacity(64 * 1024);
        } else {
            spare.clear();
        }
        {
            let mut st = shared.lock();
            st.written += n as u64;
            st.writes += 1;
            st.writing = false;
        }
        shared.progress.notify_waiters();
    }
}

/// Sends typed messages on the control stream. Cheap to clone; messages from all clones are
/// delivered in the order their `send` calls completed.
///
/// Messages are encoded straight into a shared buffer; a writer task hands everything queued to
/// QUIC in one write, so many small messages cost one stream write, not one each.
pub struct Sender<T> {
    handle: Arc<Handle>,
    _msg: PhantomData<fn(T)>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self {
            handle: self.handle.clone(),
            _msg: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<T: Serialize> Sender<T> {
    fn closed_err(reason: &str) -> NetError {
        NetError::ControlClosed {
            reason: reason.to_string(),
        }
    }

    /// Queues `msg`, waiting first while more than `high_water` bytes are queued.
    ///
    /// Fails if the message is larger than `max_frame` (nothing is sent) or the stream failed.
    pub async fn send(&self, msg: &T) -> Result<(), NetError> {
        self.send_many(std::slice::from_ref(msg)).await
    }

    /// Queues several messages at once (one lock, one wake-up of the writer).
    pub async fn send_many(&self, msgs: &[T]) -> Result<(), NetError> {
        let shared = &self.handle.shared;
        loop {
            let mut progress = pin!(shared.progress.notified());
            progress.as_mut().enable();
            {
                let mut st = shared.lock();
                if let Some(e) = shared.failure(&st) {
                    return Err(Self::closed_err(&e));
                }
                if st.buf.len() < shared.options.high_water {
                    return self.encode_locked(&mut st, msgs);
                }
            }
            progress.await;
        }
    }

    /// Queues `msg` without waiting, even above the high-water mark.
    pub fn send_now(&self, msg: &T) -> Result<(), NetError> {
        let mut st = self.handle.shared.lock();
        if let Some(e) = self.handle.shared.failure(&st) {
            return Err(Self::closed_err(&e));
        }
        self.encode_locked(&mut st, std::slice::from_ref(msg))
    }

    /// Queues `msg` without waiting and without waking the writer task: it goes out with the
    /// next message queued by [`send_now`](Self::send_now) or [`send`](Self::send), or at the
    /// next [`wake`](Self::wake). For a producer that knows more messages follow shortly (one
    /// wake-up, and one stream write, for all of them).
    pub fn send_deferred(&self, msg: &T) -> Result<(), NetError> {
        let mut st = self.handle.shared.lock();
        if let Some(e) = self.handle.shared.failure(&st) {
            return Err(Self::closed_err(&e));
        }
        self.encode_only(&mut st, std::slice::from_ref(msg))
    }

    /// Wakes the writer task so that what is queued goes out.
    pub fn wake(&self) {
        self.handle.shared.wake_writer.notify_one();
    }

    /// Sends what [`send_deferred`](Self::send_deferred) queued, now: written from this thread
    /// if the writer task is idle (as [`send_now`](Self::send_now) does), otherwise handed to
    /// it. Does nothing if nothing is queued or the stream failed.
    pub fn send_queued(&self) {
        let mut st = self.handle.shared.lock();
        if st.buf.is_empty() || self.handle.shared.failure(&st).is_some() {
            return;
        }
        self.write_queued(&mut st);
    }

    fn encode_locked(&self, st: &mut State, msgs: &[T]) -> Result<(), NetError> {
        self.encode_only(st, msgs)?;
        self.write_queued(st);
        Ok(())
    }

    /// Writes the queued bytes from this thread if the writer is idle and they are few, and
    /// wakes the writer for what is left.
    fn write_queued(&self, st: &mut State) {
        let shared = &self.handle.shared;
        if let Some(socket) = &shared.direct
            && !st.writing
            && !st.closed
            && st.buf.len() <= DIRECT_WRITE_MAX
        {
            // The writer is idle: write from this thread (the socket is non-blocking). What
            // does not fit is left to the writer.
            if let Ok(n) = std::io::Write::write(&mut &*socket, &st.buf)
                && n > 0
            {
                st.buf.drain(..n);
                st.written += n as u64;
                st.writes += 1;
                shared.progress.notify_waiters();
                if st.buf.is_empty() {
                    return;
                }
            }
        }
        shared.wake_writer.notify_one();
    }

    fn encode_only(&self, st: &mut State, msgs: &[T]) -> Result<(), NetError> {
        let shared = &self.handle.shared;
        let before = st.buf.len();
        for msg in msgs {
            if let Err(e) = encode_into_limited(msg, &mut st.buf, shared.options.max_frame) {
                st.buf.truncate(before);
                return Err(e.into());
            }
        }
        st.queued += (st.buf.len() - before) as u64;
        st.messages += msgs.len() as u64;
        Ok(())
    }

    /// Counters of this stream (shared by all clones).
    pub fn stats(&self) -> SenderStats {
        let st = self.handle.shared.lock();
        SenderStats {
            messages: st.messages,
            bytes: st.queued,
            writes: st.writes,
        }
    }

    /// Waits until everything queued so far has been handed to QUIC.
    pub async fn flush(&self) -> Result<(), NetError> {
        let shared = &self.handle.shared;
        let target = shared.lock().queued;
        loop {
            let mut progress = pin!(shared.progress.notified());
            progress.as_mut().enable();
            {
                let st = shared.lock();
                if let Some(e) = shared.failure(&st) {
                    return Err(Self::closed_err(&e));
                }
                if st.written >= target {
                    return Ok(());
                }
            }
            progress.await;
        }
    }
}

/// Counters of a [`Sender`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderStats {
    /// Messages queued.
    pub messages: u64,
    /// Bytes queued (frames including their length prefixes).
    pub bytes: u64,
    /// Stream writes issued by the writer task (each carries every message queued before it).
    pub writes: u64,
}

/// Receives typed messages from the control stream.
///
/// [`recv`](Self::recv) is cancel-safe (usable in `tokio::select!`). A malformed or oversized
/// frame closes the connection with [`CLOSE_PROTOCOL_ERROR`] and a reason naming the problem.
pub struct Receiver<T> {
    conn: Link,
    recv: ReadHalf,
    decoder: FrameDecoder,
    _msg: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("buffered", &self.decoder.buffered())
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> Receiver<T> {
    /// The next message; `Ok(None)` when the peer finished the stream cleanly.
    pub async fn recv(&mut self) -> Result<Option<T>, NetError> {
        loop {
            if let Some(msg) = self.try_recv_buffered()? {
                return Ok(Some(msg));
            }
            match self.recv.read_into(&mut self.decoder).await {
                Ok(true) => {}
                Ok(false) => {
                    if let Link::Local(link) = &self.conn {
                        link.close("the peer closed the connection");
                    }
                    if let Err(e) = self.decoder.finish() {
                        return Err(self.protocol_error(e.into()));
                    }
                    return Ok(None);
                }
                Err(e) => {
                    if let Link::Local(link) = &self.conn {
                        link.close(&format!("reading failed: {e}"));
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Waits for at least one message, then appends it and every other message already received
    /// (up to `max` in all) to `out`. Returns how many were appended; 0 means the stream ended.
    pub async fn recv_many(&mut self, out: &mut Vec<T>, max: usize) -> Result<usize, NetError> {
        let Some(first) = self.recv().await? else {
            return Ok(0);
        };
        out.push(first);
        let mut n = 1;
        while n < max {
            match self.try_recv_buffered()? {
                Some(msg) => {
                    out.push(msg);
                    n += 1;
                }
                None => break,
            }
        }
        Ok(n)
    }

    /// A message already received and buffered, without waiting for the network.
    pub fn try_recv_buffered(&mut self) -> Result<Option<T>, NetError> {
        if let Link::Local(link) = &self.conn {
            match crate::local::close_record_in(self.decoder.unread()) {
                None => {}
                Some(None) => return Ok(None),
                Some(Some((reason, len))) => {
                    self.decoder.skip(len);
                    link.closed_by_peer(&reason);
                    return Err(NetError::LinkClosed { reason });
                }
            }
        }
        match self.decoder.decode::<T>() {
            Ok(msg) => Ok(msg),
            Err(e) => Err(self.protocol_error(e.into())),
        }
    }

    fn protocol_error(&self, e: NetError) -> NetError {
        let reason = format!("malformed control stream: {e}");
        tracing::warn!(remote = %self.conn.remote_address(), "{reason}; closing the connection");
        self.conn.close_with(CLOSE_PROTOCOL_ERROR, &reason);
        e
    }
}
