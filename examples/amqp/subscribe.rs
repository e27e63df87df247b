//! The subscriber: one message at a time by default (prefetch 1), printed as
//! compact JSON on one stdout line, acknowledged only once handled. Whatever
//! it cannot handle goes back to the queue and the subscriber stops, saying
//! why, so no message is lost and no problem goes unnoticed.
//!
//! When the connection is lost it connects to the next `--url` and goes on;
//! the broker delivers again what was not acknowledged, so a message may be
//! seen twice: each is printed, and those whose `message_id` was seen
//! before are counted as duplicates.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use clap::Args;
use futures_lite::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};

use crate::broker::{self, Brokers, Failure, Target};
use zmq_chat::display::escape_for_terminal;

#[derive(Args, Debug)]
pub struct SubscribeArgs {
    #[command(flatten)]
    target: Target,

    /// Stop after this many messages (duplicates by message_id not counted)
    #[arg(long, value_name = "N")]
    count: Option<u64>,

    /// Messages the broker may send ahead of their acknowledgements (1,
    /// the message_queue convention: nothing is held that another
    /// subscriber could take; more: faster)
    #[arg(long, value_name = "N", default_value_t = 1)]
    prefetch: u16,

    /// Handle each message with this shell command (its JSON line on
    /// stdin); acknowledge only if it exits 0, else return the message to
    /// the queue and stop
    #[arg(long, value_name = "COMMAND")]
    exec: Option<String>,

    /// Acknowledge bodies that are not JSON after printing them in full on
    /// stderr (default: return them to the queue and stop)
    #[arg(long)]
    skip_invalid: bool,
}

/// What became of one delivery.
enum Handled {
    Acknowledged,
    /// Returned to the queue; the subscriber must stop with this failure.
    Returned(Failure),
}

pub async fn run(args: SubscribeArgs) -> Result<u8, Failure> {
    let mut brokers = Brokers::new(&args.target);
    let mut opened = brokers.first().await?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| Failure::runtime(e.to_string()))?;
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| Failure::runtime(e.to_string()))?;
    let mut seen = Seen::default();
    let outcome = loop {
        let (connection, channel) = opened;
        let ended = consume(&channel, &args, &mut seen, &mut interrupt, &mut terminate).await;
        // Closing returns any unacknowledged message to the queue.
        broker::close(&connection, "done").await;
        match ended {
            Consumed::Done(outcome) => break outcome,
            Consumed::Lost(failure) => {
                eprintln!("amqp: {}; trying the next broker", failure.message);
                opened = brokers.next().await?;
                eprintln!("amqp: connected to {}; resuming", brokers.shown());
            }
        }
    };
    if seen.duplicates > 0 || seen.distinct > 0 {
        eprintln!(
            "amqp: received {} message(s), {} of them again (duplicates by message_id, after a lost connection)",
            seen.distinct + seen.duplicates,
            seen.duplicates
        );
    }
    outcome
}

/// How consuming on one connection ended.
enum Consumed {
    /// For good: done, interrupted, or a failure that another broker would
    /// not mend.
    Done(Result<u8, Failure>),
    /// The connection was lost: go on with the next broker.
    Lost(Failure),
}

/// The message ids seen, to count duplicates: the last [`REMEMBERED_IDS`].
#[derive(Default)]
struct Seen {
    ids: std::collections::HashSet<String>,
    order: std::collections::VecDeque<String>,
    distinct: u64,
    duplicates: u64,
}

/// Message ids remembered for telling duplicates, at most.
const REMEMBERED_IDS: usize = 1_000_000;

impl Seen {
    /// Counts a delivery; false if its id was seen before.
    fn first_time(&mut self, id: Option<&str>) -> bool {
        let Some(id) = id else {
            self.distinct += 1;
            return true;
        };
        if self.ids.contains(id) {
            self.duplicates += 1;
            return false;
        }
        if self.order.len() >= REMEMBERED_IDS
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        self.ids.insert(id.to_string());
        self.order.push_back(id.to_string());
        self.distinct += 1;
        true
    }
}

