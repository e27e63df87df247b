//! The publisher: validates every message as JSON first (nothing is sent
//! if one is bad), then publishes each as a persistent JSON message with a
//! `message_id`, keeping up to `--in-flight` of them unconfirmed at a time,
//! and reports success only once the broker has confirmed every one.
//!
//! When the connection is lost it connects to the next `--url` and
//! publishes again every message not yet confirmed: at least once, so a
//! message may arrive twice (its `message_id` lets a subscriber tell).

use std::collections::VecDeque;
use std::io::BufRead;

use clap::Args;
use lapin::PublisherConfirm;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};

use crate::broker::{self, Brokers, Failure, Target};

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

    /// Messages published ahead of their confirms, at most (1: wait for
    /// each confirm before the next; 0: no confirms at all, for comparison
    /// only, since then nothing is known to have arrived)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_IN_FLIGHT)]
    in_flight: usize,
}

/// The default window of unconfirmed messages. Measured on one local node,
/// 10,000 persistent messages: 16 in flight 11,000/s, 64 14,000/s, 256
/// 19,000/s, 1024 24,000/s, 4096 23,000/s; without confirms 28,000/s.
const DEFAULT_IN_FLIGHT: usize = 1024;

/// How often a wait for a confirm looks whether the connection is still up.
const CONFIRM_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// Persistent, as pika's `delivery_mode=2`.
const PERSISTENT: u8 = 2;

/// What became of each message, by its index.
#[derive(Clone, Copy, PartialEq)]
enum Fate {
    /// Not confirmed yet: never sent, in flight, lost with a connection, or
    /// refused by the broker (a negative confirm, as a quorum queue gives
    /// while it elects a leader), and so to be published again.
    Pending,
    Confirmed,
    /// Confirmed, but no queue took it (nothing bound to the exchange).
    Unrouted,
}

pub async fn run(args: PublishArgs) -> Result<u8, Failure> {
    let bodies = bodies(&args)?;
    let mut brokers = Brokers::new(&args.target);
    let mut opened = brokers.first().await?;
    // Each message's id: this run's, then its number.
    let run = format!("{:08x}", rand_u32());
    let mut fates = vec![Fate::Pending; bodies.len()];
    let mut republished = 0usize;
    let mut attempt = 0;
    // Refused messages are published again until this long has passed
    // since the last progress.
    let patience = std::time::Duration::from_secs(args.target.failover_wait);
    let mut progress_at = tokio::time::Instant::now();
    let mut last_refused = usize::MAX;
    let destination = loop {
        let (connection, channel) = opened;
        let outcome = publish_pending(&channel, &args, &bodies, &run, &mut fates).await;
        match outcome {
            Ok((destination, refused)) if refused > 0 => {
                let now = tokio::time::Instant::now();
                // Some were confirmed this pass: the broker is getting there.
                if refused < last_refused {
                    progress_at = now;
                }
                last_refused = refused;
                if now.duration_since(progress_at) >= patience {
                    broker::close(&connection, "done").await;
                    break destination;
                }
                eprintln!(
                    "amqp: the broker refused {refused} message(s) (a negative confirm: a quorum queue electing a leader, say); publishing them again"
                );
                republished += refused;
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                // On a fresh channel: one that saw the queue's leader go can
                // go on being refused after a new one is elected.
                let _ = channel.close(200, "refused".into()).await;
                opened = match connection.create_channel().await {
                    Ok(fresh) => (connection, fresh),
                    Err(error) => {
                        broker::close(&connection, "failing over").await;
                        eprintln!(
                            "amqp: cannot open a new channel ({error}); trying the next broker"
                        );
                        brokers.next().await?
                    }
                };
            }
            Ok((destination, _)) => {
                broker::close(&connection, "done").await;
                break destination;
            }
            Err(Lost { failure, in_doubt }) => {
                broker::close(&connection, "failing over").await;
                if args.in_flight == 0 {
                    return Err(failure);
                }
                eprintln!(
                    "amqp: {}; {in_doubt} message(s) not yet confirmed will be published again",
                    failure.message
                );
                republished += in_doubt;
                attempt += 1;
                opened = brokers.next().await?;
                eprintln!(
                    "amqp: connected to {} (failover {attempt}); resuming",
                    brokers.shown()
                );
            }
        }
    };
    report(&fates, &destination, republished, args.in_flight)
}

/// A lost connection: why, and how many messages were in flight on it.
struct Lost {
    failure: Failure,
    in_doubt: usize,
}

