//! How a message's body travels between client and server: as the text
//! itself (plain mode) or sealed (secure mode: the protocol in
//! [`crate::secure`], its place behind this interface in `secure` here).
//!
//! The loops in [`crate::server`] and [`crate::client`] call the same
//! interface in both modes, so each reads as one path; everything that
//! differs between the modes sits behind [`ServerChannel`] and
//! [`ClientChannel`].

mod secure;

#[cfg(test)]
pub(crate) use secure::{refusal, told_operator};

use std::time::Instant;

use crate::envelope::{Mark, MessageId};
use crate::error::ChatError;
use crate::secure::frame;
use crate::secure::keys::PublicKey;

/// Told to a secure client that writes to a plain server.
const PLAIN_ONLY: &str = "this chat-server is not in secure mode: connect without --server-key, or ask its operator to start it with --key";

/// Who sent a message the server is about to answer, as its channel knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The client's proven key in secure mode. Answers are remembered per
    /// key, so no client can claim another's session.
    pub key: Option<PublicKey>,
    /// The secure session that seals the reply (unused in plain mode).
    pub session: u64,
}

/// What the server's channel makes of a request's body.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// A message to show and answer.
    Message {
        /// Who sent it.
        origin: Origin,
        /// Its id: in plain mode the envelope's, in secure mode the sealed one.
        id: Option<MessageId>,
        /// Its text frames, in the clear.
        body: Vec<Vec<u8>>,
    },
    /// Not a message for the operator: answer at once with `body`, its id
    /// frame carrying `mark`, and tell the operator `notice`.
    Answer {
        /// The reply's body frame (a refusal's reason, a handshake reply).
        body: Vec<u8>,
        /// [`Mark::Refused`] for a refusal a chat-client shows as such.
        mark: Mark,
        /// One line for the operator's stderr.
        notice: String,
        /// For a notice a peer can repeat at will (a refusal), the kind it
        /// is rate-limited as; `None` for one worth every line.
        throttle: Option<&'static str>,
    },
}

/// The server's side of a channel.
pub trait ServerChannel {
    /// What the body of a request with envelope id `id`, from `host`, is.
    /// `host` names where the request came from for rate limits: the
    /// sender's IP address (its /64 for IPv6, as WireGuard counts), or its
    /// connection's routing id where there is no address (`ipc://`).
    fn incoming(
        &mut self,
        host: &[u8],
        id: Option<MessageId>,
        body: Vec<Vec<u8>>,
        now: Instant,
    ) -> Admission;

    /// The body that carries `reply` to message `id` from `origin`. (If the
    /// secure session ended meanwhile, a "no such session" refusal: the
    /// client shakes hands again, re-sends, and gets the reply from the
    /// answer memory.)
    fn outgoing(
        &mut self,
        origin: Origin,
        id: Option<MessageId>,
        reply: Vec<Vec<u8>>,
    ) -> Vec<Vec<u8>>;

    /// The body that tells the sender of message `id` that the operator
    /// ended the chat (its envelope carries [`Mark::Ended`] too).
    fn goodbye(&mut self, origin: Origin, id: MessageId) -> Vec<Vec<u8>>;
}

/// What the client's channel makes of a reply to its pending message.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The reply's text frames, in the clear.
    Reply(Vec<Vec<u8>>),
    /// Send `body` for the pending message now (a handshake moved on), and
    /// tell the user `notice` if there is one.
    Send {
        /// The next body to send.
        body: Vec<u8>,
        /// One line for the user, if the step is worth telling.
        notice: Option<String>,
    },
    /// Not about the pending message (a late answer to an earlier session),
    /// or not to be believed (a clear refusal inside a secure session).
    Ignore,
    /// The server's operator ended the chat with this message unanswered.
    Ended,
    /// The message cannot be answered; the reason, for the user.
    Failed(String),
    /// The handshake made before any message is done (secure mode).
    Ready {
        /// One line for the user.
        notice: String,
    },
    /// Tell the user `0`, and keep waiting for the reply.
    Notice(String),
    /// Send `body` for the pending message after `pause` (a busy server).
    SendLater {
        /// The next body to send.
        body: Vec<u8>,
        /// How long to wait first.
        pause: std::time::Duration,
    },
}

