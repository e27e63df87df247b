//! Where a client's trust in its server's key comes from: pinned on the
//! command line (`--server-key`), remembered in the known servers file, or
//! learned now from the server and accepted by the person (trust on first
//! use, as ssh does). A learned key is only written down once a handshake
//! proves the server holds it.

use std::io::{self, Write};
use std::time::Duration;

use crate::address::Endpoint;
use crate::secure::client::ClientSecurity;
use crate::secure::keys::{Identity, KeyError, PublicKey};
use crate::secure::known::{KeyQueryError, KnownServers, ask_server_key};
use crate::shutdown::Shutdown;

/// Where the server's key in secure mode comes from.
pub enum Trust {
    /// `--server-key`.
    Pinned(PublicKey),
    /// The known servers file, at this place ("line 3 of FILE").
    Remembered(PublicKey, String),
    /// Learned now and accepted by the user: written to the file once a
    /// handshake proves the server holds it.
    Learned(PublicKey, KnownServers, String),
}

impl Trust {
    /// The server's key.
    pub fn key(&self) -> PublicKey {
        match self {
            Trust::Pinned(key) | Trust::Remembered(key, _) | Trust::Learned(key, ..) => *key,
        }
    }

    /// Secure mode for the client `identity`, pinned to this key and told
    /// where it came from: a remembered key is named in a key-changed
    /// warning, a learned one written down once proven.
    pub fn into_security(self, identity: Identity) -> ClientSecurity {
        let security = ClientSecurity::new(identity, self.key());
        match self {
            Trust::Pinned(_) => security,
            Trust::Remembered(_, place) => security.remembered_in(place),
            Trust::Learned(_, known, endpoint) => security.remember_when_proven(known, endpoint),
        }
    }
}

/// What trust on first use may do for a server the user has no record of.
#[derive(Clone, Copy, Debug)]
pub struct FirstUse {
    /// Ask the server for its key (`--secure`); else plain mode.
    pub learn: bool,
    /// Accept the key without asking (`--accept-new-key`, for scripts).
    pub accept_without_asking: bool,
    /// Whether a person can be asked (stdin is a terminal).
    pub can_ask: bool,
    /// How long to wait for the server to tell its key.
    pub wait: Duration,
}

/// Why no key could be trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// `--secure` with no home folder for the known servers file.
    #[error("no home folder for the known servers file: pass --server-key KEY")]
    NoKnownServersFile,
    /// The known servers file could not be read.
    #[error("cannot use the known servers file")]
    KnownServers(#[source] KeyError),
    /// The server did not tell its key.
    #[error("cannot learn the key of the server at {endpoint}")]
    Query {
        /// The server's address.
        endpoint: String,
        /// Why.
        #[source]
        cause: KeyQueryError,
    },
    /// The person did not accept the key.
    #[error("key not accepted; nothing was sent")]
    NotAccepted,
    /// No person to ask, and no `--accept-new-key`.
    #[error(
        "not remembering a key without asking: pass --accept-new-key (scripts), or --server-key {key}"
    )]
    NotAsked {
        /// The key the server presented.
        key: PublicKey,
    },
    /// The person's answer could not be read.
    #[error("cannot read the answer")]
    Answer(#[source] io::Error),
}

