//! The chat over ZeroMQ: sockets set up the way the chat needs them, with
//! errors a user can act on, and the two ends of the transport seam, a
//! [`Dealer`] for the client and a [`Router`] for the server.
//!
//! Both ends share the same options: IPv6 when the endpoint needs it, a
//! bounded linger so a final reply is flushed but exit never hangs, and
//! `ZMQ_MAXMSGSIZE` so a hostile peer cannot make us buffer one frame without
//! limit. Every socket also refuses the pre-3.0 ZMTP protocols (see
//! `configure`), and `receive_one` bounds what the chat takes of one
//! message.
//!
//! What libzmq itself may hold for one connection: up to the receive
//! high-water mark (1,000) of complete messages, each frame at most
//! [`WIRE_LIMIT_BYTES`]; and of a multipart message still arriving, every
//! frame so far, since libzmq delivers a message whole or not at all. A peer
//! that never finishes a message can so make libzmq buffer frames of up to
//! the wire limit for as long as it keeps sending; libzmq 4.3 offers no
//! bound on that (see the README's *When things go wrong*).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{
    Bounded, ConnectionEvent, ConnectionId, Oversized, PeerEvent, Request, ToClients, ToServer,
    TransportError, Undelivered,
};
use crate::address::Endpoint;
use crate::clock::TICK;
use crate::message::{MAX_FRAMES, WIRE_LIMIT_BYTES};

/// How long `close` may spend flushing unsent messages (the server's last reply).
const LINGER: Duration = Duration::from_millis(1000);

/// Messages queued per connection, each way: what a flooding or
/// non-reading peer can make either program hold is at most this many
/// wire-limit messages (17 MiB). A lock-step client has one message in
/// flight. Not much smaller: libzmq tells a queue's writer that it has room
/// again every half of this many messages, a cross-thread wake-up each.
/// (The benchmark's concurrency rows could not tell 16, 64 and 1000 apart
/// beyond their noise.)
pub const QUEUED_PER_CONNECTION: i32 = 64;

/// Options shared by every chat socket.
///
/// A ZAP domain is set on each. libzmq then refuses peers that speak ZMTP
/// 1.0 or 2.0 (`zap_enabled()` in its handshake); without it, any byte
/// stream whose first byte is not 0xFF is decoded as unversioned ZMTP 1.0,
/// so random bytes, an HTTP request or a TLS hello could arrive as
/// messages. ZMTP 3 peers (libzmq 4, pyzmq) are unaffected, and no ZAP
/// handler is needed: libzmq lets a NULL-mechanism peer in when none is bound.
fn configure(socket: &zmq::Socket, endpoint: &Endpoint) -> Result<(), zmq::Error> {
    socket.set_zap_domain("zmq-chat")?;
    socket.set_ipv6(endpoint.needs_ipv6())?;
    socket.set_linger(LINGER.as_millis() as i32)?;
    socket.set_maxmsgsize(WIRE_LIMIT_BYTES as i64)?;
    // Blocking receives wake up every tick so loops can notice Ctrl-C and
    // the connection monitor; a message wakes them at once.
    socket.set_rcvtimeo(TICK.as_millis() as i32)?;
    Ok(())
}

/// Creates a socket of `kind` with the chat's options, not yet bound or
/// connected, for callers that must do something first (attach a monitor
/// before any peer can connect, say); then use [`bind_socket`] or
/// [`connect_socket`].
pub(crate) fn socket_for(
    context: &zmq::Context,
    kind: zmq::SocketType,
    endpoint: &Endpoint,
) -> Result<zmq::Socket, TransportError> {
    let socket = context.socket(kind)?;
    configure(&socket, endpoint)?;
    Ok(socket)
}

/// Binds an existing socket; returns the endpoint actually bound.
///
/// # Errors
/// When the address is taken, not this machine's, or needs privileges.
pub(crate) fn bind_socket(
    socket: &zmq::Socket,
    endpoint: &Endpoint,
) -> Result<String, TransportError> {
    if let Endpoint::Ipc(path) = endpoint {
        check_ipc_path(path)?;
    }
    let text = endpoint.to_string();
    socket.bind(&text).map_err(|cause| TransportError::Bind {
        endpoint: text.clone(),
        cause,
    })?;
    Ok(socket.get_last_endpoint()?.unwrap_or(text))
}