/// The client's side of a channel.
pub trait ClientChannel {
    /// The body that carries `text` as message `id`.
    ///
    /// # Errors
    /// Only if sealing fails where valid input cannot fail (a bug, reported).
    fn outgoing(&mut self, id: MessageId, text: &str) -> Result<Vec<u8>, ChatError>;

    /// A body to send, as message `id` without text, before any message:
    /// secure mode shakes hands as soon as a server is there, so that a
    /// wrong server key is found out before anything is typed. `None` when
    /// there is nothing to agree on (plain mode, or already agreed).
    ///
    /// # Errors
    /// Only if the handshake cannot be made (a bug, reported).
    fn hello(&mut self) -> Result<Option<Vec<u8>>, ChatError> {
        Ok(None)
    }

    /// What a reply means while message `id` (whose text is `text`, `None`
    /// for a [`ClientChannel::hello`]) waits: its envelope's id and `mark`,
    /// and its `body`.
    fn incoming(
        &mut self,
        id: MessageId,
        text: Option<&str>,
        envelope_id: Option<MessageId>,
        mark: Mark,
        body: Vec<Vec<u8>>,
    ) -> Step;

    /// The connection was made again, perhaps to a new server: forget what
    /// was agreed with the old one.
    fn reset(&mut self);

    /// How the server is labelled on screen, if not simply "server".
    fn peer_label(&self) -> Option<String>;
}

/// Plain mode: the body is the text itself, as plain pyzmq peers send it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain;

impl ServerChannel for Plain {
    fn incoming(
        &mut self,
        _host: &[u8],
        id: Option<MessageId>,
        body: Vec<Vec<u8>>,
        _now: Instant,
    ) -> Admission {
        if frame::is_secure(&body) {
            return Admission::Answer {
                body: PLAIN_ONLY.as_bytes().to_vec(),
                mark: Mark::Refused,
                notice: "refused an encrypted chat: this server runs in plain mode (start it with --key FILE for encrypted chats)".into(),
                throttle: Some("refused"),
            };
        }
        Admission::Message {
            origin: Origin::default(),
            id,
            body,
        }
    }

    fn outgoing(
        &mut self,
        _origin: Origin,
        _id: Option<MessageId>,
        reply: Vec<Vec<u8>>,
    ) -> Vec<Vec<u8>> {
        reply
    }

    fn goodbye(&mut self, _origin: Origin, _id: MessageId) -> Vec<Vec<u8>> {
        vec![Vec::new()]
    }
}

/// What an envelope's mark says, in plain mode (and in secure mode before
/// a session exists, when nothing can be sealed): `None` for a reply.
pub(crate) fn marked_step(mark: Mark, body: &[Vec<u8>]) -> Option<Step> {
    match mark {
        Mark::Normal => None,
        Mark::Ended => Some(Step::Ended),
        Mark::Refused => {
            let reason = crate::message::Incoming::decode(body, 1024).text;
            Some(Step::Failed(format!(
                "the server refused the message: {}",
                crate::display::escape_for_terminal(&reason)
            )))
        }
    }
}

impl ClientChannel for Plain {
    fn outgoing(&mut self, _id: MessageId, text: &str) -> Result<Vec<u8>, ChatError> {
        Ok(text.as_bytes().to_vec())
    }

    fn incoming(
        &mut self,
        id: MessageId,
        _text: Option<&str>,
        envelope_id: Option<MessageId>,
        mark: Mark,
        body: Vec<Vec<u8>>,
    ) -> Step {
        // The answer to an earlier copy or message, or something the server
        // sent unasked: not the reply to this message.
        if envelope_id != Some(id) {
            return Step::Ignore;
        }
        marked_step(mark, &body).unwrap_or(Step::Reply(body))
    }

    fn reset(&mut self) {}

    fn peer_label(&self) -> Option<String> {
        None
    }
}