async fn consume(
    channel: &Channel,
    args: &SubscribeArgs,
    seen: &mut Seen,
    interrupt: &mut tokio::signal::unix::Signal,
    terminate: &mut tokio::signal::unix::Signal,
) -> Consumed {
    let started = async {
        channel
            .basic_qos(args.prefetch, BasicQosOptions::default())
            .await
            .map_err(broker::failed("cannot set the prefetch"))?;
        let queue = subscribe_queue(channel, &args.target).await?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(broker::failed("cannot consume"))?;
        Ok::<_, Failure>((queue, consumer))
    };
    let (queue, mut consumer) = match started.await {
        Ok(started) => started,
        Err(failure) => return Consumed::Lost(failure),
    };
    eprintln!("amqp: subscribed to queue '{queue}'; waiting for messages (Ctrl-C to stop)");
    loop {
        if args.count.is_some_and(|count| seen.distinct >= count) {
            return Consumed::Done(Ok(broker::EXIT_OK));
        }
        let delivery = tokio::select! {
            delivery = consumer.next() => delivery,
            () = lost(channel) => return Consumed::Lost(connection_closed()),
            _ = interrupt.recv() => return Consumed::Done(Ok(broker::EXIT_OK)),
            _ = terminate.recv() => return Consumed::Done(Ok(broker::EXIT_OK)),
        };
        let delivery = match delivery {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => {
                return Consumed::Lost(Failure::runtime(format!("lost the broker: {error}")));
            }
            None => {
                return Consumed::Lost(Failure::runtime("the broker cancelled the subscription"));
            }
        };
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_string());
        seen.first_time(id.as_deref());
        let handled = tokio::select! {
            handled = handle(&delivery, args) => handled,
            () = lost(channel) => return Consumed::Lost(connection_closed()),
        };
        match handled {
            Ok(Handled::Acknowledged) => {}
            Ok(Handled::Returned(failure)) => return Consumed::Done(Err(failure)),
            Err(failure) => return Consumed::Lost(failure),
        }
    }
}

/// How often a subscriber checks that its channel is still connected.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// Resolves once `channel` is no longer connected. Raced against every wait
/// on the broker, so that a connection that died ends the wait (and the
/// subscriber fails over) whether or not the wait's own future is woken:
/// in the cluster test a subscriber whose node was killed was seen, about
/// two runs in seventeen, to wait on for good without a word.
async fn lost(channel: &Channel) {
    let mut check = tokio::time::interval(LIVENESS_CHECK);
    loop {
        check.tick().await;
        if !channel.status().connected() {
            return;
        }
    }
}

/// What a subscriber reports when [`lost`] ended its wait.
fn connection_closed() -> Failure {
    Failure::runtime("lost the broker: the connection is closed")
}

/// Declares what this subscriber reads from; returns the queue's name.
async fn subscribe_queue(channel: &Channel, target: &Target) -> Result<String, Failure> {
    let Some(exchange) = &target.exchange else {
        let queue = target.queue_or_default();
        broker::declare_queue(channel, queue, target.quorum).await?;
        return Ok(queue.to_string());
    };
    broker::declare_fanout(channel, exchange).await?;
    let queue = match &target.queue {
        Some(queue) => {
            broker::declare_queue(channel, queue, target.quorum).await?;
            queue.clone()
        }
        // A queue of its own that lives as long as this subscriber.
        None => channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(broker::failed("cannot declare this subscriber's queue"))?
            .name()
            .to_string(),
    };
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker::failed("cannot bind the queue to the exchange"))?;
    Ok(queue)
}

/// Prints, handles and acknowledges one message, or returns it to the queue.
async fn handle(delivery: &Delivery, args: &SubscribeArgs) -> Result<Handled, Failure> {
    let line = match serde_json::from_slice::<serde_json::Value>(&delivery.data) {
        Ok(value) => value.to_string(),
        Err(error) => {
            let body = String::from_utf8_lossy(&delivery.data);
            let body = escape_for_terminal(&body);
            if args.skip_invalid {
                eprintln!("amqp: skipped a body that is not JSON ({error}): {body}");
                ack(delivery).await?;
                return Ok(Handled::Acknowledged);
            }
            return give_back(
                delivery,
                format!(
                    "received a body that is not JSON ({error}): {body}; it was returned to the queue, not acknowledged (remove it, or run with --skip-invalid to log and drop such messages)"
                ),
            )
            .await;
        }
    };
    {
        let mut stdout = std::io::stdout().lock();
        let printed = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
        if printed.is_err() {
            return give_back(delivery, "stdout is closed".to_string()).await;
        }
    }
    if let Some(command) = &args.exec
        && let Err(problem) = run_handler(command, &line).await
    {
        return give_back(
            delivery,
            format!("the --exec handler {problem}; the message was returned to the queue"),
        )
        .await;
    }
    ack(delivery).await?;
    Ok(Handled::Acknowledged)
}

async fn run_handler(command: &str, line: &str) -> Result<(), String> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|error| format!("could not start: {error}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A handler that does not read its input is its own business.
        let _ = stdin.write_all(format!("{line}\n").as_bytes()).await;
    }
    let status = child.wait().await.map_err(|error| error.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("failed ({status})"))
    }
}

async fn ack(delivery: &Delivery) -> Result<(), Failure> {
    delivery
        .ack(BasicAckOptions::default())
        .await
        .map(|_| ())
        .map_err(broker::failed("cannot acknowledge"))
}

/// Returns the message to the queue (a negative acknowledgement with
/// requeue) and reports why the subscriber stops.
async fn give_back(delivery: &Delivery, why: String) -> Result<Handled, Failure> {
    delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        })
        .await
        .map_err(broker::failed("cannot return the message to the queue"))?;
    Ok(Handled::Returned(Failure::runtime(why)))
}
