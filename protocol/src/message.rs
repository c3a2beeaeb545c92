//! The message set. Every type here is archived with rkyv; the wire holds the archived
//! bytes, and a receiver only ever reads them through [`crate::decode_hello`],
//! [`crate::decode_client`], [`crate::decode_server`] or [`crate::decode_datagram`], which
//! validate the archive (bytecheck) and the limits below before handing out a reference.
//!
//! Layout rule: `Hello` is the first frame of every connection and is decoded before the
//! version is known, so its layout never changes: new fields go into `ClientMsg` variants
//! of a new protocol version, not into `Hello`.

use rkyv::{Archive, Deserialize, Serialize};

/// The protocol version this crate speaks. Version 2 added ready checks and matches that
/// fall through: `ClientMsg::RespondToMatch`, `ServerMsg::{MatchAbandoned,
/// MatchResponded, MatchConfirmed}` and `MatchFound::accept_by_unix_ms`; a version-1
/// client could not read them.
pub const PROTOCOL_VERSION: u16 = 2;
/// The ALPN identifier of the protocol over QUIC.
pub const ALPN: &[u8] = b"rally/1";

/// Longest access token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest resume token or connect token, in bytes.
pub const MAX_SHORT_TOKEN_LEN: usize = 512;
/// Longest mode or datacenter name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest server address, in bytes.
pub const MAX_ADDR_LEN: usize = 256;
/// Most datacenters in one RTT map or datacenter list.
pub const MAX_DATACENTERS: usize = 64;
/// Most players in one match.
pub const MAX_PLAYERS: usize = 64;
/// Longest error message, in bytes.
pub const MAX_MESSAGE_LEN: usize = 1024;
/// Longest party chat message, in bytes.
pub const MAX_CHAT_LEN: usize = 500;

/// The first frame a client sends on its control stream.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct Hello {
    /// The version the client speaks; the edge answers a different one with
    /// [`crate::ErrorCode::UnsupportedVersion`] and closes.
    pub protocol_version: u16,
    /// A JWT access token (EdDSA) issued by the admin API, or by `rally token` in dev.
    pub access_token: String,
    /// Set when reconnecting after a drop: the token from the last `Welcome`, so the
    /// waiting ticket is kept.
    pub resume_token: Option<String>,
}

/// Every later frame from the client.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub enum ClientMsg {
    /// Queue for a mode. Answered by `Enqueued` or `Error`.
    Enqueue(Enqueue),
    /// Leave the queue. Answered by `Cancelled` or `Error`.
    Cancel(Cancel),
    /// Ask for the state of this player's ticket. Answered by `TicketStatus`.
    TicketStatus(TicketStatusRequest),
    /// Accept or decline a match found with a ready check (`MatchFound::accept_by_unix_ms`
    /// not 0). Answered by `MatchResponded` or `Error`. (Version 2.)
    RespondToMatch(RespondToMatch),
    /// A party operation, as over the admin API. Answered by `PartyReply` or `Error`
    /// (`PartyRefused`, with the admin API's code in the message). (Version 2.)
    Party(PartyRequest),
}

/// A party operation on the player's behalf.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct PartyRequest {
    /// Chosen by the client; echoed in the reply.
    pub request_id: u32,
    /// What to do.
    pub op: PartyOp,
}

/// The party operations; all but `Create` and `Join` are about the player's own party.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub enum PartyOp {
    /// Start a party for this mode and lead it.
    Create(String),
    /// The player's party.
    Get,
    /// Join the party with this id.
    Join(u64),
    /// Leave the party.
    Leave,
    /// Ready (with measured RTTs) or unready.
    Ready(PartyReady),
    /// Queue the party (leader only, everyone ready).
    Queue,
    /// Leave the queue (leader only).
    Dequeue,
    /// Say this to the party (at most 500 bytes).
    Chat(String),
}

/// Ready or not, with the RTTs the client measured.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct PartyReady {
    /// Ready or not.
    pub ready: bool,
    /// RTT per datacenter (needed the first time).
    pub rtt_ms: Vec<DatacenterRtt>,
}

