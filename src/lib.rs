//! # zmq-chat
//!
//! A terminal chat over ZeroMQ request/reply. `chat-server` binds a ROUTER
//! socket that answers like REP (one message, one reply, in turn) and also
//! sees each chat-client's message id, so a message re-sent after a
//! reconnect is answered once; `chat-client` connects a DEALER socket that
//! keeps REQ's lock-step itself, so it can re-send after a lost connection
//! where REQ would be stuck. Plain pyzmq REQ and REP peers chat with both.
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
//! - `envelope`: the message id a chat-client keeps in the REQ envelope,
//!   which makes re-sending after a reconnect safe.
//! - `channel`: how a body travels, plain or sealed, behind one interface
//!   the loops call the same way in both modes; secure mode's outcomes put
//!   into words there.
//! - [`secure`]: secure mode's protocol: key files, Noise IK sessions, the
//!   sealed body frame (encryption without CURVE), trust on first use.
//! - [`transport`]: the seam the loops are written against (`ToServer`,
//!   `ToClients`); [`transport::zeromq`], its ZeroMQ side: sockets with the
//!   chat's options, bind errors, the connection monitor.
//! - [`amqp`]: connecting to RabbitMQ brokers (URLs in turn, TLS,
//!   heartbeats, errors that say what to do), for the desk and the AMQP
//!   example; [`bounded`]: a table that forgets its oldest entries.
//! - [`desk`]: the help desk: the same transport seam over a RabbitMQ
//!   broker (`--desk`), questions in a queue that any operator answers;
//!   on a cluster, over TLS, and sealed end to end.
//! - `presence`: who is connected to the server, from the transport's
//!   connection events.
//! - [`server`] / [`client`]: the two loops, each one wait returning an
//!   event and an explicit phase, independent of the transport, where lines
//!   come from, where output goes and what time it is.
//! - [`input`]: where lines come from: the `LineSource` the loops read
//!   (and `Person`, what only a person at a prompt does), and script input
//!   from stdin.
//! - [`terminal`]: the screen (what each mode shows).
//! - [`event`]: the chat's events as JSON lines (`--json`), and the times
//!   `--timestamps` shows; [`transcript`]: `--log FILE`.
//! - [`prompt`]: the interactive prompt: rustyline on its own thread, with
//!   history, printing incoming lines above the line being edited.
//! - `tty`: type-ahead and restoring the terminal, which rustyline lacks.
//! - [`clock`]: the loops' time, which tests can drive, and the tick every
//!   wait wakes up at.
//! - [`cli`]: flags and error reports shared by the programs; man pages
//!   and completions (`--generate`).
//! - [`exit`]: the exit codes, and the `--help` tables made from them.
//! - [`folders`]: where the user's keys, known servers and history live.
//! - `command`: `/help`, `/quit` and friends.
//! - [`shutdown`]: Ctrl-C and termination signals as a flag.
//! - `throttle`: rate limits on the notices a peer can trigger.
//! - [`error`]: the loops' error type.

#![warn(missing_docs)]

pub mod address;
pub mod amqp;
pub mod bounded;
mod channel;
pub mod cli;
pub mod client;
pub mod clock;
mod command;
pub mod desk;
pub mod display;
mod envelope;
pub mod error;
pub mod event;
pub mod exit;
pub mod folders;
pub mod input;
pub mod message;
mod presence;
pub mod prompt;
pub mod secure;
pub mod server;
pub mod shutdown;
pub mod terminal;
mod throttle;
pub mod transcript;
pub mod transport;
mod tty;

#[cfg(test)]
mod fixture;

pub use envelope::{MAX_NAME_BYTES, MessageId};
