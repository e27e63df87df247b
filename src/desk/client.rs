//! The client's end of the desk: questions published to the desk's queue,
//! answers taken from a queue of the client's own, which waits for it
//! while it is away (see the `record` module).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Consumer, PublisherConfirm};

use super::record::{self, Asked, Identity, Questions};
use super::seal::{self, SEALED_CONTENT_TYPE, SealError};
use super::{Broker, Desk, NAME_HEADER, broker_failed, urgent_lane};
use crate::amqp;
use crate::clock::TICK;
use crate::display::escape_for_terminal;
use crate::envelope::{Mark, MessageId};
use crate::message::WIRE_LIMIT_BYTES;
use crate::secure::keys::{self as keys, PublicKey};
use crate::secure::known::KnownServers;
use crate::throttle::Throttle;
use crate::transport::{Bounded, ConnectionEvent, Oversized, Request, ToServer, TransportError};

/// AMQP's delivery mode for a message written to disk.
const PERSISTENT: u8 = 2;

/// Answers handed to the client unacknowledged, at most: what a flood of
/// its queue can make it hold.
const ANSWERS_IN_FLIGHT: u16 = 16;

/// A client's queue of answers unused this long is removed by the broker,
/// with what waits in it.
const ANSWERS_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// A client's way to a desk: it asks through the desk's queue and reads
/// the answers from a queue of its own.
pub struct DeskClient {
    broker: Broker,
    /// The desk's queue, where questions go.
    desk: String,
    /// The client's own queue, where answers come, and its kind.
    answers: String,
    kind: Answers,
    /// Held for the run: its lock keeps the identity this run's alone.
    _identity: Identity,
    consumer: Consumer,
    shown: String,
    /// How long a question waits for an operator before it expires.
    expiry: Duration,
    /// The questions not answered yet, kept between runs.
    questions: Questions,
    /// The ids of the questions asked in this run.
    asked_now: HashSet<String>,
    /// Whether the loop was told the desk is there (once, on the first look).
    told: bool,
    /// What the user is to be told, in order.
    news: VecDeque<String>,
    /// A question asked while the broker was away, asked once it is back.
    unasked: Option<Question>,
    /// End-to-end sealing, with `--key`.
    sealing: Option<Sealing>,
    /// With sealing, what seals the questions.
    sealer: Option<seal::Sealer>,
    /// How often the user is told of answers dropped unopened.
    throttle: Throttle,
    /// A question was asked and its answer did not come yet: whether it
    /// was urgent. If a tick's wait brings no answer, the desk is looked
    /// at to tell the user whether an operator is online (a passive
    /// declaration: not made for each question, as most are answered
    /// within the tick).
    to_look: Option<bool>,
}

/// A question, as the transport keeps it until the broker has it.
struct Question {
    /// The name the client gave itself, in clear (none when sealed: the
    /// sealed header has it).
    name: Option<Vec<u8>>,
    id: MessageId,
    body: Vec<u8>,
    urgent: bool,
    sealed: bool,
}

/// End-to-end sealing of a client's questions (`--key` with `--desk`):
/// each sealed to the desk's key, its answer opened with the key the
/// question carried (see [`seal`]).
pub struct Sealing {
    /// The client's own key.
    pub identity: keys::Identity,
    /// The desk's key: pinned, remembered, or learned now.
    pub desk: PublicKey,
    /// For a key learned now: the known servers file and the desk's entry
    /// in it, where the key is written once an answer opens with it.
    pub remember: Option<(KnownServers, String)>,
}

impl DeskClient {
    /// Connects to `desk`'s broker, declares the desk's queue (if no one
    /// did yet) and the client's queue for answers, and listens there. A
    /// question expires after `expiry` without an operator. What waited
    /// for the client, or expired, while it was away is told first.
    ///
    /// # Errors
    /// When the broker cannot be reached or refuses.
    pub fn open(
        desk: &Desk,
        expiry: Duration,
        sealing: Option<Sealing>,
    ) -> Result<DeskClient, TransportError> {
        let mut broker = Broker::connect(desk, "chat-client")?;
        let identity = record::identity(&desk.name);
        let answers = format!("{}.answers.{}", desk.name, identity.id);
        let kind = Answers::of(identity.kept, desk.clustered());
        let (consumer, waiting) = subscribe(&mut broker, &desk.name, &answers, kind)?;
        let questions = Questions::load(&desk.name, &identity);
        let mut client = DeskClient {
            broker,
            desk: desk.name.clone(),
            answers,
            kind,
            _identity: identity,
            consumer,
            shown: desk.shown(),
            expiry,
            questions,
            asked_now: HashSet::new(),
            told: false,
            news: VecDeque::new(),
            unasked: None,
            sealer: sealing
                .as_ref()
                .map(|sealing| seal::Sealer::new(&sealing.identity, sealing.desk)),
            sealing,
            throttle: Throttle::new(Duration::from_secs(10)),
            to_look: None,
        };
        client.tell_expired();
        client.take_waiting_answers(waiting)?;
        client.prepare();
        if !client.questions.is_empty() {
            client.news.push_back(format!(
                "{} question(s) you asked before still wait for an operator; their answers are shown when they come",
                client.questions.len()
            ));
        }
        Ok(client)
    }

