//! The wire format: one chat message is one ZeroMQ frame of UTF-8 text.
//!
//! That is exactly what pyzmq's `send_string` writes and `recv` reads, so the
//! binaries chat with plain Python peers. Decoding never fails: whatever a
//! peer sends (several frames, bytes that are not UTF-8, far too much) becomes
//! text that can be shown, plus the list of [`Anomaly`]s the user is told about.

use std::fmt;

/// Messages longer than this many bytes are shown cut short (`--max-size`).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The longest message text the chat carries: a chat-client refuses to send
/// a longer line. A chat is lines of text; 256 KiB is a very long one.
pub const MAX_TEXT_BYTES: usize = 256 * 1024;

/// Frames above this size are refused by ZeroMQ itself (`ZMQ_MAXMSGSIZE`),
/// which drops the sending connection instead of buffering the frame. It
/// leaves room above [`MAX_TEXT_BYTES`] for secure mode's sealing (47
/// bytes, and 16 per 64 KiB chunk).
pub const WIRE_LIMIT_BYTES: usize = MAX_TEXT_BYTES + 16 * 1024;

/// The most frames one message may have; a message with more is dropped
/// unread. A chat request has four (routing id, message id, delimiter, text).
pub const MAX_FRAMES: usize = 64;

/// Shown between frames when a peer sends a message of several frames.
pub const FRAME_SEPARATOR: &str = " \u{241E} ";

/// Something unusual about a received message that the user should know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// The message had this many frames (more than one); they are shown joined.
    SeveralFrames(usize),
    /// Some bytes were not UTF-8; each bad sequence is shown as U+FFFD.
    InvalidUtf8,
    /// The message had `size` bytes; only the first `shown` are displayed.
    Truncated {
        /// The whole message's size in bytes.
        size: usize,
        /// How many bytes of it are shown.
        shown: usize,
    },
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::SeveralFrames(count) => write!(
                f,
                "the message had {count} frames instead of 1; they are shown joined by '{}'",
                FRAME_SEPARATOR.trim()
            ),
            Anomaly::InvalidUtf8 => write!(
                f,
                "the message was not valid UTF-8; bad bytes are shown as \u{FFFD}"
            ),
            Anomaly::Truncated { size, shown } => write!(
                f,
                "the message had {size} bytes; only the first {shown} are shown (see --max-size)"
            ),
        }
    }
}

/// A message as received from a peer, ready for display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The text, decoded and possibly cut short; not yet safe for a terminal
    /// (see [`crate::display::escape_for_terminal`]).
    pub text: String,
    /// What was unusual about the message, in the order found.
    pub anomalies: Vec<Anomaly>,
}

impl Incoming {
    /// Decodes the frames of one received message, showing at most
    /// `max_bytes` bytes of text. Copies at most that much (plus one
    /// character), however large the message: the frames stay the caller's.
    pub fn decode(frames: &[impl AsRef<[u8]>], max_bytes: usize) -> Incoming {
        let mut anomalies = Vec::new();
        if frames.len() > 1 {
            anomalies.push(Anomaly::SeveralFrames(frames.len()));
        }
        // Each frame is checked whole, so bad bytes beyond the cut are reported too.
        if frames
            .iter()
            .any(|frame| std::str::from_utf8(frame.as_ref()).is_err())
        {
            anomalies.push(Anomaly::InvalidUtf8);
        }
        let size = frames
            .iter()
            .map(|frame| frame.as_ref().len())
            .sum::<usize>()
            + FRAME_SEPARATOR.len() * frames.len().saturating_sub(1);
        // A few bytes beyond the limit, so the character that straddles the
        // cut is decoded as it is in the whole message.
        let wanted = max_bytes.saturating_add(4);
        let mut bytes = Vec::with_capacity(size.min(wanted));
        for (index, frame) in frames.iter().enumerate() {
            if index > 0 {
                bytes.extend_from_slice(FRAME_SEPARATOR.as_bytes());
            }
            bytes.extend_from_slice(frame.as_ref());
            if bytes.len() >= wanted {
                bytes.truncate(wanted);
                break;
            }
        }
        let mut text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
        };
        if text.len() > max_bytes {
            let mut cut = max_bytes;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            anomalies.push(Anomaly::Truncated { size, shown: cut });
        }
        Incoming { text, anomalies }
    }
}

