//! Bulk transfers: one bidirectional stream per chunk, so that large transfers never delay the
//! control stream.
//!
//! Wire format of one bulk stream:
//! - request (opener to server): the postcard encoding of the request, then the stream is
//!   finished; at most [`MAX_BULK_REQUEST`] bytes;
//! - response: one status byte ([`BULK_OK`], [`BULK_NOT_FOUND`] or [`BULK_REFUSED`]), a `u64`
//!   little-endian length, then that many bytes (the chunk, nothing, or a UTF-8 reason of at
//!   most [`MAX_REFUSAL`] bytes).

use std::future::Future;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use taskhost_proto::decode_payload;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::endpoint::Link;
use crate::local::LocalLink;
use crate::local_stream::LocalStream;
use crate::{Connection, NetError};

/// Status byte: the chunk follows.
pub const BULK_OK: u8 = 0;
/// Status byte: a refusal reason follows.
pub const BULK_REFUSED: u8 = 1;
/// Status byte: the server does not hold what was asked for (length 0).
pub const BULK_NOT_FOUND: u8 = 2;
/// Largest accepted bulk request.
pub const MAX_BULK_REQUEST: usize = 64 * 1024;
/// Largest accepted refusal reason.
pub const MAX_REFUSAL: usize = 4096;

impl Connection {
    /// Sends `request` on a new stream and returns the response as one contiguous buffer.
    ///
    /// Fails with [`NetError::NotFound`] if the peer does not hold it, [`NetError::Refused`] if
    /// it refused, [`NetError::TooLarge`] if the announced length exceeds `max_len` (checked
    /// before allocating).
    pub async fn fetch<Req: Serialize + ?Sized>(
        &self,
        request: &Req,
        max_len: usize,
    ) -> Result<Bytes, NetError> {
        let mut segments = self.fetch_segments(request, max_len).await?;
        if segments.len() == 1 {
            return Ok(segments.pop().unwrap_or_default());
        }
        let mut out = BytesMut::with_capacity(segments.iter().map(Bytes::len).sum());
        for segment in segments {
            out.extend_from_slice(&segment);
        }
        Ok(out.freeze())
    }

    /// Like [`fetch`](Self::fetch), but returns the response as the received segments (one per
    /// QUIC packet, a few KiB each; one on a same-host link) without copying them into one
    /// buffer.
    pub async fn fetch_segments<Req: Serialize + ?Sized>(
        &self,
        request: &Req,
        max_len: usize,
    ) -> Result<Vec<Bytes>, NetError> {
        let (recv, len) = self.bulk_request(request, max_len).await?;
        let mut out = Vec::with_capacity(len / 1024 + 1);
        recv.read_body(len, |segment| out.push(segment)).await?;
        Ok(out)
    }