    /// Takes the `waiting` answers that came to the client's queue while
    /// it was away, to be told.
    fn take_waiting_answers(&mut self, waiting: u32) -> Result<(), TransportError> {
        for _ in 0..waiting {
            // The broker sends what the queue holds at once; a second is
            // for a loaded machine.
            let consumer = &mut self.consumer;
            let next = self.broker.block_on(async {
                tokio::time::timeout(Duration::from_secs(1), consumer.next()).await
            });
            let Ok(Some(Ok(delivery))) = next else {
                break;
            };
            self.broker
                .block_on(delivery.ack(Default::default()))
                .map_err(broker_failed("cannot acknowledge an answer"))?;
            let _ = self.answer(delivery);
        }
        Ok(())
    }

    /// Tells of the questions that expired unanswered, and forgets them.
    fn tell_expired(&mut self) {
        let now = record::now();
        for asked in self.questions.take_expired(now) {
            self.news.push_back(format!(
                "your question {} (asked {}) expired unanswered: no operator took it",
                quoted(&asked.text),
                record::ago(asked.asked, now)
            ));
        }
    }

    /// The broker was lost: the user is told, and the next reads try to
    /// connect again; questions and answers wait in the broker meanwhile.
    fn lose(&mut self, what: String) {
        self.broker.lose();
        self.news.push_back(format!(
            "{what}; trying to connect again (for up to {} s): your questions and their answers wait in the broker",
            super::RECONNECT_WAIT.as_secs()
        ));
    }

    /// Whether the broker is there: if it was lost, after one try to
    /// connect again and listen for answers, and to ask the question that
    /// could not be asked meanwhile.
    fn back(&mut self) -> Result<bool, TransportError> {
        if !self.broker.is_lost() {
            return Ok(true);
        }
        if !self.broker.come_back()? {
            return Ok(false);
        }
        // What waits in the client's queue comes through the loop's reads.
        match subscribe(&mut self.broker, &self.desk, &self.answers, self.kind) {
            Ok((consumer, _)) => self.consumer = consumer,
            Err(error) => {
                self.lose(error.to_string());
                return Ok(false);
            }
        }
        self.news.push_back(format!(
            "connected to the broker again, at {}",
            self.broker.shown()
        ));
        if let Some(question) = self.unasked.take() {
            self.ask(question)?;
        }
        Ok(true)
    }

    /// With sealing, seals `question` (its text and name) to the desk's
    /// key, expiring at `expires`: with the key its answer will open with.
    ///
    /// # Errors
    /// When it cannot be sealed.
    fn seal(
        &mut self,
        question: &mut Question,
        expires: u64,
    ) -> Result<Option<seal::ReplyKey>, TransportError> {
        let Some(sealer) = &mut self.sealer else {
            return Ok(None);
        };
        let header = seal::Header {
            id: question.id.to_string(),
            reply_to: self.answers.clone(),
            expires,
            name: question.name.take(),
        };
        let (sealed, reply) =
            sealer
                .seal(&header, &question.body)
                .map_err(|error| TransportError::Refused {
                    what: format!("cannot seal the question: {error}"),
                })?;
        question.body = sealed;
        question.sealed = true;
        Ok(Some(reply))
    }

    /// With sealing, makes the next question's handshake now, off the
    /// round trip.
    fn prepare(&mut self) {
        if let Some(sealer) = &mut self.sealer {
            sealer.prepare();
        }
    }

