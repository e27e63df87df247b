//! The two ends of a secure chat: the client starts a Noise IK handshake
//! with the server's pinned key; the server answers it, checks the client's
//! key against its allow list and keeps one session per handshake.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use snow::{HandshakeState, TransportState};

use crate::envelope::{MessageId, random_id};
use crate::secure::frame::{self, Frame, Refusal};
use crate::secure::keys::{AllowList, Identity, KEY_LEN, PublicKey, is_low_order};
use crate::secure::noise_params;

/// Bound into every handshake, so a handshake of another protocol (or of a
/// future version of this one) cannot be mistaken for ours.
const PROLOGUE: &[u8] = b"zmq-chat secure v2";

/// A server forgets a session unused for this long; the client then shakes
/// hands again without the user noticing.
pub const SESSION_IDLE_LIMIT: Duration = Duration::from_secs(30 * 60);

/// At most this many sessions are kept; beyond, the least recently used goes.
pub const MAX_SESSIONS: usize = 4096;

/// What can go wrong on the client's side of a secure chat. Each says what
/// it means for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecureFailure {
    /// The server answered the handshake with something that does not prove
    /// it holds the pinned key.
    ServerNotProven,
    /// The server refused us; its reason.
    Refused(Refusal, String),
    /// A reply could not be authenticated.
    ReplyNotAuthentic,
    /// The server answered in plain text: it is not in secure mode.
    ServerIsPlain,
}

impl std::fmt::Display for SecureFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecureFailure::ServerNotProven => f.write_str(
                "the server did not prove it holds the key given with --server-key (a different server, or someone in the middle); the message was not sent",
            ),
            SecureFailure::ServerIsPlain => f.write_str(
                "the server answered without encryption: it is not in secure mode (chat-server --key FILE); the message was not sent",
            ),
            SecureFailure::ReplyNotAuthentic => {
                f.write_str("the reply failed authentication (altered on the way?) and was not shown")
            }
            SecureFailure::Refused(reason, text) => {
                let text = crate::display::escape_for_terminal(text);
                match reason {
                    Refusal::NotAllowed => write!(f, "the server refused this client: {text}"),
                    Refusal::HandshakeFailed => {
                        write!(f, "the server refused the handshake: {text}")
                    }
                    Refusal::NotAuthentic | Refusal::UnknownSession => {
                        write!(f, "the server refused the message: {text}")
                    }
                }
            }
        }
    }
}

impl std::error::Error for SecureFailure {}

/// The client's side: its identity, the server's pinned key, and where the
/// handshake with that server stands.
pub struct ClientSecurity {
    identity: Identity,
    server_key: PublicKey,
    state: ClientState,
}

/// Where the client's handshake stands. A reply moves it forward only from
/// the state that expects that reply.
enum ClientState {
    /// No handshake begun: the next message opens one.
    Idle,
    /// The first handshake message is out; the server's answer is awaited.
    Handshaking {
        handshake: Box<HandshakeState>,
        client_index: u64,
    },
    /// The server proved its key: messages are sealed in this session.
    Established(ClientSession),
}

struct ClientSession {
    transport: TransportState,
    client_index: u64,
    server_index: u64,
}

/// What the client makes of a secure reply to its pending message.
pub(crate) enum ClientStep {
    /// The handshake is done: send this (the sealed message) next.
    Send(Vec<u8>),
    /// The reply's text.
    Reply(Vec<u8>),
    /// The server lost our session: shake hands again (send this).
    Restart(Vec<u8>),
    /// Not for the current session (a late answer to an earlier one).
    Ignore,
}

impl ClientSecurity {
    /// A client with this identity that trusts only `server_key`.
    pub fn new(identity: Identity, server_key: PublicKey) -> ClientSecurity {
        ClientSecurity {
            identity,
            server_key,
            state: ClientState::Idle,
        }
    }

    /// The server's pinned key.
    pub fn server_key(&self) -> PublicKey {
        self.server_key
    }

    /// The client's own public key.
    pub fn public_key(&self) -> PublicKey {
        self.identity.public_key()
    }

    /// Forgets the session (after a reconnect: the server may be a new one).
    pub fn reset(&mut self) {
        self.state = ClientState::Idle;
    }

    /// The body to send for `text`: the sealed message if a session exists,
    /// else the first handshake message (the text follows once it is done).
    pub(crate) fn opening(&mut self, id: MessageId, text: &[u8]) -> Result<Vec<u8>, snow::Error> {
        match &mut self.state {
            ClientState::Established(session) => seal_message(session, id, text),
            ClientState::Idle | ClientState::Handshaking { .. } => self.begin_handshake(),
        }
    }

