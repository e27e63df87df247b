//! A byte-level tap: a TCP forwarder between a client and a server, as an
//! attacker on the path would sit. It records both directions, and can
//! alter, replay, inject (at ZMTP frame boundaries) and cut.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::DEADLINE;

/// What the tap does to the client's traffic.
#[derive(Clone, Copy, PartialEq)]
pub enum TapMode {
    Forward,
    /// Flips one byte inside the first sealed message.
    TamperFirstMessage,
    /// Cuts the first sealed message to its first Noise message (of a
    /// payload sealed as several), fixing the ZMTP frame size to match.
    TruncateFirstMessage,
}

/// The tap between one client and one server; each connection the client
/// makes is forwarded on a connection of its own to the server.
pub struct Tap {
    pub endpoint: String,
    to_server: Arc<Mutex<Vec<u8>>>,
    to_client: Arc<Mutex<Vec<u8>>>,
    /// The current connection: its stream to the server, and the writer
    /// toward the client with where the server's ZMTP frames stand.
    current: Arc<Mutex<Option<Connection>>>,
}

struct Connection {
    upstream: TcpStream,
    downstream: Arc<Mutex<Downstream>>,
}

/// Toward the client: the stream, and a cursor over the server's bytes so
/// that injected frames go in between whole frames.
struct Downstream {
    client: TcpStream,
    frames: ZmtpCursor,
}

