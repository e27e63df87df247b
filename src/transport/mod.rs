//! The seam between the chat's two loops and what carries their messages.
//!
//! The client loop ([`crate::client`]) talks to its server through
//! [`ToServer`], the server loop ([`crate::server`]) to its clients through
//! [`ToClients`]. Both deal in the chat's own messages (frames laid out as
//! `crate::envelope` says, each bounded as [`Bounded`] says) and in
//! [`ConnectionEvent`]s; neither names a socket. [`zeromq`] is the
//! implementation the programs use (a DEALER and a ROUTER with the chat's
//! options and a connection monitor); an in-memory one drives the loops'
//! unit tests through every state transition without a socket or a sleep.
//!
//! Waits are short: a `receive` asked to wait returns within one tick
//! ([`crate::clock::TICK`]) with or without a message, so a loop can look at
//! its other sources (the keyboard, Ctrl-C, its timers) at least that often.

pub mod zeromq;

#[cfg(test)]
pub(crate) mod memory;

pub use zeromq::*;

use crate::envelope::MessageId;

/// What failed in a transport: a ZeroMQ socket (with the endpoint
/// involved) or the broker of the help desk.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// `bind` failed: the address is taken, not ours, or needs privileges.
    /// (ZeroMQ's words are replaced by what they mean here and what to do,
    /// so the cause is shown explained, not as a source.)
    #[error("cannot bind {endpoint}: {}", explain_bind_error(*cause))]
    Bind {
        /// What was to be bound.
        endpoint: String,
        /// What ZeroMQ said.
        cause: zmq::Error,
    },
    /// `connect` failed (it only fails on malformed endpoints; unreachable
    /// peers are retried in the background by ZeroMQ).
    #[error("cannot connect to {endpoint}")]
    Connect {
        /// What was to be connected to.
        endpoint: String,
        /// What ZeroMQ said.
        #[source]
        cause: zmq::Error,
    },
    /// Any other ZeroMQ call failed.
    #[error("ZeroMQ error")]
    Zmq(#[from] zmq::Error),
    /// An `ipc://` path names something that is not a socket (libzmq would
    /// delete it to bind there): it is left as it is.
    #[error(
        "cannot bind ipc://{path}: that path exists and is not a socket (it was left untouched); choose a path that does not exist"
    )]
    NotASocket {
        /// The path.
        path: String,
    },
    /// An `ipc://` socket that a live program answers on (libzmq would
    /// take it over, cutting that program off).
    #[error(
        "cannot bind ipc://{path}: address already in use (a program answers on that socket); stop it, or choose another path"
    )]
    IpcInUse {
        /// The path.
        path: String,
    },
    /// A broker URL that does not parse.
    #[error("'{url}' is not an AMQP URL (expected amqp://USER:PASSWORD@HOST:PORT/VHOST)")]
    BrokerUrl {
        /// The URL, its password hidden.
        url: String,
    },
    /// The broker did not answer the connection.
    #[error("the broker at {broker} did not answer within {seconds} s; is RabbitMQ running there?")]
    BrokerSilent {
        /// The broker's URL, its password hidden.
        broker: String,
        /// How long it was given.
        seconds: u64,
    },
    /// A broker operation failed.
    #[error("{doing}")]
    Broker {
        /// What was being done.
        doing: String,
        /// What the broker (or its client library) said.
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The broker refused something the desk needs.
    #[error("{what}")]
    Refused {
        /// What, for the user.
        what: String,
    },
}

fn explain_bind_error(cause: zmq::Error) -> String {
    match cause {
        zmq::Error::EADDRINUSE => {
            "address already in use (another program, perhaps another chat-server, listens there; \
             stop it or choose another port)"
                .into()
        }
        zmq::Error::EACCES => {
            "permission denied (ports below 1024 need administrator rights; use a port above 1023)"
                .into()
        }
        zmq::Error::EADDRNOTAVAIL | zmq::Error::ENODEV => {
            "this machine has no such address (use one of its own IPs, or 0.0.0.0 / * for all)"
                .into()
        }
        other => other.to_string(),
    }
}

/// One message as a transport hands it over: its frames, or what was too
/// large of it (read to its end and dropped, never kept).
pub type Bounded = Result<Vec<Vec<u8>>, Oversized>;

