//! The operator's end of the desk: questions taken from the desk's queue
//! one at a time, each answered to the queue its client named.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation, Consumer};

use super::incoming::{Incoming, Question, Unsealer};
use super::seal::{self, SEALED_CONTENT_TYPE};
use super::{Broker, Desk, urgent_lane};
use crate::amqp;
use crate::clock::TICK;
use crate::envelope::{Enveloped, Mark, MessageId};
use crate::message::WIRE_LIMIT_BYTES;
use crate::secure::keys::Identity;
use crate::throttle::Throttle;
use crate::transport::{
    Bounded, ConnectionId, Oversized, PeerEvent, ToClients, TransportError, Undelivered,
};

/// Why an answer was not sent while the broker is away.
const AWAY: &str = "the broker is away, so the answer was not sent; its question goes back to the desk's queue, for you or another operator once the broker is back";

/// AMQP's delivery mode for a message written to disk.
const PERSISTENT: u8 = 2;

/// An operator's way to a desk: questions come from the desk's queue, at
/// most one at a time (so that every operator gets a share), and stay the
/// broker's until answered.
pub struct DeskOperator {
    broker: Broker,
    /// The desk's queue (its urgent lane is [`urgent_lane`] of it).
    queue: String,
    /// The questions of the normal lane, and of the urgent one.
    normal: Consumer,
    urgent: Consumer,
    /// A normal question taken from the broker but not handed to the loop
    /// yet, while an urgent one may come.
    held: Option<Delivery>,
    shown: String,
    /// The questions taken and not answered yet, by the routing id given
    /// them: at most the prefetch (one), plus one the loop reads ahead.
    taken: HashMap<Vec<u8>, Taken>,
    /// The next routing id's number.
    next: u64,
    /// What the operator is to be told, in order.
    news: VecDeque<String>,
    /// When the desk's queues were last looked at, and what they said
    /// (questions waiting, urgent ones, operators online).
    looked: Option<(Instant, (u32, u32, u32))>,
    /// Whether an urgent question may be on its way to this operator: just
    /// after subscribing, or after taking one (whose acknowledgement lets
    /// the broker send the next). Otherwise the operator's idle urgent
    /// consumer would hold one already, and the urgent lane is not looked
    /// at for each normal question (a passive declaration, a round trip to
    /// the broker: this look and the client's, made for each question,
    /// cost the benchmark's desk round trip about a tenth).
    urgent_may_wait: bool,
    /// Opens what comes, with the desk's key when the desk is sealed.
    unsealer: Unsealer,
    /// How often the operator is told of questions dropped or refused.
    throttle: Throttle,
}

/// How often an operator looks at how many questions wait and how many
/// operators are online; it is told only what changed.
const PRESENCE_INTERVAL: Duration = Duration::from_secs(5);

/// A question taken from the queue: where its answer goes (its text
/// taken out), and how the broker is told it is done with.
struct Taken {
    question: Question,
    acker: Acker,
    /// Taken on a connection lost since: the broker gave it back to the
    /// queue, and it can no longer be acknowledged.
    given_back: bool,
}

impl DeskOperator {
    /// Connects to `desk`'s broker, declares the desk's queue (if no one
    /// did yet) and takes its questions one at a time; sealed to `key`
    /// (the desk's, shared by its operators) when given.
    ///
    /// # Errors
    /// When the broker cannot be reached or refuses.
    pub fn open(desk: &Desk, key: Option<Identity>) -> Result<DeskOperator, TransportError> {
        let mut broker = Broker::connect(desk, "chat-server")?;
        if let Some(key) = key.as_ref().map(Identity::public_key) {
            broker.publish_desk_key(&desk.name, &key)?;
        }
        let (normal, urgent) = subscribe(&mut broker, &desk.name)?;
        Ok(DeskOperator {
            broker,
            queue: desk.name.clone(),
            normal,
            urgent,
            held: None,
            shown: desk.shown(),
            taken: HashMap::new(),
            next: 0,
            news: VecDeque::new(),
            looked: None,
            urgent_may_wait: true,
            unsealer: Unsealer::new(key),
            throttle: Throttle::new(Duration::from_secs(10)),
        })
    }