    fn begin_handshake(&mut self) -> Result<Vec<u8>, snow::Error> {
        let mut handshake = snow::Builder::new(noise_params())
            .local_private_key(self.identity.private_key())?
            .remote_public_key(&self.server_key.0)?
            .prologue(PROLOGUE)?
            .build_initiator()?;
        let mut noise = vec![0u8; 256];
        let length = handshake.write_message(&[], &mut noise)?;
        let client_index = random_id();
        self.state = ClientState::Handshaking {
            handshake: Box::new(handshake),
            client_index,
        };
        Ok(Frame::HandshakeInit {
            client_index,
            noise: &noise[..length],
        }
        .encode())
    }

    /// Handles a reply to the pending message (`id`, whose text is `text`).
    pub(crate) fn step(
        &mut self,
        id: MessageId,
        text: &[u8],
        body: &[Vec<u8>],
    ) -> Result<ClientStep, SecureFailure> {
        let [frame] = body else {
            return Err(SecureFailure::ServerIsPlain);
        };
        match Frame::parse(frame).ok_or(SecureFailure::ServerIsPlain)? {
            Frame::HandshakeReply {
                client_index,
                server_index,
                noise,
            } => {
                let ClientState::Handshaking {
                    handshake,
                    client_index: expected,
                } = &mut self.state
                else {
                    return Ok(ClientStep::Ignore);
                };
                if client_index != *expected {
                    return Ok(ClientStep::Ignore);
                }
                // The responder's ephemeral key opens IK's second message.
                if noise.first_chunk::<KEY_LEN>().is_none_or(is_low_order) {
                    return Err(SecureFailure::ServerNotProven);
                }
                let mut payload = vec![0u8; 256];
                handshake
                    .read_message(noise, &mut payload)
                    .map_err(|_| SecureFailure::ServerNotProven)?;
                let ClientState::Handshaking { handshake, .. } =
                    std::mem::replace(&mut self.state, ClientState::Idle)
                else {
                    unreachable!("the state was checked above");
                };
                let transport = handshake
                    .into_transport_mode()
                    .map_err(|_| SecureFailure::ServerNotProven)?;
                let mut session = ClientSession {
                    transport,
                    client_index,
                    server_index,
                };
                let sealed = seal_message(&mut session, id, text)
                    .map_err(|_| SecureFailure::ServerNotProven)?;
                self.state = ClientState::Established(session);
                Ok(ClientStep::Send(sealed))
            }
            Frame::Reply {
                client_index,
                sealed,
            } => {
                let ClientState::Established(session) = &mut self.state else {
                    return Ok(ClientStep::Ignore);
                };
                if session.client_index != client_index {
                    return Ok(ClientStep::Ignore);
                }
                match frame::open(&mut session.transport, sealed) {
                    Ok((reply_id, reply)) if reply_id == id => Ok(ClientStep::Reply(reply)),
                    _ => Err(SecureFailure::ReplyNotAuthentic),
                }
            }
            Frame::Refused {
                reason: Refusal::UnknownSession,
                ..
            } => {
                let restart = self
                    .begin_handshake()
                    .map_err(|_| SecureFailure::ServerNotProven)?;
                Ok(ClientStep::Restart(restart))
            }
            Frame::Refused { reason, text } => Err(SecureFailure::Refused(
                reason,
                String::from_utf8_lossy(text).into_owned(),
            )),
            // Client-to-server kinds coming back: a plain echo server.
            Frame::HandshakeInit { .. } | Frame::Message { .. } => {
                Err(SecureFailure::ServerIsPlain)
            }
        }
    }
}

fn seal_message(
    session: &mut ClientSession,
    id: MessageId,
    text: &[u8],
) -> Result<Vec<u8>, snow::Error> {
    let sealed = frame::seal(&mut session.transport, id, text)?;
    Ok(Frame::Message {
        server_index: session.server_index,
        sealed: &sealed,
    }
    .encode())
}

/// The server's side: its identity, who may come in, and the sessions.
pub struct ServerSecurity {
    identity: Identity,
    allowed: Option<AllowList>,
    sessions: HashMap<u64, ServerSession>,
}

struct ServerSession {
    transport: TransportState,
    client: PublicKey,
    client_index: u64,
    last_used: Instant,
}

/// What the server makes of a received body.
pub(crate) enum Opened {
    /// A message to show and answer; seal the answer with
    /// [`ServerSecurity::seal_reply`] for `session`.
    Message {
        session: u64,
        client: PublicKey,
        id: MessageId,
        text: Vec<u8>,
    },
    /// Not a message: send `reply` back at once and log `notice`.
    Answer { reply: Vec<u8>, notice: String },
}

