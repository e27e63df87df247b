//! The client's side of a secure chat: a Noise IK handshake with the
//! server's pinned key, then each message sealed in the session.
//!
//! Nothing that fails to authenticate moves the session on or ends the
//! chat, as in WireGuard: a reply that does not open, a clear refusal or an
//! envelope mark inside a session is anyone's word. The most such words can
//! do is what a lost connection does: make the client shake hands again and
//! send the waiting message once more (at most [`RETRIES_PER_MESSAGE`]
//! times a message), which the server's answer memory makes harmless.
//! Sessions are rekeyed as WireGuard's are: a message finds the session
//! older than [`REKEY_AFTER`] or past [`REKEY_AFTER_MESSAGES`], and a new
//! handshake goes first, unseen by the user.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use snow::{HandshakeState, TransportState};

use crate::envelope::{MessageId, random_id};
use crate::secure::PROLOGUE;
use crate::secure::frame::{self, Frame, Refusal, Sealed};
use crate::secure::keys::{Identity, KEY_LEN, PublicKey, is_low_order};
use crate::secure::known::KnownServers;
use crate::secure::mac::Mac1Key;
use crate::secure::noise_params;
use crate::secure::timestamp::Stamper;

/// A message finds its session older than this: a new handshake goes
/// first (WireGuard's `REKEY_AFTER_TIME`), so no key serves for long.
pub const REKEY_AFTER: Duration = Duration::from_secs(120);
/// A message finds this many sealed in its session: a new handshake goes
/// first. Far below the nonce's limit; it bounds what one key protects.
pub const REKEY_AFTER_MESSAGES: u64 = 10_000;

/// Handshakes restarted, and copies sent, on unauthenticated words (a
/// clear refusal, a reply that does not open) for one message, at most.
pub const RETRIES_PER_MESSAGE: u32 = 3;

/// How long a client waits before shaking hands again with a server that
/// said it was busy (flooded): its handshake budget refills at 100 a second,
/// so a pause lets a flood's burst pass.
pub const BUSY_PAUSE: Duration = Duration::from_millis(500);

/// Sessions left behind whose replies are still recognised (see
/// [`ClientSecurity::step`]), at most.
const SESSIONS_LEFT_REMEMBERED: usize = 4;

/// Where the client got the server's key: what its messages name, so that
/// each says what the user actually did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// `--server-key`.
    Flag,
    /// The known servers file, at this place ("line 3 of FILE").
    Remembered(String),
    /// Asked of the server a moment ago (trust on first use).
    Learned,
}

impl KeySource {
    fn key(&self) -> String {
        match self {
            KeySource::Flag => "the key given with --server-key".to_string(),
            KeySource::Remembered(place) => {
                format!("the key remembered for this address ({place})")
            }
            KeySource::Learned => "the key it presented a moment ago".to_string(),
        }
    }
}

/// What can go wrong on the client's side of a secure chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecureFailure {
    /// The server answered the handshake with something that does not prove
    /// it holds the pinned key.
    ServerNotProven(KeySource),
    /// The server refused us before any session; its reason.
    Refused(Refusal, String),
    /// The server refused the handshake as made for another key.
    WrongKey(KeySource),
    /// The server answered in plain text: it is not in secure mode.
    ServerIsPlain(KeySource),
    /// The server at the address presents a key other than the one
    /// remembered for it (trust on first use): changed, or someone else
    /// answers there.
    KeyChanged {
        /// Where the key was remembered ("line 3 of FILE").
        place: String,
        /// The key the server now presents.
        presented: PublicKey,
    },
    /// The server presents the remembered key, yet its answer says our
    /// handshake was made for another key: altered on the way.
    HandshakeAltered,
}

