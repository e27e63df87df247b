//! The secure body frame: what travels after the REQ envelope's delimiter
//! in secure mode, instead of the plain text.
//!
//! ```text
//! "zcs3" kind  rest
//!        'H'   client index (8) | Noise IK message 1 | mac1  client → server
//!        'h'   client index (8) | server index (8) | msg 2  server → client
//!        'M'   server index (8) | sealed payload            client → server
//!        'm'   client index (8) | sealed payload            server → client
//!        'R'   reason (1) | UTF-8 text, not encrypted       server → client
//!        'K'   (nothing): which key do you hold?            client → server
//!        'k'   the server's public key (32), not encrypted  server → client
//! ```
//!
//! `K`/`k` serve trust on first use (`chat-client --secure`): the answer
//! proves nothing, so the client shows its fingerprint for the user to
//! check before it is remembered (see `secure::known`).
//!
//! Indexes are random numbers each side picks for a session, as in
//! WireGuard: they let the server find the session of a message (a REP-style
//! server does not know which client sent what) and let each side drop
//! frames of another session. A sealed payload is one or more Noise transport
//! messages (each at most 65,535 bytes), each preceded by its length in two
//! bytes. Its plaintext, cut into those messages, is the length of the rest
//! (4 bytes), the [`Sealed`] kind (1 byte: a message, the operator's
//! goodbye, a refusal), the message id (16 bytes) and the text. The kind
//! makes the server's goodbye and refusals inside a session authentic: a
//! clear `R` frame or envelope mark cannot forge them. The length binds the
//! chunks together: each is authenticated under the next nonce, so chunks
//! cannot be reordered or taken from another message, and the length
//! refuses a payload with chunks dropped from its end or added to it.
//! The first handshake message ends with WireGuard's mac1 (16 bytes, see
//! `secure::mac`), keyed by the server's public key, so the server refuses
//! forged ones before any Diffie-Hellman.
//! (Version 1, `zcs1`, had no length: a cut payload opened as a shorter
//! message; version 2, `zcs2`, no mac1.)

use crate::envelope::MessageId;

/// The first bytes of every secure frame.
pub const MAGIC: &[u8; 4] = b"zcs3";

/// Why a secure server refused a frame. Travels as one byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client's key is not on the server's allow list.
    NotAllowed = 1,
    /// The handshake could not be read: the client has the wrong server key.
    HandshakeFailed = 2,
    /// The server has no such session (restarted, or the session expired):
    /// the client should shake hands again.
    UnknownSession = 3,
    /// The message failed authentication: altered, replayed or out of order.
    NotAuthentic = 4,
    /// The first handshake message was made for another server key (its
    /// mac1 does not match this server's).
    WrongKey = 5,
    /// The server answers no more handshakes this moment (it is flooded):
    /// the client may try again.
    Busy = 6,
}

impl Refusal {
    fn from_byte(byte: u8) -> Option<Refusal> {
        Some(match byte {
            1 => Refusal::NotAllowed,
            2 => Refusal::HandshakeFailed,
            3 => Refusal::UnknownSession,
            4 => Refusal::NotAuthentic,
            5 => Refusal::WrongKey,
            6 => Refusal::Busy,
            _ => return None,
        })
    }
}

/// One parsed secure frame, borrowing from the received bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    HandshakeInit {
        client_index: u64,
        noise: &'a [u8],
    },
    HandshakeReply {
        client_index: u64,
        server_index: u64,
        noise: &'a [u8],
    },
    Message {
        server_index: u64,
        sealed: &'a [u8],
    },
    Reply {
        client_index: u64,
        sealed: &'a [u8],
    },
    Refused {
        reason: Refusal,
        text: &'a [u8],
    },
    KeyRequest,
    Key {
        key: &'a [u8; 32],
    },
}

/// Whether a message body is a secure frame (so a plain peer can tell an
/// encrypted chat from text, and say so instead of showing bytes).
pub fn is_secure(body: &[Vec<u8>]) -> bool {
    matches!(body, [frame] if is_secure_frame(frame))
}

