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

use super::seal::ReplyKey;
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
    /// The key its answer is sealed under, when the desk is sealed.
    pub reply: Option<ReplyKey>,
}

/// The questions of one desk not answered yet, kept in a journal file:
/// a line for each question asked (`ID TAB ASKED TAB EXPIRES TAB TEXT`)
/// and one for each done with (`ID` alone), appended as it happens, and
/// compacted to the questions still waiting when loaded and whenever the
/// lines outgrow them. (An append is one write; writing the file anew for
/// each question and answer cost a tenth of the desk's round trip in the
/// benchmark.)
pub struct Questions {
    journal: Option<Journal>,
    asked: Vec<Asked>,
}

/// The journal's file, open for appending, and its length in lines.
struct Journal {
    path: PathBuf,
    file: File,
    lines: usize,
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
        let asked = replay(&text);
        let journal = path.and_then(|path| compacted(path, &asked).ok());
        Questions { journal, asked }
    }

    /// Keeps `asked`.
    pub fn add(&mut self, asked: Asked) {
        self.append(&line(&asked));
        self.asked.push(asked);
        if self.asked.len() > KEPT_QUESTIONS {
            self.asked.remove(0);
        }
    }

    /// The question with `id`.
    pub fn get(&self, id: &str) -> Option<&Asked> {
        self.asked.iter().find(|asked| asked.id == id)
    }

    /// The question with `id`, no longer kept.
    pub fn take(&mut self, id: &str) -> Option<Asked> {
        let index = self.asked.iter().position(|asked| asked.id == id)?;
        self.append(&format!("{id}\n"));
        Some(self.asked.remove(index))
    }

    /// The questions that expired by `now`, no longer kept.
    pub fn take_expired(&mut self, now: u64) -> Vec<Asked> {
        let (expired, kept): (Vec<Asked>, _) = std::mem::take(&mut self.asked)
            .into_iter()
            .partition(|asked| asked.expires <= now);
        self.asked = kept;
        let done: String = expired
            .iter()
            .map(|asked| format!("{}\n", asked.id))
            .collect();
        self.append(&done);
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

    /// Appends `lines` to the journal, compacted first once it holds more
    /// than twice the lines of the questions kept (and a few); best
    /// effort, as the chat goes on without it.
    fn append(&mut self, lines: &str) {
        if lines.is_empty() {
            return;
        }
        if let Some(journal) = self
            .journal
            .take_if(|journal| journal.lines > 2 * self.asked.len() + 64)
        {
            self.journal = compacted(journal.path, &self.asked).ok();
        }
        let Some(journal) = &mut self.journal else {
            return;
        };
        match journal.file.write_all(lines.as_bytes()) {
            Ok(()) => journal.lines += lines.matches('\n').count(),
            Err(_) => self.journal = None,
        }
    }
}

/// The questions a journal's `text` leaves waiting, the last
/// [`KEPT_QUESTIONS`] at most.
fn replay(text: &str) -> Vec<Asked> {
    let mut asked: Vec<Asked> = Vec::new();
    for entry in text.lines() {
        match parse(entry) {
            Some(question) => asked.push(question),
            None => asked.retain(|question| question.id != entry),
        }
    }
    let beyond = asked.len().saturating_sub(KEPT_QUESTIONS);
    asked.drain(..beyond);
    asked
}

/// The journal at `path` written anew with the questions `asked` alone
/// (owner-only, whole or not at all), open for appending.
fn compacted(path: PathBuf, asked: &[Asked]) -> io::Result<Journal> {
    let text: String = asked.iter().map(line).collect();
    let fresh = path.with_extension("questions.new");
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&fresh)?
        .write_all(text.as_bytes())?;
    fs::rename(&fresh, &path)?;
    let file = OpenOptions::new().append(true).open(&path)?;
    Ok(Journal {
        path,
        file,
        lines: asked.len(),
    })
}

/// A question's line in the journal, its text kept on one line.
fn line(asked: &Asked) -> String {
    let text = asked.text.replace(['\n', '\r'], " ");
    let reply = asked
        .reply
        .map_or_else(|| "-".to_string(), |key| key.to_hex());
    format!(
        "{}\t{}\t{}\t{reply}\t{text}\n",
        asked.id, asked.asked, asked.expires
    )
}

/// A question's line of the journal:
/// `ID TAB ASKED TAB EXPIRES TAB REPLY-KEY TAB TEXT` (the key `-` when the
/// desk is not sealed).
fn parse(line: &str) -> Option<Asked> {
    let mut fields = line.splitn(5, '\t');
    Some(Asked {
        id: fields.next()?.to_string(),
        asked: fields.next()?.parse().ok()?,
        expires: fields.next()?.parse().ok()?,
        reply: match fields.next()? {
            "-" => None,
            key => Some(ReplyKey::from_hex(key)?),
        },
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
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_question_line_keeps_tabs_in_its_text_and_bad_lines_are_skipped() {
        let asked = parse("zc:01:2\t10\t20\t-\ta\ttabbed text").unwrap();
        assert_eq!(asked.text, "a\ttabbed text");
        assert_eq!((asked.asked, asked.expires), (10, 20));
        assert_eq!(parse("no tabs"), None);
        assert_eq!(parse("id\tnot a number\t1\t-\ttext"), None);
        assert_eq!(parse("id\t1\t1\tnot a key\ttext"), None);
        let key = ReplyKey([7; 32]);
        let sealed = parse(&format!("id\t1\t2\t{}\ttext", key.to_hex())).unwrap();
        assert_eq!(sealed.reply, Some(key));
    }

    #[test]
    fn the_journal_replays_to_the_questions_still_waiting_and_stays_bounded() {
        let scratch = crate::fixture::Scratch::new("desk-journal");
        let path = scratch.join("desk-d.questions");
        let asked = |n: u64| Asked {
            id: format!("zc1:00:{n}"),
            asked: n,
            expires: n + 10,
            text: format!("question {n}\nsecond line"),
            reply: None,
        };
        let mut questions = Questions {
            journal: compacted(path.clone(), &[]).ok(),
            asked: Vec::new(),
        };
        for n in 0..500 {
            questions.add(asked(n));
            if n % 2 == 0 {
                assert!(questions.take(&format!("zc1:00:{n}")).is_some());
            }
        }
        assert_eq!(questions.take_expired(20).len(), 5, "1, 3, … 9");
        let text = fs::read_to_string(&path).unwrap();
        let lines = text.lines().count();
        // 755 lines written; compacted whenever beyond twice the 250 kept
        // and 64, before an append (of 5 lines at most).
        assert!(lines <= 2 * 250 + 64 + 5, "{lines} lines");
        let replayed = replay(&text);
        let ids = |asked: &[Asked]| asked.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
        assert!(
            ids(&replayed) == ids(&questions.asked),
            "the same questions"
        );
        assert_eq!(replayed.len(), 245);
        assert_eq!(replayed[0].text, "question 11 second line");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
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
