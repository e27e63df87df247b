//! The subscriber: prints each message as one line of JSON and acknowledges
//! it once handled. After a lost connection it goes on with the next `--url`,
//! which delivers again what was not acknowledged: duplicates are counted.

use std::io::Write;
use std::process::Stdio;

use anyhow::Context;
use clap::Args;
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;
use zmq_chat::amqp::{self, Brokers};
use zmq_chat::bounded::Bounded;
use zmq_chat::display::escape_for_terminal;

use crate::{FAILOVER_WAIT, Stop, declare_fanout, declare_queue, lost};

#[derive(Args, Debug)]
pub struct SubscribeArgs {
    #[command(flatten)]
    target: crate::Target,

    /// Stop after this many messages (duplicates by message_id not counted)
    #[arg(long, value_name = "N")]
    count: Option<u64>,

    /// Messages the broker may send ahead of their acknowledgements
    #[arg(long, value_name = "N", default_value_t = 1)]
    prefetch: u16,

    /// Handle each message with this shell command (its JSON line on
    /// stdin); if it fails, return the message to the queue and stop
    #[arg(long, value_name = "COMMAND")]
    exec: Option<String>,

    /// Acknowledge bodies that are not JSON, printed on stderr (default: stop)
    #[arg(long)]
    skip_invalid: bool,
}

/// The messages received; their ids, the last million, to tell duplicates.
struct Seen {
    ids: Bounded<String>,
    distinct: u64,
    duplicates: u64,
    /// Since when no subscription held (a broker that takes connections but
    /// not subscriptions is given up on after [`FAILOVER_WAIT`]).
    unsubscribed: Option<Instant>,
}

pub async fn run(args: SubscribeArgs) -> anyhow::Result<u8> {
    let mut brokers = Brokers::new(args.target.urls.clone(), None, "zmq-chat amqp");
    let (mut connection, mut channel) = brokers.first().await?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot catch Ctrl-C")?;
    let ids = Bounded::new(1_000_000);
    let (distinct, duplicates, unsubscribed) = (0, 0, None);
    let mut seen = Seen {
        ids,
        distinct,
        duplicates,
        unsubscribed,
    };
    let outcome = loop {
        let consumed = consume(&channel, &args, &mut seen, &mut interrupt).await;
        // Closing gives back to the queue whatever was not acknowledged.
        amqp::close(&connection, "done").await;
        let unsubscribed = seen.unsubscribed.get_or_insert_with(Instant::now).elapsed();
        match consumed {
            Err(error) if !error.is::<Stop>() && unsubscribed < FAILOVER_WAIT => {
                eprintln!("amqp: {error:#}; trying the next broker")
            }
            outcome => break outcome,
        }
        (connection, channel) = args.target.reconnect(&mut brokers).await?;
    };
    if seen.distinct > 0 {
        let (all, again) = (seen.distinct + seen.duplicates, seen.duplicates);
        eprintln!(
            "amqp: received {all} message(s), {again} of them again (duplicates by message_id, after a lost connection)"
        );
    }
    outcome
}

/// Consumes on `channel` until done or interrupted (Ctrl-C); an error
/// other than [`Stop`] is a lost connection.
async fn consume(
    channel: &Channel,
    args: &SubscribeArgs,
    seen: &mut Seen,
    interrupt: &mut Signal,
) -> anyhow::Result<u8> {
    let mut consumer = subscribe(channel, args).await?;
    seen.unsubscribed = None;
    let mut lost = std::pin::pin!(lost(channel));
    while args.count.is_none_or(|count| seen.distinct < count) {
        let delivery = tokio::select! {
            delivery = consumer.next() => delivery,
            error = &mut lost => return Err(error),
            _ = interrupt.recv() => break,
        };
        let delivery = delivery.context("the broker cancelled the subscription")?;
        let delivery = delivery.context("lost the broker")?;
        let id = delivery.properties.message_id().as_ref();
        match id.map(ToString::to_string) {
            Some(id) if seen.ids.contains(&id) => seen.duplicates += 1,
            Some(id) => {
                seen.ids.insert(id, ());
                seen.distinct += 1;
            }
            None => seen.distinct += 1,
        }
        tokio::select! {
            handled = handle(&delivery, args) => handled?,
            error = &mut lost => return Err(error),
        }
    }
    Ok(0)
}

/// Declares what this subscriber reads from, and starts consuming it.
async fn subscribe(channel: &Channel, args: &SubscribeArgs) -> anyhow::Result<Consumer> {
    let target = &args.target;
    let queue = if target.exchange.is_some() && target.queue.is_none() {
        // A queue of its own, deleted with its connection.
        let own = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        let declared = channel
            .queue_declare("".into(), own, FieldTable::default())
            .await;
        let declared = declared.context("cannot declare this subscriber's queue")?;
        declared.name().to_string()
    } else {
        declare_queue(channel, target.queue(), target.quorum).await?;
        target.queue().to_string()
    };
    if let Some(exchange) = &target.exchange {
        declare_fanout(channel, exchange).await?;
        let (queue, exchange) = (queue.as_str().into(), exchange.as_str().into());
        let bind = channel.queue_bind(queue, exchange, "".into(), <_>::default(), <_>::default());
        bind.await
            .context("cannot bind the queue to the exchange")?;
    }
    let consumer = amqp::consume(channel, &queue, args.prefetch).await?;
    eprintln!("amqp: subscribed to queue '{queue}'; waiting for messages (Ctrl-C to stop)");
    Ok(consumer)
}

/// Prints, handles and acknowledges one message; or stops ([`Stop`]),
/// leaving it unacknowledged: closing the connection returns it to the
/// queue, for the next subscriber.
async fn handle(delivery: &Delivery, args: &SubscribeArgs) -> anyhow::Result<()> {
    let line = match serde_json::from_slice::<serde_json::Value>(&delivery.data) {
        Ok(value) => value.to_string(),
        Err(error) => {
            let body = escape_for_terminal(&String::from_utf8_lossy(&delivery.data)).into_owned();
            if !args.skip_invalid {
                return Err(Stop(format!("received a body that is not JSON ({error}): {body}; it was returned to the queue, not acknowledged (remove it, or run with --skip-invalid to log and drop such messages)")).into());
            }
            eprintln!("amqp: skipped a body that is not JSON ({error}): {body}");
            return ack(delivery).await;
        }
    };
    // Line-buffered: the line is out before the message is acknowledged.
    if writeln!(std::io::stdout(), "{line}").is_err() {
        return Err(Stop("stdout is closed".into()).into());
    }
    if let Some(command) = &args.exec
        && let Err(problem) = run_handler(command, &line).await
    {
        let why = format!("the --exec handler {problem}; the message was returned to the queue");
        return Err(Stop(why).into());
    }
    ack(delivery).await
}

async fn ack(delivery: &Delivery) -> anyhow::Result<()> {
    let acked = delivery.ack(Default::default()).await;
    acked.map(drop).context("cannot acknowledge")
}

/// Runs the `--exec` command with `line` on its stdin.
async fn run_handler(command: &str, line: &str) -> Result<(), String> {
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", command])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|error| format!("could not start: {error}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A handler that does not read its input is its own business.
        let _ = stdin.write_all(format!("{line}\n").as_bytes()).await;
    }
    match child.wait().await.map_err(|error| error.to_string())? {
        status if status.success() => Ok(()),
        status => Err(format!("failed ({status})")),
    }
}
