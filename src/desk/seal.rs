//! End-to-end sealing at the help desk (`--key` on both programs): the
//! broker, and whoever runs it, carries questions and answers it can
//! neither read nor alter.
//!
//! A question opens with a Noise `X` handshake message
//! (`Noise_X_25519_ChaChaPoly_BLAKE2s`, a one-way pattern: no operator need
//! be online to seal it) from the client's key to the desk's, with an empty
//! payload; then the first transport message of that handshake, holding
//! the question's header (its id, where its answer goes, when it expires,
//! the name the client gave itself) and a fresh 32-byte key; then the text,
//! sealed under that key (ChaCha20-Poly1305, nonce 0, all that precedes as
//! associated data). The answer is sealed under the same key (nonce 1, the
//! question's id as associated data): only the client that asked, and the
//! holders of the desk's key, can open it, and it opens for its question
//! only. (A Noise message to the client's key would cost four more X25519
//! operations a round trip, and hide nothing more.)
//!
//! The handshake does not depend on the question, so both sides make
//! theirs ahead of time ([`Sealer::prepare`], [`Opener::prepare`]) while
//! the previous question is in flight, and keep what does not change from
//! one question to the next (see `desk::precomputed`): of
//! its seven X25519 operations (about 50 µs each here), one is left on the
//! round trip, the one the desk cannot do before the question comes
//! (BENCHMARKS.md).
//!
//! What travels in clear, as the broker needs it: the queue names, the
//! correlation id (the question's id) and the reply queue, both also in
//! the sealed header, which is what the desk's operator uses.

use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::Cipher;

use super::precomputed::Precomputed;
use crate::secure::keys::{Identity, KEY_LEN, PublicKey};

/// The first bytes of a sealed question.
const QUESTION_MAGIC: &[u8; 4] = b"zcq1";
/// The first bytes of a sealed answer.
const ANSWER_MAGIC: &[u8; 4] = b"zca1";
/// The content type sealed questions and answers carry.
pub const SEALED_CONTENT_TYPE: &str = "application/x-zmq-chat-sealed";

/// The Noise protocol of a question.
const NOISE_X: &str = "Noise_X_25519_ChaChaPoly_BLAKE2s";
/// Bound into every question's handshake.
const PROLOGUE: &[u8] = b"zmq-chat desk 1";
/// A question's handshake message is 96 bytes (an ephemeral key, the
/// client's key sealed, an empty payload's tag).
const HANDSHAKE_MAX: usize = 128;
/// ChaCha20-Poly1305's tag.
const TAG_LEN: usize = 16;

/// A question's header, sealed with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The question's id (its correlation id).
    pub id: String,
    /// The queue its answer goes to.
    pub reply_to: String,
    /// When it expires, in seconds since the Unix epoch.
    pub expires: u64,
    /// The name the client gave itself (`--name`), if any.
    pub name: Option<Vec<u8>>,
}

/// The key a question's answer is sealed under, known to the asking
/// client and to whoever opened the question.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReplyKey(pub [u8; 32]);

impl std::fmt::Debug for ReplyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyKey(…)")
    }
}

impl ReplyKey {
    /// The key as 64 hex digits (for the client's journal).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// The key from 64 hex digits.
    pub fn from_hex(text: &str) -> Option<ReplyKey> {
        let mut key = [0u8; 32];
        if text.len() != 64 {
            return None;
        }
        for (index, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * index..2 * index + 2)?, 16).ok()?;
        }
        Some(ReplyKey(key))
    }
}

/// A question opened by the desk.
#[derive(Debug)]
pub struct Opened {
    /// The key of the client that sealed it.
    pub client: PublicKey,
    /// Its header.
    pub header: Header,
    /// Its text.
    pub text: Vec<u8>,
    /// The key its answer is to be sealed under.
    pub reply: ReplyKey,
}

/// Why a sealed message could not be made or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A message that is not sealed at all (a plain program's).
    #[error("it is not sealed")]
    NotSealed,
    /// A sealed message cut short or malformed.
    #[error("it is malformed")]
    Malformed,
    /// A message sealed for another key, or altered on its way.
    #[error("it does not open with this key (sealed for another, or altered)")]
    DoesNotOpen,
    /// Noise refused to seal (a key it cannot use).
    #[error("cannot seal: {0}")]
    Noise(#[from] snow::Error),
}

/// Whether `body` is a sealed question.
pub fn is_sealed_question(body: &[u8]) -> bool {
    body.starts_with(QUESTION_MAGIC)
}

/// The client's side: seals questions from its key to the desk's, each
/// in a handshake made ahead of time.
pub struct Sealer {
    known: Precomputed,
    desk: PublicKey,
    ready: Option<Prepared>,
}

