//! The error type of the chat loops.

use std::fmt;
use std::io;

use crate::transport::TransportError;

/// Why a chat loop stopped with an error (as opposed to a normal end).
#[derive(Debug)]
pub enum ChatError {
    /// Reading input or writing output failed (a closed stdout, say).
    Io(io::Error),
    /// A socket could not be set up or used.
    Transport(TransportError),
    /// The Noise library failed where it cannot fail on valid input (a
    /// message could not be sealed): a bug, reported rather than a panic.
    Security(snow::Error),
}

impl ChatError {
    /// Whether the error is stdout closing under us (`chat-client | head`),
    /// which ends the program quietly rather than as a failure.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, ChatError::Io(error) if error.kind() == io::ErrorKind::BrokenPipe)
    }
}

impl fmt::Display for ChatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatError::Io(error) => write!(f, "{error}"),
            ChatError::Transport(error) => write!(f, "{error}"),
            ChatError::Security(error) => write!(f, "encryption failed: {error}"),
        }
    }
}

impl std::error::Error for ChatError {}

impl From<io::Error> for ChatError {
    fn from(error: io::Error) -> Self {
        ChatError::Io(error)
    }
}

impl From<TransportError> for ChatError {
    fn from(error: TransportError) -> Self {
        ChatError::Transport(error)
    }
}

impl From<zmq::Error> for ChatError {
    fn from(error: zmq::Error) -> Self {
        ChatError::Transport(TransportError::Zmq(error))
    }
}

impl From<snow::Error> for ChatError {
    fn from(error: snow::Error) -> Self {
        ChatError::Security(error)
    }
}
