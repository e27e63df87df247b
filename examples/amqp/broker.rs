//! What publisher and subscriber share: the broker flags, connecting with a
//! deadline, declaring the queue or exchange, and errors a user can act on.

use std::time::Duration;

use clap::Args;
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind, ExchangeKind};

/// The broker of a default local RabbitMQ.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The queue the Python `message_queue` examples use.
pub const DEFAULT_QUEUE: &str = "python.publish.test";
/// A broker that has not answered by then is reported, not waited for.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The AMQP heartbeat asked for when the URL names none (`?heartbeat=N`
/// sets another): a connection silent for four half-intervals is taken
/// for dead, so a broker that vanishes without closing the connection is
/// noticed within 10 s instead of RabbitMQ's 60 s default's two minutes.
const HEARTBEAT_SECONDS: u16 = 5;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

pub const EXIT_CODES_HELP: &str = "\
Exit status:
  0    done (publish: every message confirmed; subscribe: --count reached or Ctrl-C)
  1    the broker is unreachable or refused us, a message was not confirmed,
       a received body was not JSON, or the --exec handler failed
  2    a usage error: a message that is not JSON, a malformed broker URL";

/// Where messages go or come from.
#[derive(Args, Clone, Debug)]
pub struct Target {
    /// The broker's URL (amqp://USER:PASSWORD@HOST:PORT/VHOST; %2f is the
    /// default vhost "/"). Give several (the nodes of a cluster): the first
    /// that answers is used, and on losing it the next
    #[arg(long = "url", value_name = "URL", default_value = DEFAULT_URL)]
    pub urls: Vec<String>,

    /// Declare the queue as a quorum queue (x-queue-type: quorum),
    /// replicated over a cluster's nodes; a queue's type is fixed when it
    /// is first declared, so every program using it must agree
    #[arg(long)]
    pub quorum: bool,

    /// After losing the broker, how long to keep trying the URLs before
    /// giving up
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub failover_wait: u64,

    /// The durable queue (with --exchange: the subscriber's own queue, kept
    /// while it is away; without it, a temporary queue is made)
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,

    /// Use this durable fanout exchange: every subscriber gets every message
    #[arg(long, value_name = "NAME")]
    pub exchange: Option<String>,
}

impl Target {
    /// The queue named on the command line, or the default one.
    pub fn queue_or_default(&self) -> &str {
        self.queue.as_deref().unwrap_or(DEFAULT_QUEUE)
    }
}

/// A fatal error: what to tell the user and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    pub fn runtime(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: EXIT_FAILURE,
        }
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: EXIT_USAGE,
        }
    }
}

/// The URL with its password hidden, for messages (the help desk's way).
pub use zmq_chat::desk::redacted;

