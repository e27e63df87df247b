//! Who is connected to the server. The transport names each connection as
//! it is taken in and as it goes, and each message says which connection it
//! came on (see [`crate::transport::ToClients`]), so the operator is told
//! who connects and leaves, messages are labelled with their sender's
//! address, and a reply being typed to a client that has left is flagged
//! before it is sent.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::event::Kind;
use crate::terminal::Screen;
use crate::throttle::Throttle;
use crate::transport::{ConnectionEvent, ConnectionId, PeerEvent};

/// Presence notices of each kind shown at once, then one per
/// [`NOTICE_INTERVAL`] (with a count of those held back): a few clients
/// coming and going are all named, a flood of connections is one line.
const NOTICE_BURST: u32 = 5;
/// See [`NOTICE_BURST`].
const NOTICE_INTERVAL: Duration = Duration::from_secs(5);

/// The server's connections.
pub struct Presence {
    /// Every open connection: over ZeroMQ, an entry per open descriptor,
    /// so never more than the open-file limit.
    peers: HashMap<ConnectionId, Peer>,
    /// Whether connections are being refused for want of descriptors (said
    /// when it starts, and when it ends).
    out_of_descriptors: bool,
    throttle: Throttle,
    /// Rate limit on the two descriptor notices: a backlog of connections
    /// drained as descriptors free up can run out again at once, as often
    /// as peers make it (one line of each kind per 5 s, with a count).
    exhaustion: Throttle,
}

/// One connection.
struct Peer {
    /// Its remote address, `None` for one without (`ipc://`).
    address: Option<String>,
    /// Whether the operator was told it connected: only once it is known
    /// to speak ZeroMQ (a scan or a stream of garbage is nobody).
    announced: bool,
}

impl Default for Presence {
    fn default() -> Presence {
        Presence {
            peers: HashMap::new(),
            out_of_descriptors: false,
            throttle: Throttle::with_burst(NOTICE_INTERVAL, NOTICE_BURST),
            exhaustion: Throttle::new(NOTICE_INTERVAL),
        }
    }
}

impl Presence {
    /// Takes in a connection event and tells the operator who came and
    /// went; `answering` is the connection of the message the operator is
    /// answering, whose client leaving is said at once.
    pub fn on(
        &mut self,
        peer_event: PeerEvent,
        answering: Option<ConnectionId>,
        screen: &Screen,
        now: Instant,
    ) {
        let PeerEvent {
            event,
            connection: descriptor,
            address,
        } = peer_event;
        match event {
            ConnectionEvent::Accepted => self.accepted(descriptor, address, screen, now),
            // The monitor does not say which connection completed its
            // handshake: if only one is waiting to, it is that one (else its
            // first message will tell, see `heard_from`).
            ConnectionEvent::Connected => {
                let mut waiting = self.peers.iter().filter(|(_, peer)| !peer.announced);
                if let (Some((&only, _)), None) = (waiting.next(), waiting.next()) {
                    self.heard_from(Some(only), screen, now);
                }
            }
            ConnectionEvent::Disconnected => self.left(descriptor, answering, screen, now),
            ConnectionEvent::AcceptFailed { errno }
                if !self.out_of_descriptors && (errno == libc::EMFILE || errno == libc::ENFILE) =>
            {
                self.out_of_descriptors = true;
                if let Some(held) = self.exhaustion.admit("out", now) {
                    screen.notice(&Throttle::with_count(
                        "out of file descriptors: new connections are refused until some close (raise the open-file limit, ulimit -n, to allow more)",
                        held,
                    ));
                }
            }
            _ => {}
        }
    }

    /// A connection was taken in (so descriptors are to be had again).
    fn accepted(
        &mut self,
        descriptor: ConnectionId,
        address: Option<String>,
        screen: &Screen,
        now: Instant,
    ) {
        if std::mem::take(&mut self.out_of_descriptors)
            && let Some(held) = self.exhaustion.admit("again", now)
        {
            screen.notice(&Throttle::with_count("taking new connections again", held));
        }
        let peer = Peer {
            address,
            announced: false,
        };
        self.peers.insert(descriptor, peer);
    }

    /// A connection went: its client left, said at once if the operator is
    /// answering it (`answering`), else rate-limited; nothing for a peer
    /// never announced.
    fn left(
        &mut self,
        descriptor: ConnectionId,
        answering: Option<ConnectionId>,
        screen: &Screen,
        now: Instant,
    ) {
        let Some(peer) = self.peers.remove(&descriptor) else {
            return;
        };
        if !peer.announced {
            return;
        }
        let at = peer
            .address
            .map_or(String::new(), |address| format!(" at {address}"));
        if answering == Some(descriptor) {
            screen.tell(Kind::Leave, &format!(
                "the client you are answering{at} has left: your reply reaches it only if it comes back and sends its message again"
            ));
        } else {
            let text = format!("the client{at} left");
            self.tell(screen, "left", Kind::Leave, &text, now);
        }
    }

    /// A ZeroMQ peer spoke on `descriptor`: the operator is told it
    /// connected, if that was not said yet.
    pub fn heard_from(&mut self, descriptor: Option<ConnectionId>, screen: &Screen, now: Instant) {
        let Some(peer) = descriptor.and_then(|descriptor| self.peers.get_mut(&descriptor)) else {
            return;
        };
        if std::mem::replace(&mut peer.announced, true) {
            return;
        }
        let text = match &peer.address {
            Some(address) => format!("a client connected from {address}"),
            None => "a client connected".to_string(),
        };
        self.tell(screen, "connected", Kind::Connect, &text, now);
    }

    fn tell(&mut self, screen: &Screen, kind: &'static str, event: Kind, text: &str, now: Instant) {
        if let Some(held) = self.throttle.admit(kind, now) {
            screen.tell(event, &Throttle::with_count(text, held));
        }
    }

    /// The address of the connection `descriptor`, if it is still open.
    pub fn address_of(&self, descriptor: Option<ConnectionId>) -> Option<&str> {
        self.peers.get(&descriptor?)?.address.as_deref()
    }

    /// Whether the connection `descriptor` is known, that is open as far as
    /// the monitor has told (or there is none to know).
    pub fn knows(&self, descriptor: Option<ConnectionId>) -> bool {
        descriptor.is_none_or(|descriptor| self.peers.contains_key(&descriptor))
    }
}
