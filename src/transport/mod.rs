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
}
