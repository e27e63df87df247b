//! The client's end of the desk: questions published to the desk's queue,
//! answers taken from the client's own queue.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Consumer};

use super::{Broker, Desk, NAME_HEADER, broker_failed};
use crate::clock::TICK;
use crate::envelope::random_id;
use crate::message::WIRE_LIMIT_BYTES;
use crate::transport::{Bounded, ConnectionEvent, Oversized, Request, ToServer, TransportError};

/// AMQP's delivery mode for a message written to disk.
const PERSISTENT: u8 = 2;

/// A client's way to a desk: it asks through the desk's queue and reads
/// the answers from a queue of its own.
pub struct DeskClient {
    broker: Broker,
    /// The desk's queue, where questions go.
    desk: String,
    /// The client's own queue, where answers come.
    answers: String,
    consumer: Consumer,
    shown: String,
    /// Whether the loop was told the desk is there (once, on the first look).
    told: bool,
    /// What the user is to be told next.
    news: Option<String>,
}

impl DeskClient {
    /// Connects to `desk`'s broker, declares the desk's queue (if no one
    /// did yet) and a queue for this client's answers, and listens there.
    ///
    /// # Errors
    /// When the broker cannot be reached or refuses.
    pub fn open(desk: &Desk) -> Result<DeskClient, TransportError> {
        let mut broker = Broker::connect(&desk.broker, "chat-client")?;
        broker.declare_desk_queue(&desk.name)?;
        let answers = format!("{}.answers.{:016x}", desk.name, random_id());
        // Its own, and gone with the client (a later issue keeps it, so
        // that answers can wait for a client that is away).
        let own = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        broker
            .block_on(broker.channel.queue_declare(
                answers.as_str().into(),
                own,
                FieldTable::default(),
            ))
            .map_err(broker_failed(
                "cannot declare the client's queue for answers",
            ))?;
        let consumer = broker
            .block_on(broker.channel.basic_consume(
                answers.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ))
            .map_err(broker_failed("cannot listen for answers"))?;
        Ok(DeskClient {
            broker,
            desk: desk.name.clone(),
            answers,
            consumer,
            shown: desk.shown(),
            told: false,
            news: None,
        })
    }
}

impl ToServer for DeskClient {
    fn endpoint(&self) -> &str {
        &self.shown
    }

    /// Publishes the question, persistent, and waits for the broker's
    /// confirm: a question the broker did not take is an error, not sent.
    fn send(&mut self, request: &Request<'_>) -> Result<(), TransportError> {
        let mut properties = BasicProperties::default()
            .with_reply_to(self.answers.as_str().into())
            .with_correlation_id(request.id.to_string().into())
            .with_content_type("text/plain".into())
            .with_delivery_mode(PERSISTENT);
        if let Some(name) = request.name {
            let mut headers = FieldTable::default();
            headers.insert(NAME_HEADER.into(), AMQPValue::LongString(name.into()));
            properties = properties.with_headers(headers);
        }
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let channel = &self.broker.channel;
        let confirmation = self.broker.block_on(async {
            channel
                .basic_publish(
                    "".into(),
                    self.desk.as_str().into(),
                    mandatory,
                    request.body,
                    properties,
                )
                .await?
                .await
        });
        match confirmation.map_err(broker_failed("cannot ask the desk"))? {
            Confirmation::Ack(None) | Confirmation::NotRequested => {
                self.news = self.nobody_online();
                Ok(())
            }
            Confirmation::Ack(Some(_)) => Err(TransportError::Refused {
                what: format!("the desk's queue {} is gone", self.desk),
            }),
            Confirmation::Nack(_) => Err(TransportError::Refused {
                what: "the broker refused the question".into(),
            }),
        }
    }

    /// The desk is there as soon as the broker is: the question waits in
    /// its queue for an operator.
    fn next_event(&mut self) -> Result<Option<ConnectionEvent>, TransportError> {
        Ok((!std::mem::replace(&mut self.told, true)).then_some(ConnectionEvent::Connected))
    }

    fn receive(&mut self, wait: bool) -> Result<Option<Bounded>, TransportError> {
        let wait = if wait { TICK } else { Duration::ZERO };
        let consumer = &mut self.consumer;
        let delivery = self
            .broker
            .block_on(async { tokio::time::timeout(wait, consumer.next()).await });
        let delivery = match delivery {
            Err(_) => return Ok(None),
            Ok(None) => {
                return Err(TransportError::Refused {
                    what: "the broker cancelled the client's queue for answers".into(),
                });
            }
            Ok(Some(delivery)) => delivery.map_err(broker_failed("lost the broker"))?,
        };
        self.broker
            .block_on(delivery.ack(Default::default()))
            .map_err(broker_failed("cannot acknowledge an answer"))?;
        let bytes = delivery.data.len();
        if bytes > WIRE_LIMIT_BYTES {
            return Ok(Some(Err(Oversized { frames: 1, bytes })));
        }
        // The envelope a chat-server's answer has: its id (as the
        // correlation id says it, a mark included), a delimiter, the text.
        let id = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|id| id.as_str().as_bytes().to_vec())
            .unwrap_or_default();
        Ok(Some(Ok(vec![id, Vec::new(), delivery.data])))
    }

    /// Nothing to start afresh: a question waits in the broker, not on a
    /// connection.
    fn renew(&mut self) -> Result<(), TransportError> {
        Ok(())
    }

    fn news(&mut self) -> Option<String> {
        self.news.take()
    }
}

impl DeskClient {
    /// If no operator takes the desk's questions, what to tell the user:
    /// that the question waits, and behind how many. (A look that fails
    /// says nothing: the question is in the queue all the same.)
    fn nobody_online(&self) -> Option<String> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let queue = self
            .broker
            .block_on(self.broker.channel.queue_declare(
                self.desk.as_str().into(),
                passive,
                FieldTable::default(),
            ))
            .ok()?;
        if queue.consumer_count() > 0 {
            return None;
        }
        let ahead = queue.message_count().saturating_sub(1);
        Some(format!(
            "no operator is online at the desk; your question waits, {ahead} ahead of it"
        ))
    }
}