/// libzmq unlinks whatever an `ipc://` path names before it binds there:
/// refused unless it is nothing, or a stale socket nobody answers on.
/// (A program binding the path between this check and the bind still
/// wins; the check is against accidents, not against a local attacker.)
fn check_ipc_path(path: &str) -> Result<(), TransportError> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !metadata.file_type().is_socket() {
        return Err(TransportError::NotASocket {
            path: path.to_string(),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(TransportError::IpcInUse {
            path: path.to_string(),
        }),
        Err(_) => Ok(()),
    }
}

/// Connects an existing socket (see [`socket_for`]), for callers that set
/// options or attach a monitor first: options such as heartbeats only affect
/// connections made after them.
pub(crate) fn connect_socket(
    socket: &zmq::Socket,
    endpoint: &Endpoint,
) -> Result<(), TransportError> {
    // Retry quickly at first so a server that appears is found at once, but
    // back off so a long absence does not mean a connection attempt every 100 ms.
    socket.set_reconnect_ivl(100)?;
    socket.set_reconnect_ivl_max(1000)?;
    let text = endpoint.to_string();
    socket
        .connect(&text)
        .map_err(|cause| TransportError::Connect {
            endpoint: text,
            cause,
        })
}

/// A socket monitor: tells when the peer behind a socket comes and goes.
pub(crate) struct ConnectionWatch {
    events: zmq::Socket,
}

impl ConnectionWatch {
    /// Starts monitoring `socket`. Events are queued until read.
    pub(crate) fn attach(context: &zmq::Context, socket: &zmq::Socket) -> Result<Self, zmq::Error> {
        static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let endpoint = format!("inproc://zmq-chat-monitor-{id}");
        let wanted = zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32
            | zmq::SocketEvent::DISCONNECTED as i32
            | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32
            | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32
            | zmq::SocketEvent::ACCEPTED as i32
            | zmq::SocketEvent::ACCEPT_FAILED as i32;
        socket.monitor(&endpoint, wanted)?;
        let events = context.socket(zmq::PAIR)?;
        events.connect(&endpoint)?;
        Ok(ConnectionWatch { events })
    }

    /// The next queued event, without waiting.
    pub(crate) fn try_next(&self) -> Result<Option<ConnectionEvent>, zmq::Error> {
        Ok(self.try_next_on()?.map(|(event, _)| event))
    }

    /// The next queued event and the descriptor of the connection it is
    /// about (for the connection events; see [`receive_one_with_source`]).
    pub(crate) fn try_next_on(&self) -> Result<Option<(ConnectionEvent, RawFd)>, zmq::Error> {
        match self.events.recv_multipart(zmq::DONTWAIT) {
            Ok(frames) => Ok(Some((parse_event(&frames), event_value(&frames)))),
            Err(zmq::Error::EAGAIN) => Ok(None),
            Err(other) => Err(other),
        }
    }
}

/// Monitor messages are two frames: 2 bytes event id and 4 bytes value
/// (little-endian, as libzmq writes them), then the endpoint.
fn parse_event(frames: &[Vec<u8>]) -> ConnectionEvent {
    let Some(head) = frames.first().filter(|head| head.len() >= 2) else {
        return ConnectionEvent::Other;
    };
    let id = u16::from_le_bytes([head[0], head[1]]);
    let value = event_value(frames);
    match id {
        id if id == zmq::SocketEvent::ACCEPTED as u16 => ConnectionEvent::Accepted,
        id if id == zmq::SocketEvent::ACCEPT_FAILED as u16 => {
            ConnectionEvent::AcceptFailed { errno: value }
        }
        id if id == zmq::SocketEvent::HANDSHAKE_SUCCEEDED as u16 => ConnectionEvent::Connected,
        id if id == zmq::SocketEvent::DISCONNECTED as u16 => ConnectionEvent::Disconnected,
        id if id == zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as u16
            || id == zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as u16 =>
        {
            ConnectionEvent::HandshakeFailed
        }
        _ => ConnectionEvent::Other,
    }
}

/// An event's value: the connection's descriptor for connection events,
/// an error number for failures; -1 if missing.
fn event_value(frames: &[Vec<u8>]) -> i32 {
    match frames.first().and_then(|head| head.get(2..6)) {
        Some(&[a, b, c, d]) => i32::from_le_bytes([a, b, c, d]),
        _ => -1,
    }
}

/// Receives one message, blocking for at most the socket's receive timeout,
/// keeping its frames only if it has at most [`MAX_FRAMES`] frames and
/// [`WIRE_LIMIT_BYTES`] bytes in all; a larger one is read to its end and
/// dropped, copying nothing more once over the limit.
///
/// # Errors
/// `EAGAIN` when no message came within the timeout; other ZeroMQ errors.
pub(crate) fn receive_one(socket: &zmq::Socket) -> Result<Bounded, zmq::Error> {
    let mut first = zmq::Message::new();
    socket.recv(&mut first, 0)?;
    receive_rest(socket, vec![first.to_vec()], first.get_more())
}

/// Like [`receive_one`], with the descriptor of the connection the message
/// came on, which ties it to the monitor's connection events (see
/// [`ConnectionWatch::try_next_on`]): libzmq's `ZMQ_SRCFD`, which the
/// `zmq` crate does not expose, so the first frame is read through
/// `zmq-sys`.
///
/// # Errors
/// As [`receive_one`].
pub(crate) fn receive_one_with_source(
    socket: &mut zmq::Socket,
) -> Result<(Bounded, Option<RawFd>), zmq::Error> {
    // A ROUTER makes the routing id frame itself, and when it has read the
    // message ahead (to answer ZMQ_EVENTS) that frame carries no
    // descriptor; the next one, from the connection, does.
    let (first, more, source) = receive_frame_with_source(socket)?;
    if source.is_some() || !more {
        return Ok((receive_rest(socket, vec![first], more)?, source));
    }
    let (second, more, source) = receive_frame_with_source(socket)?;
    Ok((receive_rest(socket, vec![first, second], more)?, source))
}

/// `zmq_msg_get`'s property for the descriptor a message came on (zmq.h;
/// deprecated, still served by the libzmq 4.3 the `zmq` crate builds).
const ZMQ_SRCFD: i32 = 2;

/// The next frame (each at most [`WIRE_LIMIT_BYTES`]: the socket's
/// maximum message size), whether more follow, and the descriptor of the
/// connection it came on, if it says.
fn receive_frame_with_source(
    socket: &mut zmq::Socket,
) -> Result<(Vec<u8>, bool, Option<RawFd>), zmq::Error> {
    let raw = socket.as_mut_ptr();
    let mut message = std::mem::MaybeUninit::<zmq_sys::zmq_msg_t>::uninit();
    let message = message.as_mut_ptr();
    // SAFETY: `message` is initialised by zmq_msg_init before any other
    // use, stays in place (libzmq may point into it), and is closed on
    // every path after it was initialised; `raw` is a live socket borrowed
    // mutably for the whole call. The data is copied out before the close.
    unsafe {
        if zmq_sys::zmq_msg_init(message) != 0 {
            return Err(zmq::Error::from_raw(zmq_sys::zmq_errno()));
        }
        let received = if zmq_sys::zmq_msg_recv(message, raw, 0) < 0 {
            Err(zmq::Error::from_raw(zmq_sys::zmq_errno()))
        } else {
            let source = zmq_sys::zmq_msg_get(message, ZMQ_SRCFD);
            let data = zmq_sys::zmq_msg_data(message).cast::<u8>();
            let size = zmq_sys::zmq_msg_size(message);
            let bytes = if size == 0 {
                Vec::new()
            } else {
                std::slice::from_raw_parts(data, size).to_vec()
            };
            let more = zmq_sys::zmq_msg_more(message) == 1;
            Ok((bytes, more, (source >= 0).then_some(source)))
        };
        zmq_sys::zmq_msg_close(message);
        received
    }
}

/// The frames after the `received` ones (whether there are any, `more`
/// says), within the bounds of [`receive_one`].
fn receive_rest(
    socket: &zmq::Socket,
    received: Vec<Vec<u8>>,
    more: bool,
) -> Result<Bounded, zmq::Error> {
    let mut count = received.len();
    let mut bytes = received.iter().map(Vec::len).sum();
    let mut frames = received;
    if bytes > WIRE_LIMIT_BYTES {
        frames = Vec::new();
    }
    let mut frame = zmq::Message::new();
    let mut more = more;
    while more {
        // Only the first frame can time out: libzmq delivers the rest with it.
        socket.recv(&mut frame, 0)?;
        count += 1;
        bytes += frame.len();
        if count <= MAX_FRAMES && bytes <= WIRE_LIMIT_BYTES {
            frames.push(frame.to_vec());
        } else {
            frames = Vec::new();
        }
        more = frame.get_more();
    }
    if count > MAX_FRAMES || bytes > WIRE_LIMIT_BYTES {
        return Ok(Err(Oversized {
            frames: count,
            bytes,
        }));
    }
    Ok(Ok(frames))
}

/// Sends `frames` as one message without ever waiting: `EAGAIN` means the
/// peer's queue is full (on a ROUTER with `ZMQ_ROUTER_MANDATORY`).
///
/// libzmq learns that a queue has room again from commands that it
/// processes lazily (during a send, at most about once a millisecond), so a
/// queue that has room can look full. On `EAGAIN` reading `ZMQ_EVENTS`,
/// which processes pending commands at once, and one more try tell a
/// really full queue from a stale count.
///
/// # Errors
/// `EAGAIN` for a full queue, `EHOSTUNREACH` for a peer that has gone, and
/// other ZeroMQ errors.
pub(crate) fn send_now(socket: &zmq::Socket, frames: &[Vec<u8>]) -> Result<(), zmq::Error> {
    let send = || socket.send_multipart(frames.iter().map(|frame| &frame[..]), zmq::DONTWAIT);
    match send() {
        Err(zmq::Error::EAGAIN) => {
            socket.get_events()?;
            send()
        }
        sent => sent,
    }
}

/// Raises this process's soft limit on open files to its hard limit, since
/// every connection holds one; returns the limit now in force.
///
/// # Errors
/// When the limit cannot be read (raising it is best effort).
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let Some(current) = limit.current else {
        // No limit at all.
        return Ok(u64::MAX);
    };
    if limit.maximum.is_none_or(|maximum| current < maximum) {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return Ok(limit.maximum.unwrap_or(u64::MAX));
        }
    }
    Ok(current)
}

