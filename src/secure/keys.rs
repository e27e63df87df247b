//! Key files, public keys and allow lists, in WireGuard's style: a private
//! key file holds one base64 line and is readable by its owner only; a public
//! key is shown and passed around as one base64 line.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::prelude::{BASE64_STANDARD, BASE64_STANDARD_NO_PAD, Engine};
use sha2::{Digest, Sha256};
use snow::params::DHChoice;
use snow::resolvers::{CryptoResolver, DefaultResolver};

/// Length of a Curve25519 key, private or public.
pub const KEY_LEN: usize = 32;

/// Why a key, key file or allow list could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        error: io::Error,
    },
    /// `keygen` refuses to overwrite an existing key.
    #[error(
        "{} already exists; a key is never overwritten (remove it first, or choose another file)",
        .0.display()
    )]
    AlreadyExists(PathBuf),
    /// A file holding a secret (a private key, a broker's password) that
    /// others may read is not trusted.
    #[error(
        "{what} {} can be read by others (mode {mode:03o}); run: chmod 600 {}",
        path.display(),
        path.display()
    )]
    LoosePermissions {
        /// What the file is, for the user ("private key file").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path names something that is not a regular file (a folder, a
    /// device).
    #[error("{}", not_a_file(path, *folder))]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// Whether it is a folder (the usual mistake).
        folder: bool,
    },
    /// An allow list that group or others may change is not trusted: they
    /// could let themselves in.
    #[error(
        "{} can be changed by others (mode {mode:03o}), who could add their own key; run: chmod go-w {}",
        path.display(),
        path.display()
    )]
    WritableByOthers {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file or allow list owned by another user is not trusted (as ssh).
    #[error(
        "{} belongs to another user (uid {owner}); use a file of your own",
        path.display()
    )]
    NotOwner {
        /// The file.
        path: PathBuf,
        /// Its owner's user id.
        owner: u32,
    },
    /// A key file or list in a folder (the one it is in, or any above it,
    /// as typed or with links resolved) that others may write to (and that
    /// is not sticky, as /tmp is): whoever can could replace the file.
    #[error(
        "the folder {} can be written by {} (mode {mode:03o}), so the key file below it could be replaced; move the key, or run: chmod {}-w {}",
        path.display(),
        loose_folder_writers(*mode).0,
        loose_folder_writers(*mode).1,
        path.display()
    )]
    LooseFolder {
        /// The folder.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file or list in a folder owned by someone other than this user
    /// and root, who could replace the file.
    #[error(
        "the folder {} belongs to another user (uid {owner}), who could replace the key file below it; keep keys in folders of your own",
        path.display()
    )]
    FolderNotOwned {
        /// The folder.
        path: PathBuf,
        /// Its owner's user id.
        owner: u32,
    },
    /// The known servers file is a symbolic link, which is not followed
    /// (a link could point the trust of every chat at another file).
    #[error(
        "{} is a symbolic link, which is not followed for a file that says whom to trust; replace it with the file itself",
        .0.display()
    )]
    Symlink(PathBuf),
    /// The text is not base64.
    #[error("{what} is not valid base64")]
    BadEncoding {
        /// Where the text came from (a file and line, a flag).
        what: String,
    },
    /// The text is base64 of the wrong number of bytes.
    #[error("{what} is {length} bytes long; a key is {KEY_LEN} bytes (44 base64 characters)")]
    WrongLength {
        /// Where the text came from (a file and line, a flag).
        what: String,
        /// How many bytes it decoded to.
        length: usize,
    },
    /// A line of a file is not what it should be.
    #[error("{what}: {problem}")]
    Malformed {
        /// Which line of which file.
        what: String,
        /// What is wrong with it.
        problem: String,
    },
    /// No random key could be made.
    #[error("cannot generate a key: {0}")]
    Random(String),
    /// The key is a point of small order (all zeros, say): a chat with it
    /// could be read by anyone.
    #[error(
        "{what} is not a usable public key: it is a point of small order (such as all zeros), with which anyone could read the chat"
    )]
    LowOrder {
        /// Where the key came from (a file and line, a flag).
        what: String,
    },
}

/// Who may write to a folder of `mode`, and the `chmod` that stops them.
fn loose_folder_writers(mode: u32) -> (&'static str, &'static str) {
    if mode & 0o020 != 0 {
        ("others", "go")
    } else {
        ("anyone", "o")
    }
}

