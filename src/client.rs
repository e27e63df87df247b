//! The client side of the chat: a REQ socket that sends a message and waits
//! for the reply before the next one.
//!
//! REQ enforces lock-step (send, then receive, then send), so the loop can
//! never get ahead of the server. A socket monitor tells a lost connection
//! apart from a slow reply, so a client whose server quit is told so instead
//! of waiting forever.

use crate::address::Endpoint;
use crate::error::ChatError;
use crate::message::Incoming;
use crate::shutdown::Shutdown;
use crate::terminal::{End, Line, LineSource, Screen};
use crate::transport::{self, ConnectionEvent, ConnectionWatch, Received, TransportError};

/// How a client session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEnd {
    /// Input ended, or the user quit, with every message answered.
    Finished(End),
    /// The server went away while this message waited for its reply.
    ServerGone { unanswered: String },
    /// Interrupted while this message waited for its reply.
    InterruptedWaiting { unanswered: String },
}

/// A chat client connected (or connecting) to a server.
pub struct ChatClient {
    socket: zmq::Socket,
    watch: ConnectionWatch,
    connected: bool,
    endpoint: String,
}

impl ChatClient {
    /// Connects a REQ socket to `endpoint`; the server may appear later.
    pub fn connect(
        context: &zmq::Context,
        endpoint: &Endpoint,
    ) -> Result<ChatClient, TransportError> {
        let socket = transport::connect(context, zmq::REQ, endpoint)?;
        let watch = ConnectionWatch::attach(context, &socket)?;
        Ok(ChatClient {
            socket,
            watch,
            connected: false,
            endpoint: endpoint.to_string(),
        })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends each line from `lines` and shows each reply, until input ends,
    /// a signal arrives, or the server goes away.
    pub fn run(
        &mut self,
        lines: &mut dyn LineSource,
        screen: &Screen,
        shutdown: &Shutdown,
        max_message_bytes: usize,
    ) -> Result<ClientEnd, ChatError> {
        loop {
            let text = match lines.next_line(shutdown)? {
                Line::Text(text) => text,
                Line::End(end) => return Ok(ClientEnd::Finished(end)),
            };
            // Events that happened while the user was typing describe the past;
            // only a disconnection *during* the wait below means "gone now".
            self.catch_up_with_connection_events()?;
            self.socket.send(text.as_bytes(), 0)?;
            if self.connected {
                screen.status("waiting for the server's reply… (Ctrl-C to quit)");
            } else {
                screen.status(&format!(
                    "no server at {} yet; the message will be delivered when one appears (Ctrl-C to quit)",
                    self.endpoint
                ));
            }
            match transport::receive(&self.socket, Some(&self.watch), shutdown, || true)? {
                Received::Message(frames) => {
                    screen.show(&Incoming::decode(frames, max_message_bytes))?
                }
                Received::ConnectionLost => return Ok(ClientEnd::ServerGone { unanswered: text }),
                Received::Interrupted | Received::Abandoned => {
                    return Ok(ClientEnd::InterruptedWaiting { unanswered: text });
                }
            }
        }
    }

    fn catch_up_with_connection_events(&mut self) -> Result<(), zmq::Error> {
        while let Some(event) = self.watch.try_next()? {
            match event {
                ConnectionEvent::Connected => self.connected = true,
                ConnectionEvent::Disconnected => self.connected = false,
                ConnectionEvent::HandshakeFailed | ConnectionEvent::Other => {}
            }
        }
        Ok(())
    }
}
