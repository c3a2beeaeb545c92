//! Rally's client ↔ edge wire protocol.
//!
//! Game clients talk to an edge over QUIC (ALPN [`ALPN`]). One bidirectional control
//! stream per connection carries frames: a `u32` little-endian body length (at most
//! [`MAX_FRAME_LEN`]) and then one rkyv-archived message. The client's first frame is a
//! [`Hello`]; every later one a [`ClientMsg`]. The edge answers with [`ServerMsg`] frames:
//! each request (it carries a `request_id`) gets exactly one reply, and pushes such as
//! [`MatchFound`] carry no request id. QUIC datagrams carry [`Datagram`] pings for RTT
//! measurement.
//!
//! The archive format is pinned in the workspace manifest: little-endian, unaligned,
//! 32-bit relative pointers — so a frame can be read where it lies in a network buffer.
//! Receivers never touch archived bytes without [`decode_hello`], [`decode_client`],
//! [`decode_server`] or [`decode_datagram`], which validate the archive and the field
//! limits and answer bad bytes with a typed [`DecodeError`]. Faults map to an
//! [`ErrorCode`] reply or, when the stream cannot go on, a QUIC application
//! [`CloseCode`].
//!
//! This crate knows no sockets, no async runtime and no engine types: the edge and the SDK
//! own the I/O and translate to and from their own types.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod codes;
mod decode;
mod frame;
mod message;

pub use codes::{CloseCode, ErrorCode};
pub use decode::{DecodeError, FieldProblem, decode_client, decode_datagram, decode_hello, decode_server};
pub use frame::{
    EncodeError, FrameError, FrameReader, HEADER_LEN, MAX_FRAME_LEN, body_len, encode_client, encode_datagram,
    encode_hello, encode_server,
};
pub use message::*;

/// rkyv, re-exported so users can deserialize archived messages to owned ones
/// (`rally_protocol::rkyv::deserialize`) with the same version this crate archives with.
pub use rkyv;