    /// The broker was lost, or closed the channel (a question held past
    /// its `consumer_timeout`): the operator is told, and the questions
    /// taken go back to the queue (the broker sees to it). `answering`: the
    /// operator's answer to one of them was on its way.
    fn lose(&mut self, what: &str, answering: bool) {
        self.broker.lose();
        self.held = None;
        for taken in self.taken.values_mut() {
            taken.given_back = true;
        }
        let seconds = super::RECONNECT_WAIT.as_secs();
        self.news.push_back(if answering || !self.taken.is_empty() {
            format!(
                "{what}; trying to connect again (for up to {seconds} s). The question you are answering goes back to the queue, for you or another operator"
            )
        } else {
            format!("{what}; trying to connect again (for up to {seconds} s)")
        });
    }

    /// Whether the broker is there: if it was lost, after one try to
    /// connect again and subscribe.
    fn back(&mut self) -> Result<bool, TransportError> {
        if !self.broker.is_lost() {
            return Ok(true);
        }
        if !self.broker.come_back()? {
            return Ok(false);
        }
        match subscribe(&mut self.broker, &self.queue) {
            Ok((normal, urgent)) => {
                (self.normal, self.urgent) = (normal, urgent);
                self.urgent_may_wait = true;
            }
            Err(error) => {
                self.lose(&error.to_string(), false);
                return Ok(false);
            }
        }
        self.news.push_back(format!(
            "connected to the broker again, at {}",
            self.broker.shown()
        ));
        Ok(true)
    }

    /// A question as the server loop reads a request: a routing id of its
    /// own, the name and chat id if a chat-client asked, a delimiter, the
    /// text. `None` for one refused or dropped (see [`Unsealer::take`]),
    /// which is let go.
    fn request(&mut self, delivery: Delivery) -> Option<Bounded> {
        let bytes = delivery.data.len();
        let mut question = match self.unsealer.take(&delivery, super::record::now()) {
            Incoming::Question(question) => question,
            Incoming::Refuse {
                reply_to,
                correlation_id,
                why,
            } => {
                self.refuse(&reply_to, correlation_id, why);
                self.tell("refused", format!("a question was refused: {why}"));
                self.let_go_now(&delivery.acker);
                return None;
            }
            Incoming::Drop { kind, notice } => {
                self.tell(kind, notice);
                self.let_go_now(&delivery.acker);
                return None;
            }
        };
        self.next += 1;
        let routing_id = format!("question {}", self.next).into_bytes();
        if self.took_back(question.correlation_id.as_ref()) {
            self.news.push_back(
                "the broker took back the question you are answering (held longer than its consumer_timeout allows, or its connection was lost) and gave it to you again: your answer goes to its client as before".into(),
            );
        } else if delivery.redelivered {
            self.news.push_back(
                "the next question was with another operator before (who quit or died, or whose connection was lost): it may have been answered already".into(),
            );
        }
        let mut frames = vec![routing_id.clone()];
        if let Some(name) = question.name.take() {
            // The client sends its name as the envelope frame that carries it.
            frames.push(name);
        }
        if let Some(id) = question
            .correlation_id
            .as_ref()
            .filter(|id| MessageId::parse(id.as_str().as_bytes()).is_some())
        {
            frames.push(id.as_str().as_bytes().to_vec());
        }
        frames.push(Vec::new());
        frames.push(std::mem::take(&mut question.text));
        self.taken.insert(
            routing_id,
            Taken {
                question,
                acker: delivery.acker,
                given_back: false,
            },
        );
        if bytes > WIRE_LIMIT_BYTES {
            return Some(Err(Oversized { frames: 1, bytes }));
        }
        Some(Ok(frames))
    }

    /// Tells the operator `notice`, at most once in 10 s for its `kind`.
    fn tell(&mut self, kind: &'static str, notice: String) {
        if let Some(held) = self.throttle.admit(kind, Instant::now()) {
            self.news.push_back(Throttle::with_count(&notice, held));
        }
    }

    /// Acknowledges a question not shown (refused or dropped): a broker
    /// lost meanwhile gives it again, to be refused or dropped again.
    fn let_go_now(&self, acker: &Acker) {
        let _ = self.broker.block_on(acker.ack(BasicAckOptions::default()));
    }

