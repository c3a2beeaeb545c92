//! Parsing one line of `EVENTS.jsonl` into a typed event, or a typed reason it is bad.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};

/// Longest ticket id accepted, in bytes.
pub const MAX_TICKET_ID_BYTES: usize = 128;

/// Why a line was skipped before it reached the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineError {
    /// Not JSON of the event shape.
    Malformed(String),
    /// No `at_ms`.
    AtMsMissing,
    /// `at_ms` below zero.
    AtMsNegative,
    /// `at_ms` is not an integer (a fraction, a string, …).
    AtMsNotInteger,
    /// `at_ms` smaller than the last accepted line's.
    AtMsDecreasing {
        /// The last accepted line's `at_ms`.
        last: u64,
    },
    /// `op` missing or not `enqueue` / `cancel`.
    UnknownOp(String),
    /// Ticket id missing, empty or over [`MAX_TICKET_ID_BYTES`].
    BadTicketId,
}

impl LineError {
    /// A stable snake_case name for counters.
    pub fn code(&self) -> &'static str {
        match self {
            LineError::Malformed(_) => "malformed_json",
            LineError::AtMsMissing => "at_ms_missing",
            LineError::AtMsNegative => "at_ms_negative",
            LineError::AtMsNotInteger => "at_ms_not_integer",
            LineError::AtMsDecreasing { .. } => "at_ms_decreasing",
            LineError::UnknownOp(_) => "unknown_op",
            LineError::BadTicketId => "bad_ticket_id",
        }
    }
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::Malformed(e) => write!(f, "{e}"),
            LineError::AtMsMissing => write!(f, "at_ms missing"),
            LineError::AtMsNegative => write!(f, "at_ms is negative"),
            LineError::AtMsNotInteger => write!(f, "at_ms is not an integer"),
            LineError::AtMsDecreasing { last } => write!(f, "at_ms is smaller than the last accepted line's ({last})"),
            LineError::UnknownOp(op) => write!(f, "unknown op {op:?}"),
            LineError::BadTicketId => {
                write!(f, "ticket id missing, empty or longer than {MAX_TICKET_ID_BYTES} bytes")
            }
        }
    }
}

/// A parsed line; strings borrow from the line where JSON escapes allow.
#[derive(Debug, PartialEq)]
pub enum InputEvent<'a> {
    /// Start waiting.
    Enqueue {
        /// When.
        at_ms: u64,
        /// The ticket's id.
        ticket: Cow<'a, str>,
        /// The mode's name (resolved later; unknown names are the engine's rejection).
        mode: Cow<'a, str>,
        /// The players.
        players: Vec<InputPlayer<'a>>,
    },
    /// Stop waiting.
    Cancel {
        /// When.
        at_ms: u64,
        /// The ticket's id.
        ticket: Cow<'a, str>,
    },
}

impl InputEvent<'_> {
    /// The event's time.
    pub fn at_ms(&self) -> u64 {
        match self {
            InputEvent::Enqueue { at_ms, .. } | InputEvent::Cancel { at_ms, .. } => *at_ms,
        }
    }
}

/// One player of an enqueue line.
#[derive(Debug, PartialEq, Deserialize)]
pub struct InputPlayer<'a> {
    /// The player's id.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// Their rating.
    pub mmr: f64,
    /// RTT per datacenter name, in file order.
    #[serde(borrow, deserialize_with = "pairs", default)]
    pub rtt_ms: RttEntries<'a>,
}

/// A player's RTT entries, (datacenter name, ms) in file order; `None` where the value is
/// not a number, which only matters if the name is a configured datacenter (the contract
/// ignores the others).
pub type RttEntries<'a> = Vec<(Cow<'a, str>, Option<f64>)>;

#[derive(Deserialize)]
struct RawLine<'a> {
    #[serde(default)]
    at_ms: Option<serde_json::Value>,
    #[serde(borrow, default)]
    op: Option<CowStr<'a>>,
    #[serde(borrow, default)]
    ticket: Option<CowStr<'a>>,
    #[serde(borrow, default)]
    mode: Option<CowStr<'a>>,
    #[serde(borrow, default)]
    players: Option<Vec<InputPlayer<'a>>>,
}

