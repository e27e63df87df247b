//! The server's side of a secure chat: answers Noise IK handshakes, checks
//! the client's key against its allow list, and keeps sessions per key.
//!
//! As in WireGuard, nothing is sealed for, or in answer to, a frame that did
//! not open: a replayed, forged or altered message gets a clear refusal on
//! the connection it came from, and the session it names is left exactly as
//! it was. The client's first message carries a TAI64N timestamp: the
//! newest one per key is kept (for keys it refuses too) and checked before
//! anything else is said of the key, so a recorded handshake replayed
//! later opens nothing and learns nothing. A key has at most one pending
//! session (handshake done, no message yet) and [`CONFIRMED_PER_CLIENT`]
//! confirmed ones; a new session replaces an older one only once its first
//! sealed message confirms it, so a handshake never evicts a working
//! session. Every Diffie-Hellman is paid for from the handshake budget
//! ([`crate::secure::budget`]).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use snow::TransportState;

use crate::envelope::{MessageId, random_id};
use crate::secure::PROLOGUE;
use crate::secure::budget::{HandshakeBudget, Spent};
use crate::secure::frame::{self, Frame, Refusal, Sealed};
use crate::secure::keys::{AllowList, Identity, KEY_LEN, PublicKey, is_low_order};
use crate::secure::mac::Mac1Key;
use crate::secure::noise_params;
use crate::secure::timestamp::Timestamp;

/// No message opens in a session older than this (WireGuard's
/// `REJECT_AFTER_TIME`): the client, which rekeys after
/// [`crate::secure::client::REKEY_AFTER`], is told "no such session" and
/// shakes hands again. A reply to a message opened in time is still sealed.
pub const REJECT_AFTER: Duration = Duration::from_secs(180);
/// No message opens in a session past this many: see [`REJECT_AFTER`].
pub const REJECT_AFTER_MESSAGES: u64 = 2 * crate::secure::client::REKEY_AFTER_MESSAGES;

/// At most this many client keys are remembered (their newest handshake
/// and sessions); beyond, a key that never confirmed a session goes first,
/// then the one heard from least recently.
pub const MAX_CLIENTS: usize = 4096;

/// Confirmed sessions kept per client key: the newest and the one before
/// (two processes may share a key, and a re-handshake must not cut the
/// session a message is in flight on).
pub const CONFIRMED_PER_CLIENT: usize = 2;

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
    /// Handshakes per host and in all, rate-limited.
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
    /// When the handshake was answered, for [`REJECT_AFTER`].
    since: Instant,
    /// Messages opened, for [`REJECT_AFTER_MESSAGES`].
    opened: u64,
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
    /// Not a message: send `reply` back at once. What happened is for the
    /// operator (in words made by the caller: see `crate::channel`).
    Answer { reply: Vec<u8>, event: Answered },
    /// Refused: the caller sends the refusal and tells the operator (a
    /// peer can cause any of these at will, so the telling is rate-limited).
    Refused(Refused),
}

/// What an [`Opened::Answer`] was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answered {
    /// A handshake completed: a session with this client started.
    SessionStarted(PublicKey),
    /// A client asked for the server's public key (to learn it on first use).
    KeyTold,
}

/// Why the server refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not a frame of the secure protocol.
    NotSecureFrame,
    /// The handshake could not be started (the Noise library failed).
    CannotStart,
    /// A handshake without this server's mac1, or that did not decrypt:
    /// made for another server key, or altered.
    WrongServerKey,
    /// A handshake with a key of small order, whose secrets are known.
    LowOrder,
    /// A handshake without the client's static key.
    NoClientKey,
    /// A handshake without a timestamp (an older chat-client).
    NoTimestamp,
    /// A handshake no newer than one already seen from this client key.
    Replayed(PublicKey),
    /// A client key not on the allow list.
    NotAllowed(PublicKey),
    /// The handshake failed as it was completed.
    HandshakeFailed,
    /// A sealed message that did not open (altered, replayed, out of order).
    NotAuthentic,
    /// A message in a session the server does not have (any more).
    UnknownSession,
    /// Beyond the handshake budget: of one host, or of the whole server.
    OverBudget(Spent),
}