    /// Answers a question at once with a refusal, in clear: `why`.
    fn refuse(&self, reply_to: &ShortString, correlation_id: Option<ShortString>, why: &str) {
        let marked = correlation_id.map(|id| match MessageId::parse(id.as_str().as_bytes()) {
            Some((question, _)) => String::from_utf8_lossy(&question.marked_frame(Mark::Refused))
                .into_owned()
                .into(),
            None => id,
        });
        let _ = self.publish(reply_to, marked, why.as_bytes(), false);
    }

    /// A question of the urgent lane, as [`DeskOperator::request`]; more
    /// may follow it once it is acknowledged.
    fn urgent_request(&mut self, delivery: Delivery) -> Option<Bounded> {
        self.urgent_may_wait = true;
        self.request(delivery)
    }

    /// Whether this operator holds a question with `correlation_id`
    /// already (a chat-client's: a message id), which the broker gives
    /// again: it took it back. The one held is forgotten: its delivery can
    /// no longer be acknowledged, and the server loop answers the new one.
    fn took_back(&mut self, correlation_id: Option<&ShortString>) -> bool {
        let Some(id) =
            correlation_id.filter(|id| MessageId::parse(id.as_str().as_bytes()).is_some())
        else {
            return false;
        };
        let before = self.taken.len();
        self.taken
            .retain(|_, taken| taken.question.correlation_id.as_ref() != Some(id));
        self.taken.len() < before
    }

    /// Publishes `text` (`sealed` or not) to `reply_to` with
    /// `correlation_id`, persistent, and waits for the broker's confirm.
    fn publish(
        &self,
        reply_to: &ShortString,
        correlation_id: Option<ShortString>,
        text: &[u8],
        sealed: bool,
    ) -> Result<Confirmation, lapin::Error> {
        let content_type = match sealed {
            true => SEALED_CONTENT_TYPE,
            false => "text/plain",
        };
        let mut properties = BasicProperties::default()
            .with_content_type(content_type.into())
            .with_delivery_mode(PERSISTENT)
            .with_timestamp(super::record::now());
        if let Some(id) = correlation_id {
            properties = properties.with_correlation_id(id);
        }
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let channel = &self.broker.channel;
        self.broker.block_on(async {
            channel
                .basic_publish("".into(), reply_to.clone(), mandatory, text, properties)
                .await?
                .await
        })
    }

    /// Done with a question: acknowledged, or given back. A channel the
    /// broker closed meanwhile (a question held past the broker's
    /// `consumer_timeout`) is opened again; the question had gone back to
    /// the queue by then.
    fn done_with(&mut self, taken: &mut Taken, answered: bool) -> Result<(), Undelivered> {
        if let Err(error) = self.let_go(taken, answered) {
            taken.given_back = true;
            self.lose(
                &format!("the broker took the question back ({error})"),
                answered,
            );
        }
        Ok(())
    }

    /// Done with a question: acknowledged (answered, or unanswerable), or
    /// given back to the queue for another operator.
    fn let_go(&self, taken: &Taken, answered: bool) -> Result<(), lapin::Error> {
        if taken.given_back {
            return Ok(());
        }
        if answered {
            self.broker
                .block_on(taken.acker.ack(BasicAckOptions::default()))
                .map(|_| ())
        } else {
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            self.broker.block_on(taken.acker.nack(requeue)).map(|_| ())
        }
    }
}

