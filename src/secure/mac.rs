//! WireGuard's `mac1` on the first handshake message: a keyed BLAKE2s-128
//! of the frame under a key derived from the server's public key.
//!
//! The server checks it before any Diffie-Hellman, at the cost of one hash,
//! so frames from someone who does not know the server's public key (random
//! bytes, a scan, a client with a wrong `--server-key`) are refused almost
//! for free. Whoever knows the key can still make valid ones: those are
//! held to the per-connection handshake budget (see
//! [`crate::secure::budget::HOST_BURST`]).

use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Mac, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};

use crate::secure::keys::PublicKey;

/// The length of the mac at the end of a first handshake frame.
pub const MAC_LEN: usize = 16;

/// As WireGuard labels the derivation of its mac1 key.
const LABEL_MAC1: &[u8] = b"mac1----";

/// The key that macs first handshake messages for one server.
#[derive(Clone)]
pub struct Mac1Key([u8; 32]);

impl Mac1Key {
    /// The key for the server whose public key is `server`.
    pub fn for_server(server: &PublicKey) -> Mac1Key {
        Mac1Key(
            Blake2s256::new()
                .chain_update(LABEL_MAC1)
                .chain_update(server.0)
                .finalize()
                .into(),
        )
    }

    fn mac(&self) -> Blake2sMac<U16> {
        <Blake2sMac<U16> as KeyInit>::new_from_slice(&self.0)
            .expect("32 bytes is a valid BLAKE2s key length")
    }

    /// Appends the mac of `frame` to it.
    pub fn append(&self, frame: &mut Vec<u8>) {
        let mut mac = self.mac();
        Update::update(&mut mac, frame);
        frame.extend_from_slice(&mac.finalize_fixed());
    }

    /// `frame` without its mac if the mac is right (compared in constant
    /// time), else `None`.
    pub fn strip<'a>(&self, frame: &'a [u8]) -> Option<&'a [u8]> {
        let (macked, tag) = frame.split_at_checked(frame.len().checked_sub(MAC_LEN)?)?;
        let mut mac = self.mac();
        Update::update(&mut mac, macked);
        mac.verify_slice(tag).ok().map(|()| macked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_macked_for_one_server_passes_only_for_it_and_only_unaltered() {
        let key = Mac1Key::for_server(&PublicKey([9; 32]));
        let other = Mac1Key::for_server(&PublicKey([8; 32]));
        let mut frame = b"zcs3H some handshake".to_vec();
        key.append(&mut frame);
        assert_eq!(key.strip(&frame), Some(&b"zcs3H some handshake"[..]));
        assert_eq!(other.strip(&frame), None, "another server's key");
        for at in 0..frame.len() {
            let mut altered = frame.clone();
            altered[at] ^= 1;
            assert_eq!(key.strip(&altered), None, "byte {at} altered");
        }
        assert_eq!(key.strip(&frame[..MAC_LEN - 1]), None, "too short");
    }
}