/// ZMTP heartbeats from a server to every client: a peer that answers none
/// for [`SERVER_HEARTBEAT_TIMEOUT`] is dropped, so dead connections do not
/// pile up.
const SERVER_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// See [`SERVER_HEARTBEAT_INTERVAL`].
const SERVER_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(6);

/// The client's end over ZeroMQ: a DEALER doing REQ's lock-step (the client
/// loop keeps it), with ZMTP heartbeats and a connection monitor.
pub struct Dealer {
    socket: zmq::Socket,
    watch: ConnectionWatch,
    /// What makes a new socket when the old one must go (see
    /// [`ToServer::renew`]).
    context: zmq::Context,
    target: Endpoint,
    endpoint: String,
    /// A connection silent this long is dropped.
    timeout: Duration,
}

impl Dealer {
    /// Connects to `endpoint` (the server may appear later); a connection
    /// that answers no heartbeat for `timeout` is dropped.
    ///
    /// # Errors
    /// When the socket or its monitor cannot be set up, or the endpoint is
    /// malformed.
    pub fn connect(
        context: &zmq::Context,
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> Result<Dealer, TransportError> {
        let (socket, watch) = connected_dealer(context, endpoint, timeout)?;
        Ok(Dealer {
            socket,
            watch,
            context: context.clone(),
            target: endpoint.clone(),
            endpoint: endpoint.to_string(),
            timeout,
        })
    }
}

impl ToServer for Dealer {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends `[name, id, "", body]` (no name frame without one).
    fn send(&mut self, request: &Request<'_>) -> Result<(), TransportError> {
        if let Some(name) = request.name {
            self.socket.send(name, zmq::SNDMORE)?;
        }
        self.socket.send(request.id.to_frame(), zmq::SNDMORE)?;
        self.socket.send(&[][..], zmq::SNDMORE)?;
        Ok(self.socket.send(request.body, 0)?)
    }

