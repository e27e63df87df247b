//! The request/reply envelope, and the message id the chat keeps in it.
//!
//! ZeroMQ's REQ/REP puts routing frames before an empty delimiter frame; the
//! chat text (one UTF-8 frame) comes after it. A REP socket copies whatever
//! frames precede the delimiter into its reply without showing them to the
//! application, and a plain REQ socket sends only the delimiter. So the
//! chat-client can put a message id there, `zc1:SESSION:SEQ`, and:
//!
//! * a plain pyzmq REP server echoes it back without noticing;
//! * `chat-server` (a ROUTER) reads it to recognise a message re-sent after a
//!   reconnect, answering it once however many copies arrive;
//! * a plain pyzmq REQ client simply has no id, and is served as before.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::time::Instant;

const ID_PREFIX: &str = "zc1:";
/// The envelope frame that carries the name a chat-client gave itself
/// (`--name`): shown by chat-server, echoed back unread by a REP peer.
const NAME_PREFIX: &[u8] = b"zcn:";
/// The most bytes of a name a server takes (longer ones are cut).
pub const MAX_NAME_BYTES: usize = 32;
/// Appended to the id of the last reply a server sends when its operator ends
/// the chat, so a waiting client knows the end was deliberate.
const ENDED_SUFFIX: &str = ":ended";
/// Appended to the id of a reply that refuses the message (plain and secure
/// mode mismatched); the body is the reason, as text.
const REFUSED_SUFFIX: &str = ":refused";

/// What a server's reply says beyond its text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mark {
    /// An ordinary reply (or a request).
    #[default]
    Normal,
    /// The server's operator ended the chat; the message was not answered.
    Ended,
    /// The server refused the message; the body says why.
    Refused,
}

/// A number unlikely to be picked again, in this process or another: for
/// session ids and the secure-mode session indexes. (Not secret: nothing
/// relies on it being unguessable.)
pub fn random_id() -> u64 {
    RandomState::new().hash_one((std::process::id(), Instant::now()))
}

/// Identifies one message of one client session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageId {
    /// Random per client process.
    pub session: u64,
    /// 1 for the first message of the session, then +1 per message.
    pub sequence: u64,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ID_PREFIX}{:016x}:{}", self.session, self.sequence)
    }
}

impl MessageId {
    /// The id as an envelope frame (what `Display` shows).
    pub fn to_frame(self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    /// The id frame carrying `mark` (the server's goodbye or refusal).
    pub fn marked_frame(self, mark: Mark) -> Vec<u8> {
        let suffix = match mark {
            Mark::Normal => "",
            Mark::Ended => ENDED_SUFFIX,
            Mark::Refused => REFUSED_SUFFIX,
        };
        format!("{self}{suffix}").into_bytes()
    }

    /// Replaces this id's frame in `envelope` with one carrying `mark`;
    /// false if the envelope holds no chat id (a plain REQ peer's).
    pub fn mark_in(self, envelope: &mut [Vec<u8>], mark: Mark) -> bool {
        match envelope
            .iter_mut()
            .find(|frame| MessageId::parse(frame).is_some())
        {
            Some(frame) => {
                *frame = self.marked_frame(mark);
                true
            }
            None => false,
        }
    }

    /// Parses an envelope frame; `None` for frames that are not chat ids.
    /// Works on the bytes directly: a server parses one per message.
    pub fn parse(frame: &[u8]) -> Option<(MessageId, Mark)> {
        let text = frame.strip_prefix(ID_PREFIX.as_bytes())?;
        let (text, mark) = if let Some(text) = text.strip_suffix(ENDED_SUFFIX.as_bytes()) {
            (text, Mark::Ended)
        } else if let Some(text) = text.strip_suffix(REFUSED_SUFFIX.as_bytes()) {
            (text, Mark::Refused)
        } else {
            (text, Mark::Normal)
        };
        let colon = text.iter().position(|&byte| byte == b':')?;
        let session = parse_number(&text[..colon], 16)?;
        let sequence = parse_number(&text[colon + 1..], 10)?;
        Some((MessageId { session, sequence }, mark))
    }
}

/// Digits in `radix` (no sign, at least one) as a number, if it fits in 64 bits.
fn parse_number(digits: &[u8], radix: u32) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |number, &digit| {
        let value = char::from(digit).to_digit(radix)?;
        number
            .checked_mul(u64::from(radix))?
            .checked_add(u64::from(value))
    })
}

/// A message split into its envelope and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enveloped {
    /// Every frame up to and including the empty delimiter (for a ROUTER,
    /// the peer's routing id first). Sent back in front of the reply.
    pub envelope: Vec<Vec<u8>>,
    /// The chat id found in the envelope, if the peer is a chat-client.
    pub id: Option<MessageId>,
    /// What the id was marked with (a server's goodbye or refusal).
    pub mark: Mark,
    /// The name the sender gave itself, if any (at most
    /// [`MAX_NAME_BYTES`], invalid UTF-8 replaced). Not authenticated.
    pub name: Option<String>,
    /// The frames after the delimiter: the message itself.
    pub body: Vec<Vec<u8>>,
}

/// The envelope frame carrying `name` (see [`Enveloped::name`]).
pub fn name_frame(name: &str) -> Vec<u8> {
    [NAME_PREFIX, name.as_bytes()].concat()
}