/// A player's answer to a ready check.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct RespondToMatch {
    /// Chosen by the client; echoed in the reply.
    pub request_id: u32,
    /// The match from `MatchFound`.
    pub match_id: u64,
    /// Play it (`true`) or not. Declining sends the others back to the queue and keeps
    /// this player out of it for the mode's cooldown.
    pub accept: bool,
}

/// Queue for `mode` with the RTTs the client measured.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct Enqueue {
    /// Chosen by the client; echoed in the reply.
    pub request_id: u32,
    /// A mode name from the server's rules.
    pub mode: String,
    /// Measured round-trip time to each datacenter the client can reach.
    pub rtt_ms: Vec<DatacenterRtt>,
}

/// One entry of an RTT map.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct DatacenterRtt {
    /// A datacenter name from the server's rules (see `Welcome::datacenters`).
    pub datacenter: String,
    /// Round-trip time in milliseconds; finite and not negative.
    pub rtt_ms: f32,
}

/// Leave the queue.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct Cancel {
    /// Chosen by the client; echoed in the reply.
    pub request_id: u32,
    /// The ticket from `Enqueued`.
    pub ticket_id: u64,
}

/// Ask for this player's ticket.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct TicketStatusRequest {
    /// Chosen by the client; echoed in the reply.
    pub request_id: u32,
}

/// Every frame from the edge.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub enum ServerMsg {
    /// The answer to a good `Hello`.
    Welcome(Welcome),
    /// The answer to `Enqueue`.
    Enqueued(Enqueued),
    /// The answer to `Cancel`.
    Cancelled(Cancelled),
    /// The answer to `TicketStatus`.
    TicketStatus(TicketStatus),
    /// Pushed (no request id) when the player's ticket is matched.
    MatchFound(MatchFound),
    /// The answer to a request that failed, or (without request id) to a bad `Hello` or
    /// a connection-level fault, just before the edge closes.
    Error(ErrorReply),
    /// Pushed (no request id) when a match the player was told of fell through: its game
    /// server stopped answering, or someone declined or ignored its ready check. The
    /// player is queued again with the wait they had served (their windows stay as wide
    /// as they had grown), unless they were the one who refused (`ticket: None`).
    /// (Version 2; variants are only ever added at the end.)
    MatchAbandoned(MatchAbandoned),
    /// The answer to `RespondToMatch`. (Version 2.)
    MatchResponded(MatchResponded),
    /// Pushed (no request id) when every player accepted a ready-checked match: where to
    /// play it. (Version 2.)
    MatchConfirmed(MatchConfirmed),
    /// The answer to `Party`: the player's party after it, if they are in one. (Version 2.)
    PartyReply(PartyReply),
    /// Pushed (no request id): something happened to the player's party. (Version 2.)
    PartyEvent(PartyEvent),
}

/// The answer to a party operation.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct PartyReply {
    /// From the request.
    pub request_id: u32,
    /// The party after the operation; `None` once the player left it.
    pub party: Option<PartyState>,
}

/// A party.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct PartyState {
    /// Its id (others join with it).
    pub party_id: u64,
    /// Its mode.
    pub mode: String,
    /// The leader.
    pub leader_id: u64,
    /// Members in joining order.
    pub members: Vec<PartyMember>,
    /// In the queue.
    pub queued: bool,
}

/// One member.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct PartyMember {
    /// The player.
    pub player_id: u64,
    /// Ready to queue.
    pub ready: bool,
}

/// Something that happened to the player's party (the same events as the admin API's
/// party WebSocket).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct PartyEvent {
    /// The party.
    pub party_id: u64,
    /// `member_joined`, `member_left`, `leader_changed`, `ready`, `queued`, `dequeued`,
    /// `match_found`, `match_confirmed`, `match_abandoned`, `chat`, `disbanded`.
    pub kind: String,
    /// The player it is about (the chat's author), or 0.
    pub player_id: u64,
    /// The match it is about, or 0.
    pub match_id: u64,
    /// `ready`: now ready; `match_abandoned`: the party is queued again.
    pub flag: bool,
    /// `chat`: the text; `dequeued`: why; `match_found`/`match_confirmed`: the game
    /// server's address.
    pub text: String,
    /// `match_found`/`match_confirmed`: this player's token for the game server.
    pub connect_token: String,
}