impl Sealer {
    /// A sealer of questions from `client` to the desk's key `desk`.
    pub fn new(client: &Identity, desk: PublicKey) -> Sealer {
        let known = Precomputed::new(client);
        known.learn(&desk);
        Sealer {
            known,
            desk,
            ready: None,
        }
    }

    /// Makes the next question's handshake now, off the round trip, if not
    /// made yet (a failure is told when that question is sealed).
    pub fn prepare(&mut self) {
        if self.ready.is_none() {
            self.ready = Prepared::new(&self.known, &self.desk).ok();
        }
    }

    /// Seals a question with `header` and `text`; with the key its answer
    /// will be sealed under.
    ///
    /// # Errors
    /// When Noise cannot use the keys or draw randomness.
    pub fn seal(&mut self, header: &Header, text: &[u8]) -> Result<(Vec<u8>, ReplyKey), SealError> {
        let prepared = match self.ready.take() {
            Some(prepared) => prepared,
            None => Prepared::new(&self.known, &self.desk)?,
        };
        prepared.seal(header, text)
    }
}

/// A question's Noise handshake, made before its question is known.
struct Prepared {
    /// The handshake message.
    message: Vec<u8>,
    /// What seals the question's header after it.
    transport: snow::TransportState,
}

impl Prepared {
    /// The handshake of a question from the client `known` to the desk's
    /// key `desk`.
    fn new(known: &Precomputed, desk: &PublicKey) -> Result<Prepared, SealError> {
        let mut handshake = snow::Builder::with_resolver(NOISE_X.parse()?, known.resolver())
            .local_private_key(known.private_key())?
            .remote_public_key(&desk.0)?
            .prologue(PROLOGUE)?
            .build_initiator()?;
        let mut message = vec![0u8; HANDSHAKE_MAX];
        let length = handshake.write_message(&[], &mut message)?;
        message.truncate(length);
        Ok(Prepared {
            message,
            transport: handshake.into_transport_mode()?,
        })
    }

    /// Seals a question with `header` and `text` in this handshake.
    fn seal(mut self, header: &Header, text: &[u8]) -> Result<(Vec<u8>, ReplyKey), SealError> {
        let mut reply = ReplyKey([0; 32]);
        DefaultResolver
            .resolve_rng()
            .ok_or(SealError::Malformed)?
            .try_fill_bytes(&mut reply.0)?;
        let payload = encode_header(header, &reply);
        let mut sealed_header = vec![0u8; payload.len() + TAG_LEN];
        let length = self.transport.write_message(&payload, &mut sealed_header)?;
        sealed_header.truncate(length);
        let mut sealed = Vec::with_capacity(
            QUESTION_MAGIC.len() + 4 + self.message.len() + length + text.len() + TAG_LEN,
        );
        sealed.extend_from_slice(QUESTION_MAGIC);
        for part in [&self.message, &sealed_header] {
            sealed.extend_from_slice(&(part.len() as u16).to_be_bytes());
            sealed.extend_from_slice(part);
        }
        let text = aead(&reply, 0, &sealed[QUESTION_MAGIC.len()..], text);
        sealed.extend(text);
        Ok((sealed, reply))
    }
}

/// The desk's side: opens questions sealed to its key, with the next
/// question's handshake state made ahead of time.
pub struct Opener {
    known: Precomputed,
    ready: Option<snow::HandshakeState>,
    /// The key of the last question's client, to learn off the round trip.
    to_learn: Option<PublicKey>,
}

impl Opener {
    /// An opener for questions sealed to `desk`.
    pub fn new(desk: &Identity) -> Opener {
        Opener {
            known: Precomputed::new(desk),
            ready: None,
            to_learn: None,
        }
    }

    /// Does now, while no question is being opened, what would otherwise
    /// be done on the next question's round trip: makes its handshake
    /// state, and keeps the static-static result with the last question's
    /// client (one X25519 operation, once per client).
    pub fn prepare(&mut self) {
        if let Some(client) = self.to_learn.take() {
            self.known.learn(&client);
        }
        if self.ready.is_none() {
            self.ready = self.responder().ok();
        }
    }

    fn responder(&self) -> Result<snow::HandshakeState, SealError> {
        let resolver = self.known.resolver();
        Ok(snow::Builder::with_resolver(NOISE_X.parse()?, resolver)
            .local_private_key(self.known.private_key())?
            .prologue(PROLOGUE)?
            .build_responder()?)
    }