impl Refused {
    /// The refusal's code on the wire, which the client acts on.
    pub(crate) fn code(self) -> Refusal {
        match self {
            Refused::WrongServerKey => Refusal::WrongKey,
            Refused::NotAllowed(_) => Refusal::NotAllowed,
            Refused::NotSecureFrame | Refused::NotAuthentic => Refusal::NotAuthentic,
            Refused::UnknownSession => Refusal::UnknownSession,
            Refused::OverBudget(Spent::Server) => Refusal::Busy,
            Refused::CannotStart
            | Refused::LowOrder
            | Refused::NoClientKey
            | Refused::NoTimestamp
            | Refused::Replayed(_)
            | Refused::HandshakeFailed
            | Refused::OverBudget(Spent::Host) => Refusal::HandshakeFailed,
        }
    }
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

    /// Handles one received body from `host` (the sender's address, or its
    /// connection where it has none); `envelope_id` is the id the client
    /// put in the envelope, which must match the one sealed inside. A first
    /// handshake message without this server's mac1, or beyond the
    /// handshake budget, is refused before any Diffie-Hellman.
    pub(crate) fn open(
        &mut self,
        host: &[u8],
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
                None => return Opened::Refused(Refused::WrongServerKey),
            }
        } else {
            frame
        };
        match Frame::parse(frame) {
            Some(Frame::HandshakeInit {
                client_index,
                noise,
            }) => match self.budget.spend(host, now) {
                Ok(()) => self.answer_handshake(client_index, noise, now),
                Err(spent) => Opened::Refused(Refused::OverBudget(spent)),
            },
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
                event: Answered::KeyTold,
            },
            _ => Opened::Refused(Refused::NotSecureFrame),
        }
    }

    fn answer_handshake(&mut self, client_index: u64, noise: &[u8], now: Instant) -> Opened {
        let (handshake, client, stamp) = match self.read_handshake(noise) {
            Ok(read) => read,
            Err(refused) => return Opened::Refused(refused),
        };
        if let Err(refused) = self.let_in(client, stamp, now) {
            return Opened::Refused(refused);
        }
        let Ok((transport, noise_reply)) = finish_handshake(handshake) else {
            return Opened::Refused(Refused::HandshakeFailed);
        };
        let server_index = self.start_session(client, client_index, transport, now);
        Opened::Answer {
            reply: Frame::HandshakeReply {
                client_index,
                server_index,
                noise: &noise_reply,
            }
            .encode(),
            event: Answered::SessionStarted(client),
        }
    }

    /// Reads a client's first handshake message: the handshake under way,
    /// the client's key and the handshake's timestamp; or the refusal.
    fn read_handshake(
        &self,
        noise: &[u8],
    ) -> Result<(snow::HandshakeState, PublicKey, Timestamp), Refused> {
        let started = snow::Builder::new(noise_params())
            .local_private_key(self.identity.private_key())
            .and_then(|builder| builder.prologue(PROLOGUE))
            .and_then(|builder| builder.build_responder());
        let Ok(mut handshake) = started else {
            return Err(Refused::CannotStart);
        };
        // IK's first message opens with the initiator's ephemeral key, in clear.
        if noise.first_chunk::<KEY_LEN>().is_none_or(is_low_order) {
            return Err(Refused::LowOrder);
        }
        let mut payload = vec![0u8; 256];
        let Ok(read) = handshake.read_message(noise, &mut payload) else {
            return Err(Refused::WrongServerKey);
        };
        let client = match handshake.get_remote_static().map(<[u8; KEY_LEN]>::try_from) {
            Some(Ok(key)) if is_low_order(&key) => return Err(Refused::LowOrder),
            Some(Ok(key)) => PublicKey(key),
            _ => return Err(Refused::NoClientKey),
        };
        let Ok(stamp) = Timestamp::try_from(&payload[..read]) else {
            return Err(Refused::NoTimestamp);
        };
        Ok((handshake, client, stamp))
    }

    /// Whether `client`, proven by a handshake stamped `stamp`, may have a
    /// session: not a replay, and on the allow list if there is one.
    fn let_in(&mut self, client: PublicKey, stamp: Timestamp, now: Instant) -> Result<(), Refused> {
        // Before anything else is said of this key: a replay learns nothing.
        if !self.is_newest(client, stamp, now) {
            return Err(Refused::Replayed(client));
        }
        if let Some(allowed) = &self.allowed
            && !allowed.allows(&client)
        {
            return Err(Refused::NotAllowed(client));
        }
        Ok(())
    }

    /// Whether `stamp` is newer than any handshake seen from `client`; if
    /// so it becomes the newest (whether or not the key is let in, so a
    /// refused key's handshake cannot be replayed either).
    fn is_newest(&mut self, client: PublicKey, stamp: Timestamp, now: Instant) -> bool {
        let known = self.clients.entry(client).or_insert(Client {
            newest: [0; 12],
            pending: None,
            confirmed: VecDeque::new(),
            last_seen: now,
        });
        if stamp <= known.newest {
            return false;
        }
        known.newest = stamp;
        known.last_seen = now;
        self.make_room(client);
        true
    }

    /// Keeps a new session for `client` as its pending one; returns its index.
    fn start_session(
        &mut self,
        client: PublicKey,
        client_index: u64,
        transport: TransportState,
        now: Instant,
    ) -> u64 {
        let server_index = random_id();
        if let Some(known) = self.clients.get_mut(&client) {
            // Only the pending session is replaced: confirmed ones keep working.
            if let Some(unconfirmed) = known.pending.replace(server_index) {
                self.sessions.remove(&unconfirmed);
            }
        }
        self.sessions.insert(
            server_index,
            ServerSession {
                transport,
                client,
                client_index,
                since: now,
                opened: 0,
            },
        );
        server_index
    }

    fn open_message(
        &mut self,
        server_index: u64,
        sealed: &[u8],
        envelope_id: Option<MessageId>,
        now: Instant,
    ) -> Opened {
        let session = match self.sessions.get_mut(&server_index) {
            Some(session) if session.is_current(now) => session,
            found => {
                if found.is_some() {
                    self.forget_session(server_index);
                }
                return Opened::Refused(Refused::UnknownSession);
            }
        };
        let nonce_before = session.transport.receiving_nonce();
        match frame::open(&mut session.transport, sealed) {
            Ok((Sealed::Text, id, text)) if Some(id) == envelope_id => {
                session.opened += 1;
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
                // genuine copy that follows still opens. (A frame that did
                // not open left the nonce as it was.)
                if opened.is_ok() {
                    session.transport.set_receiving_nonce(nonce_before);
                }
                // In clear, and nothing sealed: whoever sent it (the genuine
                // client, whose message was altered on the way, or someone
                // replaying it from elsewhere) moves no session on.
                Opened::Refused(Refused::NotAuthentic)
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

    /// Seals `text` as the reply of `kind` to message `id` of `session`.
    /// When the session is gone (its key made newer ones), a clear "no such
    /// session" instead: the client shakes hands again and sends a copy,
    /// which the answer memory answers, so no client waits for ever.
    pub(crate) fn seal_reply(
        &mut self,
        session: u64,
        kind: Sealed,
        id: MessageId,
        text: &[u8],
    ) -> Vec<u8> {
        let Some(session) = self.sessions.get_mut(&session) else {
            return unknown_session_frame();
        };
        match frame::seal(&mut session.transport, kind, id, text) {
            Ok(sealed) => Frame::Reply {
                client_index: session.client_index,
                sealed: &sealed,
            }
            .encode(),
            Err(_) => unknown_session_frame(),
        }
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
    pub(crate) fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

impl ServerSession {
    /// Whether a message may still open in this session at `now`.
    fn is_current(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) <= REJECT_AFTER
            && self.opened < REJECT_AFTER_MESSAGES
    }
}

fn unknown_session_frame() -> Vec<u8> {
    Frame::Refused {
        reason: Refusal::UnknownSession,
        text: UNKNOWN_SESSION.as_bytes(),
    }
    .encode()
}

pub(crate) const UNKNOWN_SESSION: &str =
    "no such session (the server restarted or the session expired); shake hands again";

/// The server's handshake reply, and the session's keys.
fn finish_handshake(
    mut handshake: snow::HandshakeState,
) -> Result<(TransportState, Vec<u8>), snow::Error> {
    let mut noise_reply = vec![0u8; 256];
    let written = handshake.write_message(&[], &mut noise_reply);
    let transport = written.and_then(|length| {
        noise_reply.truncate(length);
        handshake.into_transport_mode()
    });
    transport.map(|transport| (transport, noise_reply))
}