/// Strips the line ending that terminal and pipe input carry (`\n` or `\r\n`).
pub fn strip_line_ending(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_utf8_frame_is_the_plain_case() {
        let incoming = Incoming::decode(&["héllo wörld ☕".as_bytes().to_vec()], 100);
        assert_eq!(incoming.text, "héllo wörld ☕");
        assert!(incoming.anomalies.is_empty());
    }

    #[test]
    fn an_empty_frame_is_an_empty_message() {
        let incoming = Incoming::decode(&[Vec::new()], 100);
        assert_eq!(
            incoming,
            Incoming {
                text: String::new(),
                anomalies: vec![]
            }
        );
    }

    #[test]
    fn several_frames_are_joined_and_reported() {
        let incoming = Incoming::decode(&[b"a".to_vec(), b"b".to_vec(), b"".to_vec()], 100);
        assert_eq!(
            incoming.text,
            format!("a{FRAME_SEPARATOR}b{FRAME_SEPARATOR}")
        );
        assert_eq!(incoming.anomalies, vec![Anomaly::SeveralFrames(3)]);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_reported() {
        let incoming = Incoming::decode(&[b"ok \xff\xfe end".to_vec()], 100);
        assert_eq!(incoming.text, "ok \u{FFFD}\u{FFFD} end");
        assert_eq!(incoming.anomalies, vec![Anomaly::InvalidUtf8]);
    }

    #[test]
    fn oversized_text_is_cut_on_a_character_boundary() {
        let incoming = Incoming::decode(&["ééé".as_bytes().to_vec()], 3);
        assert_eq!(incoming.text, "é");
        assert_eq!(
            incoming.anomalies,
            vec![Anomaly::Truncated { size: 6, shown: 2 }]
        );
    }

    #[test]
    fn no_frames_at_all_is_an_empty_message() {
        assert_eq!(Incoming::decode(&[] as &[Vec<u8>], 10).text, "");
    }

    #[test]
    fn line_endings_are_stripped_once() {
        assert_eq!(strip_line_ending("hi\r\n"), "hi");
        assert_eq!(strip_line_ending("hi\n"), "hi");
        assert_eq!(strip_line_ending("hi\n\n"), "hi\n");
        assert_eq!(strip_line_ending("hi"), "hi");
    }

    proptest! {
        #[test]
        fn decoding_never_panics_and_respects_the_limit(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..5),
            max in 0usize..80,
        ) {
            let incoming = Incoming::decode(&frames, max);
            prop_assert!(incoming.text.len() <= max);
        }

        /// Copying only the shown part gives what decoding the whole joined
        /// message would: the same text, the same notes.
        #[test]
        fn decoding_a_prefix_matches_decoding_the_whole_message(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..4),
            max in 0usize..80,
        ) {
            let joined = frames.join(FRAME_SEPARATOR.as_bytes());
            let mut whole = String::from_utf8_lossy(&joined).into_owned();
            let mut cut = max.min(whole.len());
            while !whole.is_char_boundary(cut) {
                cut -= 1;
            }
            let truncated = whole.len() > max;
            whole.truncate(cut);
            let incoming = Incoming::decode(&frames, max);
            prop_assert_eq!(&incoming.text, &whole);
            prop_assert_eq!(
                incoming.anomalies.contains(&Anomaly::InvalidUtf8),
                std::str::from_utf8(&joined).is_err()
            );
            prop_assert_eq!(
                incoming.anomalies.contains(&Anomaly::Truncated { size: joined.len(), shown: cut }),
                truncated
            );
        }
    }
}