impl Tap {
    /// Listens on a free loopback port and forwards each connection to `server`.
    pub fn start(server: &str, mode: TapMode) -> Tap {
        let server = server.trim_start_matches("tcp://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let tap = Tap {
            endpoint: format!("tcp://{}", listener.local_addr().unwrap()),
            to_server: Arc::default(),
            to_client: Arc::default(),
            current: Arc::default(),
        };
        let (to_server, to_client, current) = (
            tap.to_server.clone(),
            tap.to_client.clone(),
            tap.current.clone(),
        );
        let tampered = Arc::new(Mutex::new(mode == TapMode::Forward));
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&server) else {
                    continue;
                };
                let downstream = Arc::new(Mutex::new(Downstream {
                    client: client.try_clone().unwrap(),
                    frames: ZmtpCursor::default(),
                }));
                *current.lock().unwrap() = Some(Connection {
                    upstream: server.try_clone().unwrap(),
                    downstream: downstream.clone(),
                });
                let server_out = server.try_clone().unwrap();
                let (tampered, to_server) = (tampered.clone(), to_server.clone());
                thread::spawn(move || {
                    pump_to_server(client, server_out, &to_server, mode, &tampered)
                });
                let to_client = to_client.clone();
                thread::spawn(move || pump_to_client(server, &downstream, &to_client));
            }
        });
        tap
    }

    pub fn client_to_server(&self) -> Vec<u8> {
        self.to_server.lock().unwrap().clone()
    }

    pub fn server_to_client(&self) -> Vec<u8> {
        self.to_client.lock().unwrap().clone()
    }

    /// The ZMTP bytes of the client's first sealed message: its id frame,
    /// the delimiter and the sealed body.
    fn first_message_bytes(&self) -> Vec<u8> {
        let recorded = self.client_to_server();
        let sealed = find(&recorded, b"zcs3M").expect("a sealed message crossed the tap");
        let id = recorded[..sealed]
            .windows(4)
            .rposition(|window| window == b"zc1:")
            .expect("the message id precedes the sealed body");
        // The id frame is a short ZMTP frame: flags and size come just before it.
        let start = id - 2;
        let end = zmtp_message_end(&recorded, start);
        recorded[start..end].to_vec()
    }

    /// The client's first sealed message as its frames: id, delimiter, body.
    pub fn first_message_frames(&self) -> Vec<Vec<u8>> {
        zmtp_frames(&self.first_message_bytes())
    }

    /// Sends the client's first sealed message to the server again, on the
    /// client's own connection, as an attacker on the path would.
    pub fn replay_first_message(&self) {
        let bytes = self.first_message_bytes();
        let mut current = self.current.lock().unwrap();
        let connection = current.as_mut().expect("a connection through the tap");
        connection.upstream.write_all(&bytes).unwrap();
    }

    /// Writes `frames` (one message) to the client as if the server sent
    /// them, between two of the server's frames.
    pub fn inject_to_client(&self, frames: &[&[u8]]) {
        let downstream = {
            let current = self.current.lock().unwrap();
            current
                .as_ref()
                .expect("a connection through the tap")
                .downstream
                .clone()
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            let mut downstream = downstream.lock().unwrap();
            if downstream.frames.at_boundary() {
                downstream.client.write_all(&zmtp_message(frames)).unwrap();
                return;
            }
            drop(downstream);
            assert!(Instant::now() < deadline, "no frame boundary to inject at");
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Cuts the current connection both ways, as a broken link would.
    pub fn cut(&self) {
        if let Some(connection) = self.current.lock().unwrap().take() {
            let _ = connection.upstream.shutdown(Shutdown::Both);
            let _ = connection
                .downstream
                .lock()
                .unwrap()
                .client
                .shutdown(Shutdown::Both);
        }
    }

    /// Waits until `needle` has crossed the tap toward the client `count` times.
    pub fn wait_for_bytes_to_client(&self, needle: &[u8], count: usize) {
        let deadline = Instant::now() + DEADLINE;
        let seen = || {
            self.server_to_client()
                .windows(needle.len())
                .filter(|window| *window == needle)
                .count()
        };
        while seen() < count {
            assert!(
                Instant::now() < deadline,
                "{needle:?} did not reach the client {count} times"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Copies the client's bytes to the server, recording them, and alters
/// the first sealed message as `mode` says (`done` says whether it was).
fn pump_to_server(
    mut from: TcpStream,
    mut to: TcpStream,
    record: &Mutex<Vec<u8>>,
    mode: TapMode,
    done: &Mutex<bool>,
) {
    let mut buffer = [0u8; 65536];
    // A sealed message being held back whole, to be cut.
    let mut held = Vec::new();
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let chunk = &mut buffer[..read];
        record.lock().unwrap().extend_from_slice(chunk);
        let mut forward = chunk.to_vec();
        let mut done = done.lock().unwrap();
        match mode {
            TapMode::Forward => {}
            TapMode::TamperFirstMessage => {
                if !*done && let Some(at) = find(&forward, b"zcs3M") {
                    // Past the magic, kind, index and length: inside the ciphertext.
                    let target = at + 5 + 8 + 2 + 4;
                    if target < forward.len() {
                        forward[target] ^= 0x20;
                        *done = true;
                    }
                }
            }
            TapMode::TruncateFirstMessage if !*done => {
                if held.is_empty() {
                    // A long ZMTP frame: flags and an 8-byte size before the magic.
                    match find(&forward, b"zcs3M") {
                        Some(at) if at >= 9 && forward[at - 9] & 0x02 != 0 => {
                            held = forward.split_off(at - 9);
                        }
                        _ => {}
                    }
                } else {
                    held.append(&mut forward);
                }
                if let Some(cut) = cut_to_first_noise_message(&held) {
                    forward.extend(cut);
                    held.clear();
                    *done = true;
                }
            }
            TapMode::TruncateFirstMessage => {}
        }
        drop(done);
        if to.write_all(&forward).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Copies the server's bytes to the client, recording them and following
/// its frames (see [`Tap::inject_to_client`]).
fn pump_to_client(mut from: TcpStream, to: &Mutex<Downstream>, record: &Mutex<Vec<u8>>) {
    let mut buffer = [0u8; 65536];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        record.lock().unwrap().extend_from_slice(&buffer[..read]);
        let mut to = to.lock().unwrap();
        to.frames.feed(&buffer[..read]);
        if to.client.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = to.lock().unwrap().client.shutdown(Shutdown::Write);
}

/// Follows a ZMTP 3 stream: the 64-byte greeting, then frames (a flags
/// byte, a size of 1 or 8 bytes, the body), commands included.
struct ZmtpCursor {
    greeting_left: usize,
    header: Vec<u8>,
    body_left: u64,
}

impl Default for ZmtpCursor {
    fn default() -> Self {
        ZmtpCursor {
            greeting_left: 64,
            header: Vec::new(),
            body_left: 0,
        }
    }
}

impl ZmtpCursor {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.greeting_left > 0 {
                let taken = self.greeting_left.min(bytes.len());
                self.greeting_left -= taken;
                bytes = &bytes[taken..];
            } else if self.body_left > 0 {
                let taken = (self.body_left as usize).min(bytes.len());
                self.body_left -= taken as u64;
                bytes = &bytes[taken..];
            } else {
                self.header.push(bytes[0]);
                bytes = &bytes[1..];
                let long = self.header[0] & 0x02 != 0;
                let whole = if long { 9 } else { 2 };
                if self.header.len() == whole {
                    self.body_left = if long {
                        u64::from_be_bytes(self.header[1..9].try_into().unwrap())
                    } else {
                        u64::from(self.header[1])
                    };
                    self.header.clear();
                }
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.greeting_left == 0 && self.header.is_empty() && self.body_left == 0
    }
}

/// `frames` as one ZMTP message.
fn zmtp_message(frames: &[&[u8]]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (index, frame) in frames.iter().enumerate() {
        let more = if index + 1 < frames.len() { 0x01 } else { 0 };
        if frame.len() < 256 {
            bytes.push(more);
            bytes.push(frame.len() as u8);
        } else {
            bytes.push(more | 0x02);
            bytes.extend_from_slice(&(frame.len() as u64).to_be_bytes());
        }
        bytes.extend_from_slice(frame);
    }
    bytes
}

/// The ZMTP frame starting at `at`: its flags, header length and body size.
fn zmtp_frame_at(bytes: &[u8], at: usize) -> (u8, usize, usize) {
    let flags = bytes[at];
    if flags & 0x02 != 0 {
        let size: [u8; 8] = bytes[at + 1..at + 9].try_into().unwrap();
        (flags, 9, u64::from_be_bytes(size) as usize)
    } else {
        (flags, 2, bytes[at + 1] as usize)
    }
}

/// The frames of one ZMTP message (no commands).
fn zmtp_frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (_, header, size) = zmtp_frame_at(bytes, at);
        frames.push(bytes[at + header..at + header + size].to_vec());
        at += header + size;
    }
    frames
}

/// `frame` is a long ZMTP frame holding a sealed message: once it is whole,
/// the same frame with only its first Noise message, then what followed it.
fn cut_to_first_noise_message(frame: &[u8]) -> Option<Vec<u8>> {
    let size = u64::from_be_bytes(frame.get(1..9)?.try_into().ok()?) as usize;
    let (whole, after) = frame.get(9..)?.split_at_checked(size)?;
    // Magic and kind (5), server index (8), then each Noise message's length.
    let first = u16::from_be_bytes(whole.get(13..15)?.try_into().ok()?) as usize;
    let kept = &whole[..15 + first];
    let mut cut = vec![frame[0]];
    cut.extend_from_slice(&(kept.len() as u64).to_be_bytes());
    cut.extend_from_slice(kept);
    cut.extend_from_slice(after);
    Some(cut)
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Where the ZMTP message whose first frame starts at `start` ends.
fn zmtp_message_end(bytes: &[u8], mut at: usize) -> usize {
    loop {
        let (flags, header, size) = zmtp_frame_at(bytes, at);
        at += header + size;
        if flags & 0x01 == 0 {
            return at;
        }
    }
}
