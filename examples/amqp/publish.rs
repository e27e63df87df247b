//! The publisher: validates every message as JSON first (nothing is sent
//! if one is bad), then publishes each as a persistent JSON message and
//! waits for the broker's confirm before the next.

use std::io::BufRead;

use clap::Args;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation};

use crate::broker::{self, Failure, Target};

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
}

/// Persistent, as pika's `delivery_mode=2`.
const PERSISTENT: u8 = 2;

pub async fn run(args: PublishArgs) -> Result<u8, Failure> {
    let bodies = if !args.text.is_empty() {
        args.text
            .iter()
            .map(|text| {
                serde_json::Value::String(text.clone())
                    .to_string()
                    .into_bytes()
            })
            .collect()
    } else {
        let texts = if args.messages.is_empty() {
            read_stdin_lines()?
        } else {
            args.messages.clone()
        };
        texts
            .iter()
            .enumerate()
            .map(|(index, text)| compact_json(text, index + 1))
            .collect::<Result<Vec<_>, _>>()?
    };

    let (connection, channel) = broker::open_channel(&args.target.url).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(broker::failed("the broker refused publisher confirms"))?;
    let (exchange, routing_key, destination) = match &args.target.exchange {
        Some(exchange) => {
            broker::declare_fanout(&channel, exchange).await?;
            (
                exchange.as_str(),
                "",
                format!("fanout exchange '{exchange}'"),
            )
        }
        None => {
            let queue = args.target.queue_or_default();
            broker::declare_queue(&channel, queue).await?;
            ("", queue, format!("queue '{queue}'"))
        }
    };
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(PERSISTENT);
    let mut unrouted = 0;
    for (index, body) in bodies.iter().enumerate() {
        let number = index + 1;
        let confirmation = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                // Mandatory: a message no queue takes comes back, so it is reported.
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties.clone(),
            )
            .await
            .map_err(broker::failed("cannot publish"))?
            .await
            .map_err(broker::failed("no confirm from the broker"))?;
        match confirmation {
            Confirmation::Ack(None) => {}
            Confirmation::Ack(Some(_)) => {
                unrouted += 1;
                eprintln!(
                    "amqp: message {number} reached no queue: nothing is bound to {destination} (start a subscriber first, or give it --queue to keep messages while it is away)"
                );
            }
            Confirmation::Nack(_) | Confirmation::NotRequested => {
                return Err(Failure::runtime(format!(
                    "the broker did not take message {number} (negative confirm); it and the {} after it were not published",
                    bodies.len() - number
                )));
            }
        }
    }
    let _ = connection.close(200, "done".into()).await;
    eprintln!(
        "amqp: published {} message(s) to {destination}, each confirmed by the broker{}",
        bodies.len(),
        match unrouted {
            0 => String::new(),
            count => format!("; {count} reached no queue"),
        }
    );
    Ok(if unrouted == 0 {
        broker::EXIT_OK
    } else {
        broker::EXIT_FAILURE
    })
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
