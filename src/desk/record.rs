//! What a help desk client keeps between runs, owner-only in the user's
//! state folder (`~/.local/state/zmq-chat/`): its identity, which names its
//! queue of answers (so that answers wait there while it is away), and the
//! questions it asked that were not answered yet (so that an answer that
//! waited, or a question that expired meanwhile, is told on its return).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::envelope::random_id;

/// Questions kept, at most: the oldest are forgotten beyond (each expires
/// anyway).
const KEPT_QUESTIONS: usize = 1000;

/// A client's identity at one desk, held for the run.
pub struct Identity {
    /// Names the client's queue of answers.
    pub id: String,
    /// Whether it is kept between runs (else another client of the same
    /// user holds the kept one, and this run has one of its own).
    pub kept: bool,
    /// The lock that makes the identity this run's alone.
    _lock: Option<File>,
}

/// A question asked and not answered yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asked {
    /// Its id on the wire (the correlation id).
    pub id: String,
    /// When it was asked, in seconds since the Unix epoch.
    pub asked: u64,
    /// When it expires, in seconds since the Unix epoch.
    pub expires: u64,
    /// Its text.
    pub text: String,
}

/// The questions of one desk not answered yet, kept in a file.
pub struct Questions {
    path: Option<PathBuf>,
    asked: Vec<Asked>,
}

/// The client's identity at `desk`: the one kept in the state folder, made
/// on first use; or, when another run holds it (or there is no home
/// folder), one of this run's own.
pub fn identity(desk: &str) -> Identity {
    kept_identity(desk).unwrap_or_else(|| Identity {
        id: format!("{:016x}", random_id()),
        kept: false,
        _lock: None,
    })
}

fn kept_identity(desk: &str) -> Option<Identity> {
    let path = file(desk, "id")?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .ok()?;
    // Another client of this user at this desk would take this one's answers.
    file.try_lock().ok()?;
    let mut id = String::new();
    file.read_to_string(&mut id).ok()?;
    let id = id.trim().to_string();
    let id = if id.len() == 16 && id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        id
    } else {
        let id = format!("{:016x}", random_id());
        file.set_len(0).ok()?;
        writeln!(file, "{id}").ok()?;
        id
    };
    Some(Identity {
        id,
        kept: true,
        _lock: Some(file),
    })
}

/// The state file `desk-NAME.KIND`, its folder made owner-only.
fn file(desk: &str, kind: &str) -> Option<PathBuf> {
    let folder = crate::folders::state()?;
    crate::folders::create_private(&folder).ok()?;
    let name: String = desk
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Some(folder.join(format!("desk-{name}.{kind}")))
}

/// Seconds since the Unix epoch, now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl Questions {
    /// The questions kept for `desk` by a kept identity; none (and nothing
    /// kept) for a run's own.
    pub fn load(desk: &str, identity: &Identity) -> Questions {
        let path = identity.kept.then(|| file(desk, "questions")).flatten();
        let text = path
            .as_ref()
            .and_then(|path| fs::read_to_string(path).ok())
            .unwrap_or_default();
        let asked = text.lines().filter_map(parse).collect();
        Questions { path, asked }
    }

    /// Keeps `asked`.
    pub fn add(&mut self, asked: Asked) {
        self.asked.push(asked);
        if self.asked.len() > KEPT_QUESTIONS {
            self.asked.remove(0);
        }
        self.save();
    }

    /// The question with `id`, no longer kept.
    pub fn take(&mut self, id: &str) -> Option<Asked> {
        let index = self.asked.iter().position(|asked| asked.id == id)?;
        let asked = self.asked.remove(index);
        self.save();
        Some(asked)
    }

    /// The questions that expired by `now`, no longer kept.
    pub fn take_expired(&mut self, now: u64) -> Vec<Asked> {
        let (expired, kept) = std::mem::take(&mut self.asked)
            .into_iter()
            .partition(|asked| asked.expires <= now);
        self.asked = kept;
        if !expired.is_empty() {
            self.save();
        }
        expired
    }

    /// How many questions wait for their answer.
    pub fn len(&self) -> usize {
        self.asked.len()
    }

    /// Whether none does.
    pub fn is_empty(&self) -> bool {
        self.asked.is_empty()
    }

    /// Writes the file anew (owner-only); best effort, as the chat goes
    /// on without it.
    fn save(&self) {
        let Some(path) = &self.path else {
            return;
        };
        let text: String = self
            .asked
            .iter()
            .map(|asked| {
                format!(
                    "{}\t{}\t{}\t{}\n",
                    asked.id, asked.asked, asked.expires, asked.text
                )
            })
            .collect();
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut file| file.write_all(text.as_bytes()));
        let _: io::Result<()> = written;
    }
}

/// One line of the questions file: `ID TAB ASKED TAB EXPIRES TAB TEXT`.
fn parse(line: &str) -> Option<Asked> {
    let mut fields = line.splitn(4, '\t');
    Some(Asked {
        id: fields.next()?.to_string(),
        asked: fields.next()?.parse().ok()?,
        expires: fields.next()?.parse().ok()?,
        text: fields.next()?.to_string(),
    })
}

/// How long ago `then` (seconds since the epoch) was, for a person.
pub fn ago(then: u64, now: u64) -> String {
    let seconds = Duration::from_secs(now.saturating_sub(then)).as_secs();
    match seconds {
        0..60 => format!("{seconds} s ago"),
        60..3600 => format!("{} min ago", seconds / 60),
        3600..86_400 => format!("{} h {} min ago", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{} days ago", seconds / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_line_keeps_tabs_in_its_text_and_bad_lines_are_skipped() {
        let asked = parse("zc:01:2\t10\t20\ta\ttabbed text").unwrap();
        assert_eq!(asked.text, "a\ttabbed text");
        assert_eq!((asked.asked, asked.expires), (10, 20));
        assert_eq!(parse("no tabs"), None);
        assert_eq!(parse("id\tnot a number\t1\ttext"), None);
    }

    #[test]
    fn ages_are_said_in_the_unit_a_person_would_use() {
        assert_eq!(ago(100, 130), "30 s ago");
        assert_eq!(ago(0, 600), "10 min ago");
        assert_eq!(ago(0, 7500), "2 h 5 min ago");
        assert_eq!(ago(0, 3 * 86_400), "3 days ago");
        assert_eq!(ago(100, 50), "0 s ago");
    }
}
