//! Where the programs keep the user's files, as the XDG base directory
//! specification says: configuration (keys, known servers), data (prompt
//! history) and state (a help desk client's identity and questions).

use std::io;
use std::path::{Path, PathBuf};

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

/// `$XDG_STATE_HOME/zmq-chat`, else `~/.local/state/zmq-chat`: what the
/// programs keep between runs that is neither configuration nor data (a
/// help desk client's identity and unanswered questions); `None` without a
/// home folder.
pub fn state() -> Option<PathBuf> {
    base("XDG_STATE_HOME", ".local/state")
}

/// The zmq-chat folder under `$variable`, else under `~/fallback`.
fn base(variable: &str, fallback: &str) -> Option<PathBuf> {
    let set = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    let base = set(variable)
        .map(PathBuf::from)
        .or_else(|| set("HOME").map(|home| PathBuf::from(home).join(fallback)))?;
    Some(base.join("zmq-chat"))
}

/// Where `program` keeps its prompt history: `$XDG_DATA_HOME/zmq-chat/`,
/// else `~/.local/share/zmq-chat/`; `None` without a home folder.
pub fn history(program: &str) -> Option<PathBuf> {
    Some(data()?.join(format!("{program}.history")))
}

/// Creates `folder` and the folders above it, owner-only, where missing:
/// how every folder of the user's keys, known servers and history is made.
///
/// # Errors
/// When it cannot be created.
pub fn create_private(folder: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)
}