/// serde_json's message with its position as a column: the input is one line, so its
/// "at line 1" says nothing the report's own line number does not.
fn malformed(e: serde_json::Error) -> LineError {
    let text = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&position) {
        Some(message) => LineError::Malformed(format!("{message} (column {})", e.column())),
        None => LineError::Malformed(text),
    }
}

/// Parses a line; `last_at_ms` is the last accepted line's time.
pub fn parse_line(line: &str, last_at_ms: u64) -> Result<InputEvent<'_>, LineError> {
    let raw: RawLine<'_> = serde_json::from_str(line).map_err(malformed)?;
    let at_ms = match raw.at_ms {
        None | Some(serde_json::Value::Null) => return Err(LineError::AtMsMissing),
        Some(serde_json::Value::Number(n)) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(v), _, _) => v,
            (None, Some(_), _) => return Err(LineError::AtMsNegative),
            (None, None, Some(f)) if f < 0.0 => return Err(LineError::AtMsNegative),
            _ => return Err(LineError::AtMsNotInteger),
        },
        Some(_) => return Err(LineError::AtMsNotInteger),
    };
    if at_ms < last_at_ms {
        return Err(LineError::AtMsDecreasing { last: last_at_ms });
    }
    let ticket = match raw.ticket {
        Some(CowStr(t)) if !t.is_empty() && t.len() <= MAX_TICKET_ID_BYTES => t,
        _ => return Err(LineError::BadTicketId),
    };
    match raw.op.as_ref().map(|op| &*op.0) {
        Some("enqueue") => Ok(InputEvent::Enqueue {
            at_ms,
            ticket,
            mode: raw.mode.map_or(Cow::Borrowed(""), |m| m.0),
            players: raw.players.unwrap_or_default(),
        }),
        Some("cancel") => Ok(InputEvent::Cancel { at_ms, ticket }),
        Some(other) => Err(LineError::UnknownOp(other.to_owned())),
        None => Err(LineError::UnknownOp(String::new())),
    }
}

/// Deserialises a JSON object into its (key, value) pairs in file order, without a map.
fn pairs<'de, D>(d: D) -> Result<RttEntries<'de>, D::Error>
where
    D: de::Deserializer<'de>,
{
    struct Pairs;
    impl<'de> Visitor<'de> for Pairs {
        type Value = RttEntries<'de>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of datacenter name to rtt in ms")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(4).min(64));
            while let Some(key) = map.next_key::<CowStr<'de>>()? {
                out.push((key.0, map.next_value::<MaybeNumber>()?.0));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Pairs)
}

/// Any JSON value, kept only if it is a number. The contract ignores RTT keys that name
/// no configured datacenter, whatever their value, and the parser does not know the rules;
/// the replay refuses a non-number under a known name.
struct MaybeNumber(Option<f64>);