impl ServerSecurity {
    /// A server with this identity; with an allow list only those keys get in.
    pub fn new(identity: Identity, allowed: Option<AllowList>) -> ServerSecurity {
        ServerSecurity {
            identity,
            allowed,
            sessions: HashMap::new(),
        }
    }

    /// The server's public key, for its clients' `--server-key`.
    pub fn public_key(&self) -> PublicKey {
        self.identity.public_key()
    }

    /// Handles one received body; `envelope_id` is the id the client put in
    /// the envelope, which must match the one sealed inside.
    pub(crate) fn open(
        &mut self,
        body: &[Vec<u8>],
        envelope_id: Option<MessageId>,
        now: Instant,
    ) -> Opened {
        let frame = match body {
            [frame] => Frame::parse(frame),
            _ => None,
        };
        match frame {
            Some(Frame::HandshakeInit {
                client_index,
                noise,
            }) => self.answer_handshake(client_index, noise, now),
            Some(Frame::Message {
                server_index,
                sealed,
            }) => self.open_message(server_index, sealed, envelope_id, now),
            _ => refuse(
                Refusal::NotAuthentic,
                "that was not a secure chat message",
                "ignored a frame that is not a secure chat message".to_string(),
            ),
        }
    }

    fn answer_handshake(&mut self, client_index: u64, noise: &[u8], now: Instant) -> Opened {
        let started = snow::Builder::new(noise_params())
            .local_private_key(self.identity.private_key())
            .and_then(|builder| builder.prologue(PROLOGUE))
            .and_then(|builder| builder.build_responder());
        let Ok(mut handshake) = started else {
            return refuse(
                Refusal::HandshakeFailed,
                "the server could not start a handshake",
                "could not start a handshake".to_string(),
            );
        };
        // IK's first message opens with the initiator's ephemeral key, in clear.
        if noise.first_chunk::<KEY_LEN>().is_none_or(is_low_order) {
            return refuse_low_order();
        }
        let mut payload = vec![0u8; 256];
        if handshake.read_message(noise, &mut payload).is_err() {
            return refuse(
                Refusal::HandshakeFailed,
                "the server could not read the handshake: the client has the wrong --server-key (or the handshake was altered on the way)",
                "refused a handshake made for another server key (a client with a wrong --server-key?)".to_string(),
            );
        }
        let client = match handshake.get_remote_static().map(<[u8; KEY_LEN]>::try_from) {
            Some(Ok(key)) if is_low_order(&key) => return refuse_low_order(),
            Some(Ok(key)) => PublicKey(key),
            _ => {
                return refuse(
                    Refusal::HandshakeFailed,
                    "no client key in the handshake",
                    "refused a handshake without a client key".to_string(),
                );
            }
        };
        if let Some(allowed) = &self.allowed
            && !allowed.allows(&client)
        {
            return refuse(
                Refusal::NotAllowed,
                &format!(
                    "this client's key ({client}) is not on the server's allow list; ask the server's operator to add it"
                ),
                format!("refused client key {client}: not on the allow list"),
            );
        }
        let mut noise_reply = vec![0u8; 256];
        let written = handshake.write_message(&[], &mut noise_reply);
        let transport = written.and_then(|length| {
            noise_reply.truncate(length);
            handshake.into_transport_mode()
        });
        let Ok(transport) = transport else {
            return refuse(
                Refusal::HandshakeFailed,
                "the handshake failed on the server",
                "a handshake failed".to_string(),
            );
        };
        let server_index = random_id();
        self.make_room(now);
        self.sessions.insert(
            server_index,
            ServerSession {
                transport,
                client,
                client_index,
                last_used: now,
            },
        );
        Opened::Answer {
            reply: Frame::HandshakeReply {
                client_index,
                server_index,
                noise: &noise_reply,
            }
            .encode(),
            notice: format!(
                "encrypted session with client {} started",
                client.fingerprint()
            ),
        }
    }

    fn open_message(
        &mut self,
        server_index: u64,
        sealed: &[u8],
        envelope_id: Option<MessageId>,
        now: Instant,
    ) -> Opened {
        let session = match self.sessions.get_mut(&server_index) {
            Some(session) if now.duration_since(session.last_used) <= SESSION_IDLE_LIMIT => session,
            found => {
                if found.is_some() {
                    self.sessions.remove(&server_index);
                }
                return refuse(
                    Refusal::UnknownSession,
                    "no such session (the server restarted or the session expired); shake hands again",
                    "a client's session was unknown or expired; it was asked to shake hands again"
                        .to_string(),
                );
            }
        };
        match frame::open(&mut session.transport, sealed) {
            Ok((id, text)) if Some(id) == envelope_id => {
                session.last_used = now;
                Opened::Message {
                    session: server_index,
                    client: session.client,
                    id,
                    text,
                }
            }
            _ => refuse(
                Refusal::NotAuthentic,
                "the message failed authentication (altered, replayed or out of order) and was dropped",
                format!(
                    "dropped a message from client {} that failed authentication (altered, replayed or out of order)",
                    session.client.fingerprint()
                ),
            ),
        }
    }