/// How many messages are still to be confirmed.
fn pending_count(fates: &[Fate]) -> usize {
    fates.iter().filter(|fate| **fate == Fate::Pending).count()
}

/// Publishes every message still pending on `channel`, keeping at most
/// `--in-flight` unconfirmed; returns where they went and how many the
/// broker refused (still pending).
async fn publish_pending(
    channel: &Channel,
    args: &PublishArgs,
    bodies: &[Vec<u8>],
    run: &str,
    fates: &mut [Fate],
) -> Result<(String, usize), Lost> {
    let lost = |failure: Failure, in_doubt: usize| Lost { failure, in_doubt };
    // Once per channel: one used again (after refusals) has them on.
    if args.in_flight > 0 && !channel.status().confirm() {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|error| {
                lost(
                    broker::failed("cannot turn on publisher confirms")(error),
                    0,
                )
            })?;
    }
    let (exchange, routing_key, destination) = match &args.target.exchange {
        Some(exchange) => {
            broker::declare_fanout(channel, exchange)
                .await
                .map_err(|failure| lost(failure, 0))?;
            (
                exchange.as_str(),
                "",
                format!("fanout exchange '{exchange}'"),
            )
        }
        None => {
            let queue = args.target.queue_or_default();
            broker::declare_queue(channel, queue, args.target.quorum)
                .await
                .map_err(|failure| lost(failure, 0))?;
            ("", queue, format!("queue '{queue}'"))
        }
    };
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(PERSISTENT);
    let progress_every = (bodies.len() / 10).max(1000);
    let mut done = bodies.len() - pending_count(fates);
    let mut refused = 0;
    let mut in_flight: VecDeque<(usize, PublisherConfirm)> = VecDeque::new();
    let pending: Vec<usize> = (0..bodies.len())
        .filter(|&index| fates[index] == Fate::Pending)
        .collect();
    let mut pending = pending.into_iter();
    loop {
        // The window is full, or nothing is left to send: take a confirm.
        if in_flight.len() >= args.in_flight.max(1) || pending.len() == 0 {
            let Some((index, confirm)) = in_flight.pop_front() else {
                break;
            };
            let confirmation = match watching(channel, confirm).await {
                Some(Ok(confirmation)) => confirmation,
                Some(Err(error)) => {
                    let failure = broker::failed("lost the broker")(error);
                    return Err(lost(failure, in_flight.len() + 1));
                }
                None => {
                    let failure = Failure::runtime("lost the broker (the channel closed)");
                    return Err(lost(failure, in_flight.len() + 1));
                }
            };
            fates[index] = fate(confirmation);
            if fates[index] == Fate::Pending {
                refused += 1;
                continue;
            }
            done += 1;
            if done.is_multiple_of(progress_every) && done < bodies.len() {
                eprintln!("amqp: {done} of {} confirmed", bodies.len());
            }
            continue;
        }
        let Some(index) = pending.next() else {
            continue;
        };
        let publish = channel.basic_publish(
            exchange.into(),
            routing_key.into(),
            // Mandatory: a message no queue takes comes back, so it is reported.
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &bodies[index],
            properties
                .clone()
                .with_message_id(format!("{run}-{}", index + 1).into()),
        );
        let Some(published) = watching(channel, publish).await else {
            let failure = Failure::runtime("lost the broker (the channel closed)");
            return Err(lost(failure, in_flight.len() + 1));
        };
        match published {
            Ok(confirm) if args.in_flight == 0 => {
                drop(confirm);
                fates[index] = Fate::Confirmed;
            }
            Ok(confirm) => in_flight.push_back((index, confirm)),
            Err(error) => {
                let failure = broker::failed("lost the broker")(error);
                return Err(lost(failure, in_flight.len() + 1));
            }
        }
    }
    Ok((destination, refused))
}

/// Awaits `future` while `channel` is up: `None` once it is not. A publish
/// or a confirm under way when the connection is lost may otherwise never
/// resolve.
async fn watching<F: std::future::Future>(channel: &Channel, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    loop {
        match tokio::time::timeout(CONFIRM_CHECK, &mut future).await {
            Ok(output) => return Some(output),
            Err(_) if !channel.status().connected() => return None,
            Err(_) => {}
        }
    }
}