impl std::fmt::Display for SecureFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecureFailure::ServerNotProven(source) => write!(
                f,
                "the server did not prove it holds {} (a different server, or someone in the middle); the message was not sent",
                source.key()
            ),
            SecureFailure::ServerIsPlain(KeySource::Remembered(place)) => write!(
                f,
                "the server at this address is not in secure mode, though a key is remembered for it ({place}): someone may be impersonating it. If its operator turned secure mode off, delete that line to chat in clear; the message was not sent"
            ),
            SecureFailure::ServerIsPlain(KeySource::Flag) => f.write_str(
                "the server answered without encryption: it is not in secure mode (its operator starts it with chat-server --key FILE); to chat in clear, connect without --server-key; the message was not sent",
            ),
            SecureFailure::ServerIsPlain(KeySource::Learned) => f.write_str(
                "the server answered without encryption: it is not in secure mode; to chat in clear, connect without --secure; the message was not sent",
            ),
            SecureFailure::WrongKey(KeySource::Flag) => f.write_str(
                "the server refused the handshake: this client has the wrong --server-key (the server holds another key: ask its operator for it); the message was not sent",
            ),
            SecureFailure::WrongKey(source) => write!(
                f,
                "the server refused the handshake as made for another key than {} (someone in the middle?); nothing was remembered or sent",
                source.key()
            ),
            SecureFailure::KeyChanged { place, presented } => write!(
                f,
                "THE SERVER'S KEY HAS CHANGED: the server at this address presents the key {} (fingerprint {}), not the one remembered for it ({place}). Someone may be impersonating it; nothing more was sent to it. If its operator changed the key on purpose (ask them for its fingerprint), delete that line and connect again with --secure to learn the new one",
                presented,
                presented.fingerprint()
            ),
            SecureFailure::HandshakeAltered => f.write_str(
                "the server presents the key remembered for it, yet answered that the handshake was made for another key: someone on the way altered it; nothing more was sent",
            ),
            SecureFailure::Refused(reason, text) => {
                let text = crate::display::escape_for_terminal(text);
                match reason {
                    Refusal::NotAllowed => write!(f, "the server refused this client: {text}"),
                    Refusal::HandshakeFailed | Refusal::WrongKey | Refusal::Busy => {
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

/// Where the server's key came from, which decides what a refusal of the
/// handshake as "made for another key" means.
enum Trust {
    /// Given by the user (`--server-key`).
    Pinned,
    /// Remembered in the known servers file, at `place` ("line 3 of FILE").
    Remembered { place: String },
    /// Learned now (trust on first use): remembered for `endpoint` once a
    /// handshake proves the server holds it, not before.
    Learning {
        known: KnownServers,
        endpoint: String,
    },
}

impl Trust {
    fn source(&self) -> KeySource {
        match self {
            Trust::Pinned => KeySource::Flag,
            Trust::Remembered { place } => KeySource::Remembered(place.clone()),
            Trust::Learning { .. } => KeySource::Learned,
        }
    }
}

/// The client's side: its identity, the server's pinned key, and where the
/// handshake with that server stands.
pub struct ClientSecurity {
    identity: Identity,
    server_key: PublicKey,
    /// Macs first handshake messages for `server_key`.
    mac1: Mac1Key,
    state: ClientState,
    stamps: Stamper,
    trust: Trust,
    /// Retries made for the message waiting (see [`RETRIES_PER_MESSAGE`]).
    retries: (Option<MessageId>, u32),
    /// Client indexes of sessions left (a reconnect, a rekey), newest
    /// last: a reply sealed in one means the server answered in words this
    /// client can no longer read.
    left: VecDeque<u64>,
    /// Whether the server proved its key on this connection (since the
    /// last reset): from then on a clear refusal is anyone's word, and a
    /// rekey or a restarted handshake is not news to the user.
    proven: bool,
    /// What the user is told of remembering a learned key, once a
    /// handshake proved it.
    remembered: Option<String>,
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
    /// The server refused a handshake for a remembered key as made for
    /// another key, which anyone can say: it was asked which key it holds.
    AskingKey,
    /// The server proved its key: messages are sealed in this session.
    Established(ClientSession),
}

struct ClientSession {
    transport: TransportState,
    client_index: u64,
    server_index: u64,
    /// When the handshake completed, for [`REKEY_AFTER`].
    since: Instant,
    /// Messages sealed in it, for [`REKEY_AFTER_MESSAGES`].
    sealed: u64,
}

/// What the client makes of a secure reply to its pending message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClientStep {
    /// The server proved its key, which the user is told; send this (the
    /// sealed message) next, if there is one.
    Proven(Option<Vec<u8>>),
    /// Send this next, nothing to tell: a rekey or restarted handshake
    /// done, a handshake restarted, a copy of the message.
    Send(Vec<u8>),
    /// Send this after a pause: a handshake again, to a server too busy
    /// to answer one now.
    SendAfter(Duration, Vec<u8>),
    /// The reply's text.
    Reply(Vec<u8>),
    /// The server's operator ended the chat (sealed, so authentic).
    Ended,
    /// Unauthenticated words about this message came more often than it
    /// is retried: tell the user, and keep waiting for the reply.
    StillWaiting,
    /// Nothing to do: not about this message, or not to be believed.
    Ignore,
}

impl ClientSecurity {
    /// A client with this identity that trusts only `server_key`.
    pub fn new(identity: Identity, server_key: PublicKey) -> ClientSecurity {
        ClientSecurity {
            identity,
            server_key,
            mac1: Mac1Key::for_server(&server_key),
            state: ClientState::Idle,
            stamps: Stamper::default(),
            trust: Trust::Pinned,
            retries: (None, 0),
            left: VecDeque::new(),
            proven: false,
            remembered: None,
        }
    }

    /// The server's key came from the known servers file, at `place`
    /// ("line 3 of FILE"): a changed key is reported naming it.
    pub fn remembered_in(mut self, place: String) -> ClientSecurity {
        self.trust = Trust::Remembered { place };
        self
    }

    /// The server's key was just learned (trust on first use): remember it
    /// in `known` for `endpoint` once a handshake proves the server holds
    /// it; the user is told where, with the notice that it proved it.
    pub fn remember_when_proven(mut self, known: KnownServers, endpoint: String) -> ClientSecurity {
        self.trust = Trust::Learning { known, endpoint };
        self
    }

    /// Where a key learned on first use was remembered ("remembered the
    /// key of ENDPOINT (line 1 of FILE)") or why it could not be, once,
    /// after the handshake that proved it.
    pub(crate) fn take_remembered(&mut self) -> Option<String> {
        self.remembered.take()
    }

    /// The server's pinned key.
    pub fn server_key(&self) -> PublicKey {
        self.server_key
    }

    /// The client's own public key.
    pub fn public_key(&self) -> PublicKey {
        self.identity.public_key()
    }

    /// What the user is told when a plain server answers (its refusal of
    /// an encrypted message, before any handshake).
    pub(crate) fn plain_server(&self) -> SecureFailure {
        SecureFailure::ServerIsPlain(self.trust.source())
    }

    /// Whether the server proved its key on this connection: from then on
    /// only what opens as sealed is believed (a rekey or a restarted
    /// handshake under way included).
    pub(crate) fn is_proven(&self) -> bool {
        self.proven
    }

    /// Forgets the session (after a reconnect: the server may be a new one).
    pub fn reset(&mut self) {
        self.leave_session();
        self.proven = false;
    }

    /// The body to send for `text`: the sealed message if a session exists
    /// that is young enough, else the first handshake message (the text
    /// follows once it is done).
    pub(crate) fn opening(
        &mut self,
        id: MessageId,
        text: &[u8],
        now: Instant,
    ) -> Result<Vec<u8>, snow::Error> {
        match &mut self.state {
            ClientState::Established(session) if !session.is_due_for_rekey(now) => {
                seal_message(session, id, text)
            }
            _ => self.begin_handshake(),
        }
    }

    /// The first handshake message, to shake hands before any message is
    /// sent (so a wrong server key is found out at once); `None` when a
    /// session exists or a handshake is under way.
    pub(crate) fn hello(&mut self) -> Result<Option<Vec<u8>>, snow::Error> {
        match self.state {
            ClientState::Idle => self.begin_handshake().map(Some),
            _ => Ok(None),
        }
    }

    fn begin_handshake(&mut self) -> Result<Vec<u8>, snow::Error> {
        let mut handshake = snow::Builder::new(noise_params())
            .local_private_key(self.identity.private_key())?
            .remote_public_key(&self.server_key.0)?
            .prologue(PROLOGUE)?
            .build_initiator()?;
        let mut noise = vec![0u8; 256];
        let length = handshake.write_message(&self.stamps.next(), &mut noise)?;
        let client_index = random_id();
        self.leave_session();
        self.state = ClientState::Handshaking {
            handshake: Box::new(handshake),
            client_index,
        };
        let mut frame = Frame::HandshakeInit {
            client_index,
            noise: &noise[..length],
        }
        .encode();
        self.mac1.append(&mut frame);
        Ok(frame)
    }

    /// Leaves the current session, if any, remembering its index.
    fn leave_session(&mut self) {
        if let ClientState::Established(session) =
            std::mem::replace(&mut self.state, ClientState::Idle)
        {
            if self.left.len() == SESSIONS_LEFT_REMEMBERED {
                self.left.pop_front();
            }
            self.left.push_back(session.client_index);
        }
    }

    /// Handles a reply to the pending message `id`, whose text is `text`
    /// (`None` for the handshake made before any message, see
    /// [`ClientSecurity::hello`]), that came with `envelope_id`.
    ///
    /// # Errors
    /// Only before a session, where the server's clear words are all there
    /// is to go on: see [`SecureFailure`].
    pub(crate) fn step(
        &mut self,
        id: MessageId,
        text: Option<&[u8]>,
        envelope_id: Option<MessageId>,
        body: &[Vec<u8>],
        now: Instant,
    ) -> Result<ClientStep, SecureFailure> {
        let parsed = match body {
            [frame] => Frame::parse(frame),
            _ => None,
        };
        match parsed {
            Some(Frame::HandshakeReply {
                client_index,
                server_index,
                noise,
            }) => self.finish_handshake(id, text, (client_index, server_index), noise, now),
            Some(Frame::Reply {
                client_index,
                sealed,
            }) => Ok(self.open_reply(id, text, client_index, sealed)),
            Some(Frame::Refused { reason, text: why }) => {
                let why = String::from_utf8_lossy(why).into_owned();
                self.refused(id, text, envelope_id, reason, why)
            }
            Some(Frame::Key { key }) => self.key_told(PublicKey(*key)),
            // Not sealed, or client-to-server kinds coming back (a plain
            // echo server): inside a session anyone's word.
            _ if self.proven => Ok(ClientStep::Ignore),
            _ => Err(SecureFailure::ServerIsPlain(self.trust.source())),
        }
    }

    fn finish_handshake(
        &mut self,
        id: MessageId,
        text: Option<&[u8]>,
        (client_index, server_index): (u64, u64),
        noise: &[u8],
        now: Instant,
    ) -> Result<ClientStep, SecureFailure> {
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
            return Err(SecureFailure::ServerNotProven(self.trust.source()));
        }
        let mut payload = vec![0u8; 256];
        handshake
            .read_message(noise, &mut payload)
            .map_err(|_| SecureFailure::ServerNotProven(self.trust.source()))?;
        let ClientState::Handshaking { handshake, .. } =
            std::mem::replace(&mut self.state, ClientState::Idle)
        else {
            unreachable!("the state was checked above");
        };
        let transport = handshake
            .into_transport_mode()
            .map_err(|_| SecureFailure::ServerNotProven(self.trust.source()))?;
        let mut session = ClientSession {
            transport,
            client_index,
            server_index,
            since: now,
            sealed: 0,
        };
        let sealed = text
            .map(|text| seal_message(&mut session, id, text))
            .transpose()
            .map_err(|_| SecureFailure::ServerNotProven(self.trust.source()))?;
        self.state = ClientState::Established(session);
        self.remember_learned_key();
        if std::mem::replace(&mut self.proven, true) {
            return Ok(sealed.map_or(ClientStep::Ignore, ClientStep::Send));
        }
        Ok(ClientStep::Proven(sealed))
    }

    /// A key learned on first use is written down now that a handshake
    /// proved the server holds it.
    fn remember_learned_key(&mut self) {
        let Trust::Learning { known, endpoint } = &mut self.trust else {
            return;
        };
        match known.remember(endpoint, self.server_key) {
            Ok(place) => {
                self.remembered = Some(format!("remembered the key of {endpoint} ({place})"));
                self.trust = Trust::Remembered { place };
            }
            Err(error) => {
                self.remembered = Some(format!(
                    "could not remember its key, so the next chat asks again: {}",
                    crate::error::describe(&error)
                ));
            }
        }
    }

    fn open_reply(
        &mut self,
        id: MessageId,
        text: Option<&[u8]>,
        client_index: u64,
        sealed: &[u8],
    ) -> ClientStep {
        let ClientState::Established(session) = &mut self.state else {
            return ClientStep::Ignore;
        };
        if session.client_index != client_index {
            // Sealed in a session this client left (a reconnect, a rekey):
            // the server answered, in words no longer readable here. A copy
            // in this session gets the reply again from its answer memory.
            let left = self.left.contains(&client_index);
            return match text {
                Some(text) if left => self.retry(id, |this| match &mut this.state {
                    ClientState::Established(session) => seal_message(session, id, text),
                    _ => this.begin_handshake(),
                }),
                _ => ClientStep::Ignore,
            };
        }
        match frame::open(&mut session.transport, sealed) {
            Ok((Sealed::Text, reply_id, reply)) if reply_id == id => ClientStep::Reply(reply),
            Ok((Sealed::Ended, reply_id, _)) if reply_id == id => ClientStep::Ended,
            // Authentic, about an earlier message (an answer to a copy), or
            // a kind this client never waits for: opened to keep in step.
            Ok(_) => ClientStep::Ignore,
            // Forged, or the genuine reply altered on the way: either way
            // the session's nonces can no longer meet, so shake hands again
            // and send a copy, which the server answers from its memory.
            Err(_) if text.is_some() => self.retry(id, Self::begin_handshake),
            Err(_) => ClientStep::Ignore,
        }
    }

    fn refused(
        &mut self,
        id: MessageId,
        text: Option<&[u8]>,
        envelope_id: Option<MessageId>,
        reason: Refusal,
        why: String,
    ) -> Result<ClientStep, SecureFailure> {
        if self.proven {
            // The server proved its key on this connection: a clear word is
            // anyone's, and ends nothing. A server that could not open the
            // message (altered on the way, a session it lost) or that was
            // busy gets it again in a new session, a few times at most.
            let about_this = envelope_id == Some(id) && text.is_some();
            return Ok(match reason {
                Refusal::Busy if about_this => self.retry_later(id),
                Refusal::NotAuthentic | Refusal::UnknownSession | Refusal::HandshakeFailed
                    if about_this =>
                {
                    self.retry(id, Self::begin_handshake)
                }
                _ => ClientStep::Ignore,
            });
        }
        match (reason, &self.state, &self.trust) {
            (Refusal::WrongKey, ClientState::Handshaking { .. }, Trust::Remembered { .. }) => {
                // Anyone can say so: ask which key it holds, and compare.
                self.state = ClientState::AskingKey;
                Ok(ClientStep::Send(Frame::KeyRequest.encode()))
            }
            (Refusal::Busy, ClientState::Handshaking { .. }, _) => match self.retry_later(id) {
                ClientStep::StillWaiting | ClientStep::Ignore => {
                    Err(SecureFailure::Refused(reason, why))
                }
                step => Ok(step),
            },
            (Refusal::UnknownSession, ClientState::Handshaking { .. }, _) => {
                match self.retry(id, Self::begin_handshake) {
                    ClientStep::StillWaiting | ClientStep::Ignore => {
                        Err(SecureFailure::Refused(reason, why))
                    }
                    step => Ok(step),
                }
            }
            (Refusal::WrongKey, ..) => Err(SecureFailure::WrongKey(self.trust.source())),
            _ => Err(SecureFailure::Refused(reason, why)),
        }
    }

    /// The server's answer to "which key do you hold?", asked after a
    /// refusal for a remembered key (and only then).
    fn key_told(&mut self, presented: PublicKey) -> Result<ClientStep, SecureFailure> {
        let (ClientState::AskingKey, Trust::Remembered { place }) = (&self.state, &self.trust)
        else {
            return Ok(ClientStep::Ignore);
        };
        self.state = ClientState::Idle;
        if presented == self.server_key {
            return Err(SecureFailure::HandshakeAltered);
        }
        Err(SecureFailure::KeyChanged {
            place: place.clone(),
            presented,
        })
    }

    /// [`ClientSecurity::retry`] with a new handshake, sent after a pause
    /// that grows with each try ([`BUSY_PAUSE`] times the try's number).
    fn retry_later(&mut self, id: MessageId) -> ClientStep {
        match self.retry(id, Self::begin_handshake) {
            ClientStep::Send(body) => {
                let tries = self.retries.1;
                ClientStep::SendAfter(BUSY_PAUSE * tries, body)
            }
            step => step,
        }
    }

    /// One more try for message `id` with the body `make` gives, while
    /// [`RETRIES_PER_MESSAGE`] last; then [`ClientStep::StillWaiting`]
    /// once, and nothing.
    fn retry(
        &mut self,
        id: MessageId,
        make: impl FnOnce(&mut Self) -> Result<Vec<u8>, snow::Error>,
    ) -> ClientStep {
        let (message, count) = &mut self.retries;
        if *message != Some(id) {
            (*message, *count) = (Some(id), 0);
        }
        *count += 1;
        match *count {
            count if count <= RETRIES_PER_MESSAGE => match make(self) {
                Ok(body) => ClientStep::Send(body),
                Err(_) => ClientStep::Ignore,
            },
            count if count == RETRIES_PER_MESSAGE + 1 => ClientStep::StillWaiting,
            _ => ClientStep::Ignore,
        }
    }
}

impl ClientSession {
    fn is_due_for_rekey(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) >= REKEY_AFTER
            || self.sealed >= REKEY_AFTER_MESSAGES
    }
}

fn seal_message(
    session: &mut ClientSession,
    id: MessageId,
    text: &[u8],
) -> Result<Vec<u8>, snow::Error> {
    let sealed = frame::seal(&mut session.transport, Sealed::Text, id, text)?;
    session.sealed += 1;
    Ok(Frame::Message {
        server_index: session.server_index,
        sealed: &sealed,
    }
    .encode())
}