    /// Publishes `question`; kept to be published once the broker is back
    /// if it is lost meanwhile.
    ///
    /// # Errors
    /// When the broker refuses it.
    fn ask(&mut self, question: Question) -> Result<(), TransportError> {
        let confirmation = self.publish(&question).and_then(|confirm| {
            // While the broker takes the question: off the round trip.
            self.prepare();
            self.broker.block_on(confirm)
        });
        let confirmation = match confirmation {
            Ok(confirmation) => confirmation,
            Err(error) => {
                self.lose(format!("lost the broker ({error})"));
                self.unasked = Some(question);
                return Ok(());
            }
        };
        match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => {
                self.to_look = Some(question.urgent);
                Ok(())
            }
            Confirmation::Ack(Some(_)) => Err(TransportError::Refused {
                what: format!("the desk's queue {} is gone", self.desk),
            }),
            // A quorum queue without a leader (a cluster in the middle of a
            // failover) refuses; the channel that saw it went on refusing
            // after a leader was elected (RabbitMQ 3.10): connect again,
            // and ask once back.
            Confirmation::Nack(_) => {
                self.lose(
                    "the broker did not take the question (its queue may be electing a leader)"
                        .into(),
                );
                self.unasked = Some(question);
                Ok(())
            }
        }
    }

    /// Publishes a question, persistent, expiring after the client's
    /// expiry: the broker's confirm is to be awaited.
    fn publish(&self, request: &Question) -> Result<PublisherConfirm, lapin::Error> {
        let mut properties = BasicProperties::default()
            .with_reply_to(self.answers.as_str().into())
            .with_correlation_id(request.id.to_string().into())
            .with_content_type(match request.sealed {
                true => SEALED_CONTENT_TYPE.into(),
                false => "text/plain".into(),
            })
            .with_delivery_mode(PERSISTENT)
            .with_timestamp(record::now())
            .with_expiration(self.expiry.as_millis().to_string().into());
        if let Some(name) = &request.name {
            let mut headers = FieldTable::default();
            headers.insert(
                NAME_HEADER.into(),
                AMQPValue::LongString(name.as_slice().into()),
            );
            properties = properties.with_headers(headers);
        }
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let lane = match request.urgent {
            true => urgent_lane(&self.desk),
            false => self.desk.clone(),
        };
        let channel = &self.broker.channel;
        self.broker.block_on(channel.basic_publish(
            "".into(),
            lane.as_str().into(),
            mandatory,
            &request.body,
            properties,
        ))
    }

    /// Once a question waited a tick unanswered: the user is told if no
    /// operator is online.
    fn look(&mut self) {
        if let Some(urgent) = self.to_look.take()
            && let Some(news) = self.nobody_online(urgent)
        {
            self.news.push_back(news);
        }
    }

    /// If no operator takes the desk's questions, what to tell the user:
    /// that the question waits, and behind how many. (A look that fails
    /// says nothing: the question is in the queue all the same.)
    fn nobody_online(&self, urgent: bool) -> Option<String> {
        // Operators take from both lanes: the normal one says if any is there.
        let normal = self.broker.peek(&self.desk)?;
        if normal.consumers > 0 {
            return None;
        }
        let urgent_lane = self.broker.peek(&urgent_lane(&self.desk))?;
        // Ahead of an urgent question, the urgent ones; of another, all.
        let before = match urgent {
            true => urgent_lane.ready,
            false => urgent_lane.ready + normal.ready,
        };
        let ahead = before.saturating_sub(1);
        Some(format!(
            "no operator is online at the desk; your question waits, {ahead} ahead of it"
        ))
    }

    /// An answer as the client loop reads a reply: the question's id (as
    /// the correlation id says it, a mark included), a delimiter, the text.
    /// An answer to a question of an earlier run is told instead.
    fn answer(&mut self, delivery: Delivery) -> Option<Bounded> {
        let id = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|id| id.as_str().to_string())
            .unwrap_or_default();
        // The question's id, without the mark an answer may carry.
        let question = MessageId::parse(id.as_bytes())
            .map_or_else(|| id.clone(), |(question, _)| question.to_string());
        let bytes = delivery.data.len();
        let text = self.opened(&id, &question, &delivery)?;
        let asked = self.questions.take(&question);
        if !self.asked_now.contains(&question) {
            if let Some(asked) = asked {
                self.tell_waited(&asked, &delivery, &text);
            }
            return None;
        }
        // Answered: no need to look whether an operator is online.
        self.to_look = None;
        if bytes > WIRE_LIMIT_BYTES {
            return Some(Err(Oversized { frames: 1, bytes }));
        }
        Some(Ok(vec![id.into_bytes(), Vec::new(), text]))
    }

    /// The text of an answer with correlation id `id` to `question`: as it
    /// came, or, when the desk is sealed, opened with the key its question
    /// carried. `None` for one that does not open (the user is told, at
    /// most once in 10 s), and, silently, for a sealed desk's answer to a
    /// question answered already (a copy).
    fn opened(&mut self, id: &str, question: &str, delivery: &Delivery) -> Option<Vec<u8>> {
        let Some(sealing) = &mut self.sealing else {
            return Some(delivery.data.clone());
        };
        let reply = self.questions.get(question)?.reply?;
        let error = match seal::open_answer(&reply, id, &delivery.data) {
            Ok(text) => {
                if let Some((mut known, entry)) = sealing.remember.take() {
                    self.news
                        .push_back(match known.remember(&entry, sealing.desk) {
                            Ok(place) => format!(
                                "an answer opened with the desk's key: it is remembered ({place})"
                            ),
                            Err(error) => format!("cannot remember the desk's key: {error}"),
                        });
                }
                return Some(text);
            }
            Err(error) => error,
        };
        let (kind, what) = match error {
            SealError::NotSealed => (
                "answer in clear",
                format!(
                    "an answer in clear was dropped: the desk is sealed, so its operator holds no key or the answer is forged (it said {})",
                    quoted(&String::from_utf8_lossy(&delivery.data))
                ),
            ),
            error => ("unopened answer", format!("an answer was dropped: {error}")),
        };
        if let Some(held) = self.throttle.admit(kind, std::time::Instant::now()) {
            self.news.push_back(Throttle::with_count(&what, held));
        }
        None
    }

    /// Tells an answer (`text`) that waited for the client while it was away.
    fn tell_waited(&mut self, asked: &Asked, delivery: &Delivery, text: &[u8]) {
        let now = record::now();
        let written = delivery
            .properties
            .timestamp()
            .map_or_else(String::new, |at| {
                format!(", written {}", record::ago(at, now))
            });
        let text = String::from_utf8_lossy(text);
        self.news.push_back(format!(
            "an answer came while you were away{written}, to your question {} (asked {}): {}",
            quoted(&asked.text),
            record::ago(asked.asked, now),
            escape_for_terminal(&text)
        ));
    }

    /// A question of this run that expired unanswered, as the refusal the
    /// loop shows; and the questions of earlier runs that expired, told.
    fn expired_now(&mut self) -> Option<Bounded> {
        let now = record::now();
        let mut refusal = None;
        for asked in self.questions.take_expired(now) {
            if self.asked_now.contains(&asked.id) && refusal.is_none() {
                let text = format!(
                    "no operator took the question within {} s (--expire): it expired unanswered",
                    self.expiry.as_secs()
                );
                let id = MessageId::parse(asked.id.as_bytes())
                    .map(|(id, _)| id.marked_frame(Mark::Refused))?;
                refusal = Some(Ok(vec![id, Vec::new(), text.into_bytes()]));
            } else {
                self.news.push_back(format!(
                    "your question {} (asked {}) expired unanswered: no operator took it",
                    quoted(&asked.text),
                    record::ago(asked.asked, now)
                ));
            }
        }
        refusal
    }
}

