//! Secure mode: an encrypted, authenticated chat on the default build.
//!
//! ZeroMQ's own CURVE is missing from the libzmq the `zmq` crate builds, so
//! the chat carries a standard handshake itself: Noise IK
//! (`Noise_IK_25519_ChaChaPoly_BLAKE2s`, the pattern WireGuard uses) through
//! the `snow` crate. IK fits request/reply: the client knows the server's
//! key in advance (`--server-key`), sends the first handshake message as a
//! request, and the server's reply completes it; both sides are then
//! authenticated and every message is sealed with ChaCha20-Poly1305 under
//! a counter nonce, so altered, replayed or reordered ciphertext is refused.
//!
//! - [`keys`]: key files, public keys, allow lists.
//! - [`known`]: the servers whose keys the user accepted, and asking a
//!   server for its key.
//! - [`trust`]: where the client's trust in a server's key comes from,
//!   and the trust-on-first-use dialogue.
//! - `frame`: the secure body frame and sealing/opening payloads.
//! - `mac`: WireGuard's mac1, which lets the server refuse forged first
//!   handshake messages before any Diffie-Hellman.
//! - `timestamp`: TAI64N timestamps, which make a recorded handshake useless.
//! - `budget`: how many handshakes (each a Diffie-Hellman) the server answers.
//! - [`client`]: the client's side of a session.
//! - [`server`]: the server's side: handshakes, allow list, sessions.
//!
//! How the loops use both sides, behind their one channel interface, is in
//! `crate::channel` (its `secure` part).

pub mod budget;
pub mod client;
pub(crate) mod frame;
pub mod keys;
pub mod known;
pub(crate) mod mac;
pub mod server;
#[cfg(test)]
mod tests;
mod timestamp;
pub mod trust;

/// Bound into every handshake, so a handshake of another protocol (or of a
/// future version of this one) cannot be mistaken for ours.
const PROLOGUE: &[u8] = b"zmq-chat secure v3";

/// The Noise protocol the chat speaks.
pub const NOISE_PROTOCOL: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// [`NOISE_PROTOCOL`] as snow's parameters.
pub fn noise_params() -> snow::params::NoiseParams {
    NOISE_PROTOCOL
        .parse()
        .expect("the protocol name is a valid Noise name")
}
