//! The help desk: the same two programs through a RabbitMQ broker instead
//! of a direct connection, so that nobody needs the others' address, any
//! number of operators share the questions, and a question waits in the
//! broker while nobody is online.
//!
//! It follows RabbitMQ's RPC convention, so a pika RPC client can ask the
//! desk and `chat-client --desk` can ask a pika RPC server:
//!
//! * the questions of desk NAME go to the queue named NAME on the default
//!   exchange, a durable quorum queue (replicated on a cluster) that
//!   whichever program comes first declares;
//! * each question carries `reply_to` (the asking client's own queue) and
//!   `correlation_id` (a chat-client's message id; any text for another
//!   program), is persistent, and its body is the UTF-8 text;
//! * the answer goes to the `reply_to` queue on the default exchange with
//!   the question's `correlation_id`.
//!
//! Both ends publish with confirms, so nothing the broker did not take is
//! taken for sent. An operator acknowledges a question only once its
//! answer is confirmed: an operator who dies or quits before leaves it to
//! the broker, which gives it to another (flagged as redelivered).
//!
//! [`client::DeskClient`] and [`server::DeskOperator`] are the two ends of
//! the transport seam ([`crate::transport`]) over the broker.

pub mod brokers;
pub mod client;
mod incoming;
mod precomputed;
mod record;
pub mod seal;
pub mod server;
pub mod trust;

use std::future::Future;
use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};

use crate::amqp::{self, Brokers, failed as broker_failed};
use crate::secure::keys::PublicKey;
use crate::transport::TransportError;

/// The broker asked for when none is named: RabbitMQ on this machine.
pub const DEFAULT_BROKER: &str = "amqp://localhost";

/// Which desk, on which brokers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desk {
    /// The desk's name: its queue's.
    pub name: String,
    /// The brokers' URLs (`amqp://USER:PASSWORD@HOST:PORT/VHOST`, or
    /// `amqps://` for TLS): one, or the nodes of a cluster, tried in turn
    /// (see [`brokers::broker_urls`]).
    pub brokers: Vec<String>,
    /// Certificate authorities (PEM) that `amqps://` brokers' certificates
    /// may be signed by, besides the system's (`--ca`).
    pub ca: Option<String>,
}

impl Desk {
    /// How the desk is named to the user: its name and first broker, the
    /// password hidden.
    pub fn shown(&self) -> String {
        let first = self
            .brokers
            .first()
            .map_or_else(String::new, |url| redacted(url));
        match self.brokers.len() {
            0 | 1 => format!("desk {} at {first}", self.name),
            more => format!("desk {} at {first} (and {} more)", self.name, more - 1),
        }
    }

    /// Whether its brokers are the nodes of a cluster: then the client's
    /// queue of answers is replicated too (a quorum queue), so that no
    /// answer is lost with a node.
    fn clustered(&self) -> bool {
        self.brokers.len() > 1
    }
}

pub use crate::amqp::redacted;

/// A connection to a broker with its one channel (publisher confirms
/// on), and the runtime its I/O runs on: one thread of its own, so that
/// heartbeats are answered while the loop waits on the keyboard.
struct Broker {
    runtime: tokio::runtime::Runtime,
    /// The brokers that may be connected to, and which one is.
    brokers: Brokers,
    connection: Connection,
    channel: Channel,
    /// Since when the broker is lost, while it is.
    lost: Option<Instant>,
}

/// After losing the broker, how long to try to connect again before
/// giving up: a broker restarted by hand, even on a loaded machine, is back
/// well within it, and questions and answers wait in it meanwhile.
pub const RECONNECT_WAIT: Duration = Duration::from_secs(120);

