//! `--log FILE`: a transcript of the chat, the events of [`crate::event`]
//! as JSON lines, appended to a file only its owner can read (a chat is
//! private), each written whole as it happens.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a transcript cannot be kept.
#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    /// It cannot be opened or created.
    #[error("cannot open the transcript {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Others may read it: the chat would not be private.
    #[error(
        "the transcript {} may be read by others (mode {mode:03o}): chmod 600 it, or name another file",
        path.display()
    )]
    Readable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// An open transcript.
pub struct Transcript {
    file: File,
    path: PathBuf,
}

impl Transcript {
    /// Opens `path` to append to, creating it readable and writable by
    /// its owner only.
    ///
    /// # Errors
    /// When it cannot be opened, or group or others may read or write it.
    pub fn open(path: &Path) -> Result<Transcript, TranscriptError> {
        let open = |source| TranscriptError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(open)?;
        let mode = file.metadata().map_err(open)?.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TranscriptError::Readable {
                path: path.to_path_buf(),
                mode,
            });
        }
        Ok(Transcript {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Appends `json`, an event as one line of JSON ([`crate::event::Event::to_json`]),
    /// in one write (so a line is whole even if the program dies next).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write(&mut self, json: &str) -> io::Result<()> {
        self.file.write_all(format!("{json}\n").as_bytes())
    }

    /// The file, as named.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use std::time::SystemTime;

    use super::*;
    use crate::event::{Event, Kind};

    #[test]
    fn a_transcript_is_owner_only_appended_and_one_line_per_event() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("chat.log");
        let mut transcript = Transcript::open(&path).unwrap();
        transcript
            .write(&Event::new(Kind::Sent, "one\ntwo").to_json(SystemTime::now()))
            .unwrap();
        drop(transcript);
        let mut again = Transcript::open(&path).unwrap();
        again
            .write(&Event::new(Kind::Message, "three").to_json(SystemTime::now()))
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains(r#""event":"sent""#) && lines[0].contains(r#""one\ntwo""#));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = Transcript::open(&path).err().unwrap().to_string();
        assert!(
            refused.contains("may be read by others (mode 644)"),
            "{refused}"
        );
    }
}
