//! Where the programs keep the user's files, as the XDG base directory
//! specification says: configuration (keys, known servers) and data
//! (prompt history).

use std::path::PathBuf;

/// `$XDG_CONFIG_HOME/zmq-chat`, else `~/.config/zmq-chat`; `None` without
/// a home folder.
pub fn config() -> Option<PathBuf> {
    base("XDG_CONFIG_HOME", ".config")
}

/// `$XDG_DATA_HOME/zmq-chat`, else `~/.local/share/zmq-chat`; `None`
/// without a home folder.
pub fn data() -> Option<PathBuf> {
    base("XDG_DATA_HOME", ".local/share")
}

/// The zmq-chat folder under `$variable`, else under `~/fallback`.
fn base(variable: &str, fallback: &str) -> Option<PathBuf> {
    let set = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    let base = set(variable)
        .map(PathBuf::from)
        .or_else(|| set("HOME").map(|home| PathBuf::from(home).join(fallback)))?;
    Some(base.join("zmq-chat"))
}