impl Broker {
    /// Connects to the first of `desk`'s brokers that answers, as `who`.
    ///
    /// # Errors
    /// The last broker's error, when none answers.
    fn connect(desk: &Desk, who: &'static str) -> Result<Broker, TransportError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("desk")
            .enable_all()
            .build()
            .map_err(|cause| TransportError::Broker {
                doing: "cannot start the desk's I/O thread".into(),
                cause: Box::new(cause),
            })?;
        let mut brokers = Brokers::new(desk.brokers.clone(), desk.ca.clone(), who);
        let (connection, channel) = runtime.block_on(brokers.first())?;
        Ok(Broker {
            runtime,
            brokers,
            connection,
            channel,
            lost: None,
        })
    }

    /// Runs `work` on the broker's runtime, from the loop's thread.
    fn block_on<F: Future>(&self, work: F) -> F::Output {
        self.runtime.block_on(work)
    }

    /// The consumer's next item if one comes within `wait`; `None` if none
    /// does. A zero wait only looks at what is there: a timer would round
    /// it up to the timer's millisecond.
    fn next_within(
        &self,
        consumer: &mut lapin::Consumer,
        wait: Duration,
    ) -> Option<Option<Result<lapin::message::Delivery, lapin::Error>>> {
        use futures_lite::StreamExt;
        if wait.is_zero() {
            return self.block_on(futures_lite::future::poll_once(consumer.next()));
        }
        self.block_on(async { tokio::time::timeout(wait, consumer.next()).await })
            .ok()
    }

    /// The connection or the channel was lost (or closed by the broker):
    /// from now on, each [`Broker::come_back`] tries once to connect again.
    fn lose(&mut self) {
        if self.lost.is_none() {
            self.lost = Some(Instant::now());
            self.block_on(amqp::close(&self.connection, "lost"));
        }
    }

    /// Whether the broker is lost (and not back yet).
    fn is_lost(&self) -> bool {
        self.lost.is_some()
    }

    /// While the broker is lost, one try to connect again, to the next
    /// broker named (the one lost last): whether one is back (the caller
    /// declares and subscribes again). The loop goes on between tries, so
    /// that Ctrl-C and the screen are served.
    ///
    /// # Errors
    /// Once it has been lost for [`RECONNECT_WAIT`].
    fn come_back(&mut self) -> Result<bool, TransportError> {
        let Some(since) = self.lost else {
            return Ok(true);
        };
        match self.runtime.block_on(self.brokers.next()) {
            Ok((connection, channel)) => {
                self.connection = connection;
                self.channel = channel;
                self.lost = None;
                Ok(true)
            }
            Err(error) if since.elapsed() >= RECONNECT_WAIT => Err(TransportError::Broker {
                doing: match self.brokers.count() {
                    1 => format!(
                        "lost the broker at {}, and it did not come back within {} s",
                        self.shown(),
                        RECONNECT_WAIT.as_secs()
                    ),
                    brokers => format!(
                        "lost the broker, and none of the {brokers} named came back within {} s",
                        RECONNECT_WAIT.as_secs()
                    ),
                },
                cause: Box::new(error),
            }),
            Err(_) => Ok(false),
        }
    }

    /// The broker connected to (or last tried), its password hidden.
    fn shown(&self) -> String {
        self.brokers.shown()
    }