impl DeskOperator {
    /// Publishes the answer `text` to `reply_to` with `correlation_id`
    /// (sealed under the key its question carried, at a sealed desk), and
    /// lets its question go once the broker has it; gives it back if the
    /// broker refuses the answer.
    fn deliver(
        &mut self,
        taken: &mut Taken,
        reply_to: &ShortString,
        correlation_id: Option<ShortString>,
        mut text: Vec<u8>,
    ) -> Result<(), Undelivered> {
        // At a sealed desk, bound to the correlation id it goes with (its
        // mark included).
        if let Some(reply) = &taken.question.reply {
            let id = correlation_id.as_ref().map_or("", |id| id.as_str());
            text = seal::seal_answer(reply, id, &text);
        }
        let sealed = taken.question.reply.is_some();
        let delivered = match self.publish(reply_to, correlation_id, &text, sealed) {
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => Ok(()),
            // No such queue: the client is gone (for good: its queue with it).
            Ok(Confirmation::Ack(Some(_))) => Err(Undelivered::Gone),
            Ok(Confirmation::Nack(_)) => {
                self.done_with(taken, false)?;
                return Err(Undelivered::NotTaken(
                    "the broker refused the answer; the question went back to the queue".into(),
                ));
            }
            Err(error) => {
                self.lose(&format!("lost the broker ({error})"), true);
                return Err(Undelivered::NotTaken(AWAY.into()));
            }
        };
        self.unsealer.answered(&taken.question);
        self.done_with(taken, true)?;
        // Off the round trip: the next question is not there yet.
        self.unsealer.prepare();
        delivered
    }
}

/// The lanes of a desk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    Normal,
    Urgent,
}

/// Declares the desk's queues `name` and its urgent lane (if no one did
/// yet) and takes their questions one at a time from each.
fn subscribe(broker: &mut Broker, name: &str) -> Result<(Consumer, Consumer), TransportError> {
    let urgent = urgent_lane(name);
    broker.declare_desk_queue(name)?;
    broker.declare_desk_queue(&urgent)?;
    // Per consumer: one question of each lane at most.
    let consume = |queue: &str| broker.block_on(amqp::consume(&broker.channel, queue, 1));
    let urgent = consume(&urgent)?;
    Ok((consume(name)?, urgent))
}

impl DeskOperator {
    /// The next question of `lane` within `wait`. A lost broker (or a
    /// channel it closed) is reconnected, and none is given this time.
    fn next(&mut self, lane: Lane, wait: Duration) -> Result<Option<Delivery>, TransportError> {
        let consumer = match lane {
            Lane::Normal => &mut self.normal,
            Lane::Urgent => &mut self.urgent,
        };
        let next = self.broker.next_within(consumer, wait);
        self.taken_in(next)
    }

    /// The next question of either lane within a tick, the urgent lane's
    /// if both have one.
    fn next_of_either(&mut self) -> Result<Option<(Lane, Delivery)>, TransportError> {
        let (normal, urgent) = (&mut self.normal, &mut self.urgent);
        let next = self.broker.block_on(async {
            tokio::select! {
                biased;
                next = urgent.next() => Some((Lane::Urgent, next)),
                next = normal.next() => Some((Lane::Normal, next)),
                () = tokio::time::sleep(TICK) => None,
            }
        });
        let Some((lane, next)) = next else {
            return Ok(None);
        };
        Ok(self.taken_in(Some(next))?.map(|delivery| (lane, delivery)))
    }

    /// A consumer's next item: a question; or its end or error, the broker
    /// lost, which is mended.
    fn taken_in(
        &mut self,
        next: Option<Option<Result<Delivery, lapin::Error>>>,
    ) -> Result<Option<Delivery>, TransportError> {
        match next {
            None => Ok(None),
            Some(Some(Ok(delivery))) => Ok(Some(delivery)),
            Some(Some(Err(error))) => {
                self.lose(&format!("lost the broker ({error})"), false);
                Ok(None)
            }
            Some(None) => {
                self.lose("the broker closed the channel", false);
                Ok(None)
            }
        }
    }

    /// How many questions wait in the desk's two lanes, how many of them
    /// urgent, and how many operators are online; `None` if the broker
    /// does not say.
    fn presence(&self) -> Option<(u32, u32, u32)> {
        let normal = self.broker.peek(&self.queue)?;
        let urgent = self.broker.peek(&urgent_lane(&self.queue))?;
        let waiting = normal.ready + urgent.ready;
        Some((waiting, urgent.ready, normal.consumers))
    }

    /// Whether the urgent lane holds questions no operator has taken.
    fn urgent_waiting(&self) -> bool {
        self.broker
            .peek(&urgent_lane(&self.queue))
            .is_some_and(|queue| queue.ready > 0)
    }
}

impl ToClients for DeskOperator {
    fn endpoint(&self) -> &str {
        &self.shown
    }

