//! Where a client's trust in a sealed desk's key comes from, as for a
//! server in secure mode (see [`crate::secure::trust`]): pinned
//! (`--server-key`), remembered in the known servers file as
//! `desk:NAME@HOST`, or learned now from the key queue the desk's
//! operators fill, and written down once an answer opens with it.

use std::io::{self, Write};

use super::{Desk, learn_desk_key};
use crate::secure::trust::{FirstUse, Remembered, Trust, TrustError, accept, remembered};
use crate::transport::TransportError;

/// Why no key of a desk could be trusted.
#[derive(Debug, thiserror::Error)]
pub enum DeskKeyError {
    /// As for a server.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The desk's key could not be learned from its broker.
    #[error("cannot learn the key of the {desk}")]
    Query {
        /// The desk, as shown.
        desk: String,
        /// Why.
        #[source]
        cause: TransportError,
    },
    /// No operator of the desk left its key: the desk is not sealed (yet).
    #[error(
        "no operator of the {desk} has left a key: the desk is not sealed (its operators run chat-server --desk NAME --key FILE), or none has started yet"
    )]
    NoKey {
        /// The desk, as shown.
        desk: String,
    },
}

/// The desk's key from the known servers file, for `desk` (as
/// [`desk_entry`] names it): the one remembered, or, as `first_use`
/// allows, the one its operators left in its key queue, accepted by the
/// person (`ask`). `None`: the desk in clear. What it does is said on
/// `tell`, each line prefixed with `program`.
///
/// # Errors
/// See [`DeskKeyError`].
pub fn known_desk_key(
    program: &str,
    first_use: FirstUse,
    desk: &Desk,
    tell: &mut dyn Write,
    ask: &mut dyn FnMut() -> io::Result<bool>,
) -> Result<Option<Trust>, DeskKeyError> {
    let entry = desk_entry(desk);
    let known = match remembered(first_use, &entry)? {
        Remembered::Key(key, place) => {
            let _ = writeln!(
                tell,
                "{program}: sealed with the key remembered for {entry} ({place})"
            );
            return Ok(Some(Trust::Remembered(key, place)));
        }
        Remembered::Learn(known) => known,
        Remembered::Nothing => return Ok(None),
    };
    let shown = desk.shown();
    let key = learn_desk_key(desk)
        .map_err(|cause| DeskKeyError::Query {
            desk: shown.clone(),
            cause,
        })?
        .ok_or(DeskKeyError::NoKey { desk: shown })?;
    let _ = writeln!(
        tell,
        "{program}: the {} leaves the key {key} (fingerprint {}). Nothing proves it yet: compare the fingerprint with the one its operators see (chat-server prints it at start).",
        desk.shown(),
        key.fingerprint()
    );
    accept(first_use, key, ask)?;
    let _ = writeln!(
        tell,
        "{program}: the key is remembered for {entry} once an answer opens with it"
    );
    Ok(Some(Trust::Learned(key, known, entry)))
}

/// How a desk is named in the known servers file: `desk:NAME@HOST`, the
/// host of its first broker.
pub fn desk_entry(desk: &Desk) -> String {
    let host = desk
        .brokers
        .first()
        .and_then(|url| url.parse::<lapin::uri::AMQPUri>().ok())
        .map(|uri| uri.authority.host)
        .unwrap_or_default();
    format!("desk:{}@{host}", desk.name)
}
