//! The chat as a program reads it (`--json`) and as a transcript keeps it
//! (`--log`): one JSON object per event, version [`VERSION`], its fields
//! documented in docs/GUIDE.md; and the times `--timestamps` shows.

use std::time::SystemTime;

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::MessageId;

/// The events' version (their `v` field): raised when a field changes
/// meaning or goes; new fields and kinds may come without it.
pub const VERSION: u64 = 1;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A message received: a client's at the server, a reply at the client.
    Message,
    /// A message this program sent (kept in the transcript).
    Sent,
    /// A peer connected, or the server came (back).
    Connect,
    /// A peer left, or the server went.
    Leave,
    /// A message refused, by the peer or by this program.
    Refusal,
    /// The client gave up waiting for a server.
    GiveUp,
    /// Anything else the program says (what it prints on stderr without
    /// `--json`).
    Notice,
}

impl Kind {
    /// The kind's name, its `event` field.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Sent => "sent",
            Kind::Connect => "connect",
            Kind::Leave => "leave",
            Kind::Refusal => "refusal",
            Kind::GiveUp => "give-up",
            Kind::Notice => "notice",
        }
    }
}

/// One event, as JSON.
#[derive(Debug)]
pub struct Event<'a> {
    /// What happened.
    pub kind: Kind,
    /// The message's text, whole (or the notice's).
    pub text: &'a str,
    /// Who sent the message: the label the program shows for its peer.
    pub from: Option<&'a str>,
    /// The chat-client's id of the message (its reply has the same).
    pub id: Option<MessageId>,
    /// What was unusual in a received message (several frames, bytes
    /// that are not UTF-8, cut to `--max-size`).
    pub notes: Vec<String>,
}

impl<'a> Event<'a> {
    /// An event of `kind` saying `text`, with no other field.
    pub fn new(kind: Kind, text: &'a str) -> Event<'a> {
        Event {
            kind,
            text,
            from: None,
            id: None,
            notes: Vec::new(),
        }
    }

    /// The event as one line of JSON (no newline), as it happened `at`.
    pub fn to_json(&self, at: SystemTime) -> String {
        let mut object = Map::new();
        object.insert("v".into(), VERSION.into());
        object.insert("time".into(), rfc3339(at).into());
        object.insert("event".into(), self.kind.name().into());
        if let Some(from) = self.from {
            object.insert("from".into(), from.into());
        }
        if let Some(id) = self.id {
            object.insert("id".into(), id.to_string().into());
        }
        object.insert("text".into(), self.text.into());
        if !self.notes.is_empty() {
            object.insert("notes".into(), self.notes.clone().into());
        }
        Value::Object(object).to_string()
    }
}

/// `at` in RFC 3339, UTC, to the microsecond: `2026-12-05T14:41:14.123456Z`.
pub fn rfc3339(at: SystemTime) -> String {
    let at = OffsetDateTime::from(at);
    let at = at
        .replace_nanosecond(at.microsecond() * 1_000)
        .unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_default()
}

/// The local time of day, as `--timestamps` shows it.
#[derive(Clone, Copy, Debug)]
pub struct LocalTime(UtcOffset);

impl LocalTime {
    /// The local time zone's offset from UTC now, or UTC if it cannot be
    /// known. Call it before any thread starts: the `time` crate will not
    /// read the zone in a process with several threads (another thread
    /// may change the environment meanwhile), and says so.
    pub fn detect() -> LocalTime {
        LocalTime(UtcOffset::current_local_offset().unwrap_or(UtcOffset::UTC))
    }

    /// `at` as `HH:MM:SS`, local time.
    pub fn of_day(self, at: SystemTime) -> String {
        let at = OffsetDateTime::from(at).to_offset(self.0);
        format!("{:02}:{:02}:{:02}", at.hour(), at.minute(), at.second())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn an_event_is_one_line_of_json_with_its_fields_in_order() {
        let at = UNIX_EPOCH + Duration::from_micros(1_796_482_874_123_456);
        let mut event = Event::new(Kind::Message, "two\nlines \u{1F44B} \"quoted\" \x1b[31m");
        event.from = Some("ann (127.0.0.1:5000)");
        let json = event.to_json(at);
        assert_eq!(
            json,
            r#"{"v":1,"time":"2026-12-05T15:01:14.123456Z","event":"message","from":"ann (127.0.0.1:5000)","text":"two\nlines 👋 \"quoted\" \u001b[31m"}"#
        );
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["text"], event.text);
        assert!(!json.contains('\n'));
    }

    #[test]
    fn the_time_of_day_is_shown_in_the_offset_given() {
        let at = UNIX_EPOCH + Duration::from_secs(1_796_482_874);
        assert_eq!(LocalTime(UtcOffset::UTC).of_day(at), "15:01:14");
        let east = UtcOffset::from_hms(5, 30, 0).unwrap();
        assert_eq!(LocalTime(east).of_day(at), "20:31:14");
    }
}