    /// What the broker says of queue `name` now, by a passive
    /// declaration; `None` if it does not say.
    /// (A queue that does not exist closes the channel; the desk's queues
    /// are declared before any look.)
    fn peek(&self, name: &str) -> Option<Peeked> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        self.block_on(
            self.channel
                .queue_declare(name.into(), passive, FieldTable::default()),
        )
        .ok()
        .map(|queue| Peeked {
            ready: queue.message_count(),
            consumers: queue.consumer_count(),
        })
    }

    /// Declares the desk's queue `name`: durable, a quorum queue. One that
    /// exists already as another kind (a pika program declared it first)
    /// is used as it is.
    fn declare_desk_queue(&mut self, name: &str) -> Result<(), TransportError> {
        self.declare_quorum_queue(name, FieldTable::default())
            .map(|_| ())
    }

    /// Declares the durable quorum queue `name` with `arguments` besides
    /// its type; one that exists already as another kind, or with other
    /// arguments, is used as it is. With how many messages it holds.
    fn declare_quorum_queue(
        &mut self,
        name: &str,
        arguments: FieldTable,
    ) -> Result<u32, TransportError> {
        let declared = self.block_on(amqp::declare_durable(&self.channel, name, true, arguments));
        if let Ok(queue) = declared {
            return Ok(queue.message_count());
        }
        // A refused declaration closes the channel: a new one looks.
        let channel = self
            .block_on(self.connection.create_channel())
            .map_err(broker_failed("cannot open a channel"))?;
        self.block_on(channel.confirm_select(Default::default()))
            .map_err(broker_failed("cannot turn on publisher confirms"))?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let queue = self
            .block_on(channel.queue_declare(name.into(), passive, FieldTable::default()))
            .map_err(broker_failed(&format!("cannot use the queue {name}")))?;
        self.channel = channel;
        Ok(queue.message_count())
    }
}

/// A queue as [`Broker::peek`] finds it.
#[derive(Clone, Copy, Debug)]
struct Peeked {
    /// Messages ready for a consumer (not those delivered and unacknowledged).
    ready: u32,
    /// Consumers on it.
    consumers: u32,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.runtime.block_on(amqp::close(&self.connection, "bye"));
    }
}

/// The queue where the operators of a sealed desk `name` leave the desk's
/// public key, for clients to learn on first use (as a server tells its key
/// in secure mode): one message, put back after each look.
pub fn key_queue(name: &str) -> String {
    format!("{name}.key")
}

impl Broker {
    /// Leaves the desk's public `key` in its key queue, alone (operators
    /// of one desk share its key).
    fn publish_desk_key(&mut self, name: &str, key: &PublicKey) -> Result<(), TransportError> {
        let queue = key_queue(name);
        let classic = amqp::declare_durable(&self.channel, &queue, false, FieldTable::default());
        self.block_on(classic)
            .map_err(broker_failed("cannot declare the desk's key queue"))?;
        self.block_on(
            self.channel
                .queue_purge(queue.as_str().into(), Default::default()),
        )
        .map_err(broker_failed("cannot empty the desk's key queue"))?;
        let properties = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_delivery_mode(2);
        let channel = &self.channel;
        self.block_on(async {
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    Default::default(),
                    key.to_string().as_bytes(),
                    properties,
                )
                .await?
                .await
        })
        .map_err(broker_failed("cannot leave the desk's key in its queue"))?;
        Ok(())
    }
}

/// The public key the operators of the sealed desk left in its key queue
/// (see [`key_queue`]), or `None` if none did. Nothing proves it is the
/// desk's: the person accepts it, and it is remembered once an answer
/// opens with it.
///
/// # Errors
/// When the broker cannot be reached.
pub fn learn_desk_key(desk: &Desk) -> Result<Option<PublicKey>, TransportError> {
    let broker = Broker::connect(desk, "chat-client")?;
    let queue = key_queue(&desk.name);
    let got = broker.block_on(
        broker
            .channel
            .basic_get(queue.as_str().into(), Default::default()),
    );
    // No such queue (no sealed operator yet) closes the channel: no key.
    let Ok(Some(message)) = got else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&message.delivery.data).into_owned();
    let requeue = lapin::options::BasicRejectOptions { requeue: true };
    let _ = broker.block_on(message.delivery.acker.reject(requeue));
    Ok(PublicKey::parse(text.trim(), "the desk's key queue").ok())
}

/// The queue of the desk `name`'s urgent lane, which operators serve first
/// (a second queue: quorum queues have no priorities).
pub fn urgent_lane(name: &str) -> String {
    format!("{name}.urgent")
}

/// A header carrying the name a client gave itself (`--name`).
const NAME_HEADER: &str = "x-zmq-chat-name";
