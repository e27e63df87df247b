//! The two ends of a secure chat: the client starts a Noise IK handshake
//! with the server's pinned key; the server answers it, checks the client's
//! key against its allow list and keeps sessions per client key.
//!
//! As in WireGuard, the client's first message carries a TAI64N timestamp,
//! encrypted and authenticated by the client's key: the server keeps the
//! newest one per key and refuses any handshake that is not newer, so a
//! recorded handshake cannot be replayed to open sessions. A key has at
//! most one pending session (handshake done, no message yet) and
//! [`CONFIRMED_PER_CLIENT`] confirmed ones; a new session replaces an older
//! one only once its first sealed message confirms it, so a handshake never
//! evicts a working session.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use snow::{HandshakeState, TransportState};

use crate::envelope::{MessageId, random_id};
use crate::secure::frame::{self, Frame, Refusal, Sealed};
use crate::secure::keys::{AllowList, Identity, KEY_LEN, PublicKey, is_low_order};
use crate::secure::mac::Mac1Key;
use crate::secure::noise_params;

/// Bound into every handshake, so a handshake of another protocol (or of a
/// future version of this one) cannot be mistaken for ours.
const PROLOGUE: &[u8] = b"zmq-chat secure v3";

/// A server forgets a session unused for this long; the client then shakes
/// hands again without the user noticing.
pub const SESSION_IDLE_LIMIT: Duration = Duration::from_secs(30 * 60);

/// At most this many client keys are remembered (their newest handshake
/// and sessions); beyond, a key that never confirmed a session goes first,
/// then the one heard from least recently.
pub const MAX_CLIENTS: usize = 4096;

/// Confirmed sessions kept per client key: the newest and the one before
/// (two processes may share a key, and a re-handshake must not cut the
/// session a message is in flight on).
pub const CONFIRMED_PER_CLIENT: usize = 2;

/// Handshakes one connection may start: a burst of this many, then
/// [`HANDSHAKE_RATE`] a second. A legitimate client starts one per
/// connection (a few after "no such session"); a flood on one connection is
/// refused before the server spends a Diffie-Hellman on it. (Over TCP a
/// connection already proves that its initiator receives at its address,
/// which is what WireGuard's cookie reply proves over UDP.)
pub const HANDSHAKE_BURST: f64 = 10.0;
/// See [`HANDSHAKE_BURST`].
pub const HANDSHAKE_RATE: f64 = 5.0;
/// Connections whose handshake budget is remembered, at most; beyond, the
/// one heard from least recently is forgotten.
const CONNECTIONS_REMEMBERED: usize = 4096;

/// A token bucket of handshakes per connection (by its routing id).
#[derive(Default)]
struct HandshakeBudget {
    buckets: HashMap<Vec<u8>, (f64, Instant)>,
}