/// Why `path` is not a key file, as [`KeyError::NotAFile`] says it.
fn not_a_file(path: &Path, folder: bool) -> String {
    if folder {
        format!(
            "{} is a folder, not a key file: name the key file in it (made with --keygen FILE)",
            path.display()
        )
    } else {
        format!(
            "{} is not a regular file, so not a key file",
            path.display()
        )
    }
}

/// A Curve25519 public key: who a peer is.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// Parses one base64 line; `what` names it in errors ("--server-key").
    /// A point of small order (such as all zeros) is refused: see
    /// [`is_low_order`].
    ///
    /// # Errors
    /// When the text is not base64 of 32 bytes, or is a low-order point.
    pub fn parse(text: &str, what: &str) -> Result<PublicKey, KeyError> {
        let key = decode_key(text.trim(), what)?;
        if is_low_order(&key) {
            return Err(KeyError::LowOrder {
                what: what.to_string(),
            });
        }
        Ok(PublicKey(key))
    }

    /// The form people compare, as OpenSSH shows a host key: `SHA256:` and
    /// the SHA-256 of the key in unpadded base64 (43 characters), so two
    /// keys that look alike to a person differ in all 256 bits.
    pub fn fingerprint(&self) -> String {
        format!(
            "SHA256:{}",
            BASE64_STANDARD_NO_PAD.encode(Sha256::digest(self.0))
        )
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64_STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A key pair: the private key and the public key derived from it.
pub struct Identity {
    private: [u8; KEY_LEN],
    public: PublicKey,
}

/// Shows the public key only: a private key never reaches a log.
impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.public)
    }
}

impl Identity {
    /// A new random key pair (fails only if the system's random number
    /// generator does).
    pub fn generate() -> Result<Identity, KeyError> {
        let pair = snow::Builder::new(crate::secure::noise_params())
            .generate_keypair()
            .map_err(|error| KeyError::Random(error.to_string()))?;
        let private = pair
            .private
            .try_into()
            .map_err(|_| KeyError::Random("the generated key has the wrong length".to_string()))?;
        Ok(Identity::from_private(private))
    }

    fn from_private(private: [u8; KEY_LEN]) -> Identity {
        let mut dh = curve25519();
        dh.set(&private);
        let mut public = [0u8; KEY_LEN];
        public.copy_from_slice(dh.pubkey());
        Identity {
            private,
            public: PublicKey(public),
        }
    }

    /// A second load of the same key, as two processes sharing a key file
    /// have.
    #[cfg(test)]
    pub(crate) fn twin(&self) -> Identity {
        Identity::from_private(self.private)
    }

    /// The private key as a key file holds it: one base64 line.
    pub fn private_key_text(&self) -> String {
        BASE64_STANDARD.encode(self.private)
    }

    /// The private key, for the handshake.
    pub fn private_key(&self) -> &[u8; KEY_LEN] {
        &self.private
    }

    /// The public key, to give to peers.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Writes a new key file readable by its owner only (mode 600). Never
    /// overwrites: an existing file is an error; nor writes into a folder
    /// others could replace it in (see [`check_folders`]).
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let io_error = |error| KeyError::Io {
            path: path.to_path_buf(),
            error,
        };
        check_folders(path)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|error| match error.kind() {
                io::ErrorKind::AlreadyExists => KeyError::AlreadyExists(path.to_path_buf()),
                _ => io_error(error),
            })?;
        writeln!(file, "{}", self.private_key_text())
            .and_then(|()| file.sync_all())
            .map_err(io_error)
    }

    /// Reads a key file written by [`Identity::write_new`] (or by hand: one
    /// base64 line). The file is opened once and the open file is checked
    /// (no race between a check and the read): it must be a regular file of
    /// this user's that group and others cannot read, in a folder that not
    /// everyone can write to (unless sticky, as /tmp).
    ///
    /// # Errors
    /// Each check that fails, and the read, as a [`KeyError`] naming the fix.
    pub fn load(path: &Path) -> Result<Identity, KeyError> {
        let text = read_trusted(path, Trusted::PrivateKey)?;
        let what = format!("the key in {}", path.display());
        decode_key(text.trim(), &what).map(Identity::from_private)
    }

    /// Loads the key at `path`, first creating it if it does not exist (and
    /// its folder, owner-only). Returns whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Identity, bool), KeyError> {
        if path.exists() {
            return Identity::load(path).map(|identity| (identity, false));
        }
        if let Some(folder) = path
            .parent()
            .filter(|folder| !folder.as_os_str().is_empty())
        {
            crate::folders::create_private(folder).map_err(|error| KeyError::Io {
                path: folder.to_path_buf(),
                error,
            })?;
        }
        let identity = Identity::generate()?;
        identity.write_new(path)?;
        Ok((identity, true))
    }
}

