//! Secure mode behind the loops' one interface ([`crate::channel`]): the
//! server opens each request and seals each reply, the client seals each
//! message and drives the handshake, and neither loop knows which mode it is in.

use std::time::Instant;

use super::{Admission, ClientChannel, Origin, ServerChannel, Step, marked_step};
use crate::envelope::{Mark, MessageId};
use crate::error::ChatError;
use crate::secure::budget::Spent;
use crate::secure::client::{ClientSecurity, ClientStep, RETRIES_PER_MESSAGE};
use crate::secure::frame::{self, Frame, Refusal, Sealed};
use crate::secure::server::{Answered, Opened, Refused, ServerSecurity, UNKNOWN_SESSION};

/// Told to a plain peer that writes to a secure server.
const SECURE_ONLY: &str = "this chat-server only accepts encrypted chats: connect with chat-client --server-key KEY (ask the server's operator for its key)";

impl ServerChannel for ServerSecurity {
    fn incoming(
        &mut self,
        host: &[u8],
        id: Option<MessageId>,
        body: Vec<Vec<u8>>,
        now: Instant,
    ) -> Admission {
        if !frame::is_secure(&body) {
            return Admission::Answer {
                body: SECURE_ONLY.as_bytes().to_vec(),
                mark: Mark::Refused,
                notice: "refused a plain (unencrypted) message: this server is in secure mode"
                    .into(),
                throttle: Some("refused"),
            };
        }
        match self.open(host, &body, id, now) {
            Opened::Message {
                session,
                client,
                id,
                text,
            } => Admission::Message {
                origin: Origin {
                    key: Some(client),
                    session,
                },
                id: Some(id),
                body: vec![text],
            },
            Opened::Answer { reply, event } => {
                let (notice, throttle) = told_operator(event);
                Admission::Answer {
                    body: reply,
                    mark: Mark::Normal,
                    notice,
                    throttle: Some(throttle),
                }
            }
            Opened::Refused(refused) => {
                let (body, notice, throttle) = refusal(refused);
                Admission::Answer {
                    body,
                    mark: Mark::Normal,
                    notice,
                    throttle: Some(throttle),
                }
            }
        }
    }

    fn outgoing(
        &mut self,
        origin: Origin,
        id: Option<MessageId>,
        reply: Vec<Vec<u8>>,
    ) -> Vec<Vec<u8>> {
        // Every message admitted in secure mode carries its sealed id.
        let Some(id) = id else {
            let refusal = Frame::Refused {
                reason: Refusal::NotAuthentic,
                text: b"a message without an id",
            };
            return vec![refusal.encode()];
        };
        vec![self.seal_reply(origin.session, Sealed::Text, id, &reply.concat())]
    }

    fn goodbye(&mut self, origin: Origin, id: MessageId) -> Vec<Vec<u8>> {
        // Sealed, so the client can tell it from a forged end.
        vec![self.seal_reply(origin.session, Sealed::Ended, id, b"")]
    }
}

/// What the server's operator is told of an answer given at once, and the
/// kind it is rate-limited as (a peer can ask for either at will).
pub(crate) fn told_operator(event: Answered) -> (String, &'static str) {
    match event {
        Answered::SessionStarted(client) => (
            format!(
                "encrypted session with client {} started",
                client.fingerprint()
            ),
            "session started",
        ),
        Answered::KeyTold => (
            "told a client this server's public key (it is learning it on first use)".into(),
            "key asked",
        ),
    }
}

/// A refusal in words: the frame that tells the client (which shows its
/// text), what the operator is told, and the kind that is rate-limited as.
pub(crate) fn refusal(refused: Refused) -> (Vec<u8>, String, &'static str) {
    let frame = Frame::Refused {
        reason: refused.code(),
        text: told_client(refused).as_bytes(),
    };
    // A flood is news apart from the refusals it causes.
    let throttle = match refused {
        Refused::OverBudget(_) => "handshake budget",
        _ => "secure refusal",
    };
    (frame.encode(), refusal_notice(refused), throttle)
}