    /// Seals `text` as the reply to message `id` of `session`; `None` if the
    /// session is gone (the client will shake hands again and re-send).
    pub(crate) fn seal_reply(
        &mut self,
        session: u64,
        id: MessageId,
        text: &[u8],
    ) -> Option<Vec<u8>> {
        let session = self.sessions.get_mut(&session)?;
        let sealed = frame::seal(&mut session.transport, id, text).ok()?;
        Some(
            Frame::Reply {
                client_index: session.client_index,
                sealed: &sealed,
            }
            .encode(),
        )
    }

    /// Drops expired sessions and, if still full, the least recently used.
    fn make_room(&mut self, now: Instant) {
        if self.sessions.len() < MAX_SESSIONS {
            return;
        }
        self.sessions
            .retain(|_, session| now.duration_since(session.last_used) <= SESSION_IDLE_LIMIT);
        while self.sessions.len() >= MAX_SESSIONS {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, session)| session.last_used)
                .map(|(index, _)| *index);
            match oldest {
                Some(index) => self.sessions.remove(&index),
                None => break,
            };
        }
    }

    /// How many sessions are kept.
    #[cfg(test)]
    fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

/// A handshake with a key of small order: its secrets are known to all.
fn refuse_low_order() -> Opened {
    refuse(
        Refusal::HandshakeFailed,
        "the handshake used a key of small order, which secures nothing",
        "refused a handshake with a key of small order (all zeros, say): its secrets are known to anyone".to_string(),
    )
}