    /// Opens a question sealed to the desk.
    ///
    /// # Errors
    /// [`SealError`] says why it does not open.
    pub fn open(&mut self, sealed: &[u8]) -> Result<Opened, SealError> {
        let parts = sealed
            .strip_prefix(QUESTION_MAGIC)
            .ok_or(SealError::NotSealed)?;
        let (message, rest) = length_prefixed(parts)?;
        let (sealed_header, text) = length_prefixed(rest)?;
        let mut handshake = match self.ready.take() {
            Some(handshake) => handshake,
            None => self.responder()?,
        };
        handshake
            .read_message(message, &mut [])
            .map_err(|_| SealError::DoesNotOpen)?;
        let mut transport = handshake
            .into_transport_mode()
            .map_err(|_| SealError::DoesNotOpen)?;
        let client = transport
            .get_remote_static()
            .and_then(|key| <[u8; KEY_LEN]>::try_from(key).ok())
            .map(PublicKey)
            .ok_or(SealError::DoesNotOpen)?;
        let mut payload = vec![0u8; sealed_header.len()];
        let length = transport
            .read_message(sealed_header, &mut payload)
            .map_err(|_| SealError::DoesNotOpen)?;
        let (header, reply) = decode_header(&payload[..length]).ok_or(SealError::Malformed)?;
        let associated = &parts[..parts.len() - text.len()];
        let text = open_aead(&reply, 0, associated, text)?;
        self.to_learn = Some(client);
        Ok(Opened {
            client,
            header,
            text,
            reply,
        })
    }
}

/// Splits off a part written after its length (2 bytes, big-endian).
fn length_prefixed(bytes: &[u8]) -> Result<(&[u8], &[u8]), SealError> {
    let (length, rest) = bytes.split_first_chunk::<2>().ok_or(SealError::Malformed)?;
    rest.split_at_checked(usize::from(u16::from_be_bytes(*length)))
        .ok_or(SealError::Malformed)
}

/// Seals the answer `text` to the question `id` under its `reply` key.
pub fn seal_answer(reply: &ReplyKey, id: &str, text: &[u8]) -> Vec<u8> {
    let mut sealed = ANSWER_MAGIC.to_vec();
    sealed.extend(aead(reply, 1, id.as_bytes(), text));
    sealed
}

/// Opens the answer to the question `id` sealed under its `reply` key.
///
/// # Errors
/// [`SealError`] says why it does not open.
pub fn open_answer(reply: &ReplyKey, id: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    let rest = sealed
        .strip_prefix(ANSWER_MAGIC)
        .ok_or(SealError::NotSealed)?;
    open_aead(reply, 1, id.as_bytes(), rest)
}

/// ChaCha20-Poly1305 under `key`, `nonce`, `associated` data.
fn aead(key: &ReplyKey, nonce: u64, associated: &[u8], text: &[u8]) -> Vec<u8> {
    let mut sealed = vec![0u8; text.len() + TAG_LEN];
    let length = cipher(key).encrypt(nonce, associated, text, &mut sealed);
    sealed.truncate(length);
    sealed
}

