//! Framing on the control stream: a `u32` little-endian length, then that many bytes of
//! one archived message. Datagrams are not framed (one message per datagram).
//!
//! Sans-IO: [`FrameReader`] takes whatever bytes a read returned and hands out whole
//! frames; the edge and the SDK own the sockets.

use rkyv::rancor;

use crate::message::{ClientMsg, Datagram, Hello, ServerMsg};

/// Longest frame body (the archived message), in bytes.
pub const MAX_FRAME_LEN: usize = 64 * 1024;
/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// A frame that cannot be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix is over [`MAX_FRAME_LEN`]. Raised as soon as the prefix is read,
    /// before any of the body is buffered.
    #[error("frame of {len} bytes is over the {MAX_FRAME_LEN}-byte limit")]
    TooLarge {
        /// The announced length.
        len: usize,
    },
    /// A zero-length frame (no message is empty).
    #[error("empty frame")]
    Empty,
}

/// A message that cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The archived message would be over [`MAX_FRAME_LEN`].
    #[error("message of {len} bytes is over the {MAX_FRAME_LEN}-byte frame limit")]
    TooLarge {
        /// The archived length.
        len: usize,
    },
    /// rkyv could not archive it.
    #[error("cannot archive message: {0}")]
    Archive(#[source] rancor::Error),
}

/// The body length a frame header announces.
pub fn body_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(header) as usize;
    match len {
        0 => Err(FrameError::Empty),
        len if len > MAX_FRAME_LEN => Err(FrameError::TooLarge { len }),
        len => Ok(len),
    }
}

/// Appends `Hello` as one frame to `out`. On error `out` is left as it was.
pub fn encode_hello(msg: &Hello, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    encode_framed(out, |out| rkyv::api::high::to_bytes_in::<_, rancor::Error>(msg, out).map(drop))
}

/// Appends a client message as one frame to `out`. On error `out` is left as it was.
pub fn encode_client(msg: &ClientMsg, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    encode_framed(out, |out| rkyv::api::high::to_bytes_in::<_, rancor::Error>(msg, out).map(drop))
}

/// Appends a server message as one frame to `out`. On error `out` is left as it was.
pub fn encode_server(msg: &ServerMsg, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    encode_framed(out, |out| rkyv::api::high::to_bytes_in::<_, rancor::Error>(msg, out).map(drop))
}

/// A datagram's bytes (unframed).
pub fn encode_datagram(msg: &Datagram) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(msg, &mut out)
        .expect("a datagram of two integers always archives");
    out
}

/// Archives into `out` behind a header placeholder, then fills the header in. The archive
/// format is unaligned, so the body may start at any offset.
fn encode_framed(
    out: &mut Vec<u8>,
    archive: impl FnOnce(&mut Vec<u8>) -> Result<(), rancor::Error>,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(e) = archive(out) {
        out.truncate(start);
        return Err(EncodeError::Archive(e));
    }
    let len = out.len() - start - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(EncodeError::TooLarge { len });
    }
    out[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Reassembles frames from a byte stream read in arbitrary pieces.
///
/// It buffers at most one partial frame plus what one `push` brings; after an error the
/// stream is unusable (the connection should close) and every later call repeats it.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already handed out.
    consumed: usize,
    failed: Option<FrameError>,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.consumed > 0 && self.consumed >= self.buf.len() / 2 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame's body, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let rest = &self.buf[self.consumed..];
        let Some(header) = rest.first_chunk::<HEADER_LEN>() else { return Ok(None) };
        let len = match body_len(*header) {
            Ok(len) => len,
            Err(e) => {
                self.failed = Some(e.clone());
                return Err(e);
            }
        };
        if rest.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let start = self.consumed + HEADER_LEN;
        self.consumed = start + len;
        Ok(Some(&self.buf[start..start + len]))
    }

    /// Bytes buffered but not yet handed out.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.consumed
    }
}
