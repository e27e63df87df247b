//! Publish/subscribe through an AMQP 0.9.1 broker (RabbitMQ), which keeps
//! messages on disk while nobody reads them. As the Python `message_queue`
//! library: JSON bodies, persistent, to the durable queue the routing key
//! names (`python.publish.test`), confirmed; the subscriber takes one at a
//! time and acknowledges it once handled. Connecting (several `--url`s in
//! turn, heartbeats, errors) is the help desk's code, `zmq_chat::amqp`.
//!
//! ```sh
//! bash scripts/rabbitmq start                                     # a local broker
//! cargo run --features amqp --example amqp -- subscribe           # terminal 1
//! cargo run --features amqp --example amqp -- publish '{"hello": "world"}'
//! ```

mod publish;
mod subscribe;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser};
use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ExchangeKind};
use tokio::time::Instant;
use zmq_chat::amqp::{self, Brokers};
use zmq_chat::transport::TransportError;

/// Publish or subscribe to JSON messages through an AMQP broker (RabbitMQ).
#[derive(Parser)]
#[command(after_help = "\
Exit status:
  0    done (publish: every message confirmed; subscribe: --count reached or Ctrl-C)
  1    the broker is unreachable or refused us, a message was not confirmed,
       a received body was not JSON, or the --exec handler failed
  2    a usage error: a message that is not JSON, a malformed broker URL")]
enum Role {
    /// Publish JSON messages (the arguments, or one a stdin line), confirmed
    Publish(publish::PublishArgs),
    /// Print each message's JSON on one stdout line, acknowledged once handled
    Subscribe(subscribe::SubscribeArgs),
}

/// After losing the broker, how long to try the URLs again: a node
/// restarted, or a cluster electing new queue leaders, is back well within.
const FAILOVER_WAIT: Duration = Duration::from_secs(30);

/// Where messages go or come from.
#[derive(Args, Debug)]
pub struct Target {
    /// The broker's URL (amqp://USER:PASSWORD@HOST:PORT/VHOST; %2f is the
    /// vhost "/"). Give several (a cluster's nodes): the first that answers
    /// is used, and on losing it the next
    #[arg(long = "url", value_name = "URL")]
    #[arg(default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    urls: Vec<String>,

    /// Declare the queue as a quorum queue, replicated over a cluster's
    /// nodes (every program on a queue must agree on its type)
    #[arg(long)]
    quorum: bool,

    /// The durable queue (with --exchange: the subscriber's own, kept while
    /// it is away; without it, a temporary one)
    #[arg(long, value_name = "NAME")]
    queue: Option<String>,

    /// Use this durable fanout exchange: every subscriber gets every message
    #[arg(long, value_name = "NAME")]
    exchange: Option<String>,
}

impl Target {
    /// The queue named, or the one the Python examples use.
    fn queue(&self) -> &str {
        self.queue.as_deref().unwrap_or("python.publish.test")
    }

    /// After a lost connection: the next URLs in turn until one answers,
    /// for up to [`FAILOVER_WAIT`].
    async fn reconnect(&self, brokers: &mut Brokers) -> anyhow::Result<(Connection, Channel)> {
        let deadline = Instant::now() + FAILOVER_WAIT;
        loop {
            match brokers.next().await {
                Ok(opened) => {
                    eprintln!("amqp: connected to {}; resuming", brokers.shown());
                    return Ok(opened);
                }
                Err(error) if Instant::now() >= deadline => return Err(error.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// Declares the durable queue `name`, as pika's `queue_declare(name, durable=True)`.
async fn declare_queue(channel: &Channel, name: &str, quorum: bool) -> anyhow::Result<()> {
    let declared = amqp::declare_durable(channel, name, quorum, FieldTable::default()).await;
    match declared {
        Ok(_) => Ok(()),
        Err(error) if error.to_string().contains("PRECONDITION_FAILED") => Err(Stop(format!(
            "queue '{name}' exists as another type (fixed when first declared): use --quorum with every program on it, or none"
        )).into()),
        Err(error) => Err(error).context(format!("cannot declare queue '{name}'")),
    }
}

/// Declares the durable fanout exchange `name`.
async fn declare_fanout(channel: &Channel, name: &str) -> anyhow::Result<()> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let fanout = ExchangeKind::Fanout;
    let declared = channel.exchange_declare(name.into(), fanout, options, FieldTable::default());
    let doing = || format!("cannot declare fanout exchange '{name}'");
    declared.await.with_context(doing)
}

/// Resolves once `channel` is no longer connected, raced against waits on
/// the broker: some were seen never to end when a node was killed.
async fn lost(channel: &Channel) -> anyhow::Error {
    let mut check = tokio::time::interval(Duration::from_millis(250));
    while channel.status().connected() {
        check.tick().await;
    }
    anyhow::anyhow!("lost the broker: the connection is closed")
}

/// Awaits `work` on `channel`, or fails once the channel is lost.
async fn watching<T>(
    channel: &Channel,
    work: impl Future<Output = lapin::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        done = work => Ok(done.context("lost the broker")?),
        error = lost(channel) => Err(error),
    }
}

/// What another broker would not mend: the program stops, saying why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Stop(String);

/// A mistake in what the user asked (exit code 2), not the broker's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let outcome = match Role::parse() {
        Role::Publish(args) => publish::run(args).await,
        Role::Subscribe(args) => subscribe::run(args).await,
    };
    let error = match outcome {
        Ok(code) => return ExitCode::from(code),
        Err(error) => error,
    };
    eprintln!("amqp: {error:#}");
    let url = matches!(error.downcast_ref(), Some(TransportError::BrokerUrl { .. }));
    ExitCode::from(if url || error.is::<Usage>() { 2 } else { 1 })
}