/// Connects, or says why not: broker down, login refused, bad URL. Never
/// retries in silence.
pub async fn connect(url: &str) -> Result<Connection, Failure> {
    let Ok(mut uri) = url.parse::<lapin::uri::AMQPUri>() else {
        return Err(Failure::usage(format!(
            "'{}' is not an AMQP URL (expected amqp://USER:PASSWORD@HOST:PORT/VHOST)",
            redacted(url)
        )));
    };
    uri.query.heartbeat.get_or_insert(HEARTBEAT_SECONDS);
    let properties =
        ConnectionProperties::default().with_connection_name("zmq-chat amqp example".into());
    let shown = redacted(url);
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(uri, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(Failure::runtime(explain_connect_error(&error, &shown))),
        Err(_) => Err(Failure::runtime(format!(
            "the AMQP broker at {shown} did not answer within {} s; is it running and reachable?",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

fn explain_connect_error(error: &lapin::Error, shown: &str) -> String {
    match error.kind() {
        ErrorKind::IOError(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => format!(
            "cannot reach the AMQP broker at {shown}: connection refused. Is RabbitMQ running? (start a local one with: bash scripts/rabbitmq start)"
        ),
        ErrorKind::ProtocolError(amqp) if amqp.to_string().contains("ACCESS_REFUSED") => format!(
            "the AMQP broker at {shown} refused the login: wrong user name or password (or the user may not use this vhost)"
        ),
        _ => {
            let text = error.to_string();
            if text.contains("ACCESS_REFUSED") || text.contains("403") {
                format!(
                    "the AMQP broker at {shown} refused the login: wrong user name or password (or the user may not use this vhost)"
                )
            } else {
                format!("cannot connect to the AMQP broker at {shown}: {text}")
            }
        }
    }
}

/// Connects and opens the one channel a publisher or subscriber uses.
pub async fn open_channel(url: &str) -> Result<(Connection, Channel), Failure> {
    let connection = connect(url).await?;
    let channel = connection
        .create_channel()
        .await
        .map_err(failed("cannot open a channel"))?;
    Ok((connection, channel))
}

/// The URLs of a [`Target`], tried in turn: the first that answers, and
/// after a lost connection the next ones.
pub struct Brokers {
    urls: Vec<String>,
    /// The URL last connected to.
    current: usize,
    failover_wait: Duration,
}

impl Brokers {
    pub fn new(target: &Target) -> Brokers {
        Brokers {
            urls: target.urls.clone(),
            current: 0,
            failover_wait: Duration::from_secs(target.failover_wait),
        }
    }

    /// The URL in use, passwords hidden.
    pub fn shown(&self) -> String {
        redacted(&self.urls[self.current])
    }

    /// The first URL that answers, in the order given; the last failure if
    /// none does.
    pub async fn first(&mut self) -> Result<(Connection, Channel), Failure> {
        let mut last = None;
        for index in 0..self.urls.len() {
            match open_channel(&self.urls[index]).await {
                Ok(opened) => {
                    self.current = index;
                    return Ok(opened);
                }
                Err(failure) if failure.code == EXIT_USAGE => return Err(failure),
                Err(failure) => last = Some(failure),
            }
        }
        Err(last.unwrap_or_else(|| Failure::usage("no --url given")))
    }

    /// After the connection was lost: the next URLs in turn, the lost one
    /// last, again and again until one answers or the failover wait is over.
    pub async fn next(&mut self) -> Result<(Connection, Channel), Failure> {
        let deadline = tokio::time::Instant::now() + self.failover_wait;
        let lost = self.current;
        loop {
            for step in 1..=self.urls.len() {
                let index = (lost + step) % self.urls.len();
                if let Ok(opened) = open_channel(&self.urls[index]).await {
                    self.current = index;
                    return Ok(opened);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Failure::runtime(format!(
                    "lost the broker at {} and none of the {} URL(s) answered within {} s",
                    redacted(&self.urls[lost]),
                    self.urls.len(),
                    self.failover_wait.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Closes `connection`, waiting a second at most: closing a connection
/// the broker has dropped would wait for an answer that never comes.
pub async fn close(connection: &Connection, reason: &str) {
    let closing = connection.close(200, reason.into());
    let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
}

/// Declares the durable queue (idempotent: the same arguments as pika's
/// `queue_declare(name, durable=True)`), as a quorum queue with `quorum`.
pub async fn declare_queue(channel: &Channel, name: &str, quorum: bool) -> Result<(), Failure> {
    let mut arguments = FieldTable::default();
    if quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .map(|_| ())
        .map_err(|error| {
            let hint = if error.to_string().contains("PRECONDITION_FAILED") {
                " (it exists with another type: a queue's type is fixed when it is first declared, so use --quorum with every program on it, or none)"
            } else {
                ""
            };
            Failure::runtime(format!("cannot declare queue '{name}': {error}{hint}"))
        })
}

/// Declares the durable fanout exchange.
pub async fn declare_fanout(channel: &Channel, name: &str) -> Result<(), Failure> {
    channel
        .exchange_declare(
            name.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|error| {
            Failure::runtime(format!("cannot declare fanout exchange '{name}': {error}"))
        })
}

/// Turns a channel error into a failure naming what was being done.
pub fn failed(doing: &str) -> impl Fn(lapin::Error) -> Failure + '_ {
    move |error| Failure::runtime(format!("{doing}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redacted(DEFAULT_URL), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redacted("amqp://host/%2f"), "amqp://host/%2f");
    }
}