/// `RespondToMatch` was taken.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct MatchResponded {
    /// From the request.
    pub request_id: u32,
    /// The match.
    pub match_id: u64,
}

/// Everyone accepted: the match is on.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct MatchConfirmed {
    /// The match from `MatchFound`.
    pub match_id: u64,
    /// `host:port` of the game server (empty when none had room).
    pub server_addr: String,
    /// This player's token for the game server (empty without a server).
    pub connect_token: String,
}

/// The edge accepted the `Hello`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct Welcome {
    /// The version the edge speaks (equal to the client's).
    pub protocol_version: u16,
    /// The player the access token names.
    pub player_id: u64,
    /// Present this in `Hello::resume_token` after a dropped connection to keep the ticket.
    pub resume_token: String,
    /// Whether this connection resumed an earlier one.
    pub resumed: bool,
    /// The ticket carried over by a resume, if it is still waiting.
    pub ticket: Option<WaitingTicket>,
    /// Datacenters the client should measure its RTT to, with where to ping each.
    pub datacenters: Vec<Datacenter>,
}

/// A datacenter and the UDP address its edge answers pings on.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct Datacenter {
    /// Its name in the rules.
    pub name: String,
    /// `host:port` of an edge in that datacenter (QUIC; pings are datagrams).
    pub ping_addr: String,
}

/// A ticket that is waiting.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct WaitingTicket {
    /// Its id.
    pub ticket_id: u64,
    /// Its mode.
    pub mode: String,
}

/// The ticket is waiting.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct Enqueued {
    /// From the request.
    pub request_id: u32,
    /// The new ticket.
    pub ticket_id: u64,
}

/// The ticket left the queue.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct Cancelled {
    /// From the request.
    pub request_id: u32,
    /// The ticket that left.
    pub ticket_id: u64,
}

/// The player's ticket, if one is waiting.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct TicketStatus {
    /// From the request.
    pub request_id: u32,
    /// `None`: no ticket is waiting.
    pub ticket: Option<WaitingTicket>,
}

/// A match was formed with this player in it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct MatchFound {
    /// The player's ticket that was matched.
    pub ticket_id: u64,
    /// The same for every player of the match.
    pub match_id: u64,
    /// The mode name.
    pub mode: String,
    /// Where the match is played.
    pub datacenter: String,
    /// `host:port` of the game server (empty when no game server had room).
    pub server_addr: String,
    /// Presented to the game server; opaque to the client (empty without a server).
    pub connect_token: String,
    /// Player ids, team by team.
    pub teams: Vec<Team>,
    /// When the edge received the match from its shard, µs since the Unix epoch by the
    /// edge's clock: what delivery delay is measured from.
    pub formed_at_unix_us: u64,
    /// 0, or (the mode has a ready check) the time by which the player must accept with
    /// `RespondToMatch`, ms since the Unix epoch by the edge's clock. The server address
    /// and connect token then come in `MatchConfirmed` once everyone accepted.
    pub accept_by_unix_ms: u64,
}

/// A match fell through, and where that left the player.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct MatchAbandoned {
    /// The match from the earlier `MatchFound`.
    pub match_id: u64,
    /// The player's new ticket, which kept the wait the old one served; `None` if the
    /// player could not be queued again (they will have to enqueue themselves).
    pub ticket: Option<WaitingTicket>,
}

/// One team of a match.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct Team {
    /// Player ids.
    pub players: Vec<u64>,
}

/// A failed request or a connection-level fault.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct ErrorReply {
    /// The request this answers; `None` for faults not tied to one request.
    pub request_id: Option<u32>,
    /// An [`crate::ErrorCode`] as a number, so a client can read codes newer than itself.
    pub code: u16,
    /// Whether the same request may succeed if sent again later.
    pub retryable: bool,
    /// For humans; never parse it.
    pub message: String,
}

/// QUIC datagrams (unframed: one message per datagram), for RTT measurement.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Datagram {
    /// Client → edge.
    Ping(Ping),
    /// Edge → client: the ping's fields echoed.
    Pong(Ping),
}

/// The payload of a ping and its pong.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Ping {
    /// Client-chosen sequence number.
    pub seq: u32,
    /// The client's clock when it sent the ping, µs (only the client reads it).
    pub client_time_us: u64,
}
