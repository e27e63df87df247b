//! The wire format: one chat message is one ZeroMQ frame of UTF-8 text.
//!
//! That is exactly what pyzmq's `send_string` writes and `recv` reads, so the
//! binaries chat with plain Python peers. Decoding never fails: whatever a
//! peer sends (several frames, bytes that are not UTF-8, far too much) becomes
//! text that can be shown, plus the list of [`Anomaly`]s the user is told about.

use std::fmt;

/// Messages longer than this many bytes are shown cut short (`--max-size`).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Frames above this size are refused by ZeroMQ itself (`ZMQ_MAXMSGSIZE`),
/// which drops the sending connection instead of buffering without bound.
pub const WIRE_LIMIT_BYTES: usize = 16 * 1024 * 1024;

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
    Truncated { size: usize, shown: usize },
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
    /// `max_bytes` bytes of text.
    pub fn decode(frames: Vec<Vec<u8>>, max_bytes: usize) -> Incoming {
        let mut anomalies = Vec::new();
        let frame_count = frames.len();
        if frame_count > 1 {
            anomalies.push(Anomaly::SeveralFrames(frame_count));
        }
        // The single-frame case moves the buffer instead of copying it.
        let bytes = match frame_count {
            1 => frames.into_iter().next().unwrap_or_default(),
            _ => frames.join(FRAME_SEPARATOR.as_bytes()),
        };
        let size = bytes.len();
        let mut text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => {
                anomalies.push(Anomaly::InvalidUtf8);
                String::from_utf8_lossy(error.as_bytes()).into_owned()
            }
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
        let incoming = Incoming::decode(vec!["héllo wörld ☕".as_bytes().to_vec()], 100);
        assert_eq!(incoming.text, "héllo wörld ☕");
        assert!(incoming.anomalies.is_empty());
    }

    #[test]
    fn an_empty_frame_is_an_empty_message() {
        let incoming = Incoming::decode(vec![Vec::new()], 100);
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
        let incoming = Incoming::decode(vec![b"a".to_vec(), b"b".to_vec(), b"".to_vec()], 100);
        assert_eq!(
            incoming.text,
            format!("a{FRAME_SEPARATOR}b{FRAME_SEPARATOR}")
        );
        assert_eq!(incoming.anomalies, vec![Anomaly::SeveralFrames(3)]);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_reported() {
        let incoming = Incoming::decode(vec![b"ok \xff\xfe end".to_vec()], 100);
        assert_eq!(incoming.text, "ok \u{FFFD}\u{FFFD} end");
        assert_eq!(incoming.anomalies, vec![Anomaly::InvalidUtf8]);
    }

    #[test]
    fn oversized_text_is_cut_on_a_character_boundary() {
        let incoming = Incoming::decode(vec!["ééé".as_bytes().to_vec()], 3);
        assert_eq!(incoming.text, "é");
        assert_eq!(
            incoming.anomalies,
            vec![Anomaly::Truncated { size: 6, shown: 2 }]
        );
    }

    #[test]
    fn no_frames_at_all_is_an_empty_message() {
        assert_eq!(Incoming::decode(vec![], 10).text, "");
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
            let incoming = Incoming::decode(frames, max);
            prop_assert!(incoming.text.len() <= max);
        }
    }
}