    /// Sends the request and reads the response header; returns the stream and the OK length.
    async fn bulk_request<Req: Serialize + ?Sized>(
        &self,
        request: &Req,
        max_len: usize,
    ) -> Result<(BulkRecv, usize), NetError> {
        let payload = postcard::to_stdvec(request)
            .map_err(|e| NetError::Codec(taskhost_proto::CodecError::Encode(e)))?;
        if payload.len() > MAX_BULK_REQUEST {
            return Err(NetError::Codec(taskhost_proto::CodecError::FrameTooLarge {
                size: payload.len() as u64,
                limit: MAX_BULK_REQUEST,
            }));
        }
        let recv = match &self.inner {
            Link::Quic(conn) => {
                let (mut send, recv) = conn.open_bi().await?;
                send.write_all(&payload).await?;
                send.finish()?;
                (BulkRecv::Quic(recv), [0u8; 9])
            }
            Link::Local(link) => {
                let mut framed = Vec::with_capacity(4 + payload.len());
                framed.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                framed.extend_from_slice(&payload);
                let permit = link.bulk_permit().await?;
                // An idle connection may have been closed by a peer that left: then drop the
                // others too and try once on a new one.
                let (stream, header, rest) = match link.idle_stream() {
                    Some(stream) => match local_exchange(stream, &framed).await {
                        Ok(answered) => answered,
                        Err(_) => {
                            link.clear_idle();
                            local_exchange(link.new_bulk_stream().await?, &framed).await?
                        }
                    },
                    None => local_exchange(link.new_bulk_stream().await?, &framed).await?,
                };
                (BulkRecv::Local(stream, rest, link.clone(), permit), header)
            }
        };
        let (mut recv, header) = match recv {
            (BulkRecv::Quic(mut recv), _) => {
                let mut header = [0u8; 9];
                recv.read_exact(&mut header).await?;
                (BulkRecv::Quic(recv), header)
            }
            local => local,
        };
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&header[1..]);
        let len = u64::from_le_bytes(len_bytes);
        match header[0] {
            BULK_OK => {
                if len > max_len as u64 {
                    if let BulkRecv::Quic(recv) = &mut recv {
                        let _ = recv.stop(quinn::VarInt::from_u32(0));
                    }
                    return Err(NetError::TooLarge {
                        size: len,
                        limit: max_len,
                    });
                }
                Ok((recv, len as usize))
            }
            BULK_REFUSED => {
                if len > MAX_REFUSAL as u64 {
                    return Err(NetError::Protocol(format!(
                        "refusal reason of {len} bytes exceeds {MAX_REFUSAL}"
                    )));
                }
                let mut reason = Vec::with_capacity(len as usize);
                recv.read_body(len as usize, |s| reason.extend_from_slice(&s))
                    .await?;
                Err(NetError::Refused {
                    reason: String::from_utf8_lossy(&reason).into_owned(),
                })
            }
            BULK_NOT_FOUND => {
                recv.read_body(0, |_| {}).await?;
                Err(NetError::NotFound)
            }
            other => Err(NetError::Protocol(format!(
                "unknown bulk status byte {other}"
            ))),
        }
    }

    /// Waits for the peer to open a bulk stream; `Ok(None)` once the connection is closed
    /// normally.
    pub async fn accept_bulk(&self) -> Result<Option<IncomingBulk>, NetError> {
        let conn = match &self.inner {
            Link::Quic(conn) => conn,
            Link::Local(link) => return Ok(link.accept_bulk().await),
        };
        match conn.accept_bi().await {
            Ok((send, recv)) => Ok(Some(IncomingBulk(Incoming::Quic { send, recv }))),
            Err(
                quinn::ConnectionError::ApplicationClosed(_)
                | quinn::ConnectionError::LocallyClosed,
            ) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Bytes read at once after a same-host request: the header and, for a small answer, its
/// body too, in one system call instead of two.
const LOCAL_ANSWER_PREFETCH: usize = 16 * 1024;

/// Sends a framed request on a same-host bulk connection and reads the answer's header, and
/// whatever of the body came with it (the connection carries nothing else until the answer
/// is read).
async fn local_exchange(
    mut stream: LocalStream,
    framed: &[u8],
) -> Result<(LocalStream, [u8; 9], BytesMut), NetError> {
    stream.write_all(framed).await?;
    let mut buf = BytesMut::with_capacity(LOCAL_ANSWER_PREFETCH);
    while buf.len() < 9 {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(NetError::Protocol(
                "bulk connection ended before the answer's header".into(),
            ));
        }
    }
    let rest = buf.split_off(9);
    let mut header = [0u8; 9];
    header.copy_from_slice(&buf);
    Ok((stream, header, rest))
}

/// The response side of one bulk request.
enum BulkRecv {
    Quic(quinn::RecvStream),
    /// A same-host bulk connection (the start of the body already read, and its slot),
    /// returned to its link once the response is read.
    Local(
        LocalStream,
        BytesMut,
        std::sync::Arc<LocalLink>,
        tokio::sync::OwnedSemaphorePermit,
    ),
}

impl BulkRecv {
    /// Reads the `len` bytes of the body into `sink`; a same-host connection then goes back to
    /// its link for the next request.
    async fn read_body(self, len: usize, mut sink: impl FnMut(Bytes)) -> Result<(), NetError> {
        match self {
            BulkRecv::Quic(mut recv) => read_segments(&mut recv, len, sink).await,
            BulkRecv::Local(mut stream, read, link, _permit) => {
                if read.len() > len {
                    return Err(NetError::Protocol(format!(
                        "bulk answer of {len} bytes followed by {} more",
                        read.len() - len
                    )));
                }
                if len > 0 {
                    // Read straight into spare capacity (no zeroing of a buffer about to be
                    // overwritten), after what came with the header.
                    let mut body = read;
                    body.reserve(len - body.len());
                    while body.len() < len {
                        let mut limited = (&mut stream).take((len - body.len()) as u64);
                        if limited.read_buf(&mut body).await? == 0 {
                            return Err(NetError::Protocol(format!(
                                "bulk connection ended after {} of {len} bytes",
                                body.len()
                            )));
                        }
                    }
                    sink(body.freeze());
                }
                link.reuse(stream);
                Ok(())
            }
        }
    }
}

/// Reads exactly `len` bytes, handing each received segment to `sink` without copying
/// (quinn hands out the received packets' payloads as `Bytes`).
async fn read_segments(
    recv: &mut quinn::RecvStream,
    len: usize,
    mut sink: impl FnMut(Bytes),
) -> Result<(), NetError> {
    let mut got = 0;
    let mut chunks: [Bytes; 32] = std::array::from_fn(|_| Bytes::new());
    while got < len {
        match recv.read_chunks(&mut chunks).await? {
            Some(n) => {
                for chunk in &mut chunks[..n] {
                    let mut chunk = std::mem::take(chunk);
                    chunk.truncate(len - got);
                    got += chunk.len();
                    sink(chunk);
                }
            }
            None => {
                return Err(NetError::Protocol(format!(
                    "bulk stream ended after {got} of {len} bytes"
                )));
            }
        }
    }
    Ok(())
}

/// A bulk stream opened by the peer, whose request has not been read yet.
#[derive(Debug)]
pub struct IncomingBulk(Incoming);

#[derive(Debug)]
enum Incoming {
    Quic {
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    },
    Local {
        request: Vec<u8>,
        stream: LocalStream,
        back: oneshot::Sender<LocalStream>,
    },
}

impl IncomingBulk {
    /// A request read from a same-host bulk connection; answering it hands the connection
    /// back through `back`.
    pub(crate) fn local(
        request: Vec<u8>,
        stream: LocalStream,
        back: oneshot::Sender<LocalStream>,
    ) -> Self {
        Self(Incoming::Local {
            request,
            stream,
            back,
        })
    }

    /// Reads and decodes the request.
    pub async fn request<Req: DeserializeOwned>(self) -> Result<(Req, Responder), NetError> {
        let (send, mut recv) = match self.0 {
            Incoming::Quic { send, recv } => (send, recv),
            Incoming::Local {
                request,
                stream,
                back,
            } => {
                let responder = Responder(Respond::Local { stream, back });
                return match decode_payload::<Req>(&request) {
                    Ok(request) => Ok((request, responder)),
                    Err(e) => {
                        // Only this request fails: the connection stays usable.
                        let _ = responder
                            .refuse(&format!("malformed bulk request: {e}"))
                            .await;
                        Err(e.into())
                    }
                };
            }
        };
        let bytes = match recv.read_to_end(MAX_BULK_REQUEST).await {
            Ok(b) => b,
            Err(quinn::ReadToEndError::TooLong) => {
                return Err(NetError::Protocol(format!(
                    "bulk request longer than {MAX_BULK_REQUEST} bytes"
                )));
            }
            Err(quinn::ReadToEndError::Read(e)) => return Err(e.into()),
        };
        let request = decode_payload::<Req>(&bytes)?;
        Ok((request, Responder(Respond::Quic(send))))
    }
}

/// Answers one bulk request.
#[derive(Debug)]
pub struct Responder(Respond);

#[derive(Debug)]
enum Respond {
    Quic(quinn::SendStream),
    Local {
        stream: LocalStream,
        back: oneshot::Sender<LocalStream>,
    },
}

impl Responder {
    /// Writes the header and `segments`, then finishes the stream (QUIC) or hands the
    /// connection back for the next request (same host).
    async fn respond(self, status: u8, mut segments: Vec<Bytes>) -> Result<(), NetError> {
        let len: usize = segments.iter().map(Bytes::len).sum();
        let mut header = [0u8; 9];
        header[0] = status;
        header[1..].copy_from_slice(&(len as u64).to_le_bytes());
        match self.0 {
            Respond::Quic(mut send) => {
                send.write_all(&header).await?;
                send.write_all_chunks(&mut segments).await?;
                send.finish()?;
            }
            Respond::Local { mut stream, back } => {
                if len <= 64 * 1024 {
                    // One write for a small answer.
                    let mut msg = Vec::with_capacity(9 + len);
                    msg.extend_from_slice(&header);
                    segments.iter().for_each(|s| msg.extend_from_slice(s));
                    stream.write_all(&msg).await?;
                } else {
                    stream.write_all(&header).await?;
                    for segment in &segments {
                        stream.write_all(segment).await?;
                    }
                }
                let _ = back.send(stream);
            }
        }
        Ok(())
    }

    /// Sends the chunk (without copying it) and finishes the stream.
    pub async fn send(self, data: Bytes) -> Result<(), NetError> {
        self.respond(BULK_OK, vec![data]).await
    }

    /// Sends a chunk held as several buffers (for example as received by
    /// [`Connection::fetch_segments`]) without copying them, and finishes the stream.
    pub async fn send_segments(self, segments: Vec<Bytes>) -> Result<(), NetError> {
        self.respond(BULK_OK, segments).await
    }

    /// Answers that the requested item is not held here.
    pub async fn not_found(self) -> Result<(), NetError> {
        self.respond(BULK_NOT_FOUND, Vec::new()).await
    }

    /// Refuses the request with a reason (truncated to [`MAX_REFUSAL`] bytes).
    pub async fn refuse(self, reason: &str) -> Result<(), NetError> {
        let mut cut = reason.len().min(MAX_REFUSAL);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let reason = Bytes::copy_from_slice(&reason.as_bytes()[..cut]);
        self.respond(BULK_REFUSED, vec![reason]).await
    }
}

/// Serves bulk requests of `conn` until it closes: each request runs `handler` in its own task;
/// `Ok(Some(bytes))` is sent, `Ok(None)` answers "not found", `Err(reason)` refuses. A malformed request is logged and its stream dropped.
pub fn serve_bulk<Req, F, Fut>(conn: Connection, handler: F) -> tokio::task::JoinHandle<()>
where
    Req: DeserializeOwned + Send + 'static,
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<Bytes>, String>> + Send + 'static,
{
    let handler = std::sync::Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let incoming = match conn.accept_bulk().await {
                Ok(Some(incoming)) => incoming,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(remote = %conn.remote_address(), error = %e, "bulk serving ended");
                    return;
                }
            };
            let handler = handler.clone();
            let remote = conn.remote_address();
            tokio::spawn(async move {
                match incoming.request::<Req>().await {
                    Ok((request, responder)) => {
                        let result = match handler(request).await {
                            Ok(Some(data)) => responder.send(data).await,
                            Ok(None) => responder.not_found().await,
                            Err(reason) => responder.refuse(&reason).await,
                        };
                        if let Err(e) = result {
                            tracing::debug!(%remote, error = %e, "bulk response failed");
                        }
                    }
                    Err(e) => tracing::warn!(%remote, error = %e, "malformed bulk request"),
                }
            });
        }
    })
}