/// What the client is told of a refusal.
fn told_client(refused: Refused) -> &'static str {
    match refused {
        Refused::NotSecureFrame => "that was not a secure chat message",
        Refused::CannotStart => "the server could not start a handshake",
        Refused::WrongServerKey => {
            "the server could not read the handshake: the client has the wrong --server-key (or the handshake was altered on the way)"
        }
        Refused::LowOrder => "the handshake used a key of small order, which secures nothing",
        Refused::NoClientKey => "no client key in the handshake",
        Refused::NoTimestamp => {
            "the handshake carried no timestamp: this chat-client is too old for this server"
        }
        Refused::Replayed(_) => {
            "a handshake no newer than one already seen was refused (replayed?)"
        }
        Refused::NotAllowed(_) => {
            "this client's key is not on the server's allow list; ask the server's operator to add it"
        }
        Refused::HandshakeFailed => "the handshake failed on the server",
        Refused::NotAuthentic => {
            "the message failed authentication (altered, replayed or out of order) and was dropped"
        }
        Refused::UnknownSession => UNKNOWN_SESSION,
        Refused::OverBudget(Spent::Host) => "too many handshakes from this address: wait a moment",
        Refused::OverBudget(Spent::Server) => {
            "the server is answering as many handshakes as it will: try again in a moment"
        }
    }
}

/// What the server's operator is told of a refusal.
fn refusal_notice(refused: Refused) -> String {
    let notice = match refused {
        Refused::NotSecureFrame => "ignored a frame that is not a secure chat message",
        Refused::CannotStart => "could not start a handshake",
        Refused::WrongServerKey => {
            "refused a handshake made for another server key (a client with a wrong --server-key?)"
        }
        Refused::LowOrder => {
            "refused a handshake with a key of small order (all zeros, say): its secrets are known to anyone"
        }
        Refused::NoClientKey => "refused a handshake without a client key",
        Refused::NoTimestamp => {
            "refused a handshake without a timestamp (a chat-client too old for this server)"
        }
        Refused::Replayed(client) => {
            return format!(
                "refused a replayed handshake (a recording of one of client {}'s)",
                client.fingerprint()
            );
        }
        Refused::NotAllowed(client) => {
            return format!("refused client key {client}: not on the allow list");
        }
        Refused::HandshakeFailed => "a handshake failed",
        Refused::NotAuthentic => {
            "dropped a sealed message that failed authentication (altered, replayed or out of order); nothing was sealed in answer"
        }
        Refused::UnknownSession => {
            "a client's session was unknown or expired; it was asked to shake hands again"
        }
        Refused::OverBudget(Spent::Host) => {
            "refused handshakes beyond the rate one address may start (a flood?)"
        }
        Refused::OverBudget(Spent::Server) => {
            "refused handshakes beyond the rate the server answers in all (a flood from many addresses?)"
        }
    };
    notice.to_string()
}

impl ClientChannel for ClientSecurity {
    fn outgoing(&mut self, id: MessageId, text: &str) -> Result<Vec<u8>, ChatError> {
        Ok(self.opening(id, text.as_bytes(), Instant::now())?)
    }

    fn hello(&mut self) -> Result<Option<Vec<u8>>, ChatError> {
        Ok(ClientSecurity::hello(self)?)
    }

