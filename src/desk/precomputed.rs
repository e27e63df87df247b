//! X25519 for the desk's Noise handshakes, with what is known before a
//! question is: the own key's public half (snow derives it anew from the
//! private key for every handshake) and the static-static result with each
//! peer's key once seen (WireGuard precomputes it the same way, per peer).
//! Each is an X25519 operation, about 50 µs here, off every question's
//! round trip (see BENCHMARKS.md). The results are what either side could
//! compute again at any time from the keys it holds: keeping them hides
//! and reveals nothing more.
//!
//! The arithmetic is `curve25519-dalek`'s, as in snow's own resolver.

use std::sync::{Arc, Mutex, PoisonError};

use curve25519_dalek::montgomery::MontgomeryPoint;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};

use crate::bounded::Bounded;
use crate::secure::keys::{Identity, KEY_LEN, PublicKey};

/// Peers' keys whose static-static result is kept, at most (an operator
/// hears from many clients; a client from one desk).
const PEERS: usize = 4096;

type Key = [u8; KEY_LEN];

/// The own key pair and the results kept with peers' keys.
struct Known {
    private: Key,
    public: Key,
    shared: Mutex<Bounded<Key, Key>>,
}

/// What a desk program knows ahead of its handshakes, shared by them.
#[derive(Clone)]
pub struct Precomputed(Arc<Known>);

impl Precomputed {
    /// Knows `own`'s key pair, and no peer yet.
    pub fn new(own: &Identity) -> Precomputed {
        Precomputed(Arc::new(Known {
            private: *own.private_key(),
            public: own.public_key().0,
            shared: Mutex::new(Bounded::new(PEERS)),
        }))
    }

    /// Computes and keeps the static-static result with `peer`, a key a
    /// sealed question just proved (or the desk's, known to a client), if
    /// not kept yet. Keys of small order are not kept.
    pub fn learn(&self, peer: &PublicKey) {
        if self.shared(&peer.0).is_some() {
            return;
        }
        let shared = x25519(&self.0.private, &peer.0);
        // What a key of small order gives (see `is_low_order`).
        if shared != [0; KEY_LEN] {
            self.table().insert(peer.0, shared);
        }
    }

    /// The own private key, for snow's builder.
    pub fn private_key(&self) -> &[u8] {
        &self.0.private
    }

    /// A resolver for snow's builder that uses what is known.
    pub fn resolver(&self) -> Box<dyn CryptoResolver + Send> {
        Box::new(self.clone())
    }

    fn shared(&self, peer: &Key) -> Option<Key> {
        self.table().get(peer).copied()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Bounded<Key, Key>> {
        // A table of results that are each whole: usable after a panic.
        self.0.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl CryptoResolver for Precomputed {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        DefaultResolver.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        matches!(choice, DHChoice::Curve25519).then(|| {
            Box::new(KnownDh {
                known: self.clone(),
                private: [0; KEY_LEN],
                public: [0; KEY_LEN],
                own: false,
            }) as Box<dyn Dh>
        })
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// One key of a handshake: the own static key (its public half and its
/// results with known peers looked up) or an ephemeral one (computed).
struct KnownDh {
    known: Precomputed,
    private: Key,
    public: Key,
    /// Whether this is the own static key.
    own: bool,
}

impl Dh for KnownDh {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        KEY_LEN
    }

    fn priv_len(&self) -> usize {
        KEY_LEN
    }

    fn set(&mut self, private: &[u8]) {
        self.private.copy_from_slice(&private[..KEY_LEN]);
        self.own = self.private == self.known.0.private;
        self.public = match self.own {
            true => self.known.0.public,
            false => MontgomeryPoint::mul_base_clamped(self.private).to_bytes(),
        };
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut private = [0; KEY_LEN];
        rng.try_fill_bytes(&mut private)?;
        self.set(&private);
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        &self.private
    }

    fn dh(&self, peer: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let peer: Key = peer[..KEY_LEN].try_into().expect("a 32-byte slice");
        let kept = self.own.then(|| self.known.shared(&peer)).flatten();
        out[..KEY_LEN].copy_from_slice(&kept.unwrap_or_else(|| x25519(&self.private, &peer)));
        Ok(())
    }
}

fn x25519(private: &Key, peer: &Key) -> Key {
    MontgomeryPoint(*peer).mul_clamped(*private).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_kept_is_what_snow_computes() {
        let (own, peer) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let known = Precomputed::new(&own);
        let mut snows = DefaultResolver
            .resolve_dh(&DHChoice::Curve25519)
            .expect("snow has 25519");
        snows.set(own.private_key());
        let mut ours = known.resolve_dh(&DHChoice::Curve25519).unwrap();
        ours.set(own.private_key());
        assert_eq!(ours.pubkey(), snows.pubkey());
        let (mut expected, mut computed, mut kept) = ([0; 32], [0; 32], [0; 32]);
        snows.dh(&peer.public_key().0, &mut expected).unwrap();
        ours.dh(&peer.public_key().0, &mut computed).unwrap();
        known.learn(&peer.public_key());
        ours.dh(&peer.public_key().0, &mut kept).unwrap();
        assert_eq!((computed, kept), (expected, expected));
        assert!(known.shared(&peer.public_key().0).is_some());
        known.learn(&PublicKey([0; 32]));
        assert!(known.shared(&[0; 32]).is_none(), "small order");
    }
}
