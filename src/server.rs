//! The server side of the chat: answers each message in turn, exactly once.
//!
//! The socket is a ROUTER doing what a REP socket does (take one request,
//! answer it, take the next; each reply goes back along the request's
//! envelope), plus what REP cannot:
//!
//! * it sees the chat-client's message id (see [`crate::envelope`]), so a
//!   message re-sent after a reconnect is answered once: a copy of a message
//!   already answered gets the same reply again, without asking the operator;
//! * with `ZMQ_ROUTER_MANDATORY` a reply to a client that has vanished fails
//!   instead of disappearing, and the operator is told;
//! * when the operator ends the chat with a message pending, the waiting
//!   chat-client is told the end was deliberate.
//!
//! Plain REQ peers (pyzmq) see a normal REP server.
//!
//! In secure mode (see [`crate::secure`]) every message is opened before it
//! is shown and every reply sealed before it is sent; plain messages are
//! refused with a reason, as are encrypted ones in plain mode.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::address::Endpoint;
use crate::envelope::{Enveloped, Mark, MessageId};
use crate::error::ChatError;
use crate::message::Incoming;
use crate::secure::frame;
use crate::secure::keys::PublicKey;
use crate::secure::session::{Opened, ServerSecurity};
use crate::shutdown::Shutdown;
use crate::terminal::{End, Line, LineSource, Screen};
use crate::transport::{self, Frames, Received, TransportError};

/// How many client sessions the server remembers the last answer of. Old
/// sessions are forgotten first, so memory stays flat under any load.
const REMEMBERED_SESSIONS: usize = 4096;

/// Where the server's replies come from.
pub enum ReplySource<'a> {
    /// A person or a script, one line per reply.
    Operator(&'a mut dyn LineSource),
    /// Unattended: each message is sent back unchanged (frames and bytes).
    Echo,
}

/// Told to a plain peer that writes to a secure server.
const SECURE_ONLY: &str = "this chat-server only accepts encrypted chats: connect with chat-client --server-key KEY (ask the server's operator for its key)";
/// Told to a secure client that writes to a plain server.
const PLAIN_ONLY: &str = "this chat-server is not in secure mode: connect without --server-key, or ask its operator to start it with --key";

/// A bound chat server.
pub struct ChatServer {
    socket: zmq::Socket,
    endpoint: String,
    answers: AnswerMemory,
    security: Option<ServerSecurity>,
    /// The frames of the latest request, reused so that the usual request
    /// (`[routing id, message id, "", text]`) costs no allocation.
    request: [zmq::Message; 4],
}

/// A message let in, ready to be shown and answered.
struct Admitted {
    body: Vec<Vec<u8>>,
    id: Option<MessageId>,
    /// In secure mode: the session to seal the reply with, and who sent it.
    secure: Option<(u64, PublicKey)>,
}

impl ChatServer {
    /// Binds the server's socket on `endpoint`.
    pub fn bind(context: &zmq::Context, endpoint: &Endpoint) -> Result<ChatServer, TransportError> {
        let (socket, endpoint) = transport::bind(context, zmq::ROUTER, endpoint)?;
        socket.set_router_mandatory(true)?;
        Ok(ChatServer {
            socket,
            endpoint,
            answers: AnswerMemory::default(),
            security: None,
            request: std::array::from_fn(|_| zmq::Message::new()),
        })
    }

    /// Turns on secure mode: only encrypted chats are accepted from now on.
    pub fn require_encryption(&mut self, security: ServerSecurity) {
        self.security = Some(security);
    }

