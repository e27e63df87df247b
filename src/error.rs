//! The error type of the chat loops.

use std::io;

use crate::transport::TransportError;

/// Why a chat loop stopped with an error (as opposed to a normal end).
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Reading input or writing output failed (a closed stdout, say).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A socket could not be set up or used.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The Noise library failed where it cannot fail on valid input (a
    /// message could not be sealed): a bug, reported rather than a panic.
    #[error("encryption failed")]
    Security(#[from] snow::Error),
}

impl ChatError {
    /// Whether the error is stdout closing under us (`chat-client | head`),
    /// which ends the program quietly rather than as a failure.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, ChatError::Io(error) if error.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// `error` and every cause under it, joined with ": " (as `anyhow`'s
/// `{:#}` shows a chain): what a person is told.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(error), |cause| cause.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

impl From<zmq::Error> for ChatError {
    fn from(error: zmq::Error) -> Self {
        ChatError::Transport(TransportError::Zmq(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::keys::KeyError;
    use std::error::Error as _;

    #[test]
    fn a_cause_is_a_source_below_the_error_not_repeated_in_its_text() {
        let missing = KeyError::Io {
            path: "server.key".into(),
            error: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(missing.to_string(), "server.key");
        assert!(missing.source().is_some());
        assert_eq!(describe(&missing), "server.key: entity not found");
        let refused = ChatError::from(TransportError::Connect {
            endpoint: "tcp://example:1".into(),
            cause: zmq::Error::EINVAL,
        });
        assert_eq!(
            describe(&refused),
            "cannot connect to tcp://example:1: Invalid argument"
        );
        let sealing = ChatError::from(snow::Error::Decrypt);
        assert!(
            describe(&sealing).starts_with("encryption failed: "),
            "{sealing}"
        );
    }
}
