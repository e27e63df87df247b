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
    /// Not a message: send `reply` back at once and log `notice`. A peer
    /// can make any of these at will, so notices are rate-limited by kind,
    /// `throttle` (a refusal, a session started, a key asked for).
    Answer {
        reply: Vec<u8>,
        notice: String,
        throttle: &'static str,
    },
}

/// The rate-limit kind of every refusal's notice.
pub(crate) const REFUSAL: &str = "secure refusal";

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
                None => return refuse_wrong_server_key(),
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
                Err(spent) => refuse_over_budget(spent),
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
        let (handshake, client, stamp) = match self.read_handshake(noise) {
            Ok(read) => read,
            Err(refused) => return refused,
        };
        if let Err(refused) = self.let_in(client, stamp, now) {
            return refused;
        }
        let (transport, noise_reply) = match finish_handshake(handshake) {
            Ok(finished) => finished,
            Err(refused) => return refused,
        };
        let server_index = self.start_session(client, client_index, transport, now);
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

    /// Reads a client's first handshake message: the handshake under way,
    /// the client's key and the handshake's timestamp; or the refusal.
    fn read_handshake(
        &self,
        noise: &[u8],
    ) -> Result<(snow::HandshakeState, PublicKey, Timestamp), Opened> {
        let started = snow::Builder::new(noise_params())
            .local_private_key(self.identity.private_key())
            .and_then(|builder| builder.prologue(PROLOGUE))
            .and_then(|builder| builder.build_responder());
        let Ok(mut handshake) = started else {
            return Err(refuse(
                Refusal::HandshakeFailed,
                "the server could not start a handshake",
                "could not start a handshake".to_string(),
            ));
        };
        // IK's first message opens with the initiator's ephemeral key, in clear.
        if noise.first_chunk::<KEY_LEN>().is_none_or(is_low_order) {
            return Err(refuse_low_order());
        }
        let mut payload = vec![0u8; 256];
        let Ok(read) = handshake.read_message(noise, &mut payload) else {
            return Err(refuse_wrong_server_key());
        };
        let client = match handshake.get_remote_static().map(<[u8; KEY_LEN]>::try_from) {
            Some(Ok(key)) if is_low_order(&key) => return Err(refuse_low_order()),
            Some(Ok(key)) => PublicKey(key),
            _ => {
                return Err(refuse(
                    Refusal::HandshakeFailed,
                    "no client key in the handshake",
                    "refused a handshake without a client key".to_string(),
                ));
            }
        };
        let Ok(stamp) = Timestamp::try_from(&payload[..read]) else {
            return Err(refuse(
                Refusal::HandshakeFailed,
                "the handshake carried no timestamp: this chat-client is too old for this server",
                "refused a handshake without a timestamp (a chat-client too old for this server)"
                    .to_string(),
            ));
        };
        Ok((handshake, client, stamp))
    }

    /// Whether `client`, proven by a handshake stamped `stamp`, may have a
    /// session: not a replay, and on the allow list if there is one.
    fn let_in(&mut self, client: PublicKey, stamp: Timestamp, now: Instant) -> Result<(), Opened> {
        // Before anything else is said of this key: a replay learns nothing.
        if !self.is_newest(client, stamp, now) {
            return Err(refuse(
                Refusal::HandshakeFailed,
                "a handshake no newer than one already seen was refused (replayed?)",
                format!(
                    "refused a replayed handshake (a recording of one of client {}'s)",
                    client.fingerprint()
                ),
            ));
        }
        if let Some(allowed) = &self.allowed
            && !allowed.allows(&client)
        {
            return Err(refuse(
                Refusal::NotAllowed,
                "this client's key is not on the server's allow list; ask the server's operator to add it",
                format!("refused client key {client}: not on the allow list"),
            ));
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
                return refuse_unknown_session();
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
                refuse(
                    Refusal::NotAuthentic,
                    "the message failed authentication (altered, replayed or out of order) and was dropped",
                    "dropped a sealed message that failed authentication (altered, replayed or out of order); nothing was sealed in answer".to_string(),
                )
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

const UNKNOWN_SESSION: &str =
    "no such session (the server restarted or the session expired); shake hands again";

/// The server's handshake reply, and the session's keys.
fn finish_handshake(
    mut handshake: snow::HandshakeState,
) -> Result<(TransportState, Vec<u8>), Opened> {
    let mut noise_reply = vec![0u8; 256];
    let written = handshake.write_message(&[], &mut noise_reply);
    let transport = written.and_then(|length| {
        noise_reply.truncate(length);
        handshake.into_transport_mode()
    });
    transport
        .map(|transport| (transport, noise_reply))
        .map_err(|_| {
            refuse(
                Refusal::HandshakeFailed,
                "the handshake failed on the server",
                "a handshake failed".to_string(),
            )
        })
}

fn refuse_unknown_session() -> Opened {
    refuse(
        Refusal::UnknownSession,
        UNKNOWN_SESSION,
        "a client's session was unknown or expired; it was asked to shake hands again".to_string(),
    )
}

/// A first handshake message made for another server key (or forged).
fn refuse_wrong_server_key() -> Opened {
    refuse(
        Refusal::WrongKey,
        "the server could not read the handshake: the client has the wrong --server-key (or the handshake was altered on the way)",
        "refused a handshake made for another server key (a client with a wrong --server-key?)"
            .to_string(),
    )
}

/// A handshake with a key of small order: its secrets are known to all.
fn refuse_low_order() -> Opened {
    refuse(
        Refusal::HandshakeFailed,
        "the handshake used a key of small order, which secures nothing",
        "refused a handshake with a key of small order (all zeros, say): its secrets are known to anyone".to_string(),
    )
}

/// A handshake beyond the budget, refused unread. Its notice is
/// rate-limited as a kind of its own: a flood is news apart from the
/// refusals it causes.
fn refuse_over_budget(spent: Spent) -> Opened {
    let refusal = match spent {
        Spent::Host => refuse(
            Refusal::HandshakeFailed,
            "too many handshakes from this address: wait a moment",
            "refused handshakes beyond the rate one address may start (a flood?)".to_string(),
        ),
        Spent::Server => refuse(
            Refusal::Busy,
            "the server is answering as many handshakes as it will: try again in a moment",
            "refused handshakes beyond the rate the server answers in all (a flood from many addresses?)".to_string(),
        ),
    };
    match refusal {
        Opened::Answer { reply, notice, .. } => Opened::Answer {
            reply,
            notice,
            throttle: "handshake budget",
        },
        message => message,
    }
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