    fn incoming(
        &mut self,
        id: MessageId,
        text: Option<&str>,
        envelope_id: Option<MessageId>,
        mark: Mark,
        body: Vec<Vec<u8>>,
    ) -> Step {
        // Before the server proved its key nothing can be sealed, so the
        // envelope is taken as it is: its id, and a mark (a plain server's
        // refusal, an end). From then on (a rekey under way included) only
        // what opens as sealed counts, its sealed id included, and every
        // sealed reply of the session is opened, in order, so that the two
        // sides' nonces stay in step.
        if !self.is_proven() {
            if envelope_id != Some(id) {
                return Step::Ignore;
            }
            // Only a plain server refuses in a mark (an encrypted message
            // it cannot read): said in the client's words, which name where
            // its key came from.
            if mark == Mark::Refused {
                return Step::Failed(self.plain_server().to_string());
            }
            if let Some(step) = marked_step(mark, &body) {
                return step;
            }
        }
        let step = self.step(
            id,
            text.map(str::as_bytes),
            envelope_id,
            &body,
            Instant::now(),
        );
        match step {
            Ok(ClientStep::Reply(text)) => Step::Reply(vec![text]),
            Ok(ClientStep::Ended) => Step::Ended,
            Ok(ClientStep::Proven(Some(sealed))) => Step::Send {
                body: sealed,
                notice: Some(self.proven()),
            },
            Ok(ClientStep::Proven(None)) => Step::Ready {
                notice: self.proven(),
            },
            Ok(ClientStep::Send(body)) => Step::Send { body, notice: None },
            Ok(ClientStep::SendAfter(pause, body)) => Step::SendLater { body, pause },
            Ok(ClientStep::StillWaiting) => Step::Notice(format!(
                "the server could not open this message {RETRIES_PER_MESSAGE} times (altered on the way?), or someone else said so; still waiting for its reply (/quit or Ctrl-C ends)"
            )),
            Ok(ClientStep::Ignore) => Step::Ignore,
            Err(failure) => Step::Failed(failure.to_string()),
        }
    }

    fn reset(&mut self) {
        ClientSecurity::reset(self);
    }

    fn peer_label(&self) -> Option<String> {
        Some(format!(
            "server {} (encrypted)",
            self.server_key().fingerprint()
        ))
    }
}

