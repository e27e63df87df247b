//! Secure mode behind the loops' one interface ([`crate::channel`]): the
//! server opens each request and seals each reply, the client seals each
//! message and drives the handshake, and neither loop knows which mode it is in.

use std::time::Instant;

use crate::channel::{Admission, ClientChannel, Origin, ServerChannel, Step};
use crate::envelope::{Mark, MessageId};
use crate::error::ChatError;
use crate::secure::frame;
use crate::secure::session::{ClientSecurity, ClientStep, Opened, ServerSecurity};

/// Told to a plain peer that writes to a secure server.
const SECURE_ONLY: &str = "this chat-server only accepts encrypted chats: connect with chat-client --server-key KEY (ask the server's operator for its key)";

impl ServerChannel for ServerSecurity {
    fn incoming(&mut self, id: Option<MessageId>, body: Vec<Vec<u8>>, now: Instant) -> Admission {
        if !frame::is_secure(&body) {
            return Admission::Answer {
                body: SECURE_ONLY.as_bytes().to_vec(),
                mark: Mark::Refused,
                notice: "refused a plain (unencrypted) message: this server is in secure mode"
                    .into(),
                throttle: Some("refused"),
            };
        }
        match self.open(&body, id, now) {
            Opened::Message {
                session,
                client,
                id,
                text,
            } => Admission::Message {
                origin: Origin {
                    key: Some(client),
                    session,
                },
                id: Some(id),
                body: vec![text],
            },
            Opened::Answer {
                reply,
                notice,
                refusal,
            } => Admission::Answer {
                body: reply,
                mark: Mark::Normal,
                notice,
                throttle: refusal.then_some("secure refusal"),
            },
        }
    }

    fn outgoing(
        &mut self,
        origin: Origin,
        id: Option<MessageId>,
        reply: Vec<Vec<u8>>,
    ) -> Option<Vec<Vec<u8>>> {
        // Every message admitted in secure mode carries its sealed id.
        let sealed = self.seal_reply(origin.session, id?, &reply.concat())?;
        Some(vec![sealed])
    }
}

impl ClientChannel for ClientSecurity {
    fn outgoing(&mut self, id: MessageId, text: &str) -> Result<Vec<u8>, ChatError> {
        Ok(self.opening(id, text.as_bytes())?)
    }

    fn incoming(&mut self, id: MessageId, text: &str, body: Vec<Vec<u8>>) -> Step {
        match self.step(id, text.as_bytes(), &body) {
            Ok(ClientStep::Reply(text)) => Step::Reply(vec![text]),
            Ok(ClientStep::Send(sealed)) => Step::Send {
                body: sealed,
                notice: Some(format!(
                    "encrypted chat with server {} (it proved it holds the key given with --server-key)",
                    self.server_key().fingerprint()
                )),
            },
            Ok(ClientStep::Restart(hello)) => Step::Send {
                body: hello,
                notice: None,
            },
            Ok(ClientStep::Ignore) => Step::Ignore,
            Err(failure) => Step::Failed(failure.to_string()),
        }
    }

    fn reset(&mut self) {
        ClientSecurity::reset(self);
    }

    fn peer_label(&self) -> Option<String> {
        Some(format!(
            "server {} (encrypted)",
            self.server_key().fingerprint()
        ))
    }
}
