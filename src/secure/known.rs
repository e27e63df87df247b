//! Trust on first use, as ssh does with `known_hosts`: the servers whose
//! keys the user has accepted, one `ENDPOINT KEY` line each, in
//! `~/.config/zmq-chat/known_servers`.
//!
//! A client connecting to an endpoint listed there is in secure mode with
//! that key, without `--server-key`; a server there that does not hold it
//! is refused loudly, naming the line (see
//! [`crate::secure::client::SecureFailure::KeyChanged`]). A new
//! endpoint is added only by `chat-client --secure`, after the user
//! confirms the fingerprint the server presents (or, in scripts, with
//! `--accept-new-key`): the first answer proves nothing, which is the
//! bargain trust on first use makes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::address::Endpoint;
use crate::envelope::{Enveloped, Mark, MessageId, random_id};
use crate::secure::frame::Frame;
use crate::secure::keys::{KeyError, PublicKey, Trusted, is_low_order, read_trusted};
use crate::shutdown::Shutdown;
use crate::transport::{self, TransportError};

/// The known servers file.
pub struct KnownServers {
    path: PathBuf,
    entries: Vec<Known>,
}

/// One line of the file.
struct Known {
    endpoint: String,
    key: PublicKey,
    /// Its line number, from 1.
    line: usize,
}

impl KnownServers {
    /// `$XDG_CONFIG_HOME/zmq-chat/known_servers`, else
    /// `~/.config/zmq-chat/known_servers`; `None` without a home folder.
    pub fn default_path() -> Option<PathBuf> {
        Some(crate::folders::config()?.join("known_servers"))
    }

    /// Reads the file at `path` (none yet: no server is known). It says
    /// whom to trust, so it is checked as an allow list is (this user's,
    /// not writable by others, in folders only this user can change,
    /// opened once), and it is never read through a symbolic link.
    ///
    /// # Errors
    /// A file that fails those checks or has a line that is not
    /// `ENDPOINT KEY` (comments after `#`).
    pub fn load(path: &Path) -> Result<KnownServers, KeyError> {
        let text = match read_trusted(path, Trusted::KnownServers) {
            Ok(text) => text,
            Err(KeyError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
                String::new()
            }
            Err(error) => return Err(error),
        };
        let mut entries = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let what = format!("line {} of {}", index + 1, path.display());
            let (endpoint, key) = match line.split_whitespace().collect::<Vec<_>>()[..] {
                [endpoint, key] => (endpoint, key),
                _ => {
                    return Err(KeyError::Malformed {
                        what,
                        problem: "expected 'ENDPOINT KEY'".into(),
                    });
                }
            };
            entries.push(Known {
                endpoint: endpoint.to_string(),
                key: PublicKey::parse(key, &what)?,
                line: index + 1,
            });
        }
        Ok(KnownServers {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The key remembered for `endpoint`, and where ("line 3 of FILE").
    pub fn lookup(&self, endpoint: &str) -> Option<(PublicKey, String)> {
        self.entries
            .iter()
            .find(|known| known.endpoint == endpoint)
            .map(|known| (known.key, self.place(known.line)))
    }

    /// Remembers `key` for `endpoint`: appends a line to the file (made
    /// owner-only, in an owner-only folder, if new); returns where.
    ///
    /// # Errors
    /// When the folder or the file cannot be made or written.
    pub fn remember(&mut self, endpoint: &str, key: PublicKey) -> Result<String, KeyError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |error| KeyError::Io { path, error }
        };
        if let Some(folder) = self.path.parent() {
            crate::folders::create_private(folder).map_err(io_error(folder))?;
        }
        // Not through a link, as when it is read.
        let mut file = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
            .map_err(|error| {
                if error.raw_os_error() == Some(libc::ELOOP) {
                    KeyError::Symlink(self.path.clone())
                } else {
                    io_error(&self.path)(error)
                }
            })?;
        // The fingerprint, as a comment, is what a person compares.
        writeln!(file, "{endpoint} {key} # {}", key.fingerprint()).map_err(io_error(&self.path))?;
        let line = self.entries.last().map_or(0, |known| known.line) + 1;
        let line = line.max(count_lines(&self.path));
        self.entries.push(Known {
            endpoint: endpoint.to_string(),
            key,
            line,
        });
        Ok(self.place(line))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn place(&self, line: usize) -> String {
        format!("line {line} of {}", self.path.display())
    }
}

/// How many lines the file at `path` has (0 if unreadable).
fn count_lines(path: &Path) -> usize {
    fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

/// Why a server's key could not be learned.
#[derive(Debug, thiserror::Error)]
pub enum KeyQueryError {
    /// Nothing answered at the endpoint within the wait.
    #[error(
        "no server answered within {} s to tell its key; is it running, at this address?",
        .0.as_secs_f32()
    )]
    NoAnswer(Duration),
    /// The server is not in secure mode (its reason).
    #[error(
        "the server is not in secure mode ({}); connect without --secure",
        crate::display::escape_for_terminal(.0)
    )]
    NotSecure(String),
    /// The answer was a key that secures nothing (all zeros, say).
    #[error("the server presented a key of small order, which secures nothing")]
    UselessKey,
    /// Ctrl-C or a termination signal.
    #[error("interrupted while asking for the key")]
    Interrupted,
    /// The socket could not be made or used.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl From<zmq::Error> for KeyQueryError {
    fn from(error: zmq::Error) -> KeyQueryError {
        KeyQueryError::Transport(error.into())
    }
}

