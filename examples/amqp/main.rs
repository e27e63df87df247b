//! Publish/subscribe through an AMQP 0.9.1 broker (RabbitMQ), the road to
//! take when one machine is not enough: the broker stores messages on disk,
//! clusters, and serves many consumers.
//!
//! Messages follow the conventions of the Python `message_queue` library
//! (on top of pika), so Python and Rust programs share one broker: JSON
//! bodies with content type `application/json`, persistent (delivery mode
//! 2), published through the default exchange to a **durable** queue named
//! by the routing key (default `python.publish.test`), with publisher
//! confirms; the subscriber takes one message at a time (prefetch 1) and
//! acknowledges each only after handling it. With `--exchange NAME` both use a
//! durable `fanout` exchange instead, to which each subscriber binds its own
//! queue, so every subscriber gets every message.
//!
//! Beyond one broker: the publisher keeps `--in-flight` messages published
//! ahead of their confirms; `--quorum` declares a quorum queue, replicated
//! over a cluster; several `--url`s are tried in turn, and after a lost
//! connection both sides go on with the next, the publisher publishing again
//! whatever was not confirmed (at least once: each message has a
//! `message_id`, and the subscriber counts the duplicates it sees).
//!
//! Run (the feature keeps the chat's default build free of the async stack):
//!
//! ```sh
//! bash scripts/rabbitmq start                                     # a local broker
//! cargo run --features amqp --example amqp -- subscribe           # terminal 1
//! cargo run --features amqp --example amqp -- publish '{"hello": "world"}'
//! ```

mod broker;
mod publish;
mod subscribe;

use std::process::ExitCode;

use clap::Parser;

/// Publish or subscribe to JSON messages through an AMQP broker (RabbitMQ).
#[derive(Parser)]
#[command(after_help = broker::EXIT_CODES_HELP)]
enum Role {
    /// Publish JSON messages (from the arguments, or one per stdin line);
    /// success means the broker confirmed every one.
    Publish(publish::PublishArgs),
    /// Print each message's JSON on one stdout line, acknowledging it once
    /// handled.
    Subscribe(subscribe::SubscribeArgs),
}

fn main() -> ExitCode {
    let role = Role::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("amqp: cannot start the async runtime: {error}");
            return ExitCode::from(broker::EXIT_FAILURE);
        }
    };
    let outcome = runtime.block_on(async {
        match role {
            Role::Publish(args) => publish::run(args).await,
            Role::Subscribe(args) => subscribe::run(args).await,
        }
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("amqp: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
