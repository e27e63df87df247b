//! An in-memory transport for the loops' unit tests: a server or its
//! clients played by a closure, which hears what the loop does (a request
//! sent, a reply sent, the connection renewed, a tick waited) and queues
//! what the loop reads next (replies, requests, connection events). No
//! socket and no sleep: a tick waited for returns at once.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use super::{
    Bounded, ConnectionEvent, ConnectionId, PeerEvent, Request, ToClients, ToServer,
    TransportError, Undelivered,
};
use crate::envelope::{Mark, MessageId};

/// How many ticks a loop may wait with nothing happening before the test
/// fails: a loop that never ends is a bug, not a slow test.
const IDLE_LIMIT: u32 = 100_000;

/// The test's server: told what the client did, it queues what the client reads.
type PlayedServer = Box<dyn FnMut(ClientDid<'_>, &mut ToClient)>;

/// The test's clients: told what the server did, they queue what it reads.
type PlayedClients = Box<dyn FnMut(ServerDid<'_>, &mut ToServerLoop)>;

/// A request as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub name: Option<Vec<u8>>,
    pub id: MessageId,
    pub body: Vec<u8>,
}

/// What the client loop did, for the server played by the test.
pub enum ClientDid<'a> {
    Sent(&'a Sent),
    /// Dropped its connection and everything queued on it, and connected anew.
    Renewed,
    /// Waited a tick for a reply and got none.
    Waited,
}

/// What the client loop reads next.
#[derive(Default)]
pub struct ToClient {
    pub events: VecDeque<ConnectionEvent>,
    pub replies: VecDeque<Bounded>,
}

impl ToClient {
    /// Queues the reply `[id (with mark), "", text]`.
    pub fn reply(&mut self, id: MessageId, mark: Mark, text: &[u8]) {
        let frame = match mark {
            Mark::Normal => id.to_frame(),
            mark => id.marked_frame(mark),
        };
        self.replies
            .push_back(Ok(vec![frame, Vec::new(), text.to_vec()]));
    }
}

/// The server side of an in-memory client link, as the test sees it.
pub struct ServerEnd {
    pub to_client: ToClient,
    /// Every request the client sent, in order.
    pub sent: Vec<Sent>,
    /// How many times the client renewed its connection.
    pub renewals: usize,
    idle: u32,
    server: PlayedServer,
}

/// A client's link to a server played by a closure.
pub struct MemoryServer(Rc<RefCell<ServerEnd>>);

impl MemoryServer {
    /// A link to `server`, which answers what the client does; the second
    /// value is for the test to look at afterwards.
    pub fn new(
        server: impl FnMut(ClientDid<'_>, &mut ToClient) + 'static,
    ) -> (MemoryServer, Rc<RefCell<ServerEnd>>) {
        let end = Rc::new(RefCell::new(ServerEnd {
            to_client: ToClient::default(),
            sent: Vec::new(),
            renewals: 0,
            idle: 0,
            server: Box::new(server),
        }));
        (MemoryServer(Rc::clone(&end)), end)
    }

    fn tell(&self, did: ClientDid<'_>) {
        let mut end = self.0.borrow_mut();
        let end = &mut *end;
        (end.server)(did, &mut end.to_client);
    }
}

impl ToServer for MemoryServer {
    fn endpoint(&self) -> &str {
        "memory://server"
    }

    fn send(&mut self, request: &Request<'_>) -> Result<(), TransportError> {
        let sent = Sent {
            name: request.name.map(<[u8]>::to_vec),
            id: request.id,
            body: request.body.to_vec(),
        };
        self.0.borrow_mut().sent.push(sent.clone());
        self.tell(ClientDid::Sent(&sent));
        Ok(())
    }

    fn next_event(&mut self) -> Result<Option<ConnectionEvent>, TransportError> {
        Ok(self.0.borrow_mut().to_client.events.pop_front())
    }

    fn receive(&mut self, wait: bool) -> Result<Option<Bounded>, TransportError> {
        let reply = self.0.borrow_mut().to_client.replies.pop_front();
        if reply.is_none() && wait {
            let mut end = self.0.borrow_mut();
            end.idle += 1;
            assert!(end.idle < IDLE_LIMIT, "the client loop waited forever");
            drop(end);
            self.tell(ClientDid::Waited);
        }
        Ok(reply)
    }

    fn renew(&mut self) -> Result<(), TransportError> {
        {
            let mut end = self.0.borrow_mut();
            end.to_client = ToClient::default();
            end.renewals += 1;
        }
        self.tell(ClientDid::Renewed);
        Ok(())
    }
}

/// What the server loop did, for the clients played by the test.
pub enum ServerDid<'a> {
    /// Sent these frames (the routing id first).
    Sent(&'a [Vec<u8>]),
    /// Waited a tick for a request and got none.
    Waited,
    /// Looked for a request already there (reading ahead) and found none.
    Looked,
}

/// What the server loop reads next.
#[derive(Default)]
pub struct ToServerLoop {
    pub events: VecDeque<PeerEvent>,
    pub requests: VecDeque<(Bounded, Option<ConnectionId>)>,
    /// Connections whose replies fail as gone.
    pub gone: Vec<ConnectionId>,
}

impl ToServerLoop {
    /// Connection `connection`, from `address` if it has one, is taken in
    /// and speaks ZeroMQ.
    pub fn connect(&mut self, connection: ConnectionId, address: Option<&str>) {
        self.events.push_back(PeerEvent {
            event: ConnectionEvent::Accepted,
            connection,
            address: address.map(str::to_string),
        });
        self.event(connection, ConnectionEvent::Connected);
    }

    /// `event` happens to `connection`.
    pub fn event(&mut self, connection: ConnectionId, event: ConnectionEvent) {
        self.events.push_back(PeerEvent {
            event,
            connection,
            address: None,
        });
    }

    /// A chat-client's request on `connection`: `[routing id, id, "", text]`.
    pub fn request(&mut self, connection: ConnectionId, id: MessageId, text: &[u8]) {
        self.frames(connection, vec![id.to_frame(), Vec::new(), text.to_vec()]);
    }

    /// Any message on `connection`: its routing id, then `frames`.
    pub fn frames(&mut self, connection: ConnectionId, frames: Vec<Vec<u8>>) {
        let mut message = vec![routing_id(connection)];
        message.extend(frames);
        self.requests.push_back((Ok(message), Some(connection)));
    }
}

/// The routing id the in-memory server gives `connection`.
pub fn routing_id(connection: ConnectionId) -> Vec<u8> {
    format!("connection {connection}").into_bytes()
}

/// The clients' side of an in-memory server link, as the test sees it.
pub struct ClientsEnd {
    pub to_server: ToServerLoop,
    /// Every message the server sent, in order.
    pub sent: Vec<Vec<Vec<u8>>>,
    idle: u32,
    clients: PlayedClients,
}

/// A server's link to clients played by a closure.
pub struct MemoryClients(Rc<RefCell<ClientsEnd>>);

impl MemoryClients {
    /// A link to `clients`, which act on what the server does; the second
    /// value is for the test to look at afterwards.
    pub fn new(
        clients: impl FnMut(ServerDid<'_>, &mut ToServerLoop) + 'static,
    ) -> (MemoryClients, Rc<RefCell<ClientsEnd>>) {
        let end = Rc::new(RefCell::new(ClientsEnd {
            to_server: ToServerLoop::default(),
            sent: Vec::new(),
            idle: 0,
            clients: Box::new(clients),
        }));
        (MemoryClients(Rc::clone(&end)), end)
    }

    fn tell(&self, did: ServerDid<'_>) {
        let mut end = self.0.borrow_mut();
        let end = &mut *end;
        (end.clients)(did, &mut end.to_server);
    }
}

impl ToClients for MemoryClients {
    fn endpoint(&self) -> &str {
        "memory://clients"
    }

    fn next_event(&mut self) -> Result<Option<PeerEvent>, TransportError> {
        Ok(self.0.borrow_mut().to_server.events.pop_front())
    }

    fn receive(
        &mut self,
        wait: bool,
    ) -> Result<Option<(Bounded, Option<ConnectionId>)>, TransportError> {
        let request = self.0.borrow_mut().to_server.requests.pop_front();
        if request.is_none() {
            let mut end = self.0.borrow_mut();
            end.idle += 1;
            assert!(end.idle < IDLE_LIMIT, "the server loop waited forever");
            drop(end);
            self.tell(if wait {
                ServerDid::Waited
            } else {
                ServerDid::Looked
            });
        }
        Ok(request)
    }

    fn send(&mut self, frames: &[Vec<u8>]) -> Result<(), Undelivered> {
        let gone = {
            let end = self.0.borrow();
            end.to_server
                .gone
                .iter()
                .any(|&connection| frames.first() == Some(&routing_id(connection)))
        };
        if gone {
            return Err(Undelivered::Gone);
        }
        self.0.borrow_mut().sent.push(frames.to_vec());
        self.tell(ServerDid::Sent(frames));
        Ok(())
    }
}