impl HandshakeBudget {
    /// Takes one handshake from `connection`'s bucket, if there is one left.
    fn spend(&mut self, connection: &[u8], now: Instant) -> bool {
        if !self.buckets.contains_key(connection) && self.buckets.len() >= CONNECTIONS_REMEMBERED {
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                self.buckets.remove(&oldest);
            }
        }
        let (tokens, at) = self
            .buckets
            .entry(connection.to_vec())
            .or_insert((HANDSHAKE_BURST, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * HANDSHAKE_RATE;
        *tokens = (*tokens + refill).min(HANDSHAKE_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A TAI64N timestamp: 8 bytes of TAI64 seconds, 4 of nanoseconds, big
/// endian, so that byte order is time order.
type Timestamp = [u8; 12];

/// The current time as TAI64N (the label of 1970 TAI is 2^62 + 10).
fn tai64n_now() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut stamp = [0u8; 12];
    stamp[..8].copy_from_slice(&(0x4000_0000_0000_000a_u64 + since.as_secs()).to_be_bytes());
    stamp[8..].copy_from_slice(&since.subsec_nanos().to_be_bytes());
    stamp
}

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
    /// The server does not hold the key remembered for its address (trust
    /// on first use): changed, or someone else answers there.
    RememberedKeyRefused {
        /// Where the key was remembered ("line 3 of FILE").
        place: String,
    },
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
            SecureFailure::RememberedKeyRefused { place } => write!(
                f,
                "THE SERVER'S KEY HAS CHANGED: the server at this address does not hold the key remembered for it ({place}). Someone may be impersonating it; or its key was changed on purpose, and then you delete that line and connect again to learn the new one. Nothing was sent"
            ),
            SecureFailure::ReplyNotAuthentic => {
                f.write_str("the reply failed authentication (altered on the way?) and was not shown")
            }
            SecureFailure::Refused(reason, text) => {
                let text = crate::display::escape_for_terminal(text);
                match reason {
                    Refusal::NotAllowed => write!(f, "the server refused this client: {text}"),
                    Refusal::HandshakeFailed | Refusal::WrongKey => {
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
    /// Macs first handshake messages for `server_key`.
    mac1: Mac1Key,
    state: ClientState,
    /// The last handshake's timestamp: the next is always later, even if
    /// the clock is not.
    last_stamp: Timestamp,
    /// How many times the server said "no such session" while this message
    /// waited: an unauthenticated answer, so only a few restarts follow it.
    restarts: (Option<MessageId>, u32),
    /// Where the server's key was remembered, when trust on first use
    /// supplied it (so a refusal for the wrong key says which line to check).
    remembered_in: Option<String>,
}

/// Handshakes restarted on "no such session" for one message, at most.
const RESTARTS_PER_MESSAGE: u32 = 3;

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
    /// The handshake made before any message is done: nothing to send.
    Ready,
    /// The reply's text.
    Reply(Vec<u8>),
    /// The server's operator ended the chat (sealed, so authentic).
    Ended,
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
            mac1: Mac1Key::for_server(&server_key),
            state: ClientState::Idle,
            last_stamp: [0; 12],
            restarts: (None, 0),
            remembered_in: None,
        }
    }

    /// The server's key came from the known servers file, at `place`
    /// ("line 3 of FILE"): a refusal for the wrong key names it.
    pub fn remembered_in(mut self, place: String) -> ClientSecurity {
        self.remembered_in = Some(place);
        self
    }

    /// The server's pinned key.
    pub fn server_key(&self) -> PublicKey {
        self.server_key
    }

    /// The client's own public key.
    pub fn public_key(&self) -> PublicKey {
        self.identity.public_key()
    }

    /// Whether a session with the server exists (the handshake is done).
    pub(crate) fn has_session(&self) -> bool {
        matches!(self.state, ClientState::Established(_))
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
        let mut stamp = tai64n_now();
        if stamp <= self.last_stamp {
            stamp = self.last_stamp;
            let nanos = u32::from_be_bytes([stamp[8], stamp[9], stamp[10], stamp[11]]);
            stamp[8..].copy_from_slice(&nanos.wrapping_add(1).to_be_bytes());
        }
        self.last_stamp = stamp;
        let mut noise = vec![0u8; 256];
        let length = handshake.write_message(&stamp, &mut noise)?;
        let client_index = random_id();
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

    /// The first handshake message, to shake hands before any message is
    /// sent (so a wrong server key is found out at once); `None` when a
    /// session exists or a handshake is under way.
    pub(crate) fn hello(&mut self) -> Result<Option<Vec<u8>>, snow::Error> {
        match self.state {
            ClientState::Idle => self.begin_handshake().map(Some),
            ClientState::Handshaking { .. } | ClientState::Established(_) => Ok(None),
        }
    }

    /// Handles a reply to the pending message (`id`, whose text is `text`;
    /// `None` for the handshake made before any message, see
    /// [`ClientSecurity::hello`]).
    pub(crate) fn step(
        &mut self,
        id: MessageId,
        text: Option<&[u8]>,
        body: &[Vec<u8>],
    ) -> Result<ClientStep, SecureFailure> {
        let parsed = match body {
            [frame] => Frame::parse(frame),
            _ => None,
        };
        let Some(frame) = parsed else {
            // Inside a session, what is not sealed is anyone's word.
            return match self.state {
                ClientState::Established(_) => Ok(ClientStep::Ignore),
                _ => Err(SecureFailure::ServerIsPlain),
            };
        };
        match frame {
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
                let sealed = text
                    .map(|text| seal_message(&mut session, id, text))
                    .transpose()
                    .map_err(|_| SecureFailure::ServerNotProven)?;
                self.state = ClientState::Established(session);
                Ok(sealed.map_or(ClientStep::Ready, ClientStep::Send))
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
                    Ok((Sealed::Text, reply_id, reply)) if reply_id == id => {
                        Ok(ClientStep::Reply(reply))
                    }
                    Ok((Sealed::Ended, reply_id, _)) if reply_id == id => Ok(ClientStep::Ended),
                    Ok((Sealed::Refused, reply_id, reason)) if reply_id == id => {
                        Err(SecureFailure::Refused(
                            Refusal::NotAuthentic,
                            String::from_utf8_lossy(&reason).into_owned(),
                        ))
                    }
                    // Authentic, about an earlier message (a refused replay,
                    // an answer to a copy): opened only to keep in step.
                    Ok(_) => Ok(ClientStep::Ignore),
                    Err(_) => Err(SecureFailure::ReplyNotAuthentic),
                }
            }
            Frame::Refused {
                reason: Refusal::UnknownSession,
                text,
            } => {
                let (message, count) = &mut self.restarts;
                if *message != Some(id) {
                    (*message, *count) = (Some(id), 0);
                }
                *count += 1;
                if *count > RESTARTS_PER_MESSAGE {
                    return Err(SecureFailure::Refused(
                        Refusal::UnknownSession,
                        String::from_utf8_lossy(text).into_owned(),
                    ));
                }
                let restart = self
                    .begin_handshake()
                    .map_err(|_| SecureFailure::ServerNotProven)?;
                Ok(ClientStep::Restart(restart))
            }
            Frame::Refused {
                reason: Refusal::WrongKey,
                ..
            } if self.remembered_in.is_some() => Err(SecureFailure::RememberedKeyRefused {
                place: self.remembered_in.clone().unwrap_or_default(),
            }),
            // Inside a session the server seals its refusals: a clear one
            // is anyone's word, and changes nothing.
            Frame::Refused { .. } if matches!(self.state, ClientState::Established(_)) => {
                Ok(ClientStep::Ignore)
            }
            Frame::Refused { reason, text } => Err(SecureFailure::Refused(
                reason,
                String::from_utf8_lossy(text).into_owned(),
            )),
            // The key asked for by trust on first use: not asked here.
            Frame::Key { .. } => Ok(ClientStep::Ignore),
            // Client-to-server kinds coming back: a plain echo server.
            Frame::HandshakeInit { .. } | Frame::Message { .. } | Frame::KeyRequest => {
                match self.state {
                    ClientState::Established(_) => Ok(ClientStep::Ignore),
                    _ => Err(SecureFailure::ServerIsPlain),
                }
            }
        }
    }
}

fn seal_message(
    session: &mut ClientSession,
    id: MessageId,
    text: &[u8],
) -> Result<Vec<u8>, snow::Error> {
    let sealed = frame::seal(&mut session.transport, Sealed::Text, id, text)?;
    Ok(Frame::Message {
        server_index: session.server_index,
        sealed: &sealed,
    }
    .encode())
}

/// The server's side: its identity, who may come in, and the sessions.
pub struct ServerSecurity {
    identity: Identity,
    /// Checks first handshake messages before any Diffie-Hellman.
    mac1: Mac1Key,
    allowed: Option<AllowList>,
    /// By server index: at most `(1 + CONFIRMED_PER_CLIENT) * MAX_CLIENTS`.
    sessions: HashMap<u64, ServerSession>,
    /// By client key: at most [`MAX_CLIENTS`].
    clients: HashMap<PublicKey, Client>,
    /// Handshakes per connection, rate-limited.
    budget: HandshakeBudget,
}

/// What the server knows of one client key.
struct Client {
    /// The newest handshake timestamp seen: an older or equal one is a replay.
    newest: Timestamp,
    /// A session whose handshake is done but that no message confirmed yet.
    pending: Option<u64>,
    /// Confirmed sessions, newest first.
    confirmed: VecDeque<u64>,
    last_seen: Instant,
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
    /// Not a message: send `reply` back at once and log `notice`. A peer
    /// can make any of these at will, so notices are rate-limited by kind,
    /// `throttle` (a refusal, a session started, a key asked for).
    Answer {
        reply: Vec<u8>,
        notice: String,
        throttle: &'static str,
    },
}

impl ServerSecurity {
    /// A server with this identity; with an allow list only those keys get in.
    pub fn new(identity: Identity, allowed: Option<AllowList>) -> ServerSecurity {
        ServerSecurity {
            mac1: Mac1Key::for_server(&identity.public_key()),
            identity,
            allowed,
            sessions: HashMap::new(),
            clients: HashMap::new(),
            budget: HandshakeBudget::default(),
        }
    }