/// Asks the server at `endpoint` which public key it holds, waiting up to
/// `wait` for one to answer. The answer is not proven: show it to the user
/// to check before trusting it.
///
/// # Errors
/// See [`KeyQueryError`].
pub fn ask_server_key(
    context: &zmq::Context,
    endpoint: &Endpoint,
    wait: Duration,
    shutdown: &Shutdown,
) -> Result<PublicKey, KeyQueryError> {
    let socket =
        transport::socket_for(context, zmq::DEALER, endpoint).map_err(KeyQueryError::Transport)?;
    transport::connect_socket(&socket, endpoint).map_err(KeyQueryError::Transport)?;
    let id = MessageId {
        session: random_id(),
        sequence: 0,
    };
    let request = [id.to_frame(), Vec::new(), Frame::KeyRequest.encode()];
    transport::send_now(&socket, &request).or_else(|error| match error {
        // Not connected yet: queued until a server is there.
        zmq::Error::EAGAIN => socket.send_multipart(request, 0),
        error => Err(error),
    })?;
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if shutdown.requested() {
            return Err(KeyQueryError::Interrupted);
        }
        let frames = match transport::receive_one(&socket) {
            Ok(Ok(frames)) => frames,
            Ok(Err(_)) | Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => continue,
            Err(error) => return Err(error.into()),
        };
        let Ok(reply) = Enveloped::split(frames, 0) else {
            continue;
        };
        if reply.id != Some(id) {
            continue;
        }
        if reply.mark == Mark::Refused {
            let reason = crate::message::Incoming::decode(&reply.body, 1024).text;
            return Err(KeyQueryError::NotSecure(reason));
        }
        if let [frame] = &reply.body[..]
            && let Some(Frame::Key { key }) = Frame::parse(frame)
        {
            if is_low_order(key) {
                return Err(KeyQueryError::UselessKey);
            }
            return Ok(PublicKey(*key));
        }
    }
    Err(KeyQueryError::NoAnswer(wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str) -> crate::fixture::Scratch {
        crate::fixture::Scratch::new(&format!("known-{name}"))
    }

    #[test]
    fn remembered_keys_are_found_again_with_their_line() {
        let path = folder("remember").join("zmq-chat").join("known_servers");
        let mut known = KnownServers::load(&path).expect("a missing file is empty");
        assert!(known.lookup("tcp://127.0.0.1:1").is_none());
        let place = known
            .remember("tcp://127.0.0.1:1", PublicKey([7; 32]))
            .unwrap();
        assert_eq!(place, format!("line 1 of {}", path.display()));
        known
            .remember("tcp://127.0.0.1:2", PublicKey([8; 32]))
            .unwrap();
        let again = KnownServers::load(&path).unwrap();
        assert_eq!(
            again.lookup("tcp://127.0.0.1:2"),
            Some((PublicKey([8; 32]), format!("line 2 of {}", path.display())))
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// Issue 24, point 8: the file that says whom to trust is neither read
    /// nor written through a symbolic link.
    #[test]
    fn the_known_servers_file_is_not_followed_through_a_link() {
        let folder = folder("link");
        fs::create_dir_all(&folder).unwrap();
        let elsewhere = folder.join("elsewhere");
        fs::write(&elsewhere, "").unwrap();
        let path = folder.join("known_servers");
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        let Err(error) = KnownServers::load(&path) else {
            panic!("a link is refused");
        };
        assert!(matches!(error, KeyError::Symlink(_)), "{error}");
        assert!(error.to_string().contains("symbolic link"), "{error}");
        fs::remove_file(&path).unwrap();
        let mut known = KnownServers::load(&path).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        let key = crate::secure::keys::Identity::generate()
            .unwrap()
            .public_key();
        let error = known.remember("tcp://127.0.0.1:1", key).unwrap_err();
        assert!(matches!(error, KeyError::Symlink(_)), "{error}");
        assert_eq!(
            fs::read_to_string(&elsewhere).unwrap(),
            "",
            "nothing written there"
        );
    }

    #[test]
    fn a_bad_line_is_an_error_naming_it() {
        let folder = folder("bad");
        fs::create_dir_all(&folder).unwrap();
        let path = folder.join("known_servers");
        fs::write(&path, "# comment\ntcp://127.0.0.1:1\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let error = KnownServers::load(&path).err().expect("refused");
        assert!(error.to_string().contains("line 2 of"), "{error}");
    }
}