/// Whether `frame` is a first handshake message (which ends with a mac1).
pub fn is_handshake_init(frame: &[u8]) -> bool {
    frame
        .strip_prefix(MAGIC)
        .is_some_and(|rest| rest.first() == Some(&b'H'))
}

/// Whether one frame is a secure frame (see [`is_secure`]).
pub fn is_secure_frame(frame: &[u8]) -> bool {
    frame.starts_with(MAGIC)
}

impl<'a> Frame<'a> {
    /// Parses a body frame; `None` if it is not a well-formed secure frame.
    pub fn parse(frame: &'a [u8]) -> Option<Frame<'a>> {
        let rest = frame.strip_prefix(MAGIC)?;
        let (&kind, rest) = rest.split_first()?;
        Some(match kind {
            b'H' => {
                let (client_index, noise) = take_index(rest)?;
                Frame::HandshakeInit {
                    client_index,
                    noise,
                }
            }
            b'h' => {
                let (client_index, rest) = take_index(rest)?;
                let (server_index, noise) = take_index(rest)?;
                Frame::HandshakeReply {
                    client_index,
                    server_index,
                    noise,
                }
            }
            b'M' => {
                let (server_index, sealed) = take_index(rest)?;
                Frame::Message {
                    server_index,
                    sealed,
                }
            }
            b'm' => {
                let (client_index, sealed) = take_index(rest)?;
                Frame::Reply {
                    client_index,
                    sealed,
                }
            }
            b'R' => {
                let (&reason, text) = rest.split_first()?;
                Frame::Refused {
                    reason: Refusal::from_byte(reason)?,
                    text,
                }
            }
            b'K' if rest.is_empty() => Frame::KeyRequest,
            b'k' => Frame::Key {
                key: rest.try_into().ok()?,
            },
            _ => return None,
        })
    }

    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, indexes, tail): (u8, &[u64], &[u8]) = match self {
            Frame::HandshakeInit {
                client_index,
                noise,
            } => (b'H', &[*client_index], noise),
            Frame::HandshakeReply {
                client_index,
                server_index,
                noise,
            } => (b'h', &[*client_index, *server_index], noise),
            Frame::Message {
                server_index,
                sealed,
            } => (b'M', &[*server_index], sealed),
            Frame::Reply {
                client_index,
                sealed,
            } => (b'm', &[*client_index], sealed),
            Frame::Refused { text, .. } => (b'R', &[], text),
            Frame::KeyRequest => (b'K', &[], &[]),
            Frame::Key { key } => (b'k', &[], &key[..]),
        };
        let mut frame = Vec::with_capacity(MAGIC.len() + 2 + indexes.len() * 8 + tail.len());
        frame.extend_from_slice(MAGIC);
        frame.push(kind);
        if let Frame::Refused { reason, .. } = self {
            frame.push(*reason as u8);
        }
        for index in indexes {
            frame.extend_from_slice(&index.to_be_bytes());
        }
        frame.extend_from_slice(tail);
        frame
    }
}

fn take_index(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (index, rest) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*index), rest))
}

/// The largest Noise message, and the authentication tag each one carries.
const NOISE_MAX: usize = 65_535;
const TAG_LEN: usize = 16;
const ID_LEN: usize = 16;
/// The length that opens a sealed plaintext.
const LENGTH_LEN: usize = 4;

/// What a sealed payload is: its kind travels inside the encryption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sealed {
    /// A message or a reply: the text.
    Text = 0,
    /// The server's operator ended the chat with this message unanswered.
    Ended = 1,
    /// The server refused this message; the text says why.
    Refused = 2,
}

impl Sealed {
    fn from_byte(byte: u8) -> Option<Sealed> {
        Some(match byte {
            0 => Sealed::Text,
            1 => Sealed::Ended,
            2 => Sealed::Refused,
            _ => return None,
        })
    }
}