    /// The server's public key, for its clients' `--server-key`.
    pub fn public_key(&self) -> PublicKey {
        self.identity.public_key()
    }

    /// Handles one received body from `connection` (its routing id);
    /// `envelope_id` is the id the client put in the envelope, which must
    /// match the one sealed inside. A first handshake message without this
    /// server's mac1, or from a connection starting handshakes beyond
    /// [`HANDSHAKE_BURST`], is refused before any Diffie-Hellman.
    pub(crate) fn open(
        &mut self,
        connection: &[u8],
        body: &[Vec<u8>],
        envelope_id: Option<MessageId>,
        now: Instant,
    ) -> Opened {
        let frame = match body {
            [frame] => frame.as_slice(),
            _ => &[],
        };
        let frame = if frame::is_handshake_init(frame) {
            match self.mac1.strip(frame) {
                Some(frame) => frame,
                None => return refuse_wrong_server_key(),
            }
        } else {
            frame
        };
        let frame = Frame::parse(frame);
        match frame {
            Some(Frame::HandshakeInit { .. }) if !self.budget.spend(connection, now) => refuse(
                Refusal::HandshakeFailed,
                "too many handshakes on this connection: wait a moment",
                "refused handshakes beyond the rate one connection may start (a flood?)"
                    .to_string(),
            ),
            Some(Frame::HandshakeInit {
                client_index,
                noise,
            }) => self.answer_handshake(client_index, noise, now),
            Some(Frame::Message {
                server_index,
                sealed,
            }) => self.open_message(server_index, sealed, envelope_id, now),
            // Public, and asked for before a first secure chat: said freely.
            Some(Frame::KeyRequest) => Opened::Answer {
                reply: Frame::Key {
                    key: &self.identity.public_key().0,
                }
                .encode(),
                notice: "told a client this server's public key (it is learning it on first use)"
                    .to_string(),
                throttle: "key asked",
            },
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
        let read = handshake.read_message(noise, &mut payload);
        if read.is_err() {
            return refuse_wrong_server_key();
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
        let stamp = read
            .ok()
            .and_then(|length| Timestamp::try_from(&payload[..length]).ok());
        let Some(stamp) = stamp else {
            return refuse(
                Refusal::HandshakeFailed,
                "the handshake carried no timestamp: this chat-client is too old for this server",
                format!(
                    "refused a handshake without a timestamp from client {}",
                    client.fingerprint()
                ),
            );
        };
        if self
            .clients
            .get(&client)
            .is_some_and(|known| stamp <= known.newest)
        {
            return refuse(
                Refusal::HandshakeFailed,
                "a handshake no newer than one already seen was refused (replayed?)",
                format!(
                    "refused a replayed handshake of client {} (not newer than the last one)",
                    client.fingerprint()
                ),
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
        let known = self.clients.entry(client).or_insert(Client {
            newest: stamp,
            pending: None,
            confirmed: VecDeque::new(),
            last_seen: now,
        });
        known.newest = stamp;
        known.last_seen = now;
        // Only the pending session is replaced: confirmed ones keep working.
        if let Some(unconfirmed) = known.pending.replace(server_index) {
            self.sessions.remove(&unconfirmed);
        }
        self.sessions.insert(
            server_index,
            ServerSession {
                transport,
                client,
                client_index,
                last_used: now,
            },
        );
        self.make_room(client);
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
            throttle: "session started",
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
                    self.forget_session(server_index);
                }
                return refuse(
                    Refusal::UnknownSession,
                    "no such session (the server restarted or the session expired); shake hands again",
                    "a client's session was unknown or expired; it was asked to shake hands again"
                        .to_string(),
                );
            }
        };
        let nonce_before = session.transport.receiving_nonce();
        match frame::open(&mut session.transport, sealed) {
            Ok((Sealed::Text, id, text)) if Some(id) == envelope_id => {
                session.last_used = now;
                let client = session.client;
                self.confirm(client, server_index, now);
                Opened::Message {
                    session: server_index,
                    client,
                    id,
                    text,
                }
            }
            opened => {
                // An id altered on the way must not burn the nonce: the
                // genuine copy that follows still opens.
                if opened.is_ok() {
                    session.transport.set_receiving_nonce(nonce_before);
                }
                let reason = "the message failed authentication (altered, replayed or out of order) and was dropped";
                let notice = format!(
                    "dropped a message from client {} that failed authentication (altered, replayed or out of order)",
                    session.client.fingerprint()
                );
                // Sealed in the session, so the client can trust it; a clear
                // refusal only where there is no id to seal it for.
                let sealed = envelope_id.and_then(|id| {
                    frame::seal(
                        &mut session.transport,
                        Sealed::Refused,
                        id,
                        reason.as_bytes(),
                    )
                    .ok()
                });
                match sealed {
                    Some(sealed) => Opened::Answer {
                        reply: Frame::Reply {
                            client_index: session.client_index,
                            sealed: &sealed,
                        }
                        .encode(),
                        notice,
                        throttle: REFUSAL,
                    },
                    None => refuse(Refusal::NotAuthentic, reason, notice),
                }
            }
        }
    }

    /// A message opened on `index`: if that was the client's pending
    /// session, it is confirmed now, and the oldest confirmed one beyond
    /// [`CONFIRMED_PER_CLIENT`] goes.
    fn confirm(&mut self, client: PublicKey, index: u64, now: Instant) {
        let Some(known) = self.clients.get_mut(&client) else {
            return;
        };
        known.last_seen = now;
        if known.pending == Some(index) {
            known.pending = None;
            known.confirmed.push_front(index);
            while known.confirmed.len() > CONFIRMED_PER_CLIENT {
                if let Some(old) = known.confirmed.pop_back() {
                    self.sessions.remove(&old);
                }
            }
        }
    }

    /// Removes a session, and its mention in its client's entry.
    fn forget_session(&mut self, index: u64) {
        if let Some(session) = self.sessions.remove(&index)
            && let Some(known) = self.clients.get_mut(&session.client)
        {
            if known.pending == Some(index) {
                known.pending = None;
            }
            known.confirmed.retain(|kept| *kept != index);
        }
    }

    /// Seals `text` as the reply of `kind` to message `id` of `session`;
    /// `None` if the session is gone (the client will shake hands again and
    /// re-send).
    pub(crate) fn seal_reply(
        &mut self,
        session: u64,
        kind: Sealed,
        id: MessageId,
        text: &[u8],
    ) -> Option<Vec<u8>> {
        let session = self.sessions.get_mut(&session)?;
        let sealed = frame::seal(&mut session.transport, kind, id, text).ok()?;
        Some(
            Frame::Reply {
                client_index: session.client_index,
                sealed: &sealed,
            }
            .encode(),
        )
    }

    /// Keeps at most [`MAX_CLIENTS`] client keys: beyond, forgets first a
    /// key that never confirmed a session (a flood of new keys makes only
    /// such), then the one heard from least recently; never `newcomer`.
    fn make_room(&mut self, newcomer: PublicKey) {
        while self.clients.len() > MAX_CLIENTS {
            let oldest = self
                .clients
                .iter()
                .filter(|(key, _)| **key != newcomer)
                .min_by_key(|(_, known)| (!known.confirmed.is_empty(), known.last_seen))
                .map(|(key, _)| *key);
            let Some(key) = oldest else { break };
            if let Some(known) = self.clients.remove(&key) {
                for index in known.pending.iter().chain(&known.confirmed) {
                    self.sessions.remove(index);
                }
            }
        }
    }

    /// How many sessions are kept.
    #[cfg(test)]
    fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

/// A handshake with a key of small order: its secrets are known to all.
/// A first handshake message made for another server key (or forged).
fn refuse_wrong_server_key() -> Opened {
    refuse(
        Refusal::WrongKey,
        "the server could not read the handshake: the client has the wrong --server-key (or the handshake was altered on the way)",
        "refused a handshake made for another server key (a client with a wrong --server-key?)"
            .to_string(),
    )
}

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
        throttle: REFUSAL,
    }
}

/// The rate-limit kind of every refusal's notice.
const REFUSAL: &str = "secure refusal";

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
        let Opened::Answer { reply, .. } = server.open(b"peer", &[hello], Some(ID), now) else {
            panic!("a handshake is answered at once");
        };
        let ClientStep::Send(sealed) = client.step(ID, Some(b"hi"), &[reply]).unwrap() else {
            panic!("the handshake reply completes the handshake");
        };
        (
            server.open(b"peer", std::slice::from_ref(&sealed), Some(ID), now),
            sealed,
        )
    }

    fn refusal(opened: &Opened) -> Refusal {
        match opened {
            Opened::Answer {
                reply, throttle, ..
            } => match Frame::parse(reply) {
                Some(Frame::Refused { reason, .. }) => reason,
                // Inside a session the server seals its refusal of a
                // message that failed authentication.
                Some(Frame::Reply { .. }) if *throttle == REFUSAL => Refusal::NotAuthentic,
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
        let reply = server
            .seal_reply(session, Sealed::Text, ID, b"hello back")
            .unwrap();
        assert!(matches!(
            client.step(ID, Some(b"hi"), &[reply]),
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
            refusal(&server.open(b"peer", std::slice::from_ref(&sealed), Some(ID), now)),
            Refusal::NotAuthentic
        );
        let next = MessageId { sequence: 2, ..ID };
        let mut altered = client.opening(next, b"second").unwrap();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert_eq!(
            refusal(&server.open(b"peer", &[altered.clone()], Some(next), now)),
            Refusal::NotAuthentic
        );
        altered[last] ^= 1;
        assert!(matches!(
            server.open(b"peer", &[altered], Some(next), now),
            Opened::Message { text, .. } if text == b"second"
        ));
    }

    #[test]
    fn a_wrong_server_key_and_a_key_off_the_allow_list_are_refused() {
        let mut server = ServerSecurity::new(identity(), None);
        let mut client = ClientSecurity::new(identity(), identity().public_key());
        let hello = client.opening(ID, b"hi").unwrap();
        let answer = server.open(b"peer", &[hello], Some(ID), Instant::now());
        assert_eq!(refusal(&answer), Refusal::WrongKey);
        let Opened::Answer { reply, .. } = answer else {
            unreachable!()
        };
        assert!(matches!(
            client.step(ID, Some(b"hi"), std::slice::from_ref(&reply)),
            Err(SecureFailure::Refused(Refusal::WrongKey, _))
        ));
        let mut remembered =
            ClientSecurity::new(identity(), identity().public_key()).remembered_in("line 2".into());
        remembered.opening(ID, b"hi").unwrap();
        let Err(failure) = remembered.step(ID, Some(b"hi"), &[reply]) else {
            panic!("a refusal for the wrong key is a failure");
        };
        assert!(failure.to_string().contains("(line 2)"), "{failure}");

        let server_identity = identity();
        let server_key = server_identity.public_key();
        let mut server = ServerSecurity::new(server_identity, Some(AllowList::default()));
        let mut client = ClientSecurity::new(identity(), server_key);
        let hello = client.opening(ID, b"hi").unwrap();
        let answer = server.open(b"peer", &[hello], Some(ID), Instant::now());
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
        let Opened::Answer { reply, .. } = server.open(b"peer", &[sealed], Some(next), later)
        else {
            panic!("an expired session is refused");
        };
        assert_eq!(server.session_count(), 0);
        assert!(matches!(
            client.step(next, Some(b"later"), &[reply]),
            Ok(ClientStep::Restart(_))
        ));
    }

    #[test]
    fn handshakes_with_an_ephemeral_key_of_small_order_are_refused_both_ways() {
        let server_identity = identity();
        let server_key = server_identity.public_key();
        let mut server = ServerSecurity::new(server_identity, None);
        let forged = [[0u8; KEY_LEN].as_slice(), &[7u8; 64]].concat();
        let mut hello = Frame::HandshakeInit {
            client_index: 9,
            noise: &forged,
        }
        .encode();
        Mac1Key::for_server(&server_key).append(&mut hello);
        let answer = server.open(b"peer", &[hello], Some(ID), Instant::now());
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
            client.step(ID, Some(b"hi"), &[reply]).err(),
            Some(SecureFailure::ServerNotProven)
        );
    }

    /// Two loads of one key, as two processes sharing a key file have.
    fn same_identity_twice() -> (Identity, Identity) {
        let path = std::env::temp_dir().join(format!(
            "zmq-chat-session-twice-{}-{}",
            std::process::id(),
            random_id()
        ));
        identity().write_new(&path).unwrap();
        let pair = (
            Identity::load(&path).unwrap(),
            Identity::load(&path).unwrap(),
        );
        let _ = std::fs::remove_file(&path);
        pair
    }

    /// Sends message `id` from an established `client`; whether it opened.
    fn opens(client: &mut ClientSecurity, server: &mut ServerSecurity, id: MessageId) -> bool {
        let sealed = client.opening(id, b"m").unwrap();
        matches!(
            server.open(b"peer", &[sealed], Some(id), Instant::now()),
            Opened::Message { .. }
        )
    }

    #[test]
    fn a_replayed_handshake_is_refused_and_evicts_no_session() {
        let server_identity = identity();
        let server_key = server_identity.public_key();
        let mut server = ServerSecurity::new(server_identity, None);
        let mut client = ClientSecurity::new(identity(), server_key);
        let now = Instant::now();
        let hello = client.opening(ID, b"hi").unwrap();
        let Opened::Answer { reply, .. } =
            server.open(b"peer", std::slice::from_ref(&hello), Some(ID), now)
        else {
            panic!("the handshake is answered");
        };
        let ClientStep::Send(sealed) = client.step(ID, Some(b"hi"), &[reply]).unwrap() else {
            panic!("the handshake completes");
        };
        assert!(matches!(
            server.open(b"peer", &[sealed], Some(ID), now),
            Opened::Message { .. }
        ));
        // Before, each replay made a session (and past 4,096 evicted live
        // ones); now none does, so a hundred show it. Each comes on a
        // connection of its own, so the per-connection rate limit does not
        // refuse it first: the replay check is what refuses every one.
        for replay in 0..100 {
            let connection = format!("replayer {replay}");
            let answer = server.open(
                connection.as_bytes(),
                std::slice::from_ref(&hello),
                Some(ID),
                now,
            );
            let Opened::Answer { notice, .. } = &answer else {
                unreachable!()
            };
            assert!(notice.contains("replayed handshake"), "{notice}");
            assert_eq!(refusal(&answer), Refusal::HandshakeFailed);
        }
        assert_eq!(server.session_count(), 1, "no session made by a replay");
        assert!(opens(
            &mut client,
            &mut server,
            MessageId { sequence: 2, ..ID }
        ));
    }

    #[test]
    fn a_new_session_replaces_an_old_one_only_once_confirmed() {
        let server_identity = identity();
        let server_key = server_identity.public_key();
        let mut server = ServerSecurity::new(server_identity, None);
        let now = Instant::now();
        let (one, two) = same_identity_twice();
        let mut first = ClientSecurity::new(one, server_key);
        first_message(&mut first, &mut server, now);
        // A second handshake with the same key, never confirmed: the first
        // session keeps working.
        let mut second = ClientSecurity::new(two, server_key);
        let hello = second.opening(ID, b"hi").unwrap();
        let Opened::Answer { reply, .. } = server.open(b"peer", &[hello], Some(ID), now) else {
            panic!("answered");
        };
        assert!(opens(
            &mut first,
            &mut server,
            MessageId { sequence: 2, ..ID }
        ));
        // Confirmed, it joins the first (two confirmed sessions per key).
        let ClientStep::Send(sealed) = second.step(ID, Some(b"hi"), &[reply]).unwrap() else {
            panic!("the handshake completes");
        };
        assert!(matches!(
            server.open(b"peer", &[sealed], Some(ID), now),
            Opened::Message { .. }
        ));
        assert!(opens(
            &mut first,
            &mut server,
            MessageId { sequence: 3, ..ID }
        ));
        assert!(opens(
            &mut second,
            &mut server,
            MessageId { sequence: 2, ..ID }
        ));
        assert_eq!(server.session_count(), 2);
    }

    #[test]
    fn a_handshake_older_than_the_newest_seen_is_refused() {
        let server_identity = identity();
        let server_key = server_identity.public_key();
        let mut server = ServerSecurity::new(server_identity, None);
        let now = Instant::now();
        let (one, two) = same_identity_twice();
        let mut older = ClientSecurity::new(one, server_key);
        let recorded = older.opening(ID, b"hi").unwrap();
        let mut newer = ClientSecurity::new(two, server_key);
        first_message(&mut newer, &mut server, now);
        let answer = server.open(b"peer", &[recorded], Some(ID), now);
        assert_eq!(refusal(&answer), Refusal::HandshakeFailed);
        assert_eq!(server.session_count(), 1);
    }

    #[test]
    fn no_such_session_restarts_the_handshake_a_few_times_then_fails() {
        let mut client = ClientSecurity::new(identity(), identity().public_key());
        client.opening(ID, b"hi").unwrap();
        let unknown = Frame::Refused {
            reason: Refusal::UnknownSession,
            text: b"no such session",
        }
        .encode();
        for _ in 0..RESTARTS_PER_MESSAGE {
            assert!(matches!(
                client.step(ID, Some(b"hi"), std::slice::from_ref(&unknown)),
                Ok(ClientStep::Restart(_))
            ));
        }
        assert!(matches!(
            client.step(ID, Some(b"hi"), &[unknown]),
            Err(SecureFailure::Refused(Refusal::UnknownSession, _))
        ));
    }

    #[test]
    fn a_plain_answer_to_a_handshake_is_reported_as_a_plain_server() {
        let mut client = ClientSecurity::new(identity(), identity().public_key());
        let hello = client.opening(ID, b"hi").unwrap();
        assert_eq!(
            client.step(ID, Some(b"hi"), &[b"sure".to_vec()]).err(),
            Some(SecureFailure::ServerIsPlain)
        );
        // A plain echo server sends the handshake itself back.
        assert_eq!(
            client.step(ID, Some(b"hi"), &[hello]).err(),
            Some(SecureFailure::ServerIsPlain)
        );
    }
}
