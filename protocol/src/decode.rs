//! Reading messages: every archive is validated (bytecheck) and then held to the limits in
//! [`crate::message`] before the caller sees it. Bytes from the network are untrusted; a
//! reference handed out here is safe to read field by field.

use rkyv::rancor;

use crate::codes::{CloseCode, ErrorCode};
use crate::message::*;

/// Why a message was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a valid archive of the expected type.
    #[error("malformed message: {0}")]
    Malformed(#[source] rancor::Error),
    /// The archive is well formed but a field is out of its limits. `request_id` is set
    /// when the message carries one, so the refusal can answer that request.
    #[error("field `{field}` {problem}")]
    InvalidField {
        /// The request the message carries, if any.
        request_id: Option<u32>,
        /// The field, as named in the message type.
        field: &'static str,
        /// What is wrong with it.
        problem: FieldProblem,
    },
}

/// What is wrong with a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FieldProblem {
    /// Longer than allowed (bytes for strings, entries for lists).
    #[error("has {len}, at most {max} allowed")]
    TooLong {
        /// The actual length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Empty where a value is required.
    #[error("is empty")]
    Empty,
    /// NaN or infinite.
    #[error("is not a finite number")]
    NotFinite,
    /// Below zero.
    #[error("is negative")]
    Negative,
}

impl DecodeError {
    /// The error code to answer with.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Malformed(_) => ErrorCode::MalformedFrame,
            DecodeError::InvalidField { .. } => ErrorCode::InvalidRequest,
        }
    }

    /// The close code, for errors after which the connection cannot go on (the stream is
    /// no longer trustworthy); `None` when answering the request is enough.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            DecodeError::Malformed(_) => Some(CloseCode::ProtocolViolation),
            DecodeError::InvalidField { .. } => None,
        }
    }
}

/// Reads a `Hello` frame body.
pub fn decode_hello(body: &[u8]) -> Result<&ArchivedHello, DecodeError> {
    let hello = rkyv::access::<ArchivedHello, rancor::Error>(body).map_err(DecodeError::Malformed)?;
    let check = Check { request_id: None };
    check.text("access_token", &hello.access_token, MAX_TOKEN_LEN)?;
    if let Some(resume) = hello.resume_token.as_ref() {
        check.text("resume_token", resume, MAX_SHORT_TOKEN_LEN)?;
    }
    Ok(hello)
}

/// Reads a client message frame body (any frame after `Hello`).
pub fn decode_client(body: &[u8]) -> Result<&ArchivedClientMsg, DecodeError> {
    let msg = rkyv::access::<ArchivedClientMsg, rancor::Error>(body).map_err(DecodeError::Malformed)?;
    match msg {
        ArchivedClientMsg::Enqueue(e) => {
            let check = Check { request_id: Some(e.request_id.to_native()) };
            check.text("mode", &e.mode, MAX_NAME_LEN)?;
            check.count("rtt_ms", e.rtt_ms.len(), MAX_DATACENTERS)?;
            for entry in e.rtt_ms.iter() {
                check.text("rtt_ms.datacenter", &entry.datacenter, MAX_NAME_LEN)?;
                check.non_negative("rtt_ms.rtt_ms", f64::from(entry.rtt_ms.to_native()))?;
            }
        }
        ArchivedClientMsg::Party(p) => {
            let check = Check { request_id: Some(p.request_id.to_native()) };
            match &p.op {
                ArchivedPartyOp::Create(mode) => check.text("mode", mode, MAX_NAME_LEN)?,
                ArchivedPartyOp::Ready(ready) => {
                    // Empty is fine: RTTs are needed only the first time a member readies.
                    check.max_len("rtt_ms", ready.rtt_ms.len(), MAX_DATACENTERS)?;
                    for entry in ready.rtt_ms.iter() {
                        check.text("rtt_ms.datacenter", &entry.datacenter, MAX_NAME_LEN)?;
                        check.non_negative("rtt_ms.rtt_ms", f64::from(entry.rtt_ms.to_native()))?;
                    }
                }
                ArchivedPartyOp::Chat(text) => check.text("text", text, MAX_CHAT_LEN)?,
                ArchivedPartyOp::Get
                | ArchivedPartyOp::Join(_)
                | ArchivedPartyOp::Leave
                | ArchivedPartyOp::Queue
                | ArchivedPartyOp::Dequeue => {}
            }
        }
        ArchivedClientMsg::Cancel(_) | ArchivedClientMsg::TicketStatus(_) | ArchivedClientMsg::RespondToMatch(_) => {}
    }
    Ok(msg)
}