impl<'de> Deserialize<'de> for MaybeNumber {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Value;
        impl<'de> Visitor<'de> for Value {
            type Value = MaybeNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(MaybeNumber(Some(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(MaybeNumber(Some(v as f64)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(MaybeNumber(Some(v as f64)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeNumber(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(MaybeNumber(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MaybeNumber(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(MaybeNumber(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                Ok(MaybeNumber(None))
            }
        }
        d.deserialize_any(Value)
    }
}

/// A string that borrows from the line unless JSON escapes made a new one. serde's own
/// `Cow<str>` always copies except as a bare `#[serde(borrow)]` field (not inside an
/// `Option`, not as a map key), and a line's ticket, mode and datacenter names were seven or
/// more allocations per enqueue.
struct CowStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Text<'a> {
            type Value = CowStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Text(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_lines() {
        let e = parse_line(
            r#"{"at_ms":0,"op":"enqueue","ticket":"t1","mode":"squad-5v5","players":[{"id":"p1","mmr":1510.5,"rtt_ms":{"eu-west":31.0,"eu-central":48.2}}]}"#,
            0,
        )
        .unwrap();
        let InputEvent::Enqueue { at_ms, ticket, mode, players } = e else { panic!("not an enqueue") };
        assert_eq!((at_ms, &*ticket, &*mode), (0, "t1", "squad-5v5"));
        assert_eq!(players[0].rtt_ms, vec![("eu-west".into(), Some(31.0)), ("eu-central".into(), Some(48.2))]);
        let e = parse_line(r#"{"at_ms":1200,"op":"cancel","ticket":"t1"}"#, 0).unwrap();
        assert_eq!(e, InputEvent::Cancel { at_ms: 1200, ticket: "t1".into() });
    }

    #[test]
    fn strings_borrow_from_the_line_unless_escaped() {
        let line = r#"{"at_ms":0,"op":"enqueue","ticket":"t\u0031","mode":"duel","players":[{"id":"p1","mmr":1,"rtt_ms":{"eu-west":1}}]}"#;
        let InputEvent::Enqueue { ticket, mode, players, .. } = parse_line(line, 0).unwrap() else { panic!() };
        assert!(matches!(ticket, Cow::Owned(ref t) if t == "t1"), "an escape makes a new string");
        assert!(matches!(mode, Cow::Borrowed("duel")));
        assert!(matches!(players[0].id, Cow::Borrowed("p1")));
        assert!(matches!(players[0].rtt_ms[0].0, Cow::Borrowed("eu-west")));
    }

    #[test]
    fn names_what_is_wrong() {
        let cases = [
            ("not json", "malformed_json"),
            (r#"{"op":"cancel","ticket":"t"}"#, "at_ms_missing"),
            (r#"{"at_ms":-5,"op":"cancel","ticket":"t"}"#, "at_ms_negative"),
            (r#"{"at_ms":-5.5,"op":"cancel","ticket":"t"}"#, "at_ms_negative"),
            (r#"{"at_ms":1.5,"op":"cancel","ticket":"t"}"#, "at_ms_not_integer"),
            // A JSON float, even a whole one: the contract's times are integers.
            (r#"{"at_ms":5.0,"op":"cancel","ticket":"t"}"#, "at_ms_not_integer"),
            (r#"{"at_ms":"7","op":"cancel","ticket":"t"}"#, "at_ms_not_integer"),
            (r#"{"at_ms":1,"op":"cancel","ticket":"t"}"#, "at_ms_decreasing"),
            (r#"{"at_ms":10,"op":"dance","ticket":"t"}"#, "unknown_op"),
            (r#"{"at_ms":10,"ticket":"t"}"#, "unknown_op"),
            (r#"{"at_ms":10,"op":"cancel","ticket":""}"#, "bad_ticket_id"),
            (r#"{"at_ms":10,"op":"cancel"}"#, "bad_ticket_id"),
            (r#"{"at_ms":10,"op":"enqueue","ticket":"t","players":[{"id":"p"}]}"#, "malformed_json"),
            (r#"{"at_ms":1e400,"op":"cancel","ticket":"t"}"#, "malformed_json"),
        ];
        for (line, want) in cases {
            let got = parse_line(line, 5).unwrap_err();
            assert_eq!(got.code(), want, "{line}: {got}");
        }
        let long = format!(r#"{{"at_ms":10,"op":"cancel","ticket":"{}"}}"#, "x".repeat(129));
        assert_eq!(parse_line(&long, 0).unwrap_err(), LineError::BadTicketId);
        let edge = format!(r#"{{"at_ms":10,"op":"cancel","ticket":"{}"}}"#, "x".repeat(128));
        assert!(parse_line(&edge, 0).is_ok());
    }

    #[test]
    fn an_rtt_that_is_not_a_number_is_kept_as_none() {
        // Which names are datacenters is the rules' business, so the parser keeps the key.
        let line = r#"{"at_ms":0,"op":"enqueue","ticket":"t","mode":"duel","players":[{"id":"p","mmr":1,"rtt_ms":{"mars":"far","moon":[1,{"a":null}],"x":null,"y":true,"eu-west":7}}]}"#;
        let InputEvent::Enqueue { players, .. } = parse_line(line, 0).unwrap() else { panic!() };
        let values: Vec<Option<f64>> = players[0].rtt_ms.iter().map(|(_, r)| *r).collect();
        assert_eq!(values, [None, None, None, None, Some(7.0)]);
        let broken = r#"{"at_ms":0,"op":"enqueue","ticket":"t","mode":"duel","players":[{"id":"p","mmr":1,"rtt_ms":{"mars":[1,}}]}"#;
        assert_eq!(parse_line(broken, 0).unwrap_err().code(), "malformed_json");
    }

    #[test]
    fn a_malformed_line_is_reported_by_column() {
        let got = parse_line(r#"{"at_ms":10,"op":}"#, 0).unwrap_err();
        assert_eq!(got.to_string(), "expected value (column 18)");
    }
}