    /// No connections to tell of: the desk's presence is told as news
    /// instead, at most once per `PRESENCE_INTERVAL` (5 s), when it changed.
    fn next_event(&mut self) -> Result<Option<PeerEvent>, TransportError> {
        let due = self
            .looked
            .is_none_or(|(at, _)| at.elapsed() >= PRESENCE_INTERVAL);
        if due && !self.broker.is_lost() {
            let counts = self.presence();
            if let Some(counts @ (waiting, urgent, operators)) = counts
                && self.looked.is_none_or(|(_, told)| told != counts)
            {
                self.news.push_back(format!(
                    "at the desk: {waiting} question(s) wait ({urgent} urgent); {operators} operator(s) online"
                ));
            }
            self.looked = Some((Instant::now(), counts.unwrap_or_default()));
        }
        Ok(None)
    }

    /// An urgent question first, whenever one is there; a normal one
    /// only while the urgent lane holds none.
    fn receive(
        &mut self,
        wait: bool,
    ) -> Result<Option<(Bounded, Option<ConnectionId>)>, TransportError> {
        if !self.back()? {
            // A tick between tries, as a wait for a question would be.
            if wait {
                std::thread::sleep(TICK);
            }
            return Ok(None);
        }
        if let Some(urgent) = self.next(Lane::Urgent, Duration::ZERO)? {
            return Ok(self.urgent_request(urgent).map(|urgent| (urgent, None)));
        }
        let normal = match self.held.take() {
            Some(normal) => Some(normal),
            None => self.next(Lane::Normal, Duration::ZERO)?,
        };
        let normal = match normal {
            Some(normal) => normal,
            None if !wait => return Ok(None),
            None => match self.next_of_either()? {
                None => return Ok(None),
                Some((Lane::Urgent, urgent)) => {
                    return Ok(self.urgent_request(urgent).map(|urgent| (urgent, None)));
                }
                Some((Lane::Normal, normal)) => normal,
            },
        };
        // An urgent question may be on its way to this operator: the
        // normal one waits with it (held, not shown) for a tick at most.
        if self.urgent_may_wait {
            if self.urgent_waiting() {
                self.held = Some(normal);
                let urgent = self.next(Lane::Urgent, TICK)?;
                let urgent = urgent.and_then(|urgent| self.urgent_request(urgent));
                return Ok(urgent.map(|urgent| (urgent, None)));
            }
            self.urgent_may_wait = false;
        }
        Ok(self.request(normal).map(|normal| (normal, None)))
    }

    /// Sends the answer to the queue its question named, then lets the
    /// question go. The operator's goodbye (an answer marked as the chat's
    /// end) is not sent: the question goes back to the queue, for another
    /// operator.
    fn send(&mut self, frames: &[Vec<u8>]) -> Result<(), Undelivered> {
        let Some(mut taken) = frames.first().and_then(|id| self.taken.remove(id)) else {
            return Err(Undelivered::Gone);
        };
        if !self
            .back()
            .map_err(|error| Undelivered::NotTaken(error.to_string()))?
        {
            return Err(Undelivered::NotTaken(AWAY.into()));
        }
        let Ok(answer) = Enveloped::split(frames.to_vec(), 1) else {
            return Err(Undelivered::NotTaken(
                "an answer without an envelope".into(),
            ));
        };
        if answer.mark == Mark::Ended {
            return self.done_with(&mut taken, false);
        }
        let Some(reply_to) = taken.question.reply_to.clone() else {
            // Nowhere to answer: a message, not a question.
            self.done_with(&mut taken, true)?;
            return Err(Undelivered::Gone);
        };
        // A chat-client's id goes back as it came, with the answer's mark;
        // another program's correlation id unchanged.
        let correlation_id = match answer.id {
            Some(id) => Some(
                String::from_utf8_lossy(&id.marked_frame(answer.mark))
                    .into_owned()
                    .into(),
            ),
            None => taken.question.correlation_id.clone(),
        };
        self.deliver(&mut taken, &reply_to, correlation_id, answer.body.concat())
    }

    fn news(&mut self) -> Option<String> {
        self.news.pop_front()
    }
}