/// Encrypts a payload of `kind` for message `id` with `text`.
pub fn seal(
    transport: &mut snow::TransportState,
    kind: Sealed,
    id: MessageId,
    text: &[u8],
) -> Result<Vec<u8>, snow::Error> {
    let length = u32::try_from(1 + ID_LEN + text.len()).map_err(|_| snow::Error::Input)?;
    let mut plain = Vec::with_capacity(LENGTH_LEN + 1 + ID_LEN + text.len());
    plain.extend_from_slice(&length.to_be_bytes());
    plain.push(kind as u8);
    plain.extend_from_slice(&id.session.to_be_bytes());
    plain.extend_from_slice(&id.sequence.to_be_bytes());
    plain.extend_from_slice(text);
    let chunks = plain.chunks(NOISE_MAX - TAG_LEN);
    let mut sealed = Vec::with_capacity(plain.len() + chunks.len() * (2 + TAG_LEN));
    let mut buffer = vec![0u8; NOISE_MAX];
    for chunk in chunks {
        let length = transport.write_message(chunk, &mut buffer)?;
        sealed.extend_from_slice(&(length as u16).to_be_bytes());
        sealed.extend_from_slice(&buffer[..length]);
    }
    Ok(sealed)
}

/// Decrypts a sealed payload into its kind, message id and text. On failure
/// the session is left as it was, so one forged or replayed frame does not
/// break the session for the genuine peer.
pub fn open(
    transport: &mut snow::TransportState,
    sealed: &[u8],
) -> Result<(Sealed, MessageId, Vec<u8>), snow::Error> {
    let nonce_before = transport.receiving_nonce();
    let opened = open_chunks(transport, sealed);
    if opened.is_err() {
        transport.set_receiving_nonce(nonce_before);
    }
    let plain = opened?;
    // The whole message, as its sender sealed it, or nothing.
    let whole = plain
        .split_first_chunk::<LENGTH_LEN>()
        .filter(|(length, rest)| u32::from_be_bytes(**length) as usize == rest.len())
        .and_then(|(_, rest)| rest.split_first())
        .and_then(|(kind, rest)| {
            Some((
                Sealed::from_byte(*kind)?,
                rest.split_first_chunk::<ID_LEN>()?,
            ))
        });
    let Some((kind, (id, text))) = whole else {
        transport.set_receiving_nonce(nonce_before);
        return Err(snow::Error::Decrypt);
    };
    let (session, sequence) = id.split_at(8);
    let id = MessageId {
        session: u64::from_be_bytes(session.try_into().unwrap_or_default()),
        sequence: u64::from_be_bytes(sequence.try_into().unwrap_or_default()),
    };
    Ok((kind, id, text.to_vec()))
}

