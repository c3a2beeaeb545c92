//! Error codes (in `ServerMsg::Error`) and QUIC application close codes.
//!
//! Both are stable numbers: a code keeps its meaning forever, new codes are only added.
//! A client meets codes newer than itself as numbers it does not know; it should treat
//! them by the `retryable` flag the edge sends along.

macro_rules! numbered {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $repr:ty {
            $( $(#[doc = $doc:literal])* $variant:ident = $value:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr($repr)]
        $vis enum $name {
            $( $(#[doc = $doc])* $variant = $value, )+
        }

        impl $name {
            /// Every code, in numeric order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire number.
            pub const fn number(self) -> $repr {
                self as $repr
            }

            /// The code with this number, or `None` for a number this version does not know.
            pub const fn from_number(number: $repr) -> Option<$name> {
                match number {
                    $( $value => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:?} ({})", self, self.number())
            }
        }
    };
}

numbered! {
    /// Why a request failed. Sent as `u16` in `ErrorReply::code`.
    pub enum ErrorCode: u16 {
        // 1xx: the connection's own faults.
        /// A frame's bytes are not a valid archived message (the edge then closes).
        MalformedFrame = 100,
        /// A frame's length prefix is over [`crate::MAX_FRAME_LEN`] (the edge then closes).
        FrameTooLarge = 101,
        /// `Hello::protocol_version` is not one the edge speaks (the edge then closes).
        UnsupportedVersion = 102,
        /// A field is out of its limits (too long, empty, not finite, negative, too many).
        InvalidRequest = 103,
        /// The first frame did not come in time (the edge then closes).
        HelloTimeout = 104,
        // 2xx: authentication.
        /// The access token is missing, garbled, signed by another key, or for another
        /// issuer or audience (the edge then closes).
        InvalidToken = 200,
        /// The access token has expired; get a new one and reconnect.
        TokenExpired = 201,
        /// The resume token is unknown or its grace period has passed; the connection
        /// goes on as a fresh one.
        ResumeRejected = 202,
        // 3xx: limits.
        /// Too many requests per second on this connection; slow down.
        RateLimited = 300,
        /// Too many requests without an answer yet on this connection.
        TooManyInFlight = 301,
        // 4xx: matchmaking.
        /// The mode is not in the server's rules.
        UnknownMode = 400,
        /// None of the datacenters in the RTT map is served for this player.
        NoKnownDatacenter = 401,
        /// The player already has a waiting ticket.
        AlreadyQueued = 402,
        /// The ticket is not waiting (never was, already matched, or cancelled).
        NotQueued = 403,
        /// The ticket breaks the mode's rules (e.g. a party larger than a team).
        RejectedTicket = 404,
        /// The player declined or ignored a ready check and may not queue yet; the
        /// message says for how long (not retryable at once).
        Cooldown = 405,
        /// No ready check is in progress for that match (settled, or never one).
        NoReadyCheck = 406,
        /// The player is not in that match.
        NotInMatch = 407,
        /// A party operation was refused; the message starts with the admin API's code
        /// (`party_full: …`, `not_the_leader: …`).
        PartyRefused = 408,
        // 5xx: the server's side.
        /// The engine is busy; send the same request again shortly.
        Overloaded = 500,
        /// The edge is shutting down; reconnect (to another edge).
        ShuttingDown = 501,
        /// Something failed inside the server.
        Internal = 502,
    }
}

impl ErrorCode {
    /// Whether the same request may succeed if sent again later (the edge sends this flag
    /// along with the code).
    pub const fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited
                | ErrorCode::TooManyInFlight
                | ErrorCode::Overloaded
                | ErrorCode::ShuttingDown
                | ErrorCode::Internal
                | ErrorCode::TokenExpired
        )
    }
}

numbered! {
    /// Why the edge (or client) closed a connection: the QUIC application close code.
    /// Readable by any client whatever protocol version it speaks.
    pub enum CloseCode: u32 {
        /// Orderly close by either side.
        Normal = 0,
        /// Bytes that are not the protocol: a malformed frame or message, or a message
        /// out of order (a second `Hello`).
        ProtocolViolation = 1,
        /// A frame over [`crate::MAX_FRAME_LEN`].
        FrameTooLarge = 2,
        /// `Hello` asked for a protocol version the edge does not speak.
        UnsupportedVersion = 3,
        /// The access token was refused.
        Unauthenticated = 4,
        /// No `Hello` within the handshake timeout.
        HelloTimeout = 5,
        /// Requests kept coming far over the rate limit.
        Flood = 6,
        /// The edge is shutting down; reconnect (to another edge).
        ShuttingDown = 7,
        /// The same player connected again; this older connection is closed.
        Replaced = 8,
        /// An internal failure.
        Internal = 9,
    }
}