/// A message over the limits of a chat message
/// ([`crate::message::MAX_FRAMES`], [`crate::message::WIRE_LIMIT_BYTES`]):
/// it was read and dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Oversized {
    /// How many frames it had.
    pub frames: usize,
    /// How many bytes its frames had together.
    pub bytes: usize,
}

/// What happened to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// A peer completed the ZMTP handshake: the connection is usable.
    Connected,
    /// An established connection was lost (peer closed, died, or timed out).
    Disconnected,
    /// Something answered but did not speak ZMTP, or spoke it wrongly.
    HandshakeFailed,
    /// A listening socket took a connection in.
    Accepted,
    /// A listening socket could not take a connection in; `errno` says why
    /// (`EMFILE`: this process is out of file descriptors).
    AcceptFailed {
        /// The system's error number.
        errno: i32,
    },
    /// An event the chat does not act on.
    Other,
}

/// Which of a server's connections something is about. (Over ZeroMQ, the
/// connection's file descriptor, which both the monitor's events and each
/// message name.)
pub type ConnectionId = i32;

/// A connection event on a server, with the connection it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerEvent {
    /// What happened.
    pub event: ConnectionEvent,
    /// To which connection.
    pub connection: ConnectionId,
    /// The peer's address (`IP:PORT`), for a connection just taken in
    /// ([`ConnectionEvent::Accepted`]) that has one.
    pub address: Option<String>,
}

/// One request of a chat-client: its body, sent as message `id`.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The name frame the user chose (`--name`), if any.
    pub name: Option<&'a [u8]>,
    /// The message's id.
    pub id: MessageId,
    /// Its body (the text, or a secure frame).
    pub body: &'a [u8],
    /// Whether it goes in the urgent lane (the help desk's; ZeroMQ has
    /// one lane).
    pub urgent: bool,
}

/// The client's way to its server.
pub trait ToServer {
    /// Where the server is, for what the user is told.
    fn endpoint(&self) -> &str;

    /// Sends `request`; a server that is not there yet gets it when it is.
    ///
    /// # Errors
    /// When the transport fails (not when the server is absent).
    fn send(&mut self, request: &Request<'_>) -> Result<(), TransportError>;

    /// The next connection event, without waiting.
    ///
    /// # Errors
    /// When the transport fails.
    fn next_event(&mut self) -> Result<Option<ConnectionEvent>, TransportError>;

    /// The next reply: with `wait`, the first to arrive within a tick;
    /// without, one already queued.
    ///
    /// # Errors
    /// When the transport fails.
    fn receive(&mut self, wait: bool) -> Result<Option<Bounded>, TransportError>;

    /// Starts afresh: the connection goes with everything queued on it
    /// (sent or received), and a new one is made to the same server.
    ///
    /// # Errors
    /// When the new connection cannot be set up.
    fn renew(&mut self) -> Result<(), TransportError>;

    /// What the transport has to tell the user (the help desk: that no
    /// operator is online, and how many questions wait), one line at a time.
    fn news(&mut self) -> Option<String> {
        None
    }
}

/// Why a reply could not be handed to the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undelivered {
    /// The client's connection is gone.
    Gone,
    /// The client's queue is full (it does not read its replies) or the
    /// transport refused; what it said.
    NotTaken(String),
}

/// The server's way to its clients.
pub trait ToClients {
    /// Where the server listens, as bound (the real port of a `:0`).
    fn endpoint(&self) -> &str;

    /// The next connection event, without waiting.
    ///
    /// # Errors
    /// When the transport fails.
    fn next_event(&mut self) -> Result<Option<PeerEvent>, TransportError>;

    /// The next request, with the connection it came on (when the
    /// transport can tell): with `wait`, the first to arrive within a tick;
    /// without, one already queued. A request's first frame is the
    /// connection's routing id, which the reply must carry.
    ///
    /// # Errors
    /// When the transport fails.
    fn receive(
        &mut self,
        wait: bool,
    ) -> Result<Option<(Bounded, Option<ConnectionId>)>, TransportError>;

    /// Sends `frames` (a routing id first) without ever waiting.
    ///
    /// # Errors
    /// When the reply cannot be handed over now: see [`Undelivered`].
    fn send(&mut self, frames: &[Vec<u8>]) -> Result<(), Undelivered>;

    /// What the transport has to tell the operator about the request just
    /// received (the help desk: that another operator had it before).
    fn news(&mut self) -> Option<String> {
        None
    }
}
