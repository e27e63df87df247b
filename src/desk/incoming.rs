//! What an operator makes of a delivery from the desk's queue: a question
//! in clear, or one sealed to the desk's key and opened (see [`seal`]); or
//! one to refuse (clear at a sealed desk, sealed at a desk without a key),
//! or to drop (one that does not open, has expired, or was answered here
//! already).

use lapin::message::Delivery;
use lapin::types::{AMQPValue, ShortString};

use super::NAME_HEADER;
use super::seal::{self, Opener, ReplyKey, SealError};
use crate::bounded::Bounded;
use crate::envelope::MessageId;
use crate::secure::keys::{Identity, is_low_order};

/// A question as the operator answers it.
pub struct Question {
    /// Where its answer goes.
    pub reply_to: Option<ShortString>,
    /// Its correlation id (a chat-client's message id, or any text).
    pub correlation_id: Option<ShortString>,
    /// The name its client gave itself.
    pub name: Option<Vec<u8>>,
    /// Its text.
    pub text: Vec<u8>,
    /// The key its answer is sealed under, at a sealed desk.
    pub reply: Option<ReplyKey>,
}

/// What to do with a delivery.
pub enum Incoming {
    /// Show it to the operator.
    Question(Question),
    /// Answer it at once with a refusal, in clear, saying why.
    Refuse {
        /// Where the refusal goes.
        reply_to: ShortString,
        /// The question's correlation id.
        correlation_id: Option<ShortString>,
        /// Why, for the client.
        why: &'static str,
    },
    /// Let it go unanswered, telling the operator this (at most once in a
    /// while, by kind).
    Drop {
        /// The notice's kind, for the rate limit.
        kind: &'static str,
        /// What to tell the operator.
        notice: String,
    },
}

/// Why a sealed desk refuses a question in clear.
pub const CLEAR_AT_SEALED_DESK: &str = "this desk takes sealed questions only: ask with --key (your key) and the desk's key (--server-key, or --secure to learn it)";
/// Why a desk without a key refuses a sealed question.
pub const SEALED_AT_CLEAR_DESK: &str =
    "this desk's operators hold no key and cannot open a sealed question: ask without --key";

/// Client keys checked (not of small order) and questions answered here,
/// at most this many each: the oldest are forgotten beyond.
const REMEMBERED: usize = 4096;

/// Opens what comes from the desk's queue: with the desk's key when the
/// desk is sealed.
pub struct Unsealer {
    desk: Option<Opener>,
    /// Client keys found not to be of small order.
    checked: Bounded<[u8; 32]>,
    /// The questions answered here (by the asking key, if sealed, and the
    /// correlation id): one that comes again is a copy (a client asking
    /// again after losing its broker) or a replay.
    answered: Bounded<(Option<[u8; 32]>, String)>,
}

impl Unsealer {
    /// An unsealer for a desk whose key is `desk` (`None`: in clear).
    pub fn new(desk: Option<Identity>) -> Unsealer {
        let mut unsealer = Unsealer {
            desk: desk.as_ref().map(Opener::new),
            checked: Bounded::new(REMEMBERED),
            answered: Bounded::new(REMEMBERED),
        };
        unsealer.prepare();
        unsealer
    }

    /// What to do with `delivery`, at `now` (seconds since the epoch).
    pub fn take(&mut self, delivery: &Delivery, now: u64) -> Incoming {
        let properties = &delivery.properties;
        let reply_to = properties.reply_to().clone();
        let correlation_id = properties.correlation_id().clone();
        let sealed = seal::is_sealed_question(&delivery.data);
        let incoming = match (&mut self.desk, sealed, reply_to) {
            (None, false, reply_to) => Incoming::Question(Question {
                reply_to,
                correlation_id,
                name: name_header(delivery),
                text: delivery.data.clone(),
                reply: None,
            }),
            (Some(desk), true, _) => {
                let opened = desk.open(&delivery.data);
                self.opened(opened, now)
            }
            (_, _, None) => Incoming::Drop {
                kind: "no reply queue",
                notice: "a question with nowhere to answer was dropped".into(),
            },
            (desk, _, Some(reply_to)) => Incoming::Refuse {
                reply_to,
                correlation_id,
                why: match desk {
                    Some(_) => CLEAR_AT_SEALED_DESK,
                    None => SEALED_AT_CLEAR_DESK,
                },
            },
        };
        let incoming = match incoming {
            Incoming::Question(question) if self.was_answered(&question) => Incoming::Drop {
                kind: "answered",
                notice: "a question answered here already came again (a client asking again after losing its broker, or a replay): dropped".into(),
            },
            incoming => incoming,
        };
        // A question is prepared for once answered; the next one now, as
        // this one is let go at once.
        if !matches!(incoming, Incoming::Question(_)) {
            self.prepare();
        }
        incoming
    }

    /// What to do with a sealed question, opened or not.
    fn opened(&mut self, opened: Result<seal::Opened, SealError>, now: u64) -> Incoming {
        let opened = match opened {
            Ok(opened) => opened,
            Err(error) => {
                return Incoming::Drop {
                    kind: "unopened",
                    notice: format!("a sealed question was dropped: {error}"),
                };
            }
        };
        if !self.checked.contains(&opened.client.0) {
            if is_low_order(&opened.client.0) {
                return Incoming::Drop {
                    kind: "small order",
                    notice: "a sealed question from a key of small order (which proves nothing) was dropped".into(),
                };
            }
            self.checked.insert(opened.client.0, ());
        }
        if opened.header.expires < now {
            return Incoming::Drop {
                kind: "expired",
                notice: "a sealed question past its expiry was dropped".into(),
            };
        }
        Incoming::Question(Question {
            reply_to: Some(opened.header.reply_to.as_str().into()),
            correlation_id: Some(opened.header.id.as_str().into()),
            name: opened.header.name,
            text: opened.text,
            reply: Some(opened.reply),
        })
    }

    /// Makes what opens the next sealed question now, while none is being
    /// opened (see [`Opener::prepare`]): the server does so once it has
    /// answered.
    pub fn prepare(&mut self) {
        if let Some(desk) = &mut self.desk {
            desk.prepare();
        }
    }

    /// Remembers that `question` was answered here.
    pub fn answered(&mut self, question: &Question) {
        if let Some(key) = answered_key(question) {
            self.answered.insert(key, ());
        }
    }

    fn was_answered(&self, question: &Question) -> bool {
        answered_key(question).is_some_and(|key| self.answered.contains(&key))
    }
}

/// What identifies an answered question: a sealed one's reply key (fresh
/// for each question, and only its asker and the desk know it) and id; a
/// clear one's chat-client message id (unique to its client's run). Other
/// programs' correlation ids may repeat: their questions are not tracked.
fn answered_key(question: &Question) -> Option<(Option<[u8; 32]>, String)> {
    let id = question.correlation_id.as_ref()?.to_string();
    match question.reply {
        Some(reply) => Some((Some(reply.0), id)),
        None => MessageId::parse(id.as_bytes())
            .is_some()
            .then_some((None, id)),
    }
}

/// The name a client gave itself, from the header a chat-client sets.
fn name_header(delivery: &Delivery) -> Option<Vec<u8>> {
    match delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(NAME_HEADER))
    {
        Some(AMQPValue::LongString(name)) => Some(name.as_bytes().to_vec()),
        _ => None,
    }
}