    fn next_event(&mut self) -> Result<Option<ConnectionEvent>, TransportError> {
        Ok(self.watch.try_next()?)
    }

    fn receive(&mut self, wait: bool) -> Result<Option<Bounded>, TransportError> {
        if !wait && !self.socket.get_events()?.contains(zmq::POLLIN) {
            return Ok(None);
        }
        // Blocks for at most the socket's receive timeout, one tick.
        match receive_one(&self.socket) {
            Ok(message) => Ok(Some(message)),
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// A new socket and monitor connect to the same server: libzmq
    /// reconnects by itself after most losses but not after a protocol
    /// error (a frame over the limit, a program that is not ZeroMQ), and a
    /// new socket carries no stalled queue (see the client loop).
    fn renew(&mut self) -> Result<(), TransportError> {
        let (socket, watch) = connected_dealer(&self.context, &self.target, self.timeout)?;
        // The monitor goes first: it watches the old socket.
        self.watch = watch;
        self.socket = socket;
        Ok(())
    }
}

/// A DEALER with the chat's options, heartbeats after `timeout`, and a
/// monitor, connected to `endpoint`.
fn connected_dealer(
    context: &zmq::Context,
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<(zmq::Socket, ConnectionWatch), TransportError> {
    let timeout = timeout.as_millis().clamp(10, i32::MAX as u128) as i32;
    let socket = socket_for(context, zmq::DEALER, endpoint)?;
    // A server that floods the client between messages fills this, then
    // libzmq stops reading: at most this many replies' worth of memory.
    socket.set_rcvhwm(QUEUED_PER_CONNECTION)?;
    socket.set_heartbeat_ivl((timeout / 3).max(10))?;
    socket.set_heartbeat_timeout(timeout)?;
    // The monitor is attached before connecting, or a server that is
    // already up could complete its handshake unseen.
    let watch = ConnectionWatch::attach(context, &socket)?;
    connect_socket(&socket, endpoint)?;
    Ok((socket, watch))
}

/// The server's end over ZeroMQ: a ROUTER doing REP's job, with
/// `ZMQ_ROUTER_MANDATORY` (a reply to a vanished client fails instead of
/// disappearing), small queues per connection, heartbeats, and a monitor.
pub struct Router {
    socket: zmq::Socket,
    watch: ConnectionWatch,
    endpoint: String,
}

impl Router {
    /// Binds on `endpoint`.
    ///
    /// # Errors
    /// When the socket cannot be made or bound (address in use, say).
    pub fn bind(context: &zmq::Context, endpoint: &Endpoint) -> Result<Router, TransportError> {
        let socket = socket_for(context, zmq::ROUTER, endpoint)?;
        socket.set_router_mandatory(true)?;
        socket.set_sndhwm(QUEUED_PER_CONNECTION)?;
        socket.set_rcvhwm(QUEUED_PER_CONNECTION)?;
        socket.set_heartbeat_ivl(SERVER_HEARTBEAT_INTERVAL.as_millis() as i32)?;
        socket.set_heartbeat_timeout(SERVER_HEARTBEAT_TIMEOUT.as_millis() as i32)?;
        // Attached before binding, so no connection goes unseen.
        let watch = ConnectionWatch::attach(context, &socket)?;
        let endpoint = bind_socket(&socket, endpoint)?;
        Ok(Router {
            socket,
            watch,
            endpoint,
        })
    }
}

impl ToClients for Router {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn next_event(&mut self) -> Result<Option<PeerEvent>, TransportError> {
        let Some((event, connection)) = self.watch.try_next_on()? else {
            return Ok(None);
        };
        let address = match event {
            ConnectionEvent::Accepted => peer_address(connection),
            _ => None,
        };
        Ok(Some(PeerEvent {
            event,
            connection,
            address,
        }))
    }

    fn receive(
        &mut self,
        wait: bool,
    ) -> Result<Option<(Bounded, Option<ConnectionId>)>, TransportError> {
        if !wait && !self.socket.get_events()?.contains(zmq::POLLIN) {
            return Ok(None);
        }
        match receive_one_with_source(&mut self.socket) {
            Ok(received) => Ok(Some(received)),
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    fn send(&mut self, frames: &[Vec<u8>]) -> Result<(), Undelivered> {
        match send_now(&self.socket, frames) {
            Ok(()) => Ok(()),
            Err(zmq::Error::EHOSTUNREACH) => Err(Undelivered::Gone),
            Err(error) => Err(Undelivered::NotTaken(error.to_string())),
        }
    }
}

/// The remote address of connection `descriptor` as `IP:PORT`, or `None`
/// for a connection that has none (`ipc://`) or has gone.
fn peer_address(descriptor: RawFd) -> Option<String> {
    // SAFETY: the descriptor is libzmq's, of a connection its monitor just
    // reported; it is only borrowed for one getpeername, and a descriptor
    // closed meanwhile makes it fail (at worst it names the connection that
    // took the number over).
    let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(descriptor) };
    let address = rustix::net::getpeername(socket).ok()??;
    std::net::SocketAddr::try_from(address)
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

    #[test]
    fn a_message_names_its_connection_whether_or_not_it_was_read_ahead() {
        let context = zmq::Context::new();
        let mut router = context.socket(zmq::ROUTER).unwrap();
        router.set_rcvtimeo(5_000).unwrap();
        router.bind("tcp://127.0.0.1:0").unwrap();
        let endpoint = router.get_last_endpoint().unwrap().unwrap();
        let dealer = context.socket(zmq::DEALER).unwrap();
        dealer.connect(&endpoint).unwrap();
        for read_ahead in [false, true] {
            dealer
                .send_multipart([&b"id"[..], b"", b"text"], 0)
                .unwrap();
            if read_ahead {
                while !router.get_events().unwrap().contains(zmq::POLLIN) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let (frames, source) = receive_one_with_source(&mut router).unwrap();
            let frames = frames.unwrap();
            assert_eq!(frames[1..], [b"id".to_vec(), vec![], b"text".to_vec()]);
            assert!(source.is_some_and(|fd| fd > 2), "read ahead: {read_ahead}");
        }
    }

    #[test]
    fn monitor_frames_are_decoded_without_panicking() {
        let event = |id: u16| {
            vec![
                [id.to_le_bytes().as_slice(), &[0, 0, 0, 0]].concat(),
                b"tcp://x".to_vec(),
            ]
        };
        let disconnected = zmq::SocketEvent::DISCONNECTED as u16;
        let connected = zmq::SocketEvent::HANDSHAKE_SUCCEEDED as u16;
        assert_eq!(
            parse_event(&event(disconnected)),
            ConnectionEvent::Disconnected
        );
        assert_eq!(parse_event(&event(connected)), ConnectionEvent::Connected);
        let accept_failed = zmq::SocketEvent::ACCEPT_FAILED as u16;
        let emfile = vec![
            [
                accept_failed.to_le_bytes().as_slice(),
                &libc::EMFILE.to_le_bytes(),
            ]
            .concat(),
            b"tcp://x".to_vec(),
        ];
        assert_eq!(
            parse_event(&emfile),
            ConnectionEvent::AcceptFailed {
                errno: libc::EMFILE
            }
        );
        assert_eq!(parse_event(&event(0xffff)), ConnectionEvent::Other);
        assert_eq!(parse_event(&[]), ConnectionEvent::Other);
        assert_eq!(parse_event(&[vec![1]]), ConnectionEvent::Other);
    }
}