/// A question's text in quotes, escaped, cut to a line's worth.
fn quoted(text: &str) -> String {
    let cut: String = text.chars().take(60).collect();
    let more = if cut.len() < text.len() { "…" } else { "" };
    format!("\u{201c}{}{more}\u{201d}", escape_for_terminal(&cut))
}

/// The kind of a client's queue of answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answers {
    /// A run's own identity (another run holds the kept one): a queue of
    /// the run's own, gone with it.
    RunsOwn,
    /// A kept identity: durable, removed by the broker after a week unused.
    Kept,
    /// A kept identity at a desk on a cluster: as [`Answers::Kept`], and a
    /// quorum queue, replicated over the nodes so that no answer is lost
    /// with one.
    Replicated,
}

impl Answers {
    /// The kind for a client whose identity is `kept` or not, at a desk on
    /// a cluster or not.
    fn of(kept: bool, clustered: bool) -> Answers {
        match (kept, clustered) {
            (false, _) => Answers::RunsOwn,
            (true, false) => Answers::Kept,
            (true, true) => Answers::Replicated,
        }
    }
}

/// Declares the desk's queue (if no one did yet) and the client's queue
/// for answers, and listens there; with how many answers waited in it
/// before.
fn subscribe(
    broker: &mut Broker,
    desk: &str,
    answers: &str,
    kind: Answers,
) -> Result<(Consumer, u32), TransportError> {
    broker.declare_desk_queue(desk)?;
    broker.declare_desk_queue(&urgent_lane(desk))?;
    // Counted before consuming: the broker hands over what waits at once.
    let waiting = declare_answers(broker, answers, kind)?;
    // Whoever may publish on the broker can fill the client's queue: it is
    // handed over a few at a time, each acknowledged before more come.
    let consumer = broker.block_on(amqp::consume(&broker.channel, answers, ANSWERS_IN_FLIGHT))?;
    Ok((consumer, waiting))
}