/// What a file the chat trusts must keep from group and others.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trusted {
    /// A private key: any access (mode bits 077).
    PrivateKey,
    /// A file of broker URLs, which may hold passwords: as a private key.
    Credentials,
    /// An allow list: writing (mode bits 022), or they could let themselves in.
    AllowList,
    /// The known servers file: as an allow list, and never through a
    /// symbolic link.
    KnownServers,
}

/// Reads a file the chat trusts. It is opened once and the open file is
/// checked, so it cannot be swapped between check and read: a regular file
/// of this user's, without the mode bits `trusted` forbids, below folders
/// only this user (or root) can change (see [`check_folders`]).
pub(crate) fn read_trusted(path: &Path, trusted: Trusted) -> Result<String, KeyError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let io_error = |error| KeyError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut options = fs::OpenOptions::new();
    options.read(true);
    if trusted == Trusted::KnownServers {
        options.custom_flags(libc::O_NOFOLLOW);
    }
    let mut file = options.open(path).map_err(|error| {
        if error.raw_os_error() == Some(libc::ELOOP) {
            KeyError::Symlink(path.to_path_buf())
        } else {
            io_error(error)
        }
    })?;
    let metadata = file.metadata().map_err(io_error)?;
    if !metadata.is_file() {
        return Err(KeyError::NotAFile {
            path: path.to_path_buf(),
            folder: metadata.is_dir(),
        });
    }
    if metadata.uid() != current_user() {
        return Err(KeyError::NotOwner {
            path: path.to_path_buf(),
            owner: metadata.uid(),
        });
    }
    let (path, mode) = (path.to_path_buf(), metadata.mode() & 0o777);
    match trusted {
        Trusted::PrivateKey | Trusted::Credentials if mode & 0o077 != 0 => {
            let what = match trusted {
                Trusted::PrivateKey => "private key file",
                _ => "broker file",
            };
            return Err(KeyError::LoosePermissions { what, path, mode });
        }
        Trusted::AllowList | Trusted::KnownServers if mode & 0o022 != 0 => {
            return Err(KeyError::WritableByOthers { path, mode });
        }
        _ => {}
    }
    check_folders(&path)?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|error| KeyError::Io { path, error })?;
    Ok(text)
}

/// This process's effective user.
fn current_user() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Checks, as OpenSSH's StrictModes does, every folder above `path`, both
/// as typed and with symbolic links resolved (a link from a safe folder to
/// a file in an unsafe one must not pass): each must belong to this user or
/// root, and group and others must not be able to write to it, unless it
/// is sticky (as /tmp is: then only an entry's owner may replace it).
///
/// # Errors
/// [`KeyError::LooseFolder`] or [`KeyError::FolderNotOwned`] for the first
/// folder that fails, [`KeyError::Io`] for one that cannot be read.
pub fn check_folders(path: &Path) -> Result<(), KeyError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |error| KeyError::Io { path, error }
    };
    let typed = std::path::absolute(path).map_err(io_error(path))?;
    let folder = typed.parent().unwrap_or(Path::new("/"));
    let resolved = match fs::canonicalize(&typed) {
        Ok(resolved) => resolved,
        // Not made yet (--keygen): the folder it is to be made in.
        Err(error) if error.kind() == io::ErrorKind::NotFound => fs::canonicalize(folder)
            .map_err(io_error(folder))?
            .join("new"),
        Err(error) => return Err(io_error(path)(error)),
    };
    for chain in [&typed, &resolved] {
        for folder in chain.ancestors().skip(1) {
            check_folder(folder)?;
        }
    }
    Ok(())
}