impl Enveloped {
    /// Splits at the first empty frame after `skip` leading frames (a ROUTER
    /// passes 1, for the routing id that may itself be any bytes).
    /// Gives the frames back unchanged when there is no delimiter: not a
    /// REQ/REP-style message.
    pub fn split(mut frames: Vec<Vec<u8>>, skip: usize) -> Result<Enveloped, Vec<Vec<u8>>> {
        let Some(position) = frames.iter().skip(skip).position(Vec::is_empty) else {
            return Err(frames);
        };
        let delimiter = skip + position;
        let body = frames.split_off(delimiter + 1);
        let found = frames[skip..delimiter]
            .iter()
            .find_map(|frame| MessageId::parse(frame));
        let (id, mark) = match found {
            Some((id, mark)) => (Some(id), mark),
            None => (None, Mark::Normal),
        };
        let name = frames[skip..delimiter].iter().find_map(|frame| {
            let name = frame.strip_prefix(NAME_PREFIX)?;
            let name = &name[..name.len().min(MAX_NAME_BYTES)];
            Some(String::from_utf8_lossy(name).into_owned())
        });
        Ok(Enveloped {
            envelope: frames,
            id,
            mark,
            name,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_match_the_display_form() {
        for (session, sequence) in [(0, 0), (1, 1), (0xdead_beef, 42), (u64::MAX, u64::MAX)] {
            let id = MessageId { session, sequence };
            assert_eq!(id.to_frame(), id.to_string().into_bytes());
        }
    }

    #[test]
    fn a_name_frame_is_found_in_the_envelope_and_cut_to_its_limit() {
        let id = MessageId {
            session: 7,
            sequence: 1,
        };
        let frames = vec![
            b"routing".to_vec(),
            name_frame("alice"),
            id.to_frame(),
            vec![],
            b"hi".to_vec(),
        ];
        let split = Enveloped::split(frames, 1).unwrap();
        assert_eq!(split.name.as_deref(), Some("alice"));
        assert_eq!(split.id, Some(id));
        assert_eq!(split.envelope.len(), 4, "the name goes back with the reply");
        let long = "x".repeat(100);
        let frames = vec![b"r".to_vec(), name_frame(&long), vec![], b"hi".to_vec()];
        let split = Enveloped::split(frames, 1).unwrap();
        assert_eq!(split.name.map(|name| name.len()), Some(MAX_NAME_BYTES));
        let plain = Enveloped::split(vec![b"r".to_vec(), vec![], b"hi".to_vec()], 1).unwrap();
        assert_eq!(plain.name, None);
    }

    #[test]
    fn ids_round_trip_through_frames() {
        let id = MessageId {
            session: 0xdead_beef,
            sequence: 42,
        };
        for mark in [Mark::Normal, Mark::Ended, Mark::Refused] {
            assert_eq!(MessageId::parse(&id.marked_frame(mark)), Some((id, mark)));
        }
        assert_eq!(id.marked_frame(Mark::Normal), id.to_frame());
        assert_eq!(MessageId::parse(b"not an id"), None);
        assert_eq!(MessageId::parse(b"zc1:xyz:1"), None);
        assert_eq!(MessageId::parse(b"\xff\xfe"), None);
        for odd in [
            &b"zc1::1"[..],
            b"zc1:1:",
            b"zc1:1",
            b"zc1:+1:1",
            b"zc1:1:-1",
            b"zc1:1:18446744073709551616",
            b"zc1:10000000000000000:1",
        ] {
            assert_eq!(
                MessageId::parse(odd),
                None,
                "{}",
                String::from_utf8_lossy(odd)
            );
        }
    }

    #[test]
    fn marking_replaces_only_the_id_frame() {
        let id = MessageId {
            session: 7,
            sequence: 3,
        };
        let mut envelope = vec![b"route".to_vec(), id.to_frame(), vec![]];
        assert!(id.mark_in(&mut envelope, Mark::Refused));
        assert_eq!(
            envelope,
            vec![b"route".to_vec(), id.marked_frame(Mark::Refused), vec![]]
        );
        let mut plain = vec![b"route".to_vec(), vec![]];
        assert!(!id.mark_in(&mut plain, Mark::Ended));
        assert_eq!(plain, vec![b"route".to_vec(), vec![]]);
    }

    #[test]
    fn a_router_message_from_a_chat_client_splits_into_its_parts() {
        let id = MessageId {
            session: 7,
            sequence: 1,
        };
        let frames = vec![
            b"\0route".to_vec(),
            id.to_frame(),
            vec![],
            b"hello".to_vec(),
        ];
        let split = Enveloped::split(frames, 1).unwrap();
        assert_eq!(
            split.envelope,
            vec![b"\0route".to_vec(), id.to_frame(), vec![]]
        );
        assert_eq!(split.id, Some(id));
        assert_eq!(split.body, vec![b"hello".to_vec()]);
    }

    #[test]
    fn a_plain_req_peer_has_no_id_and_an_empty_routing_id_is_not_the_delimiter() {
        let split =
            Enveloped::split(vec![vec![], vec![], b"hi".to_vec(), b"there".to_vec()], 1).unwrap();
        assert_eq!(split.id, None);
        assert_eq!(split.envelope.len(), 2);
        assert_eq!(split.body, vec![b"hi".to_vec(), b"there".to_vec()]);
    }

    #[test]
    fn no_delimiter_means_no_envelope() {
        let frames = vec![b"route".to_vec(), b"raw".to_vec()];
        assert_eq!(Enveloped::split(frames.clone(), 1), Err(frames));
    }

    proptest! {
        #[test]
        fn splitting_never_panics(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..6), skip in 0usize..3) {
            let _ = Enveloped::split(frames, skip);
        }

        #[test]
        fn every_id_parses_back_from_its_frame(session in any::<u64>(), sequence in any::<u64>()) {
            let id = MessageId { session, sequence };
            prop_assert_eq!(MessageId::parse(&id.to_frame()), Some((id, Mark::Normal)));
        }

        #[test]
        fn parsing_never_panics(frame in proptest::collection::vec(any::<u8>(), 0..48)) {
            let _ = MessageId::parse(&frame);
        }
    }
}
