//! # zmq-chat
//!
//! A terminal chat over ZeroMQ request/reply: `chat-server` binds a REP
//! socket, `chat-client` connects a REQ socket, and the two take turns.
//!
//! ## Wire format
//! One message is **one ZeroMQ frame of UTF-8 text**, nothing else: no
//! header, no length prefix beyond ZMTP's own, no trailing newline. That is
//! what pyzmq's `socket.send_string(text)` sends and `socket.recv()` reads, so
//! both binaries chat with plain Python peers. See [`message`] for how
//! unusual input (several frames, invalid UTF-8, oversized text) is shown.
//!
//! ## Layout
//! - [`address`]: user text (`host:port`, `[::1]:port`, `tcp://…`) → endpoint.
//! - [`message`]: the wire format, decoding whatever a peer sends.
//! - [`display`]: escaping a peer's text so it cannot drive the terminal.
//! - [`envelope`]: the message id a chat-client keeps in the REQ envelope,
//!   which makes re-sending after a reconnect safe.
//! - [`secure`]: secure mode: key files, Noise IK sessions, the sealed
//!   body frame (encryption without CURVE).
//! - [`transport`]: sockets with the chat's options, bind errors, the
//!   connection monitor and the interruptible receive.
//! - [`server`] / [`client`]: the REP and REQ loops, independent of where
//!   lines come from.
//! - [`terminal`]: interactive prompt (rustyline) vs script mode, and output.
//! - [`cli`]: flags and exit codes shared by the two binaries.
//! - [`command`]: `/help`, `/quit` and friends.
//! - [`shutdown`]: Ctrl-C and termination signals as a flag.
//! - [`error`]: the loops' error type.

pub mod address;
pub mod cli;
pub mod client;
pub mod command;
pub mod display;
pub mod envelope;
pub mod error;
pub mod message;
pub mod secure;
pub mod server;
pub mod shutdown;
pub mod terminal;
pub mod transport;
