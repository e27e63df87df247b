//! Connecting to AMQP brokers (RabbitMQ), written once for the help desk
//! and the `amqp` example: the URLs of a cluster's nodes tried in turn,
//! TLS with certificate authorities of one's own, a heartbeat that notices
//! a broker gone silent, a deadline on connecting, and errors that say
//! what to do. Passwords never reach a message ([`redacted`]).

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, Consumer, ErrorKind, Queue};

use crate::transport::TransportError;

/// A broker that has not answered by then is reported, not waited for.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The AMQP heartbeat asked for when the URL names none (`?heartbeat=N`
/// sets another): a broker gone without closing the connection is noticed
/// in 10 s, not RabbitMQ's default two minutes.
const HEARTBEAT_SECONDS: u16 = 5;

/// The URL with its password hidden, for messages.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

/// The brokers a program may use (one, or the nodes of a cluster), and
/// which one it is connected to.
#[derive(Clone, Debug)]
pub struct Brokers {
    urls: Vec<String>,
    /// The URL connected to, or last tried.
    current: usize,
    /// Certificate authorities (PEM) trusted besides the system's, for
    /// `amqps://` brokers.
    ca: Option<String>,
    /// Who connects, as the broker's list of connections shows it.
    who: String,
}

impl Brokers {
    /// The brokers of `urls` (at least one), connecting as `who`.
    pub fn new(urls: Vec<String>, ca: Option<String>, who: &str) -> Brokers {
        Brokers {
            urls,
            current: 0,
            ca,
            who: who.to_string(),
        }
    }

    /// The broker connected to (or last tried), its password hidden.
    pub fn shown(&self) -> String {
        self.urls
            .get(self.current)
            .map_or_else(String::new, |url| redacted(url))
    }

    /// How many brokers are named.
    pub fn count(&self) -> usize {
        self.urls.len()
    }