/// Opens what [`aead`] sealed.
fn open_aead(
    key: &ReplyKey,
    nonce: u64,
    associated: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, SealError> {
    if sealed.len() < TAG_LEN {
        return Err(SealError::Malformed);
    }
    let mut text = vec![0u8; sealed.len()];
    let length = cipher(key)
        .decrypt(nonce, associated, sealed, &mut text)
        .map_err(|_| SealError::DoesNotOpen)?;
    text.truncate(length);
    Ok(text)
}

fn cipher(key: &ReplyKey) -> Box<dyn Cipher> {
    let mut cipher = DefaultResolver
        .resolve_cipher(&snow::params::CipherChoice::ChaChaPoly)
        .expect("snow's default resolver has ChaChaPoly");
    cipher.set(&key.0);
    cipher
}

/// The header's bytes: expiry (8, big-endian), then the id, the reply
/// queue and the name, each after its length (1 byte), then the reply key.
fn encode_header(header: &Header, reply: &ReplyKey) -> Vec<u8> {
    let mut bytes = header.expires.to_be_bytes().to_vec();
    let name = header.name.as_deref().unwrap_or_default();
    for field in [header.id.as_bytes(), header.reply_to.as_bytes(), name] {
        // AMQP's short strings and the chat's names are under 256 bytes.
        let field = &field[..field.len().min(255)];
        bytes.push(field.len() as u8);
        bytes.extend_from_slice(field);
    }
    bytes.extend_from_slice(&reply.0);
    bytes
}

/// What [`encode_header`] wrote.
fn decode_header(bytes: &[u8]) -> Option<(Header, ReplyKey)> {
    let (expires, mut rest) = bytes.split_first_chunk::<8>()?;
    let mut fields = Vec::new();
    for _ in 0..3 {
        let (length, after) = rest.split_first()?;
        let (field, after) = after.split_at_checked(usize::from(*length))?;
        fields.push(field.to_vec());
        rest = after;
    }
    let reply = ReplyKey(*rest.first_chunk::<32>()?);
    if rest.len() != 32 {
        return None;
    }
    let name = fields.pop().filter(|name| !name.is_empty());
    let reply_to = String::from_utf8(fields.pop()?).ok()?;
    let id = String::from_utf8(fields.pop()?).ok()?;
    let header = Header {
        id,
        reply_to,
        expires: u64::from_be_bytes(*expires),
        name,
    };
    Some((header, reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(client: &Identity, desk: &PublicKey, text: &[u8]) -> (Vec<u8>, ReplyKey) {
        Sealer::new(client, *desk).seal(&header(), text).unwrap()
    }

    fn header() -> Header {
        Header {
            id: "zc1:00ff:7".into(),
            reply_to: "support.answers.0123456789abcdef".into(),
            expires: 1_800_000_000,
            name: Some(b"ann".to_vec()),
        }
    }

    #[test]
    fn a_question_opens_for_the_desk_only_and_its_answer_for_its_client_only() {
        let client = Identity::generate().unwrap();
        let desk = Identity::generate().unwrap();
        let desk_key = desk.public_key();
        let (mut desk, mut other) = (
            Opener::new(&desk),
            Opener::new(&Identity::generate().unwrap()),
        );
        let text = "where is the lift?".repeat(10_000);
        let (sealed, reply) = seal(&client, &desk_key, text.as_bytes());
        assert!(is_sealed_question(&sealed));
        assert!(
            !sealed
                .windows(18)
                .any(|window| window == b"where is the lift?"),
            "no plaintext"
        );
        desk.prepare();
        let opened = desk.open(&sealed).unwrap();
        assert_eq!(opened.text, text.as_bytes());
        assert_eq!(opened.header, header());
        assert_eq!(opened.client, client.public_key());
        assert_eq!(opened.reply, reply);
        assert!(matches!(other.open(&sealed), Err(SealError::DoesNotOpen)));
        assert_eq!(
            desk.open(&sealed).unwrap().text,
            text.as_bytes(),
            "unprepared"
        );

        let answer = seal_answer(&opened.reply, "zc1:00ff:7", b"on the left");
        assert_eq!(
            open_answer(&reply, "zc1:00ff:7", &answer).unwrap(),
            b"on the left"
        );
        assert!(
            open_answer(&reply, "zc1:00ff:8", &answer).is_err(),
            "another question's"
        );
        let (_, other_reply) = seal(&client, &desk_key, b"again");
        assert!(open_answer(&other_reply, "zc1:00ff:7", &answer).is_err());
    }

    #[test]
    fn questions_of_clients_taking_turns_open_with_what_the_desk_keeps() {
        let desk = Identity::generate().unwrap();
        let (ann, bob) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let mut sealers = [&ann, &bob].map(|client| Sealer::new(client, desk.public_key()));
        let mut opener = Opener::new(&desk);
        for turn in 0..6 {
            let (sealer, client) = match turn % 2 {
                0 => (&mut sealers[0], &ann),
                _ => (&mut sealers[1], &bob),
            };
            sealer.prepare();
            let text = format!("turn {turn}");
            let (sealed, reply) = sealer.seal(&header(), text.as_bytes()).unwrap();
            let opened = opener.open(&sealed).unwrap();
            assert_eq!(opened.client, client.public_key(), "turn {turn}");
            assert_eq!((opened.text, opened.reply), (text.into_bytes(), reply));
            opener.prepare();
        }
    }

    #[test]
    fn an_altered_or_cut_question_does_not_open() {
        let (client, desk) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let (sealed, _) = seal(&client, &desk.public_key(), b"hello");
        let mut desk = Opener::new(&desk);
        // In the handshake, its length, the header, the text.
        for index in [4, 6, 40, 104, sealed.len() - 1] {
            let mut altered = sealed.clone();
            altered[index] ^= 1;
            assert!(desk.open(&altered).is_err(), "byte {index}");
        }
        assert!(desk.open(&sealed[..sealed.len() - 1]).is_err());
        assert!(desk.open(&sealed[..20]).is_err());
        assert!(matches!(desk.open(b"hello"), Err(SealError::NotSealed)));
        assert!(desk.open(&sealed).is_ok());
    }

    #[test]
    fn reply_keys_go_to_hex_and_back() {
        let key = ReplyKey([0xa5; 32]);
        assert_eq!(ReplyKey::from_hex(&key.to_hex()), Some(key));
        assert_eq!(ReplyKey::from_hex("zz"), None);
    }
}
