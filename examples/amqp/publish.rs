//! The publisher: checks every message is JSON before sending any, then
//! publishes until the broker confirmed each; what a lost connection or a
//! refusal left unconfirmed goes again, to the next broker: at least once.

use std::io::BufRead;

use anyhow::Context;
use clap::Args;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::time::Instant;
use zmq_chat::amqp::{self, Brokers};

use crate::{FAILOVER_WAIT, Stop, Target, Usage, declare_fanout, declare_queue, watching};

#[derive(Args, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    target: Target,

    /// The messages, each one JSON value; none: read stdin, one JSON value
    /// per line (blank lines skipped)
    #[arg(value_name = "JSON")]
    messages: Vec<String>,

    /// Publish TEXT as a JSON string (`hello` goes out as `"hello"`); may be
    /// given several times
    #[arg(long, value_name = "TEXT", conflicts_with = "messages")]
    text: Vec<String>,

    /// Messages published ahead of their confirms, at most
    #[arg(long, value_name = "N", default_value_t = 1024)]
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    in_flight: u32,
}

pub async fn run(args: PublishArgs) -> anyhow::Result<u8> {
    let mut batch = Batch::new(bodies(&args)?);
    let mut brokers = Brokers::new(args.target.urls.clone(), None, "zmq-chat amqp");
    let (mut connection, mut channel) = brokers.first().await?;
    let mut progress_at = Instant::now();
    loop {
        let before = batch.confirmed;
        let passed = batch.publish(&channel, &args).await;
        amqp::close(&connection, "done").await;
        if batch.confirmed > before {
            progress_at = Instant::now();
        }
        let left = batch.done.len() - batch.confirmed;
        let why = match passed {
            // Refusals are published again until this long without progress.
            Ok(()) if left == 0 || progress_at.elapsed() >= FAILOVER_WAIT => break,
            Ok(()) => {
                format!("the broker refused {left} message(s) (a quorum queue electing a leader?)")
            }
            Err(error) if error.is::<Stop>() || progress_at.elapsed() >= FAILOVER_WAIT => {
                return Err(error);
            }
            Err(error) => format!("{error:#}"),
        };
        eprintln!("amqp: {why}; publishing again the {left} not confirmed");
        (connection, channel) = args.target.reconnect(&mut brokers).await?;
    }
    Ok(batch.report(&args.target))
}

/// The messages of one run, and which the broker confirmed.
struct Batch {
    bodies: Vec<Vec<u8>>,
    done: Vec<bool>,
    /// What every message id starts with: this run's number.
    run: String,
    confirmed: usize,
    /// Confirmed, but taken by no queue (nothing bound to the exchange).
    unrouted: usize,
}

impl Batch {
    fn new(bodies: Vec<Vec<u8>>) -> Batch {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let run = format!("{:x}", now.unwrap_or_default().as_nanos() >> 10);
        let done = vec![false; bodies.len()];
        let (confirmed, unrouted) = (0, 0);
        Batch {
            bodies,
            done,
            run,
            confirmed,
            unrouted,
        }
    }

    /// Publishes on `channel` every message not yet confirmed,
    /// `--in-flight` at a time before awaiting their confirms.
    async fn publish(&mut self, channel: &Channel, args: &PublishArgs) -> anyhow::Result<()> {
        let target = &args.target;
        let (exchange, routing_key) = match &target.exchange {
            Some(exchange) => {
                declare_fanout(channel, exchange).await?;
                (exchange.as_str(), "")
            }
            None => {
                declare_queue(channel, target.queue(), target.quorum).await?;
                ("", target.queue())
            }
        };
        // Mandatory: a message no queue takes comes back, to be reported.
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let unconfirmed: Vec<usize> = (0..self.done.len()).filter(|&i| !self.done[i]).collect();
        for window in unconfirmed.chunks(args.in_flight as usize) {
            let mut confirms = Vec::with_capacity(window.len());
            for &index in window {
                let properties = BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2) // persistent, as pika's delivery_mode=2
                    .with_message_id(format!("{}-{}", self.run, index + 1).into());
                let body = &self.bodies[index];
                let publish = channel.basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    mandatory,
                    body,
                    properties,
                );
                confirms.push(watching(channel, publish).await?);
            }
            for (&index, confirm) in window.iter().zip(confirms) {
                match watching(channel, confirm).await? {
                    Confirmation::Nack(_) => continue, // refused: published again
                    Confirmation::Ack(Some(_returned)) => self.unrouted += 1,
                    Confirmation::Ack(None) | Confirmation::NotRequested => {}
                }
                self.done[index] = true;
                self.confirmed += 1;
                let (confirmed, all) = (self.confirmed, self.done.len());
                if confirmed.is_multiple_of((all / 10).max(1000)) && confirmed < all {
                    eprintln!("amqp: {confirmed} of {all} confirmed");
                }
            }
        }
        Ok(())
    }

    /// Says what became of the messages; the exit code.
    fn report(&self, target: &Target) -> u8 {
        let destination = match &target.exchange {
            Some(exchange) => format!("fanout exchange '{exchange}'"),
            None => format!("queue '{}'", target.queue()),
        };
        let (all, unrouted) = (self.done.len(), self.unrouted);
        let refused = all - self.confirmed;
        let mut said = format!("amqp: published {all} message(s) to {destination}");
        if unrouted + refused == 0 {
            said += ", each confirmed by the broker";
        }
        if unrouted > 0 {
            said += &format!(
                "; {unrouted} reached no queue: nothing is bound to {destination} (start a subscriber first, or give it --queue to keep messages while it is away)"
            );
        }
        if refused > 0 {
            said += &format!("; the broker kept refusing {refused} (negative confirms)");
        }
        eprintln!("{said}");
        u8::from(unrouted + refused > 0)
    }
}

/// The message bodies, compact JSON, every one checked before any is sent.
fn bodies(args: &PublishArgs) -> anyhow::Result<Vec<Vec<u8>>> {
    let json_string = |text: &String| serde_json::Value::String(text.clone()).to_string();
    let texts: Vec<String> = if !args.text.is_empty() {
        args.text.iter().map(json_string).collect()
    } else if args.messages.is_empty() {
        let lines: Result<Vec<String>, _> = std::io::stdin().lock().lines().collect();
        let lines = lines.context("cannot read stdin")?.into_iter();
        lines.filter(|line| !line.trim().is_empty()).collect()
    } else {
        args.messages.clone()
    };
    let compact = |(index, text): (usize, &String)| {
        let value = serde_json::from_str::<serde_json::Value>(text).map_err(|error| {
            let (number, shown) = (index + 1, zmq_chat::display::escape_for_terminal(text));
            Usage(format!(
                "message {number} is not JSON ({error}); nothing was published: {shown}"
            ))
        })?;
        Ok(value.to_string().into_bytes())
    };
    texts.iter().enumerate().map(compact).collect()
}