/// What a confirm says of a message.
fn fate(confirmation: Confirmation) -> Fate {
    match confirmation {
        Confirmation::Ack(None) | Confirmation::NotRequested => Fate::Confirmed,
        Confirmation::Ack(Some(_)) => Fate::Unrouted,
        Confirmation::Nack(_) => Fate::Pending,
    }
}

/// Message numbers (from 1) as ranges, `3, 7–9, 12`, at most a few.
fn numbers(indexes: impl Iterator<Item = usize>) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for number in indexes.map(|index| index + 1) {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == number => *end = number,
            _ => ranges.push((number, number)),
        }
    }
    let shown: Vec<String> = ranges
        .iter()
        .take(10)
        .map(|&(start, end)| match start == end {
            true => start.to_string(),
            false => format!("{start}–{end}"),
        })
        .collect();
    let more = if ranges.len() > 10 { ", …" } else { "" };
    format!("{}{more}", shown.join(", "))
}

fn report(
    fates: &[Fate],
    destination: &str,
    republished: usize,
    in_flight: usize,
) -> Result<u8, Failure> {
    let which = |wanted: Fate| {
        let indexes = fates
            .iter()
            .enumerate()
            .filter(move |(_, fate)| **fate == wanted);
        indexes.map(|(index, _)| index)
    };
    let (unrouted, refused) = (which(Fate::Unrouted).count(), which(Fate::Pending).count());
    if unrouted > 0 {
        eprintln!(
            "amqp: message(s) {} reached no queue: nothing is bound to {destination} (start a subscriber first, or give it --queue to keep messages while it is away)",
            numbers(which(Fate::Unrouted))
        );
    }
    if refused > 0 {
        eprintln!(
            "amqp: the broker kept refusing message(s) {} (negative confirms); they were not published",
            numbers(which(Fate::Pending))
        );
    }
    let confirmation = if in_flight == 0 {
        "without confirms (none is known to have arrived)"
    } else {
        "each confirmed by the broker"
    };
    let mut notes = Vec::new();
    if republished > 0 {
        notes.push(format!(
            "{republished} published again after a lost connection or a refusal (a subscriber may see some twice)"
        ));
    }
    if unrouted > 0 {
        notes.push(format!("{unrouted} reached no queue"));
    }
    if refused > 0 {
        notes.push(format!("{refused} refused by the broker"));
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!("; {}", notes.join("; "))
    };
    eprintln!(
        "amqp: published {} message(s) to {destination}, {confirmation}{notes}",
        fates.len()
    );
    Ok(if unrouted + refused == 0 {
        broker::EXIT_OK
    } else {
        broker::EXIT_FAILURE
    })
}

/// A number unlikely to repeat between runs, for message ids.
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now()) as u32
}

/// The message bodies, compact JSON, all checked before any is sent.
fn bodies(args: &PublishArgs) -> Result<Vec<Vec<u8>>, Failure> {
    if !args.text.is_empty() {
        return Ok(args
            .text
            .iter()
            .map(|text| {
                serde_json::Value::String(text.clone())
                    .to_string()
                    .into_bytes()
            })
            .collect());
    }
    let texts = if args.messages.is_empty() {
        read_stdin_lines()?
    } else {
        args.messages.clone()
    };
    texts
        .iter()
        .enumerate()
        .map(|(index, text)| compact_json(text, index + 1))
        .collect()
}

fn read_stdin_lines() -> Result<Vec<String>, Failure> {
    let mut lines = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|error| Failure::runtime(format!("cannot read stdin: {error}")))?;
        if !line.trim().is_empty() {
            lines.push(line);
        }
    }
    Ok(lines)
}

/// Parses one message and writes it back compactly (keys keep their order).
fn compact_json(text: &str, number: usize) -> Result<Vec<u8>, Failure> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|error| {
        Failure::usage(format!(
            "message {number} is not JSON ({error}); nothing was published: {}",
            zmq_chat::display::escape_for_terminal(text)
        ))
    })?;
    serde_json::to_vec(&value).map_err(|error| Failure::usage(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_compacted_with_its_key_order_kept() {
        let compact = compact_json(r#"{ "b": 1, "a": [1, 2] }"#, 1).unwrap();
        assert_eq!(compact, br#"{"b":1,"a":[1,2]}"#);
        let error = compact_json("{oops", 3).unwrap_err();
        assert_eq!(error.code, crate::broker::EXIT_USAGE);
        assert!(
            error.message.starts_with("message 3 is not JSON"),
            "{}",
            error.message
        );
    }
}
