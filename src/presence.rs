//! Who is connected to the server. The socket monitor names each
//! connection by its descriptor as it is taken in and as it goes, and each
//! message says which descriptor it came on
//! ([`crate::transport::receive_one_with_source`]), so the operator is told
//! who connects and leaves, messages are labelled with their sender's
//! address, and a reply being typed to a client that has left is flagged
//! before it is sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::terminal::Screen;
use crate::throttle::Throttle;
use crate::transport::{ConnectionEvent, ConnectionWatch};

/// Presence notices of each kind shown at once, then one per
/// [`NOTICE_INTERVAL`] (with a count of those held back): a few clients
/// coming and going are all named, a flood of connections is one line.
const NOTICE_BURST: u32 = 5;
/// See [`NOTICE_BURST`].
const NOTICE_INTERVAL: Duration = Duration::from_secs(5);

/// The server's connections, by descriptor.
pub struct Presence {
    /// Every open connection: an entry per open descriptor, so never more
    /// than the open-file limit.
    peers: HashMap<RawFd, Peer>,
    /// The connection whose message the operator is answering.
    answering: Option<RawFd>,
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
            answering: None,
            out_of_descriptors: false,
            throttle: Throttle::with_burst(NOTICE_INTERVAL, NOTICE_BURST),
            exhaustion: Throttle::new(NOTICE_INTERVAL),
        }
    }
}

impl Presence {
    /// Reads the monitor's queued events and tells the operator who came
    /// and went.
    pub fn follow(&mut self, watch: &ConnectionWatch, screen: &Screen, now: Instant) {
        while let Ok(Some((event, descriptor))) = watch.try_next_on() {
            self.on(event, descriptor, screen, now);
        }
    }

    fn on(&mut self, event: ConnectionEvent, descriptor: RawFd, screen: &Screen, now: Instant) {
        match event {
            ConnectionEvent::Accepted => {
                if std::mem::take(&mut self.out_of_descriptors)
                    && let Some(held) = self.exhaustion.admit("again", now)
                {
                    screen.notice(&Throttle::with_count("taking new connections again", held));
                }
                let peer = Peer {
                    address: peer_address(descriptor),
                    announced: false,
                };
                self.peers.insert(descriptor, peer);
            }
            // The monitor does not say which connection completed its
            // handshake: if only one is waiting to, it is that one (else its
            // first message will tell, see `heard_from`).
            ConnectionEvent::Connected => {
                let mut waiting = self.peers.iter().filter(|(_, peer)| !peer.announced);
                if let (Some((&only, _)), None) = (waiting.next(), waiting.next()) {
                    self.heard_from(Some(only), screen, now);
                }
            }
            ConnectionEvent::Disconnected => {
                let Some(peer) = self.peers.remove(&descriptor) else {
                    return;
                };
                if !peer.announced {
                    return;
                }
                let at = peer
                    .address
                    .map_or(String::new(), |address| format!(" at {address}"));
                if self.answering == Some(descriptor) {
                    self.answering = None;
                    screen.notice(&format!(
                        "the client you are answering{at} has left: your reply reaches it only if it comes back and sends its message again"
                    ));
                } else {
                    self.tell(screen, "left", &format!("the client{at} left"), now);
                }
            }
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

    /// A ZeroMQ peer spoke on `descriptor`: the operator is told it
    /// connected, if that was not said yet.
    pub fn heard_from(&mut self, descriptor: Option<RawFd>, screen: &Screen, now: Instant) {
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
        self.tell(screen, "connected", &text, now);
    }

    fn tell(&mut self, screen: &Screen, kind: &'static str, text: &str, now: Instant) {
        if let Some(held) = self.throttle.admit(kind, now) {
            screen.notice(&Throttle::with_count(text, held));
        }
    }

    /// The address of the connection `descriptor`, if it is still open.
    pub fn address_of(&self, descriptor: Option<RawFd>) -> Option<&str> {
        self.peers.get(&descriptor?)?.address.as_deref()
    }

    /// The operator is answering a message that came on `descriptor`
    /// (`None` once the reply is sent): its client leaving is said at once.
    pub fn answering(&mut self, descriptor: Option<RawFd>) {
        self.answering = descriptor;
    }

    /// Whether the connection `descriptor` is known, that is open as far as
    /// the monitor has told (or there is none to know).
    pub fn knows(&self, descriptor: Option<RawFd>) -> bool {
        descriptor.is_none_or(|descriptor| self.peers.contains_key(&descriptor))
    }
}

/// The remote address of connection `descriptor` as `IP:PORT`, or `None`
/// for a connection that has none (`ipc://`) or has gone.
fn peer_address(descriptor: RawFd) -> Option<String> {
    // SAFETY: the descriptor is libzmq's, of a connection its monitor just
    // reported (or that a message just came on); it is only borrowed for
    // one getpeername, and a descriptor closed meanwhile makes it fail (at
    // worst it names the connection that took the number over).
    let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(descriptor) };
    let address = rustix::net::getpeername(socket).ok()??;
    SocketAddr::try_from(address)
        .ok()
        .map(|address| address.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn a_connections_address_is_read_from_its_descriptor() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert_eq!(
            peer_address(accepted.as_raw_fd()),
            Some(client.local_addr().unwrap().to_string())
        );
        assert_eq!(peer_address(listener.as_raw_fd()), None, "not connected");
    }
}