    /// The endpoint actually bound, with the real port.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Serves messages until the reply source ends or a signal arrives.
    /// Messages are shown with at most `max_message_bytes` of text.
    pub fn run(
        &mut self,
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
            // Each tick without a message is also the moment to show what is buffered.
            let received =
                transport::receive_into(&self.socket, &mut self.request, shutdown, || {
                    let _ = screen.flush();
                    !input_ended(&mut replies)
                })?;
            let frames = match received {
                Received::Message(Frames::InPlace(count)) => match self.usual_request(count) {
                    Some(id) => {
                        let served = self.serve_usual(
                            id,
                            &mut replies,
                            screen,
                            shutdown,
                            max_message_bytes,
                        )?;
                        if let Some(end) = served {
                            return Ok(end);
                        }
                        continue;
                    }
                    None => transport::owned(&self.request[..count]),
                },
                Received::Message(Frames::Owned(frames)) => frames,
                Received::Interrupted => {
                    screen.flush()?;
                    return Ok(End::Interrupted);
                }
                Received::Abandoned => {
                    screen.flush()?;
                    return Ok(End::Eof);
                }
            };
            if let Some(end) =
                self.serve(frames, &mut replies, screen, shutdown, max_message_bytes)?
            {
                return Ok(end);
            }
        }
    }

    /// The id of the request in `self.request` if it is the usual one: a new
    /// message from a chat-client in plain mode, `[routing id, id, "", text]`
    /// (not an encrypted one, which is refused on the careful path).
    fn usual_request(&self, count: usize) -> Option<MessageId> {
        if count != 4
            || self.security.is_some()
            || !self.request[2].is_empty()
            || frame::is_secure_frame(&self.request[3])
        {
            return None;
        }
        match MessageId::parse(&self.request[1]) {
            Some((id, Mark::Normal)) if matches!(self.answers.recall(None, id), Recall::New) => {
                Some(id)
            }
            _ => None,
        }
    }

    /// Serves the usual request (see [`ChatServer::usual_request`]) from the
    /// frames it arrived in: shown without a copy, and in echo mode sent
    /// back as those very frames. `Some(end)` when the chat ends.
    fn serve_usual(
        &mut self,
        id: MessageId,
        replies: &mut ReplySource<'_>,
        screen: &Screen,
        shutdown: &Shutdown,
        max_message_bytes: usize,
    ) -> Result<Option<End>, ChatError> {
        screen.show_frame(&self.request[3], max_message_bytes)?;
        let reply = match replies {
            ReplySource::Echo => std::mem::replace(&mut self.request[3], zmq::Message::new()),
            ReplySource::Operator(lines) => match operator_reply(&mut **lines, screen, shutdown)? {
                Ok(reply) => into_message(reply.into_bytes()),
                Err(end) => {
                    let envelope = transport::owned(&self.request[..3]);
                    self.end_with_message_pending(envelope, Some(id), screen);
                    return Ok(Some(end));
                }
            },
        };
        self.answers.remember(None, id, &[&reply[..]]);
        // The envelope goes back as it came: routing id, message id, delimiter.
        let sent = (0..3)
            .try_for_each(|index| {
                let frame = std::mem::replace(&mut self.request[index], zmq::Message::new());
                self.socket.send(frame, zmq::SNDMORE)
            })
            .and_then(|()| self.socket.send(reply, 0));
        self.delivered(sent, screen)?;
        Ok(None)
    }

    /// Serves any request (the careful path: secure mode, copies of answered
    /// messages, plain REQ peers, odd shapes). `Some(end)` when the chat ends.
    fn serve(
        &mut self,
        frames: Vec<Vec<u8>>,
        replies: &mut ReplySource<'_>,
        screen: &Screen,
        shutdown: &Shutdown,
        max_message_bytes: usize,
    ) -> Result<Option<End>, ChatError> {
        // Skip the routing id (frame 0): it may be any bytes, even empty.
        let Ok(request) = Enveloped::split(frames, 1) else {
            screen.notice("ignored a message without a REQ envelope (from a DEALER or raw peer?)");
            return Ok(None);
        };
        let envelope = request.envelope;
        let Some(Admitted { body, id, secure }) =
            self.admit(&envelope, request.id, request.body, screen)?
        else {
            return Ok(None);
        };
        let client = secure.map(|(_, key)| key);
        if let Some(id) = id {
            match self.answers.recall(client, id) {
                Recall::New => {}
                Recall::Answered(reply) => {
                    let reply = reply.to_vec();
                    screen.notice(&format!(
                        "message #{} arrived again after a reconnect; sent its reply again",
                        id.sequence
                    ));
                    self.answer(envelope, Some(id), secure, reply, screen)?;
                    return Ok(None);
                }
                Recall::Stale => return Ok(None),
            }
        }
        let label = client.map(|key| format!("client {} (encrypted)", key.fingerprint()));
        let show = |incoming: &Incoming| match &label {
            Some(label) => screen.show_from(incoming, label),
            None => screen.show(incoming),
        };
        let reply: Vec<Vec<u8>> = match replies {
            // The message goes back exactly as it came. Showing it needs
            // a copy only when decoding changes it (several frames, bad
            // UTF-8, over the limit); otherwise the text is those bytes.
            ReplySource::Echo => match exact_text(body, max_message_bytes) {
                Ok(text) => {
                    let incoming = Incoming {
                        text,
                        anomalies: Vec::new(),
                    };
                    show(&incoming)?;
                    vec![incoming.text.into_bytes()]
                }
                Err(body) => {
                    show(&Incoming::decode(body.clone(), max_message_bytes))?;
                    body
                }
            },
            ReplySource::Operator(lines) => {
                show(&Incoming::decode(body, max_message_bytes))?;
                match operator_reply(&mut **lines, screen, shutdown)? {
                    Ok(reply) => vec![reply.into_bytes()],
                    Err(end) => {
                        self.end_with_message_pending(envelope, id, screen);
                        return Ok(Some(end));
                    }
                }
            }
        };
        if let Some(id) = id {
            self.answers.remember(client, id, &reply);
        }
        self.answer(envelope, id, secure, reply, screen)?;
        Ok(None)
    }

    /// Decides what to do with a request: a message to show (returned), or
    /// something answered here and now (a handshake, a refusal).
    fn admit(
        &mut self,
        envelope: &[Vec<u8>],
        id: Option<MessageId>,
        body: Vec<Vec<u8>>,
        screen: &Screen,
    ) -> Result<Option<Admitted>, ChatError> {
        let encrypted = frame::is_secure(&body);
        let Some(security) = &mut self.security else {
            if encrypted {
                screen.notice("refused an encrypted chat: this server runs in plain mode (start it with --key FILE for encrypted chats)");
                self.refuse(envelope, id, PLAIN_ONLY, screen)?;
                return Ok(None);
            }
            return Ok(Some(Admitted {
                body,
                id,
                secure: None,
            }));
        };
        if !encrypted {
            screen.notice("refused a plain (unencrypted) message: this server is in secure mode");
            self.refuse(envelope, id, SECURE_ONLY, screen)?;
            return Ok(None);
        }
        match security.open(&body, id, Instant::now()) {
            Opened::Message {
                session,
                client,
                id,
                text,
            } => Ok(Some(Admitted {
                body: vec![text],
                id: Some(id),
                secure: Some((session, client)),
            })),
            Opened::Answer { reply, notice } => {
                screen.notice(&notice);
                self.deliver(envelope.to_vec(), vec![reply], screen)?;
                Ok(None)
            }
        }
    }

    /// Refuses a request with `reason`: a chat-client sees the refusal mark
    /// in the envelope, a plain REQ peer gets the reason as its reply.
    fn refuse(
        &self,
        envelope: &[Vec<u8>],
        id: Option<MessageId>,
        reason: &str,
        screen: &Screen,
    ) -> Result<(), ChatError> {
        let mut envelope = envelope.to_vec();
        if let Some(id) = id {
            id.mark_in(&mut envelope, Mark::Refused);
        }
        self.deliver(envelope, vec![reason.as_bytes().to_vec()], screen)
    }

    /// Sends `reply` to message `id`, sealed in secure mode (`secure` as
    /// [`Admitted`] gives it).
    fn answer(
        &mut self,
        envelope: Vec<Vec<u8>>,
        id: Option<MessageId>,
        secure: Option<(u64, PublicKey)>,
        reply: Vec<Vec<u8>>,
        screen: &Screen,
    ) -> Result<(), ChatError> {
        let (Some((session, _)), Some(security), Some(id)) = (secure, &mut self.security, id)
        else {
            return self.deliver(envelope, reply, screen);
        };
        match security.seal_reply(session, id, &reply.concat()) {
            Some(sealed) => self.deliver(envelope, vec![sealed], screen),
            None => {
                screen.notice("the client's session ended before the reply could be sent; it gets the reply when it sends its message again");
                Ok(())
            }
        }
    }

    /// Sends `reply` along `envelope`. A client that has gone is not an error
    /// for the server: the operator is told, and a chat-client that comes back
    /// gets the reply when it re-sends its message.
    fn deliver(
        &self,
        envelope: Vec<Vec<u8>>,
        reply: Vec<Vec<u8>>,
        screen: &Screen,
    ) -> Result<(), ChatError> {
        let mut frames = envelope;
        frames.extend(reply);
        let sent = self
            .socket
            .send_multipart(frames.into_iter().map(into_message), 0);
        self.delivered(sent, screen)
    }

    /// What a send's outcome means for the server: a client that has gone
    /// is not an error (see [`ChatServer::deliver`]); the operator is told.
    fn delivered(&self, sent: Result<(), zmq::Error>, screen: &Screen) -> Result<(), ChatError> {
        match sent {
            Ok(()) => Ok(()),
            Err(zmq::Error::EHOSTUNREACH) => {
                screen.notice("the reply could not be delivered: that client has disconnected");
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Ends the chat with a message unanswered: its sender is told.
    fn end_with_message_pending(
        &self,
        envelope: Vec<Vec<u8>>,
        id: Option<MessageId>,
        screen: &Screen,
    ) {
        self.say_goodbye(envelope, id);
        screen.notice("ending with the last message unanswered; its sender is told the chat ended");
    }

    /// Tells a waiting chat-client that the operator ended the chat. Best
    /// effort: a plain REQ peer cannot be told without a fake reply.
    fn say_goodbye(&self, mut envelope: Vec<Vec<u8>>, id: Option<MessageId>) {
        let Some(id) = id else { return };
        if id.mark_in(&mut envelope, Mark::Ended) {
            envelope.push(Vec::new());
            let _ = self.socket.send_multipart(envelope, 0);
        }
    }
}

/// The operator's reply to the message just shown, or why there is none.
fn operator_reply(
    lines: &mut dyn LineSource,
    screen: &Screen,
    shutdown: &Shutdown,
) -> std::io::Result<Result<String, End>> {
    // The operator must see the message before answering it.
    if !lines.has_ready_line() {
        screen.flush()?;
    }
    match lines.next_line(shutdown)? {
        Line::Text(reply) => Ok(Ok(reply)),
        Line::End(end) => {
            screen.flush()?;
            Ok(Err(end))
        }
    }
}

/// The text of a message that is one valid UTF-8 frame within `max_bytes`,
/// taken without a copy; any other message is given back unchanged.
fn exact_text(mut body: Vec<Vec<u8>>, max_bytes: usize) -> Result<String, Vec<Vec<u8>>> {
    match body.as_slice() {
        [frame] if frame.len() <= max_bytes => {
            String::from_utf8(body.remove(0)).map_err(|error| vec![error.into_bytes()])
        }
        _ => Err(body),
    }
}

/// ZeroMQ keeps a frame of up to 33 bytes inside its message, so those are
/// copied (handing over the Vec would cost ZeroMQ an allocation); a larger
/// one is handed over without a copy.
fn into_message(frame: Vec<u8>) -> zmq::Message {
    const ZMQ_INLINE_BYTES: usize = 33;
    if frame.len() <= ZMQ_INLINE_BYTES {
        zmq::Message::from(&frame[..])
    } else {
        zmq::Message::from(frame)
    }
}

/// What the server knows of a message id.
enum Recall<'a> {
    /// Not seen before: show it and get a reply.
    New,
    /// Already answered with this reply.
    Answered(&'a [Vec<u8>]),
    /// Older than the session's last message: a late duplicate, dropped.
    Stale,
}

/// A client session as the answer memory knows it: in secure mode the
/// client's key is part of it, so no client can claim another's session.
type SessionKey = (Option<PublicKey>, u64);

/// The last answer given to each recent client session.
#[derive(Default)]
struct AnswerMemory {
    last: HashMap<SessionKey, (u64, Vec<Vec<u8>>)>,
    order: VecDeque<SessionKey>,
}

impl AnswerMemory {
    fn recall(&self, client: Option<PublicKey>, id: MessageId) -> Recall<'_> {
        match self.last.get(&(client, id.session)) {
            Some((sequence, reply)) if *sequence == id.sequence => Recall::Answered(reply),
            Some((sequence, _)) if *sequence > id.sequence => Recall::Stale,
            _ => Recall::New,
        }
    }

    fn remember(&mut self, client: Option<PublicKey>, id: MessageId, reply: &[impl AsRef<[u8]>]) {
        let key = (client, id.session);
        // A known session's buffers are reused: no allocation per message.
        if let Some((sequence, stored)) = self.last.get_mut(&key) {
            *sequence = id.sequence;
            stored.truncate(reply.len());
            let kept = stored.len();
            for (old, new) in stored.iter_mut().zip(reply) {
                old.clear();
                old.extend_from_slice(new.as_ref());
            }
            stored.extend(reply[kept..].iter().map(|frame| frame.as_ref().to_vec()));
            return;
        }
        let reply = reply.iter().map(|frame| frame.as_ref().to_vec()).collect();
        if self.last.insert(key, (id.sequence, reply)).is_none() {
            self.order.push_back(key);
            if self.order.len() > REMEMBERED_SESSIONS
                && let Some(oldest) = self.order.pop_front()
            {
                self.last.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_memory_recognises_copies_and_forgets_old_sessions() {
        let mut memory = AnswerMemory::default();
        let id = MessageId {
            session: 1,
            sequence: 5,
        };
        assert!(matches!(memory.recall(None, id), Recall::New));
        memory.remember(None, id, &[b"five".to_vec()]);
        assert!(
            matches!(memory.recall(None, id), Recall::Answered(reply) if reply == [b"five".to_vec()])
        );
        assert!(matches!(
            memory.recall(
                None,
                MessageId {
                    session: 1,
                    sequence: 4
                }
            ),
            Recall::Stale
        ));
        assert!(matches!(
            memory.recall(
                None,
                MessageId {
                    session: 1,
                    sequence: 6
                }
            ),
            Recall::New
        ));
        for session in 2..(REMEMBERED_SESSIONS as u64 + 10) {
            memory.remember(
                None,
                MessageId {
                    session,
                    sequence: 1,
                },
                &[] as &[Vec<u8>],
            );
        }
        assert!(memory.last.len() <= REMEMBERED_SESSIONS);
        assert!(
            matches!(memory.recall(None, id), Recall::New),
            "the oldest session was forgotten"
        );
    }
}