impl ClientSecurity {
    /// What the user is told when the server first proves its key, with
    /// where a key learned on first use was remembered.
    fn proven(&mut self) -> String {
        let server = self.server_key().fingerprint();
        let mut notice = format!(
            "encrypted chat with server {server} (it proved it holds the key it was trusted with)"
        );
        if let Some(remembered) = self.take_remembered() {
            notice.push_str("; ");
            notice.push_str(&remembered);
        }
        notice
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::budget::{HOST_BURST, HOST_RATE};
    use crate::secure::frame::{Frame, Refusal};
    use crate::secure::keys::{Identity, PublicKey};
    use crate::secure::mac::Mac1Key;

    const ID: MessageId = MessageId {
        session: 3,
        sequence: 1,
    };

    /// A client and server with a session, the first message answered.
    fn in_session() -> (ClientSecurity, ServerSecurity, Origin) {
        let server_identity = Identity::generate().unwrap();
        let mut client =
            ClientSecurity::new(Identity::generate().unwrap(), server_identity.public_key());
        let mut server = ServerSecurity::new(server_identity, None);
        let now = Instant::now();
        let hello = ClientChannel::outgoing(&mut client, ID, "hi").unwrap();
        let Admission::Answer { body, .. } =
            ServerChannel::incoming(&mut server, b"one", Some(ID), vec![hello], now)
        else {
            panic!("a handshake is answered");
        };
        let Step::Send { body: sealed, .. } = ClientChannel::incoming(
            &mut client,
            ID,
            Some("hi"),
            Some(ID),
            Mark::Normal,
            vec![body],
        ) else {
            panic!("the handshake completes");
        };
        let Admission::Message { origin, .. } =
            ServerChannel::incoming(&mut server, b"one", Some(ID), vec![sealed], now)
        else {
            panic!("the message opens");
        };
        (client, server, origin)
    }

    #[test]
    fn inside_a_session_forged_ends_and_clear_refusals_change_nothing() {
        let (mut client, mut server, origin) = in_session();
        let forged_refusal = Frame::Refused {
            reason: Refusal::NotAllowed,
            text: b"you are banned",
        }
        .encode();
        for (mark, body) in [
            (Mark::Ended, Vec::new()),
            (Mark::Refused, b"go away".to_vec()),
            (Mark::Normal, forged_refusal),
            (Mark::Normal, b"plain words".to_vec()),
        ] {
            let step =
                ClientChannel::incoming(&mut client, ID, Some("hi"), Some(ID), mark, vec![body]);
            assert_eq!(step, Step::Ignore, "{mark:?}");
        }
        // The genuine end, sealed by the server, is believed.
        let goodbye = server.goodbye(origin, ID);
        let step =
            ClientChannel::incoming(&mut client, ID, Some("hi"), Some(ID), Mark::Ended, goodbye);
        assert_eq!(step, Step::Ended);
    }

    #[test]
    fn handshakes_beyond_the_rate_of_one_connection_are_refused_without_a_dh() {
        let mut server = ServerSecurity::new(Identity::generate().unwrap(), None);
        // Forged by someone who knows the server's public key, so its mac1 passes.
        let mut forged = Frame::HandshakeInit {
            client_index: 1,
            noise: &[9u8; 96],
        }
        .encode();
        Mac1Key::for_server(&server.public_key()).append(&mut forged);
        let now = Instant::now();
        let mut notice_of = |connection: &[u8], at: Instant| match ServerChannel::incoming(
            &mut server,
            connection,
            Some(ID),
            vec![forged.clone()],
            at,
        ) {
            Admission::Answer { notice, .. } => notice,
            Admission::Message { .. } => panic!("a forged handshake opened"),
        };
        let rate_limited = |notice: &str| notice.contains("beyond the rate");
        for _ in 0..HOST_BURST as usize {
            assert!(
                !rate_limited(&notice_of(b"flood", now)),
                "within the burst, read"
            );
        }
        assert!(
            rate_limited(&notice_of(b"flood", now)),
            "beyond it, refused unread"
        );
        assert!(
            !rate_limited(&notice_of(b"other", now)),
            "another connection is not held back"
        );
        let later = now + std::time::Duration::from_secs(1);
        for _ in 0..HOST_RATE as usize {
            assert!(
                !rate_limited(&notice_of(b"flood", later)),
                "a second later, some again"
            );
        }
        assert!(rate_limited(&notice_of(b"flood", later)));
    }

    #[test]
    fn a_handshake_without_the_servers_mac1_is_refused_and_spends_no_budget() {
        let mut server = ServerSecurity::new(Identity::generate().unwrap(), None);
        let mut forged = Frame::HandshakeInit {
            client_index: 1,
            noise: &[9u8; 96],
        }
        .encode();
        Mac1Key::for_server(&PublicKey([5; 32])).append(&mut forged);
        let now = Instant::now();
        for _ in 0..3 * HOST_BURST as usize {
            let Admission::Answer { body, notice, .. } =
                ServerChannel::incoming(&mut server, b"flood", Some(ID), vec![forged.clone()], now)
            else {
                panic!("a forged handshake opened");
            };
            assert!(notice.contains("another server key"), "{notice}");
            assert!(matches!(
                Frame::parse(&body),
                Some(Frame::Refused {
                    reason: Refusal::WrongKey,
                    ..
                })
            ));
        }
    }

    #[test]
    fn before_a_session_a_refusal_mark_is_taken_as_it_is() {
        let mut client = ClientSecurity::new(
            Identity::generate().unwrap(),
            Identity::generate().unwrap().public_key(),
        );
        ClientChannel::outgoing(&mut client, ID, "hi").unwrap();
        let step = ClientChannel::incoming(
            &mut client,
            ID,
            Some("hi"),
            Some(ID),
            Mark::Refused,
            vec![b"not in secure mode".to_vec()],
        );
        // Believed, in the client's own words (issue 26, point 11: a plain
        // server's advice names flags this client may not have used).
        let Step::Failed(reason) = step else {
            panic!("a refusal before a session ends the attempt, got {step:?}");
        };
        assert!(reason.contains("not in secure mode"), "{reason}");
        assert!(reason.contains("connect without --server-key"), "{reason}");
    }
}