/// Reads a server message frame body (the SDK's side).
pub fn decode_server(body: &[u8]) -> Result<&ArchivedServerMsg, DecodeError> {
    let msg = rkyv::access::<ArchivedServerMsg, rancor::Error>(body).map_err(DecodeError::Malformed)?;
    let no_request = Check { request_id: None };
    match msg {
        ArchivedServerMsg::Welcome(w) => {
            no_request.text("resume_token", &w.resume_token, MAX_SHORT_TOKEN_LEN)?;
            if let Some(t) = w.ticket.as_ref() {
                no_request.text("ticket.mode", &t.mode, MAX_NAME_LEN)?;
            }
            no_request.count("datacenters", w.datacenters.len(), MAX_DATACENTERS)?;
            for dc in w.datacenters.iter() {
                no_request.text("datacenters.name", &dc.name, MAX_NAME_LEN)?;
                no_request.text("datacenters.ping_addr", &dc.ping_addr, MAX_ADDR_LEN)?;
            }
        }
        ArchivedServerMsg::TicketStatus(s) => {
            if let Some(t) = s.ticket.as_ref() {
                let check = Check { request_id: Some(s.request_id.to_native()) };
                check.text("ticket.mode", &t.mode, MAX_NAME_LEN)?;
            }
        }
        ArchivedServerMsg::MatchFound(m) => {
            no_request.text("mode", &m.mode, MAX_NAME_LEN)?;
            no_request.text("datacenter", &m.datacenter, MAX_NAME_LEN)?;
            no_request.max_len("server_addr", m.server_addr.len(), MAX_ADDR_LEN)?;
            no_request.max_len("connect_token", m.connect_token.len(), MAX_SHORT_TOKEN_LEN)?;
            no_request.count("teams", m.teams.len(), MAX_PLAYERS)?;
            let players: usize = m.teams.iter().map(|t| t.players.len()).sum();
            no_request.count("teams.players", players, MAX_PLAYERS)?;
        }
        ArchivedServerMsg::MatchAbandoned(m) => {
            if let Some(t) = m.ticket.as_ref() {
                no_request.text("ticket.mode", &t.mode, MAX_NAME_LEN)?;
            }
        }
        ArchivedServerMsg::Error(e) => {
            let check = Check { request_id: e.request_id.as_ref().map(|id| id.to_native()) };
            check.max_len("message", e.message.len(), MAX_MESSAGE_LEN)?;
        }
        ArchivedServerMsg::MatchConfirmed(m) => {
            no_request.max_len("server_addr", m.server_addr.len(), MAX_ADDR_LEN)?;
            no_request.max_len("connect_token", m.connect_token.len(), MAX_SHORT_TOKEN_LEN)?;
        }
        ArchivedServerMsg::PartyReply(r) => {
            if let Some(p) = r.party.as_ref() {
                let check = Check { request_id: Some(r.request_id.to_native()) };
                check.text("party.mode", &p.mode, MAX_NAME_LEN)?;
                check.count("party.members", p.members.len(), MAX_PLAYERS)?;
            }
        }
        ArchivedServerMsg::PartyEvent(e) => {
            no_request.max_len("kind", e.kind.len(), MAX_NAME_LEN)?;
            no_request.max_len("text", e.text.len(), MAX_CHAT_LEN.max(MAX_ADDR_LEN))?;
            no_request.max_len("connect_token", e.connect_token.len(), MAX_SHORT_TOKEN_LEN)?;
        }
        ArchivedServerMsg::Enqueued(_) | ArchivedServerMsg::Cancelled(_) | ArchivedServerMsg::MatchResponded(_) => {}
    }
    Ok(msg)
}

/// Reads a datagram.
pub fn decode_datagram(bytes: &[u8]) -> Result<&ArchivedDatagram, DecodeError> {
    rkyv::access::<ArchivedDatagram, rancor::Error>(bytes).map_err(DecodeError::Malformed)
}

/// Field checks that remember which request they are for.
struct Check {
    request_id: Option<u32>,
}

impl Check {
    fn fail(&self, field: &'static str, problem: FieldProblem) -> DecodeError {
        DecodeError::InvalidField { request_id: self.request_id, field, problem }
    }

    /// A required string of at most `max` bytes.
    fn text(&self, field: &'static str, s: &str, max: usize) -> Result<(), DecodeError> {
        if s.is_empty() {
            return Err(self.fail(field, FieldProblem::Empty));
        }
        self.max_len(field, s.len(), max)
    }

    fn max_len(&self, field: &'static str, len: usize, max: usize) -> Result<(), DecodeError> {
        if len > max { Err(self.fail(field, FieldProblem::TooLong { len, max })) } else { Ok(()) }
    }

    /// A required list of at most `max` entries.
    fn count(&self, field: &'static str, len: usize, max: usize) -> Result<(), DecodeError> {
        if len == 0 {
            return Err(self.fail(field, FieldProblem::Empty));
        }
        self.max_len(field, len, max)
    }

    fn non_negative(&self, field: &'static str, x: f64) -> Result<(), DecodeError> {
        if !x.is_finite() {
            Err(self.fail(field, FieldProblem::NotFinite))
        } else if x < 0.0 {
            Err(self.fail(field, FieldProblem::Negative))
        } else {
            Ok(())
        }
    }
}