/// Declares the client's queue of answers of `kind`; with how many
/// messages it holds.
fn declare_answers(
    broker: &mut Broker,
    answers: &str,
    kind: Answers,
) -> Result<u32, TransportError> {
    let mut kept_a_week = FieldTable::default();
    kept_a_week.insert(
        "x-expires".into(),
        AMQPValue::LongLongInt(ANSWERS_KEPT.as_millis() as i64),
    );
    let channel = &broker.channel;
    let declared = match kind {
        Answers::Replicated => return broker.declare_quorum_queue(answers, kept_a_week),
        Answers::Kept => {
            broker.block_on(amqp::declare_durable(channel, answers, false, kept_a_week))
        }
        Answers::RunsOwn => {
            let own = QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            };
            broker.block_on(channel.queue_declare(answers.into(), own, FieldTable::default()))
        }
    };
    declared
        .map(|queue| queue.message_count())
        .map_err(broker_failed(
            "cannot declare the client's queue for answers",
        ))
}

impl ToServer for DeskClient {
    fn endpoint(&self) -> &str {
        &self.shown
    }

    /// Publishes the question and waits for the broker's confirm: a
    /// question the broker refuses is an error, not sent; one asked while
    /// the broker is away is asked once it is back. It is kept in the
    /// user's state until answered or expired.
    fn send(&mut self, request: &Request<'_>) -> Result<(), TransportError> {
        let id = request.id.to_string();
        let now = record::now();
        // Not before the broker drops it (whole seconds, rounded up).
        let expires = now + self.expiry.as_secs_f64().ceil() as u64 + 1;
        let mut question = Question {
            name: request.name.map(<[u8]>::to_vec),
            id: request.id,
            body: request.body.to_vec(),
            urgent: request.urgent,
            sealed: false,
        };
        let reply = self.seal(&mut question, expires)?;
        self.asked_now.insert(id.clone());
        self.questions.add(Asked {
            id,
            asked: now,
            expires,
            text: String::from_utf8_lossy(request.body).into_owned(),
            reply,
        });
        if !self.back()? {
            self.unasked = Some(question);
            return Ok(());
        }
        self.ask(question)
    }

    /// The desk is there as soon as the broker is: the question waits in
    /// its queue for an operator.
    fn next_event(&mut self) -> Result<Option<ConnectionEvent>, TransportError> {
        Ok((!std::mem::replace(&mut self.told, true)).then_some(ConnectionEvent::Connected))
    }

    fn receive(&mut self, wait: bool) -> Result<Option<Bounded>, TransportError> {
        if let Some(expired) = self.expired_now() {
            return Ok(Some(expired));
        }
        if !self.back()? {
            // A tick between tries, as a wait for an answer would be.
            if wait {
                std::thread::sleep(TICK);
            }
            return Ok(None);
        }
        let wait = if wait { TICK } else { Duration::ZERO };
        let consumer = &mut self.consumer;
        let delivery = match self.broker.next_within(consumer, wait) {
            None => {
                if !wait.is_zero() {
                    self.look();
                }
                return Ok(None);
            }
            Some(Some(Ok(delivery))) => delivery,
            Some(Some(Err(error))) => {
                self.lose(format!("lost the broker ({error})"));
                return Ok(None);
            }
            Some(None) => {
                self.lose("the broker closed the channel".into());
                return Ok(None);
            }
        };
        if let Err(error) = self.broker.block_on(delivery.ack(Default::default())) {
            // Not acknowledged: the broker gives it again on the new connection.
            self.lose(format!("lost the broker ({error})"));
            return Ok(None);
        }
        Ok(self.answer(delivery))
    }

    /// Nothing to start afresh: a question waits in the broker, not on a
    /// connection.
    fn renew(&mut self) -> Result<(), TransportError> {
        Ok(())
    }

    fn news(&mut self) -> Option<String> {
        self.news.pop_front()
    }
}