/// The server's key from the known servers file: the one remembered for
/// `endpoint`, or, as `first_use` allows, one learned now that the person
/// accepts (`ask` puts the question). `None`: plain mode. What it does is
/// said on `tell`, each line prefixed with `program`.
///
/// # Errors
/// See [`TrustError`].
pub fn known_server_key(
    program: &str,
    first_use: FirstUse,
    context: &zmq::Context,
    endpoint: &Endpoint,
    shutdown: &Shutdown,
    tell: &mut dyn Write,
    ask: &mut dyn FnMut() -> io::Result<bool>,
) -> Result<Option<Trust>, TrustError> {
    let endpoint_text = endpoint.to_string();
    let known = match remembered(first_use, &endpoint_text)? {
        Remembered::Key(key, place) => {
            let _ = writeln!(
                tell,
                "{program}: secure mode with the key remembered for {endpoint_text} ({place})"
            );
            return Ok(Some(Trust::Remembered(key, place)));
        }
        Remembered::Learn(known) => known,
        Remembered::Nothing => return Ok(None),
    };
    let _ = writeln!(
        tell,
        "{program}: {endpoint_text} is not in {}: asking the server for its key…",
        known.path().display()
    );
    let key = ask_server_key(context, endpoint, first_use.wait, shutdown).map_err(|cause| {
        TrustError::Query {
            endpoint: endpoint_text.clone(),
            cause,
        }
    })?;
    let _ = writeln!(
        tell,
        "{program}: the server at {endpoint_text} presents the key {key} (fingerprint {}). Nothing proves it yet: compare the fingerprint with the one its operator sees (chat-server prints it at start).",
        key.fingerprint()
    );
    accept(first_use, key, ask)?;
    let _ = writeln!(
        tell,
        "{program}: the key is remembered for {endpoint_text} once the server proves it holds it"
    );
    Ok(Some(Trust::Learned(key, known, endpoint_text)))
}

/// What the known servers file says of `entry` (a server's endpoint, a
/// desk's name), for trust on first use.
pub enum Remembered {
    /// The key remembered for it, and where ("line 3 of FILE").
    Key(PublicKey, String),
    /// Nothing, and `first_use` allows learning one now: the file, to
    /// write it to once proven.
    Learn(KnownServers),
    /// Nothing, and no learning: in clear.
    Nothing,
}

/// Looks `entry` up in the known servers file.
///
/// # Errors
/// No home folder for the file while `first_use` would learn, or a file
/// that cannot be read or trusted.
pub fn remembered(first_use: FirstUse, entry: &str) -> Result<Remembered, TrustError> {
    let Some(path) = KnownServers::default_path() else {
        if first_use.learn {
            return Err(TrustError::NoKnownServersFile);
        }
        return Ok(Remembered::Nothing);
    };
    let known = KnownServers::load(&path).map_err(TrustError::KnownServers)?;
    Ok(match known.lookup(entry) {
        Some((key, place)) => Remembered::Key(key, place),
        None if first_use.learn => Remembered::Learn(known),
        None => Remembered::Nothing,
    })
}

/// Whether a learned `key` is accepted: without asking if the user said
/// so, else by the person, if there is one to ask.
///
/// # Errors
/// [`TrustError::NotAsked`] with nobody to ask, [`TrustError::NotAccepted`]
/// when the person says no.
pub fn accept(
    first_use: FirstUse,
    key: PublicKey,
    ask: &mut dyn FnMut() -> io::Result<bool>,
) -> Result<(), TrustError> {
    if first_use.accept_without_asking {
        return Ok(());
    }
    if !first_use.can_ask {
        return Err(TrustError::NotAsked { key });
    }
    match ask().map_err(TrustError::Answer)? {
        true => Ok(()),
        false => Err(TrustError::NotAccepted),
    }
}

/// Asks the person at the terminal (stderr, stdin) to accept a server's key.
///
/// # Errors
/// When the answer cannot be read.
pub fn ask_at_terminal() -> io::Result<bool> {
    eprint!("Trust this key and remember it for this address? [y/N] ");
    let mut answer = String::new();
    io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_use(accept_without_asking: bool, can_ask: bool) -> FirstUse {
        FirstUse {
            learn: true,
            accept_without_asking,
            can_ask,
            wait: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_learned_key_is_accepted_only_by_the_flag_or_the_person() {
        let key = PublicKey([9; 32]);
        let never_asked = &mut || -> io::Result<bool> { panic!("nobody may be asked") };
        assert!(accept(first_use(true, false), key, never_asked).is_ok());
        assert!(matches!(
            accept(first_use(false, false), key, never_asked),
            Err(TrustError::NotAsked { .. })
        ));
        assert!(accept(first_use(false, true), key, &mut || Ok(true)).is_ok());
        assert!(matches!(
            accept(first_use(false, true), key, &mut || Ok(false)),
            Err(TrustError::NotAccepted)
        ));
    }
}
