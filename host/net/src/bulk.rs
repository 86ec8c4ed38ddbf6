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
        let (mut recv, len) = self.bulk_request(request, max_len).await?;
        let mut out = BytesMut::with_capacity(len);
        read_segments(&mut recv, len, |segment| out.extend_from_slice(&segment)).await?;
        Ok(out.freeze())
    }

    /// Like [`fetch`](Self::fetch), but returns the response as the received segments (one per
    /// QUIC packet, a few KiB each) without copying them into one buffer.
    pub async fn fetch_segments<Req: Serialize + ?Sized>(
        &self,
        request: &Req,
        max_len: usize,
    ) -> Result<Vec<Bytes>, NetError> {
        let (mut recv, len) = self.bulk_request(request, max_len).await?;
        let mut out = Vec::with_capacity(len / 1024 + 1);
        read_segments(&mut recv, len, |segment| out.push(segment)).await?;
        Ok(out)
    }

    /// Sends the request and reads the response header; returns the stream and the OK length.
    async fn bulk_request<Req: Serialize + ?Sized>(
        &self,
        request: &Req,
        max_len: usize,
    ) -> Result<(quinn::RecvStream, usize), NetError> {
        let payload = postcard::to_stdvec(request)
            .map_err(|e| NetError::Codec(taskhost_proto::CodecError::Encode(e)))?;
        if payload.len() > MAX_BULK_REQUEST {
            return Err(NetError::Codec(taskhost_proto::CodecError::FrameTooLarge {
                size: payload.len() as u64,
                limit: MAX_BULK_REQUEST,
            }));
        }
        let (mut send, mut recv) = self.inner.open_bi().await?;
        send.write_all(&payload).await?;
        send.finish()?;
        let mut header = [0u8; 9];
        recv.read_exact(&mut header).await?;
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&header[1..]);
        let len = u64::from_le_bytes(len_bytes);
        match header[0] {
            BULK_OK => {
                if len > max_len as u64 {
                    let _ = recv.stop(quinn::VarInt::from_u32(0));
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
                read_segments(&mut recv, len as usize, |s| reason.extend_from_slice(&s)).await?;
                Err(NetError::Refused {
                    reason: String::from_utf8_lossy(&reason).into_owned(),
                })
            }
            BULK_NOT_FOUND => Err(NetError::NotFound),
            other => Err(NetError::Protocol(format!(
                "unknown bulk status byte {other}"
            ))),
        }
    }

    /// Waits for the peer to open a bulk stream; `Ok(None)` once the connection is closed
    /// normally.
    pub async fn accept_bulk(&self) -> Result<Option<IncomingBulk>, NetError> {
        match self.inner.accept_bi().await {
            Ok((send, recv)) => Ok(Some(IncomingBulk { send, recv })),
            Err(
                quinn::ConnectionError::ApplicationClosed(_)
                | quinn::ConnectionError::LocallyClosed,
            ) => Ok(None),
            Err(e) => Err(e.into()),
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
pub struct IncomingBulk {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl IncomingBulk {
    /// Reads and decodes the request.
    pub async fn request<Req: DeserializeOwned>(mut self) -> Result<(Req, Responder), NetError> {
        let bytes = match self.recv.read_to_end(MAX_BULK_REQUEST).await {
            Ok(b) => b,
            Err(quinn::ReadToEndError::TooLong) => {
                return Err(NetError::Protocol(format!(
                    "bulk request longer than {MAX_BULK_REQUEST} bytes"
                )));
            }
            Err(quinn::ReadToEndError::Read(e)) => return Err(e.into()),
        };
        let request = decode_payload::<Req>(&bytes)?;
        Ok((request, Responder { send: self.send }))
    }
}

/// Answers one bulk request.
#[derive(Debug)]
pub struct Responder {
    send: quinn::SendStream,
}

impl Responder {
    /// Sends the chunk (without copying it) and finishes the stream.
    pub async fn send(mut self, data: Bytes) -> Result<(), NetError> {
        let mut header = [0u8; 9];
        header[0] = BULK_OK;
        header[1..].copy_from_slice(&(data.len() as u64).to_le_bytes());
        self.send.write_all(&header).await?;
        self.send.write_chunk(data).await?;
        self.send.finish()?;
        Ok(())
    }

    /// Sends a chunk held as several buffers (for example as received by
    /// [`Connection::fetch_segments`]) without copying them, and finishes the stream.
    pub async fn send_segments(mut self, mut segments: Vec<Bytes>) -> Result<(), NetError> {
        let len: usize = segments.iter().map(Bytes::len).sum();
        let mut header = [0u8; 9];
        header[0] = BULK_OK;
        header[1..].copy_from_slice(&(len as u64).to_le_bytes());
        self.send.write_all(&header).await?;
        self.send.write_all_chunks(&mut segments).await?;
        self.send.finish()?;
        Ok(())
    }

    /// Answers that the requested item is not held here.
    pub async fn not_found(mut self) -> Result<(), NetError> {
        let mut msg = [0u8; 9];
        msg[0] = BULK_NOT_FOUND;
        self.send.write_all(&msg).await?;
        self.send.finish()?;
        Ok(())
    }

    /// Refuses the request with a reason (truncated to [`MAX_REFUSAL`] bytes).
    pub async fn refuse(mut self, reason: &str) -> Result<(), NetError> {
        let mut cut = reason.len().min(MAX_REFUSAL);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let reason = &reason.as_bytes()[..cut];
        let mut msg = Vec::with_capacity(9 + reason.len());
        msg.push(BULK_REFUSED);
        msg.extend_from_slice(&(reason.len() as u64).to_le_bytes());
        msg.extend_from_slice(reason);
        self.send.write_all(&msg).await?;
        self.send.finish()?;
        Ok(())
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
