//! The server side of the chat: a REP socket that answers each message in turn.
//!
//! REP enforces lock-step: after receiving a request it must send exactly one
//! reply before it may receive again, and ZeroMQ routes that reply back to the
//! client that asked. Several clients are therefore served one at a time.

use crate::address::Endpoint;
use crate::error::ChatError;
use crate::message::Incoming;
use crate::shutdown::Shutdown;
use crate::terminal::{End, Line, LineSource, Screen};
use crate::transport::{self, Received, TransportError};

/// Where the server's replies come from.
pub enum ReplySource<'a> {
    /// A person or a script, one line per reply.
    Operator(&'a mut dyn LineSource),
    /// Unattended: each message is sent back unchanged (frames and bytes).
    Echo,
}

/// A bound chat server.
pub struct ChatServer {
    socket: zmq::Socket,
    endpoint: String,
}

impl ChatServer {
    /// Binds a REP socket on `endpoint`.
    pub fn bind(context: &zmq::Context, endpoint: &Endpoint) -> Result<ChatServer, TransportError> {
        let (socket, endpoint) = transport::bind(context, zmq::REP, endpoint)?;
        Ok(ChatServer { socket, endpoint })
    }

    /// The endpoint actually bound, with the real port.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Serves messages until the reply source ends or a signal arrives.
    /// Messages are shown with at most `max_message_bytes` of text.
    pub fn run(
        &self,
        mut replies: ReplySource<'_>,
        screen: &Screen,
        shutdown: &Shutdown,
        max_message_bytes: usize,
    ) -> Result<End, ChatError> {
        loop {
            screen.status("waiting for a message… (Ctrl-C to quit)");
            // A script whose input has ended can answer nothing more, so stop
            // listening rather than accept a message that would never be answered.
            let input_ended = |replies: &mut ReplySource<'_>| match replies {
                ReplySource::Operator(lines) => lines.is_exhausted(),
                ReplySource::Echo => false,
            };
            let received =
                transport::receive(&self.socket, None, shutdown, || !input_ended(&mut replies))?;
            let frames = match received {
                Received::Message(frames) => frames,
                Received::Interrupted => return Ok(End::Interrupted),
                Received::Abandoned => return Ok(End::Eof),
                Received::ConnectionLost => continue,
            };
            match &mut replies {
                ReplySource::Echo => {
                    screen.show(&Incoming::decode(frames.clone(), max_message_bytes))?;
                    self.socket.send_multipart(frames, 0)?;
                }
                ReplySource::Operator(lines) => {
                    screen.show(&Incoming::decode(frames, max_message_bytes))?;
                    match lines.next_line(shutdown)? {
                        Line::Text(reply) => self.socket.send(reply.as_bytes(), 0)?,
                        Line::End(end) => {
                            screen.notice("ending with the last message unanswered; its sender will see the chat end");
                            return Ok(end);
                        }
                    }
                }
            }
        }
    }
}