fn open_chunks(
    transport: &mut snow::TransportState,
    mut sealed: &[u8],
) -> Result<Vec<u8>, snow::Error> {
    let mut plain = Vec::with_capacity(sealed.len());
    let mut buffer = vec![0u8; NOISE_MAX];
    if sealed.is_empty() {
        return Err(snow::Error::Decrypt);
    }
    while !sealed.is_empty() {
        let Some((length, rest)) = sealed.split_first_chunk::<2>() else {
            return Err(snow::Error::Decrypt);
        };
        let length = u16::from_be_bytes(*length) as usize;
        if rest.len() < length {
            return Err(snow::Error::Decrypt);
        }
        let (message, rest) = rest.split_at(length);
        let read = transport.read_message(message, &mut buffer)?;
        plain.extend_from_slice(&buffer[..read]);
        sealed = rest;
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_kind_round_trips() {
        let frames = [
            Frame::HandshakeInit {
                client_index: 1,
                noise: b"one",
            },
            Frame::HandshakeReply {
                client_index: 2,
                server_index: u64::MAX,
                noise: b"two",
            },
            Frame::Message {
                server_index: 3,
                sealed: b"",
            },
            Frame::Reply {
                client_index: 4,
                sealed: b"four",
            },
            Frame::Refused {
                reason: Refusal::NotAllowed,
                text: "not on the list".as_bytes(),
            },
            Frame::Refused {
                reason: Refusal::WrongKey,
                text: b"",
            },
            Frame::KeyRequest,
            Frame::Key { key: &[7; 32] },
        ];
        for frame in frames {
            let bytes = frame.encode();
            assert!(is_secure(std::slice::from_ref(&bytes)));
            assert_eq!(Frame::parse(&bytes), Some(frame));
        }
        assert_eq!(Frame::parse(b"hello"), None);
        assert_eq!(Frame::parse(b"zcs3M\x00\x01"), None, "a cut index");
        assert_eq!(Frame::parse(b"zcs3R\x09oops"), None, "an unknown reason");
        assert_eq!(
            Frame::parse(b"zcs3Kx"),
            None,
            "a key request carries nothing"
        );
        assert_eq!(Frame::parse(b"zcs3k\x01"), None, "a cut key");
    }

    /// A sender's and a receiver's transport, after a Noise handshake.
    fn transports() -> (snow::TransportState, snow::TransportState) {
        let params: snow::params::NoiseParams =
            "Noise_NN_25519_ChaChaPoly_BLAKE2s".parse().unwrap();
        let mut sender = snow::Builder::new(params.clone())
            .build_initiator()
            .unwrap();
        let mut receiver = snow::Builder::new(params).build_responder().unwrap();
        let (mut one, mut two) = ([0u8; 1024], [0u8; 1024]);
        let length = sender.write_message(&[], &mut one).unwrap();
        receiver.read_message(&one[..length], &mut two).unwrap();
        let length = receiver.write_message(&[], &mut one).unwrap();
        sender.read_message(&one[..length], &mut two).unwrap();
        (
            sender.into_transport_mode().unwrap(),
            receiver.into_transport_mode().unwrap(),
        )
    }

    /// The chunks of a sealed payload, each with its two-byte length.
    fn chunks(mut sealed: &[u8]) -> Vec<Vec<u8>> {
        let mut chunks = Vec::new();
        while let Some((length, _)) = sealed.split_first_chunk::<2>() {
            let end = 2 + u16::from_be_bytes(*length) as usize;
            chunks.push(sealed[..end].to_vec());
            sealed = &sealed[end..];
        }
        chunks
    }

    const ID: MessageId = MessageId {
        session: 5,
        sequence: 6,
    };

    #[test]
    fn a_long_message_cut_short_reordered_or_spliced_is_refused() {
        let (mut sender, mut receiver) = transports();
        let text = vec![b'x'; 100_017];
        let sealed = seal(&mut sender, Sealed::Text, ID, &text).unwrap();
        let parts = chunks(&sealed);
        assert_eq!(parts.len(), 2, "a message over 64 KiB takes two chunks");
        let next = seal(&mut sender, Sealed::Ended, ID, b"the next message").unwrap();
        for (attack, bytes) in [
            ("first chunk only", parts[0].clone()),
            ("reordered", [parts[1].clone(), parts[0].clone()].concat()),
            (
                "with the next message's chunk",
                [sealed.clone(), next.clone()].concat(),
            ),
        ] {
            assert!(
                open(&mut receiver, &bytes).is_err(),
                "{attack} was accepted"
            );
        }
        // Refusals leave the session as it was: the real payloads open.
        assert_eq!(
            open(&mut receiver, &sealed).unwrap(),
            (Sealed::Text, ID, text)
        );
        let (kind, _, text) = open(&mut receiver, &next).unwrap();
        assert_eq!((kind, &text[..]), (Sealed::Ended, &b"the next message"[..]));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut frame = MAGIC.to_vec();
            frame.extend(bytes);
            let _ = Frame::parse(&frame);
        }
    }
}