fn refuse(reason: Refusal, text: &str, notice: String) -> Opened {
    Opened::Answer {
        reply: Frame::Refused {
            reason,
            text: text.as_bytes(),
        }
        .encode(),
        notice,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: MessageId = MessageId {
        session: 7,
        sequence: 1,
    };

    fn identity() -> Identity {
        Identity::generate().unwrap()
    }

    /// Runs the handshake and the first message; returns the server's view
    /// of the message and the sealed frame the client sent.
    fn first_message(
        client: &mut ClientSecurity,
        server: &mut ServerSecurity,
        now: Instant,
    ) -> (Opened, Vec<u8>) {
        let hello = client.opening(ID, b"hi").unwrap();
        let Opened::Answer { reply, .. } = server.open(&[hello], Some(ID), now) else {
            panic!("a handshake is answered at once");
        };
        let ClientStep::Send(sealed) = client.step(ID, b"hi", &[reply]).unwrap() else {
            panic!("the handshake reply completes the handshake");
        };
        (
            server.open(std::slice::from_ref(&sealed), Some(ID), now),
            sealed,
        )
    }

    fn refusal(opened: &Opened) -> Refusal {
        match opened {
            Opened::Answer { reply, .. } => match Frame::parse(reply) {
                Some(Frame::Refused { reason, .. }) => reason,
                other => panic!("expected a refusal, got {other:?}"),
            },
            Opened::Message { .. } => panic!("expected a refusal, got a message"),
        }
    }

    #[test]
    fn a_message_and_its_reply_cross_encrypted() {
        let server_identity = identity();
        let server_key = server_identity.public_key();
        let mut server = ServerSecurity::new(server_identity, None);
        let mut client = ClientSecurity::new(identity(), server_key);
        let now = Instant::now();
        let (opened, sealed) = first_message(&mut client, &mut server, now);
        assert!(!sealed.windows(2).any(|w| w == b"hi"));
        let Opened::Message {
            session,
            client: key,
            id,
            text,
        } = opened
        else {
            panic!("the message opens");
        };
        assert_eq!(
            (key, id, text.as_slice()),
            (client.public_key(), ID, &b"hi"[..])
        );
        let reply = server.seal_reply(session, ID, b"hello back").unwrap();
        assert!(matches!(
            client.step(ID, b"hi", &[reply]),
            Ok(ClientStep::Reply(text)) if text == b"hello back"
        ));
    }

    #[test]
    fn a_replayed_or_altered_message_is_refused_and_the_session_survives() {
        let server_identity = identity();
        let server_key = server_identity.public_key();
        let mut server = ServerSecurity::new(server_identity, None);
        let mut client = ClientSecurity::new(identity(), server_key);
        let now = Instant::now();
        let (_, sealed) = first_message(&mut client, &mut server, now);
        assert_eq!(
            refusal(&server.open(std::slice::from_ref(&sealed), Some(ID), now)),
            Refusal::NotAuthentic
        );
        let next = MessageId { sequence: 2, ..ID };
        let mut altered = client.opening(next, b"second").unwrap();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert_eq!(
            refusal(&server.open(&[altered.clone()], Some(next), now)),
            Refusal::NotAuthentic
        );
        altered[last] ^= 1;
        assert!(matches!(
            server.open(&[altered], Some(next), now),
            Opened::Message { text, .. } if text == b"second"
        ));
    }

    #[test]
    fn a_wrong_server_key_and_a_key_off_the_allow_list_are_refused() {
        let mut server = ServerSecurity::new(identity(), None);
        let mut client = ClientSecurity::new(identity(), identity().public_key());
        let hello = client.opening(ID, b"hi").unwrap();
        let answer = server.open(&[hello], Some(ID), Instant::now());
        assert_eq!(refusal(&answer), Refusal::HandshakeFailed);

        let server_identity = identity();
        let server_key = server_identity.public_key();
        let mut server = ServerSecurity::new(server_identity, Some(AllowList::default()));
        let mut client = ClientSecurity::new(identity(), server_key);
        let hello = client.opening(ID, b"hi").unwrap();
        let answer = server.open(&[hello], Some(ID), Instant::now());
        assert_eq!(refusal(&answer), Refusal::NotAllowed);
        let Opened::Answer { notice, .. } = answer else {
            unreachable!()
        };
        assert!(
            notice.contains(&client.public_key().to_string()),
            "{notice}"
        );
    }

    #[test]
    fn an_expired_session_asks_the_client_to_shake_hands_again() {
        let server_identity = identity();
        let server_key = server_identity.public_key();
        let mut server = ServerSecurity::new(server_identity, None);
        let mut client = ClientSecurity::new(identity(), server_key);
        let now = Instant::now();
        first_message(&mut client, &mut server, now);
        let next = MessageId { sequence: 2, ..ID };
        let sealed = client.opening(next, b"later").unwrap();
        let later = now + SESSION_IDLE_LIMIT + Duration::from_secs(1);
        let Opened::Answer { reply, .. } = server.open(&[sealed], Some(next), later) else {
            panic!("an expired session is refused");
        };
        assert_eq!(server.session_count(), 0);
        assert!(matches!(
            client.step(next, b"later", &[reply]),
            Ok(ClientStep::Restart(_))
        ));
    }

    #[test]
    fn handshakes_with_an_ephemeral_key_of_small_order_are_refused_both_ways() {
        let server_identity = identity();
        let server_key = server_identity.public_key();
        let mut server = ServerSecurity::new(server_identity, None);
        let forged = [[0u8; KEY_LEN].as_slice(), &[7u8; 64]].concat();
        let hello = Frame::HandshakeInit {
            client_index: 9,
            noise: &forged,
        }
        .encode();
        let answer = server.open(&[hello], Some(ID), Instant::now());
        assert_eq!(refusal(&answer), Refusal::HandshakeFailed);
        let Opened::Answer { notice, .. } = answer else {
            unreachable!()
        };
        assert!(notice.contains("small order"), "{notice}");
        assert_eq!(server.session_count(), 0);

        let mut client = ClientSecurity::new(identity(), server_key);
        let hello = client.opening(ID, b"hi").unwrap();
        let Some(Frame::HandshakeInit { client_index, .. }) = Frame::parse(&hello) else {
            panic!("the opening is a handshake");
        };
        let reply = Frame::HandshakeReply {
            client_index,
            server_index: 1,
            noise: &forged,
        }
        .encode();
        assert_eq!(
            client.step(ID, b"hi", &[reply]).err(),
            Some(SecureFailure::ServerNotProven)
        );
    }

    #[test]
    fn a_plain_answer_to_a_handshake_is_reported_as_a_plain_server() {
        let mut client = ClientSecurity::new(identity(), identity().public_key());
        let hello = client.opening(ID, b"hi").unwrap();
        assert_eq!(
            client.step(ID, b"hi", &[b"sure".to_vec()]).err(),
            Some(SecureFailure::ServerIsPlain)
        );
        // A plain echo server sends the handshake itself back.
        assert_eq!(
            client.step(ID, b"hi", &[hello]).err(),
            Some(SecureFailure::ServerIsPlain)
        );
    }
}