/// One folder of [`check_folders`].
fn check_folder(folder: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::MetadataExt;
    let metadata = fs::metadata(folder).map_err(|error| KeyError::Io {
        path: folder.to_path_buf(),
        error,
    })?;
    const WRITABLE_BY_OTHERS: u32 = 0o022;
    const STICKY: u32 = 0o1000;
    let mode = metadata.mode();
    if mode & WRITABLE_BY_OTHERS != 0 && mode & STICKY == 0 {
        return Err(KeyError::LooseFolder {
            path: folder.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    if metadata.uid() != 0 && metadata.uid() != current_user() {
        return Err(KeyError::FolderNotOwned {
            path: folder.to_path_buf(),
            owner: metadata.uid(),
        });
    }
    Ok(())
}

/// Where `chat-client` keeps its key when `--key` is not given:
/// `$XDG_CONFIG_HOME/zmq-chat/client.key`, else `~/.config/zmq-chat/client.key`.
pub fn default_client_key_path() -> Option<PathBuf> {
    Some(crate::folders::config()?.join("client.key"))
}

/// The public keys a secure server lets in.
#[derive(Debug, Default)]
pub struct AllowList {
    keys: Vec<PublicKey>,
}

impl AllowList {
    /// Reads one base64 public key per line; `#` starts a comment, blank
    /// lines are skipped. A bad line is an error naming its line number.
    /// The list says who may come in, so, as ssh does with its
    /// authorized_keys, it must be a regular file of this user's that
    /// group and others cannot write, in a folder not everyone can write to
    /// (unless sticky); it is opened once and the open file checked.
    ///
    /// # Errors
    /// Each check that fails, the read, and a bad line, as a [`KeyError`].
    pub fn load(path: &Path) -> Result<AllowList, KeyError> {
        let text = read_trusted(path, Trusted::AllowList)?;
        AllowList::parse(&text, &path.display().to_string())
    }

    /// Parses the text of an allow list; `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> Result<AllowList, KeyError> {
        let mut keys = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let what = format!("line {} of {name}", number + 1);
            keys.push(PublicKey::parse(line, &what)?);
        }
        Ok(AllowList { keys })
    }

    /// Whether `key` is on the list.
    pub fn allows(&self, key: &PublicKey) -> bool {
        self.keys.contains(key)
    }

    /// How many keys the list holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the list holds no key (then nobody gets in).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Whether `key` is a Curve25519 point of small order (all zeros is one):
/// a Diffie-Hellman with it gives a secret anyone can compute, so a
/// handshake with it authenticates nothing. X25519 clamps every scalar to a
/// multiple of 8, so its result with a fresh scalar is all zeros for such a
/// point and only for such a point (as WireGuard checks).
pub fn is_low_order(key: &[u8; KEY_LEN]) -> bool {
    let mut dh = curve25519();
    let Some(mut rng) = DefaultResolver.resolve_rng() else {
        return true;
    };
    let mut shared = [0u8; KEY_LEN];
    dh.generate(rng.as_mut()).is_err()
        || dh.dh(key, &mut shared).is_err()
        || shared == [0u8; KEY_LEN]
}

fn curve25519() -> Box<dyn snow::types::Dh> {
    DefaultResolver
        .resolve_dh(&DHChoice::Curve25519)
        .expect("snow's default resolver has Curve25519")
}

fn decode_key(text: &str, what: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let bytes = BASE64_STANDARD
        .decode(text)
        .map_err(|_| KeyError::BadEncoding {
            what: what.to_string(),
        })?;
    bytes
        .try_into()
        .map_err(|bytes: Vec<u8>| KeyError::WrongLength {
            what: what.to_string(),
            length: bytes.len(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::DirBuilderExt;
    use std::os::unix::fs::PermissionsExt;

    /// Curve25519 points of small order, as 32-byte encodings: 0, 1, p - 1,
    /// a point of order 8, and p itself (a non-canonical 0).
    const LOW_ORDER: [&str; 5] = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ];

    fn from_hex(hex: &str) -> [u8; KEY_LEN] {
        std::array::from_fn(|index| {
            u8::from_str_radix(&hex[2 * index..2 * index + 2], 16).expect("hex")
        })
    }

    /// A fresh folder for one test, owner-only, removed with it.
    fn scratch(name: &str) -> crate::fixture::Scratch {
        crate::fixture::Scratch::new(&format!("keys-{name}"))
    }

    /// Issue 24, point 8: a link from a safe folder to a key in a folder
    /// others can write to is refused (the resolved path is checked), and
    /// so is a key below a group-writable folder higher up; `--keygen`
    /// writes into no such folder.
    #[test]
    fn every_folder_above_a_key_as_typed_and_resolved_is_checked() {
        use std::os::unix::fs::symlink;
        let root = scratch("chain");
        let open = root.join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let planted = open.join("server.key");
        Identity::generate()
            .unwrap()
            .write_new(&root.join("made.key"))
            .unwrap();
        fs::rename(root.join("made.key"), &planted).unwrap();
        let safe = root.join("safe");
        fs::DirBuilder::new().mode(0o700).create(&safe).unwrap();
        let link = safe.join("server.key");
        symlink(&planted, &link).unwrap();
        let error = Identity::load(&link).unwrap_err();
        assert!(
            matches!(&error, KeyError::LooseFolder { path, mode: 0o777 } if *path == open),
            "{error}"
        );

        let shared = root.join("shared");
        let below = shared.join("mine");
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&below)
            .unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o770)).unwrap();
        let key = below.join("client.key");
        let error = Identity::generate().unwrap().write_new(&key).unwrap_err();
        assert!(
            matches!(&error, KeyError::LooseFolder { path, mode: 0o770 } if *path == shared),
            "--keygen refuses: {error}"
        );
        assert!(!key.exists(), "nothing written");
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o750)).unwrap();
        Identity::generate().unwrap().write_new(&key).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o770)).unwrap();
        let error = Identity::load(&key).unwrap_err();
        assert!(error.to_string().contains("chmod go-w"), "{error}");
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o750)).unwrap();
        assert!(Identity::load(&key).is_ok());
        // /tmp itself is sticky: a folder of one's own in it is safe.
        assert!(check_folders(&std::env::temp_dir().join("x")).is_ok());
    }

    #[test]
    fn a_folder_given_as_a_key_file_is_named_as_such() {
        let folder = scratch("folder");
        let Err(error) = Identity::load(&folder) else {
            panic!("a folder is refused");
        };
        assert_eq!(
            error.to_string(),
            format!(
                "{} is a folder, not a key file: name the key file in it (made with --keygen FILE)",
                folder.display()
            )
        );
    }

    #[test]
    fn a_key_in_a_folder_anyone_may_write_is_refused_unless_it_is_sticky() {
        let folder = scratch("loose");
        let key = folder.join("server.key");
        Identity::generate().unwrap().write_new(&key).unwrap();
        fs::set_permissions(&folder, fs::Permissions::from_mode(0o777)).unwrap();
        let Err(error) = Identity::load(&key) else {
            panic!("a world-writable folder is refused");
        };
        assert!(
            matches!(error, KeyError::LooseFolder { mode: 0o777, .. }),
            "{error}"
        );
        // Group-writable is refused too now (as OpenSSH's StrictModes does).
        assert!(error.to_string().contains("chmod go-w"), "{error}");
        fs::set_permissions(&folder, fs::Permissions::from_mode(0o757)).unwrap();
        let error = Identity::load(&key).unwrap_err();
        assert!(error.to_string().contains("chmod o-w"), "{error}");
        fs::set_permissions(&folder, fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(
            Identity::load(&key).is_ok(),
            "a sticky folder, as /tmp, is fine"
        );
    }

    #[test]
    fn an_allow_list_others_may_change_is_refused() {
        let folder = scratch("allow");
        let list = folder.join("allow.txt");
        let key = Identity::generate().unwrap().public_key();
        fs::write(&list, format!("{key}\n")).unwrap();
        fs::set_permissions(&list, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            AllowList::load(&list).unwrap().allows(&key),
            "readable by all is fine"
        );
        fs::set_permissions(&list, fs::Permissions::from_mode(0o666)).unwrap();
        let error = AllowList::load(&list).unwrap_err();
        assert!(
            matches!(error, KeyError::WritableByOthers { mode: 0o666, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("chmod go-w"), "{error}");
        let error = AllowList::load(&folder).unwrap_err();
        assert!(error.to_string().contains("is a folder"), "{error}");
    }

    #[test]
    fn a_key_file_or_allow_list_of_another_user_is_refused() {
        use std::os::unix::fs::MetadataExt;
        let folder = scratch("owner");
        let key = folder.join("client.key");
        Identity::generate().unwrap().write_new(&key).unwrap();
        // Only root can give a file away; as anyone else there is no such file to test with.
        if current_user() != 0 {
            eprintln!(
                "skipped: {}: giving a file to another user needs root",
                std::thread::current().name().unwrap_or("a test")
            );
            assert!(
                std::env::var("CI").is_err(),
                "CI runs as root: this must not skip"
            );
            return;
        }
        let nobody = 65534;
        std::os::unix::fs::chown(&key, Some(nobody), Some(nobody)).unwrap();
        assert_eq!(fs::metadata(&key).unwrap().uid(), nobody);
        let Err(error) = Identity::load(&key) else {
            panic!("another user's key is refused");
        };
        assert!(
            matches!(error, KeyError::NotOwner { owner: 65534, .. }),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("belongs to another user (uid 65534)"),
            "{error}"
        );
        let list = folder.join("allow.txt");
        fs::write(
            &list,
            format!("{}\n", Identity::generate().unwrap().public_key()),
        )
        .unwrap();
        std::os::unix::fs::chown(&list, Some(nobody), Some(nobody)).unwrap();
        let error = AllowList::load(&list).unwrap_err();
        assert!(
            matches!(error, KeyError::NotOwner { owner: 65534, .. }),
            "{error}"
        );
    }

    #[test]
    fn points_of_small_order_are_told_from_real_keys() {
        for hex in LOW_ORDER {
            assert!(is_low_order(&from_hex(hex)), "{hex}");
        }
        for _ in 0..20 {
            let key = Identity::generate().unwrap().public_key();
            assert!(!is_low_order(&key.0));
        }
    }

    #[test]
    fn an_all_zero_key_is_refused_as_a_server_key_and_on_an_allow_list() {
        let zeros = BASE64_STANDARD.encode([0u8; KEY_LEN]);
        let error = PublicKey::parse(&zeros, "--server-key").unwrap_err();
        assert_eq!(
            error.to_string(),
            "--server-key is not a usable public key: it is a point of small order (such as all zeros), with which anyone could read the chat"
        );
        let real = Identity::generate().unwrap().public_key();
        let list = format!("{real}\n# a comment\n{zeros}\n");
        let error = AllowList::parse(&list, "allow.txt").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("line 3 of allow.txt is not a usable public key"),
            "{error}"
        );
    }

    fn temporary_folder(name: &str) -> crate::fixture::Scratch {
        crate::fixture::Scratch::new(&format!("keys-{name}"))
    }

    #[test]
    fn a_written_key_is_owner_only_and_loads_back_to_the_same_pair() {
        let folder = temporary_folder("roundtrip");
        let path = folder.join("server.key");
        let identity = Identity::generate().unwrap();
        identity.write_new(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = Identity::load(&path).unwrap();
        assert_eq!(loaded.public_key(), identity.public_key());
        assert_eq!(loaded.private_key(), identity.private_key());
        assert!(matches!(
            identity.write_new(&path),
            Err(KeyError::AlreadyExists(_))
        ));
    }

    #[test]
    fn bad_key_files_are_refused_with_the_reason() {
        let folder = temporary_folder("bad");
        let loose = folder.join("loose.key");
        Identity::generate().unwrap().write_new(&loose).unwrap();
        fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).unwrap();
        let error = Identity::load(&loose).unwrap_err();
        assert!(error.to_string().contains("chmod 600"), "{error}");

        let short = folder.join("short.key");
        fs::write(&short, "AAAA\n").unwrap();
        fs::set_permissions(&short, fs::Permissions::from_mode(0o600)).unwrap();
        let error = Identity::load(&short).unwrap_err();
        assert!(
            matches!(error, KeyError::WrongLength { length: 3, .. }),
            "{error}"
        );

        let garbage = folder.join("garbage.key");
        fs::write(&garbage, "not base64 at all!\n").unwrap();
        fs::set_permissions(&garbage, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Identity::load(&garbage),
            Err(KeyError::BadEncoding { .. })
        ));
        assert!(matches!(
            Identity::load(&folder.join("missing.key")),
            Err(KeyError::Io { .. })
        ));
    }

    #[test]
    fn public_keys_round_trip_and_allow_lists_skip_comments() {
        let key = Identity::generate().unwrap().public_key();
        assert_eq!(PublicKey::parse(&key.to_string(), "key").unwrap(), key);
        let fingerprint = key.fingerprint();
        assert_eq!(fingerprint.len(), "SHA256:".len() + 43, "{fingerprint}");
        assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
        assert_ne!(
            fingerprint,
            Identity::generate().unwrap().public_key().fingerprint()
        );
        let list = AllowList::parse(&format!("# team\n\n{key}  # alice\n"), "allow").unwrap();
        assert_eq!(list.len(), 1);
        assert!(list.allows(&key));
        assert!(!list.allows(&Identity::generate().unwrap().public_key()));
        let error = AllowList::parse("# ok\nnope\n", "allow.txt").unwrap_err();
        assert!(error.to_string().contains("line 2 of allow.txt"), "{error}");
    }
}