    /// Connects to the first broker that answers, in the order named, and
    /// opens its channel with publisher confirms on.
    ///
    /// # Errors
    /// A URL that does not parse (at once); else the last broker's error,
    /// when none answers.
    pub async fn first(&mut self) -> Result<(Connection, Channel), TransportError> {
        let mut last = TransportError::Refused {
            what: "no broker named".into(),
        };
        for index in 0..self.urls.len() {
            self.current = index;
            match open(&self.urls[index], self.ca.as_deref(), &self.who).await {
                Ok(opened) => return Ok(opened),
                Err(error @ TransportError::BrokerUrl { .. }) => return Err(error),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    /// After the connection was lost: one try at the next broker named
    /// (the one lost last, when only one is). The caller decides how long
    /// to go on trying, and what to do meanwhile.
    ///
    /// # Errors
    /// That broker's error.
    pub async fn next(&mut self) -> Result<(Connection, Channel), TransportError> {
        self.current = (self.current + 1) % self.urls.len().max(1);
        let url = self.urls.get(self.current).ok_or(TransportError::Refused {
            what: "no broker named".into(),
        })?;
        open(url, self.ca.as_deref(), &self.who).await
    }
}

/// Connects to `url` as `who` and opens the one channel, with publisher
/// confirms. An `amqps://` broker's certificate must be signed by the
/// system's authorities or those of `ca` (PEM), for the URL's host.
async fn open(
    url: &str,
    ca: Option<&str>,
    who: &str,
) -> Result<(Connection, Channel), TransportError> {
    let shown = redacted(url);
    let mut uri = url
        .parse::<lapin::uri::AMQPUri>()
        .map_err(|_| TransportError::BrokerUrl { url: shown.clone() })?;
    uri.query.heartbeat.get_or_insert(HEARTBEAT_SECONDS);
    let properties = ConnectionProperties::default().with_connection_name(who.into());
    let tls = OwnedTLSConfig {
        identity: None,
        cert_chain: ca.map(str::to_string),
    };
    let runtime =
        lapin::runtime::default_runtime().map_err(failed("cannot start the broker's I/O"))?;
    let connecting = Connection::connect_uri_with_config(uri, properties, tls, runtime);
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| TransportError::BrokerSilent {
            broker: shown.clone(),
            seconds: CONNECT_TIMEOUT.as_secs(),
        })?
        .map_err(|cause| refused(cause, &shown))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(failed("cannot open a channel"))?;
    channel
        .confirm_select(Default::default())
        .await
        .map_err(failed("cannot turn on publisher confirms"))?;
    Ok((connection, channel))
}

/// Why the connection to `shown` failed, and what to do: a refused
/// connection or login is said in full (lapin's words add nothing); a
/// certificate refused gets a hint and keeps its cause.
fn refused(cause: lapin::Error, shown: &str) -> TransportError {
    let text = cause.to_string();
    let refused = |what: String| TransportError::Refused { what };
    if matches!(cause.kind(), ErrorKind::IOError(io) if io.kind() == std::io::ErrorKind::ConnectionRefused)
    {
        return refused(format!(
            "cannot connect to the broker at {shown}: connection refused; is RabbitMQ running there?"
        ));
    }
    if text.contains("ACCESS_REFUSED") || text.contains("403") {
        return refused(format!(
            "the broker at {shown} refused the login: wrong user name or password (or the user may not use this vhost)"
        ));
    }
    let hint = if text.contains("UnknownIssuer") || text.contains("unknown issuer") {
        " (its TLS certificate is signed by an authority you do not trust: --ca FILE names one)"
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        " (its TLS certificate is not for that host name: use the name the certificate is for)"
    } else {
        ""
    };
    TransportError::Broker {
        doing: format!("cannot connect to the broker at {shown}{hint}"),
        cause: Box::new(cause),
    }
}

/// Declares the durable queue `name` with `arguments`, as a quorum queue
/// (replicated over a cluster's nodes) with `quorum`; what the broker says
/// of it. Declaring a queue that exists with the same type and arguments
/// changes nothing; with others, the broker refuses and closes the channel.
///
/// # Errors
/// The broker's refusal.
pub async fn declare_durable(
    channel: &Channel,
    name: &str,
    quorum: bool,
    mut arguments: FieldTable,
) -> lapin::Result<Queue> {
    if quorum {
        let kind = AMQPValue::LongString("quorum".into());
        arguments.insert("x-queue-type".into(), kind);
    }
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel.queue_declare(name.into(), durable, arguments).await
}

/// Starts consuming `queue` on `channel`, the broker handing over at most
/// `prefetch` messages not yet acknowledged (a limit per consumer).
///
/// # Errors
/// The broker's refusal.
pub async fn consume(
    channel: &Channel,
    queue: &str,
    prefetch: u16,
) -> Result<Consumer, TransportError> {
    let qos = channel.basic_qos(prefetch, Default::default()).await;
    qos.map_err(failed("cannot set the prefetch"))?;
    let consuming = channel.basic_consume(
        queue.into(),
        "".into(),
        Default::default(),
        FieldTable::default(),
    );
    let doing = format!("cannot consume from the queue {queue}");
    consuming.await.map_err(failed(&doing))
}

/// Closes `connection`, waiting a second at most: a broker gone would never
/// answer the close.
pub async fn close(connection: &Connection, reason: &str) {
    let closing = connection.close(200, reason.into());
    let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
}

/// Turns a broker error into a transport error naming what was done.
pub fn failed(doing: &str) -> impl Fn(lapin::Error) -> TransportError + '_ {
    move |cause| TransportError::Broker {
        doing: doing.to_string(),
        cause: Box::new(cause),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redacted("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redacted("amqp://host"), "amqp://host");
    }

    #[test]
    fn a_url_that_does_not_parse_is_said_so_before_any_other_is_tried() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut brokers = Brokers::new(
            vec!["http://ann:s3cret@host".into(), "amqp://127.0.0.1:1".into()],
            None,
            "test",
        );
        let error = runtime.block_on(brokers.first()).unwrap_err();
        assert!(
            matches!(&error, TransportError::BrokerUrl { url } if url == "http://ann:***@host"),
            "{error}"
        );
    }
}
