//! The subscriber: one message at a time (prefetch 1), printed as compact
//! JSON on one stdout line, acknowledged only once handled. Whatever it
//! cannot handle goes back to the queue and the subscriber stops, saying why,
//! so no message is lost and no problem goes unnoticed.

use std::io::Write;
use std::process::Stdio;

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

use crate::broker::{self, Failure, Target};
use zmq_chat::display::escape_for_terminal;

#[derive(Args, Debug)]
pub struct SubscribeArgs {
    #[command(flatten)]
    target: Target,

    /// Stop after this many messages
    #[arg(long, value_name = "N")]
    count: Option<u64>,

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
    let (connection, channel) = broker::open_channel(&args.target.url).await?;
    channel
        .basic_qos(1, BasicQosOptions::default())
        .await
        .map_err(broker::failed("cannot set prefetch 1"))?;
    let queue = subscribe_queue(&channel, &args.target).await?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker::failed("cannot consume"))?;
    eprintln!("amqp: subscribed to queue '{queue}'; waiting for messages (Ctrl-C to stop)");

    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| Failure::runtime(e.to_string()))?;
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| Failure::runtime(e.to_string()))?;
    let mut received = 0u64;
    let outcome = loop {
        if args.count.is_some_and(|count| received >= count) {
            break Ok(broker::EXIT_OK);
        }
        let delivery = tokio::select! {
            delivery = consumer.next() => delivery,
            _ = interrupt.recv() => break Ok(broker::EXIT_OK),
            _ = terminate.recv() => break Ok(broker::EXIT_OK),
        };
        let delivery = match delivery {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => break Err(Failure::runtime(format!("lost the broker: {error}"))),
            None => break Err(Failure::runtime("the broker cancelled the subscription")),
        };
        received += 1;
        match handle(&delivery, &args).await? {
            Handled::Acknowledged => {}
            Handled::Returned(failure) => break Err(failure),
        }
    };
    // Closing returns any unacknowledged message to the queue.
    let _ = connection.close(200, "done".into()).await;
    outcome
}

/// Declares what this subscriber reads from; returns the queue's name.
async fn subscribe_queue(channel: &Channel, target: &Target) -> Result<String, Failure> {
    let Some(exchange) = &target.exchange else {
        let queue = target.queue_or_default();
        broker::declare_queue(channel, queue).await?;
        return Ok(queue.to_string());
    };
    broker::declare_fanout(channel, exchange).await?;
    let queue = match &target.queue {
        Some(queue) => {
            broker::declare_queue(channel, queue).await?;
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
