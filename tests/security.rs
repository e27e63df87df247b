//! Secure mode end to end: real binaries, real sockets, and a byte-level tap
//! (a TCP forwarder in the test) between client and server that records,
//! alters or replays what crosses it.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{CLIENT, DEADLINE, Proc, SERVER, ipc_address, plain_socket, run_to_end};

/// A fresh folder for one test's keys.
fn folder(test: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("zmq-chat-security-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap();
    path
}

/// Runs `chat-server --keygen` into `folder/name`; returns the key file and
/// the public key printed.
fn keygen(folder: &Path, name: &str) -> (String, String) {
    common::keygen(&folder.join(name))
}

/// A secure server answering from its stdin, plus its endpoint and key.
fn secure_server(folder: &Path, extra: &[&str]) -> (Proc, String, String) {
    let (key_file, public_key) = keygen(folder, "server.key");
    let mut args = vec!["--bind", "127.0.0.1:0", "--key", &key_file];
    args.extend_from_slice(extra);
    let (mut server, endpoint) = Proc::server(&args);
    let announced = server.stderr_line_containing("--server-key ");
    assert!(announced.ends_with(&public_key), "{announced}");
    (server, endpoint, public_key)
}

/// A secure chat-client with its own key file `name` in `folder`.
fn secure_client(folder: &Path, name: &str, endpoint: &str, server_key: &str) -> Proc {
    secure_client_with(folder, name, endpoint, server_key, &[])
}

/// [`secure_client`] with `extra` flags (`--liveness`, say).
fn secure_client_with(
    folder: &Path,
    name: &str,
    endpoint: &str,
    server_key: &str,
    extra: &[&str],
) -> Proc {
    let (key_file, _) = keygen(folder, name);
    let mut args = vec![
        "--connect",
        endpoint,
        "--server-key",
        server_key,
        "--key",
        &key_file,
    ];
    args.extend_from_slice(extra);
    Proc::spawn(CLIENT, &args)
}

/// What the tap does to the client's traffic.
#[derive(Clone, Copy, PartialEq)]
enum TapMode {
    Forward,
    /// Flips one byte inside the first sealed message.
    TamperFirstMessage,
    /// Cuts the first sealed message to its first Noise message (of a
    /// payload sealed as several), fixing the ZMTP frame size to match.
    TruncateFirstMessage,
}

/// A TCP forwarder between a client and a server, recording both directions.
struct Tap {
    endpoint: String,
    to_server: Arc<Mutex<Vec<u8>>>,
    to_client: Arc<Mutex<Vec<u8>>>,
    upstream: Arc<Mutex<Option<TcpStream>>>,
}

impl Tap {
    /// Listens on a free loopback port and forwards each connection to `server`.
    fn start(server: &str, mode: TapMode) -> Tap {
        let server = server.trim_start_matches("tcp://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("tcp://{}", listener.local_addr().unwrap());
        let tap = Tap {
            endpoint,
            to_server: Arc::default(),
            to_client: Arc::default(),
            upstream: Arc::default(),
        };
        let (to_server, to_client, upstream) = (
            tap.to_server.clone(),
            tap.to_client.clone(),
            tap.upstream.clone(),
        );
        let tampered = Arc::new(Mutex::new(mode == TapMode::Forward));
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&server) else {
                    continue;
                };
                *upstream.lock().unwrap() = server.try_clone().ok();
                let (client_in, server_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (tampered, to_server) = (tampered.clone(), to_server.clone());
                thread::spawn(move || {
                    pump(client_in, server_out, &to_server, Some((mode, &tampered)))
                });
                let to_client = to_client.clone();
                thread::spawn(move || pump(server, client, &to_client, None));
            }
        });
        tap
    }

    fn client_to_server(&self) -> Vec<u8> {
        self.to_server.lock().unwrap().clone()
    }

    fn server_to_client(&self) -> Vec<u8> {
        self.to_client.lock().unwrap().clone()
    }

    /// Sends the client's first sealed message to the server again, as an
    /// attacker on the path would.
    fn replay_first_message(&self) {
        let recorded = self.client_to_server();
        let sealed = find(&recorded, b"zcs3M").expect("a sealed message crossed the tap");
        let id = recorded[..sealed]
            .windows(4)
            .rposition(|window| window == b"zc1:")
            .expect("the message id precedes the sealed body");
        // The id frame is a short ZMTP frame: flags and size come just before it.
        let start = id - 2;
        let end = zmtp_message_end(&recorded, start);
        let mut upstream = self.upstream.lock().unwrap();
        let upstream = upstream.as_mut().expect("a connection through the tap");
        upstream.write_all(&recorded[start..end]).unwrap();
    }
}

/// Copies `from` to `to`, recording the bytes; with `tamper`, alters the
/// first sealed message as its mode says (the flag says whether that was done).
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    record: &Mutex<Vec<u8>>,
    tamper: Option<(TapMode, &Mutex<bool>)>,
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
        if let Some((mode, done)) = tamper {
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
        }
        if to.write_all(&forward).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
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

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Where the ZMTP message whose first frame starts at `start` ends.
fn zmtp_message_end(bytes: &[u8], mut at: usize) -> usize {
    loop {
        let flags = bytes[at];
        let (size, header) = if flags & 0x02 != 0 {
            let size: [u8; 8] = bytes[at + 1..at + 9].try_into().unwrap();
            (u64::from_be_bytes(size) as usize, 9)
        } else {
            (bytes[at + 1] as usize, 2)
        };
        at += header + size;
        if flags & 0x01 == 0 {
            return at;
        }
    }
}

/// The tap records what it forwards; wait until `needle` has crossed it
/// toward the client `count` times.
fn wait_for_bytes(tap: &Tap, needle: &[u8], count: usize) {
    let deadline = Instant::now() + DEADLINE;
    let seen = || {
        tap.server_to_client()
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

/// A plain chat through the tap shows the tap can read messages; the same
/// chat in secure mode shows it cannot: neither message nor reply appears in
/// the bytes, in either direction, while both ends see the text.
#[test]
fn tap_sees_plaintext_in_plain_mode_and_none_in_secure_mode() {
    let message = "attack at dawn";
    let reply = "retreat at noon";

    let (mut plain_server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0"]);
    let tap = Tap::start(&endpoint, TapMode::Forward);
    let mut plain_client = Proc::spawn(CLIENT, &["--connect", &tap.endpoint]);
    plain_client.send_line(message);
    assert_eq!(plain_server.stdout_line(), message);
    plain_server.send_line(reply);
    assert_eq!(plain_client.stdout_line(), reply);
    assert!(
        find(&tap.client_to_server(), message.as_bytes()).is_some(),
        "the tap works"
    );
    assert!(
        find(&tap.server_to_client(), reply.as_bytes()).is_some(),
        "the tap works"
    );

    let keys = folder("tap");
    let (mut server, endpoint, server_key) = secure_server(&keys, &[]);
    let tap = Tap::start(&endpoint, TapMode::Forward);
    let mut client = secure_client(&keys, "client.key", &tap.endpoint, &server_key);
    client.send_line(message);
    assert_eq!(server.stdout_line(), message);
    server.send_line(reply);
    assert_eq!(client.stdout_line(), reply);
    let notice = client.stderr_line_containing("encrypted chat with server");
    assert!(
        notice.contains(&server_key[..8]),
        "shows the server's fingerprint: {notice}"
    );
    server.stderr_line_containing("encrypted session with client");
    let (sent, received) = (tap.client_to_server(), tap.server_to_client());
    assert!(
        find(&sent, b"zcs3M").is_some(),
        "a sealed message crossed the tap"
    );
    assert!(
        find(&sent, message.as_bytes()).is_none(),
        "the message crossed in clear"
    );
    assert!(
        find(&received, reply.as_bytes()).is_none(),
        "the reply crossed in clear"
    );
    assert!(find(&sent, b"attack").is_none() && find(&received, b"retreat").is_none());
}

/// A client pinned to another key is refused at the handshake, before its
/// message is sealed or sent; the server says why and serves the next client.
#[test]
fn wrong_server_key_is_refused_before_any_message_is_sent() {
    let keys = folder("wrong-key");
    let (mut server, endpoint, server_key) = secure_server(&keys, &["--echo"]);
    let (_, other_key) = keygen(&keys, "other.key");
    let tap = Tap::start(&endpoint, TapMode::Forward);
    let mut client = secure_client(&keys, "client.key", &tap.endpoint, &other_key);
    // Typed at once: the handshake fails before or after it is read, and
    // either way it is never sent.
    client.send_line("secret plans");
    client.stderr_line_containing("wrong --server-key");
    assert_eq!(client.wait().code(), Some(1));
    server.stderr_line_containing("refused a handshake made for another server key");
    let sent = tap.client_to_server();
    assert!(
        find(&sent, b"zcs3H").is_some(),
        "the handshake crossed the tap"
    );
    assert!(find(&sent, b"zcs3M").is_none(), "no message was sent");
    assert!(find(&sent, b"secret").is_none());

    let mut good = secure_client(&keys, "good.key", &endpoint, &server_key);
    good.send_line("still serving?");
    assert_eq!(good.stdout_line(), "still serving?");
}

/// The client shakes hands as soon as the server is there: a wrong
/// --server-key is reported before anything is typed (exit 1), and with
/// the right one the chat is said to be encrypted before the first message.
#[test]
fn the_handshake_happens_before_anything_is_typed() {
    let keys = folder("early-handshake");
    let (mut server, endpoint, server_key) = secure_server(&keys, &["--echo"]);
    let (_, other_key) = keygen(&keys, "other.key");
    let mut wrong = secure_client(&keys, "wrong.key", &endpoint, &other_key);
    wrong.stderr_line_containing("wrong --server-key");
    assert_eq!(wrong.wait().code(), Some(1));
    assert!(wrong.remaining_stdout().is_empty());

    let mut right = secure_client(&keys, "right.key", &endpoint, &server_key);
    right.stderr_line_containing("encrypted chat with server");
    server.stderr_line_containing("encrypted session with client");
    right.send_line("after the handshake");
    assert_eq!(right.stdout_line(), "after the handshake");
    right.send_line("and the next");
    assert_eq!(right.stdout_line(), "and the next");
}

/// With --allow, a client whose key is listed chats; another is refused
/// with a clear message, and the server's log names the refused key.
#[test]
fn client_off_the_allow_list_is_refused_and_named_in_the_log() {
    let keys = folder("allow");
    let (alice_file, alice_key) = keygen(&keys, "alice.key");
    let (bob_file, bob_key) = keygen(&keys, "bob.key");
    let allow = keys.join("allowed");
    std::fs::write(&allow, format!("# who may chat\n{alice_key}  # alice\n")).unwrap();
    let (mut server, endpoint, server_key) =
        secure_server(&keys, &["--echo", "--allow", allow.to_str().unwrap()]);
    server.stderr_line_containing("1 client key(s) allowed");

    let args = |key: &str| {
        vec![
            "--connect".to_string(),
            endpoint.clone(),
            "--server-key".into(),
            server_key.clone(),
            "--key".into(),
            key.to_string(),
        ]
    };
    let bob_args = args(&bob_file);
    let bob_args: Vec<&str> = bob_args.iter().map(String::as_str).collect();
    let (status, stdout, stderr) = run_to_end(CLIENT, &bob_args, "let me in\n");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("the server refused this client"),
        "{stderr}"
    );
    assert!(
        stderr.contains("not on the server's allow list"),
        "{stderr}"
    );
    assert!(stderr.contains("unanswered message: let me in"), "{stderr}");
    let logged = server.stderr_line_containing("refused client key");
    assert!(logged.contains(&bob_key), "{logged}");

    let alice_args = args(&alice_file);
    let alice_args: Vec<&str> = alice_args.iter().map(String::as_str).collect();
    let (status, stdout, stderr) = run_to_end(CLIENT, &alice_args, "hello\n");
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, "hello");
}

/// One flipped byte in a sealed message: the server drops it and says so,
/// the client reports the refusal and keeps its message, and the server
/// goes on serving.
#[test]
fn tampered_ciphertext_is_refused_and_the_server_keeps_serving() {
    let keys = folder("tamper");
    let (mut server, endpoint, server_key) = secure_server(&keys, &["--echo"]);
    let tap = Tap::start(&endpoint, TapMode::TamperFirstMessage);
    let mut client = secure_client(&keys, "client.key", &tap.endpoint, &server_key);
    client.send_line("transfer 10 euros");
    client.stderr_line_containing("failed authentication");
    client.stderr_line_containing("unanswered message: transfer 10 euros");
    assert_eq!(client.wait().code(), Some(1));
    server.stderr_line_containing("failed authentication");

    let mut other = secure_client(&keys, "other.key", &endpoint, &server_key);
    other.send_line("after the attack");
    assert_eq!(other.stdout_line(), "after the attack");
    assert_eq!(
        server.stdout_line(),
        "after the attack",
        "the altered message was never shown"
    );
}

/// A long message cut short on the path (only the first of its two Noise
/// messages kept, the frame size fixed) is refused whole: the server shows
/// nothing of it, and both ends say it failed authentication.
#[test]
fn a_long_message_cut_short_on_the_way_is_refused_not_shown_in_part() {
    let keys = folder("truncate");
    let (mut server, endpoint, server_key) = secure_server(&keys, &["--echo"]);
    let tap = Tap::start(&endpoint, TapMode::TruncateFirstMessage);
    let mut client = secure_client(&keys, "client.key", &tap.endpoint, &server_key);
    client.send_line(&"y".repeat(100_017));
    client.stderr_line_containing("failed authentication");
    assert_eq!(client.wait().code(), Some(1));
    server.stderr_line_containing("failed authentication");
    let recorded = tap.client_to_server();
    assert!(
        find(&recorded, b"zcs3M").is_some(),
        "the message crossed the tap"
    );

    let mut other = secure_client(&keys, "other.key", &endpoint, &server_key);
    other.send_line("after the cut");
    assert_eq!(other.stdout_line(), "after the cut");
    assert_eq!(
        server.stdout_line(),
        "after the cut",
        "nothing of the cut message was shown"
    );
}

/// A sealed message sent again by someone on the path is rejected: the
/// server shows it once, logs the replay, and the genuine session goes on.
#[test]
fn replayed_ciphertext_is_rejected() {
    let keys = folder("replay");
    let (mut server, endpoint, server_key) = secure_server(&keys, &[]);
    let tap = Tap::start(&endpoint, TapMode::Forward);
    let mut client = secure_client(&keys, "client.key", &tap.endpoint, &server_key);
    client.send_line("pay 100");
    assert_eq!(server.stdout_line(), "pay 100");
    server.send_line("paid");
    assert_eq!(client.stdout_line(), "paid");

    tap.replay_first_message();
    server.stderr_line_containing("failed authentication (altered, replayed or out of order)");
    // The refusal is sealed in the session: a second sealed reply crosses.
    wait_for_bytes(&tap, b"zcs3m", 2);

    client.send_line("second");
    assert_eq!(server.stdout_line(), "second", "the replay was not shown");
    server.send_line("ok");
    assert_eq!(client.stdout_line(), "ok");
}

/// Plain client to secure server, plain pyzmq-style REQ to secure server,
/// secure client to plain server: each gets a reason, never the other's bytes.
#[test]
fn plain_and_secure_peers_refuse_each_other_clearly() {
    let keys = folder("mismatch");
    let (mut server, endpoint, server_key) = secure_server(&keys, &["--echo"]);
    let (status, stdout, stderr) = run_to_end(CLIENT, &["--connect", &endpoint], "hello\n");
    assert_eq!(status.code(), Some(1));
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("only accepts encrypted chats"), "{stderr}");
    server.stderr_line_containing("refused a plain (unencrypted) message");

    let context = zmq::Context::new();
    let req = plain_socket(&context, zmq::REQ);
    req.connect(&endpoint).unwrap();
    req.send("hello from python", 0).unwrap();
    let answer = req.recv_string(0).unwrap().unwrap();
    assert!(answer.contains("only accepts encrypted chats"), "{answer}");

    let (mut plain_server, plain_endpoint) = Proc::server(&["--bind", "127.0.0.1:0"]);
    let mut client = secure_client(&keys, "client.key", &plain_endpoint, &server_key);
    client.send_line("secret");
    client.stderr_line_containing("not in secure mode");
    assert_eq!(client.wait().code(), Some(1));
    plain_server.stderr_line_containing("refused an encrypted chat");
    plain_server.assert_running();
}

/// Two clients with their own keys chat with one secure server at once;
/// each gets the replies to its own messages.
#[test]
fn two_clients_with_different_keys_each_get_their_own_replies() {
    let keys = folder("two-clients");
    let (mut server, endpoint, server_key) = secure_server(&keys, &["--echo"]);
    let mut alice = secure_client(&keys, "alice.key", &endpoint, &server_key);
    let mut bob = secure_client(&keys, "bob.key", &endpoint, &server_key);
    for round in 0..5 {
        alice.send_line(&format!("alice {round}"));
        bob.send_line(&format!("bob {round}"));
        assert_eq!(alice.stdout_line(), format!("alice {round}"));
        assert_eq!(bob.stdout_line(), format!("bob {round}"));
    }
    let sessions: Vec<String> = (0..2)
        .map(|_| server.stderr_line_containing("encrypted session with client"))
        .collect();
    assert_eq!(sessions.len(), 2);
}

/// SIGKILL a secure server while a message waits for its reply: the
/// restarted server (same key, same port) receives the message once, sealed
/// in a fresh session, and the chat goes on.
#[test]
fn killed_secure_server_gets_the_pending_message_once_after_restart() {
    let keys = folder("restart");
    let (key_file, server_key) = keygen(&keys, "server.key");
    let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0", "--key", &key_file]);
    let mut client = secure_client_with(
        &keys,
        "client.key",
        &endpoint,
        &server_key,
        &["--liveness", "1", "--give-up", "20"],
    );
    client.send_line("pending message");
    assert_eq!(server.stdout_line(), "pending message");
    server.signal("KILL");
    client.stderr_line_containing("lost the connection");

    let (mut restarted, _) = Proc::server(&["--bind", &endpoint, "--key", &key_file]);
    assert_eq!(restarted.stdout_line(), "pending message");
    restarted.stderr_line_containing("encrypted session with client");
    client.stderr_line_containing("re-sent the unanswered message");
    restarted.send_line("answer after restart");
    assert_eq!(client.stdout_line(), "answer after restart");
    client.send_line("next");
    assert_eq!(
        restarted.stdout_line(),
        "next",
        "the pending message came once"
    );
}

/// Limits hold in secure mode: an oversized message is cut at --max-size
/// and a peer's terminal control characters are shown escaped.
#[test]
fn secure_mode_keeps_the_size_limit_and_the_escaping() {
    let keys = folder("limits");
    let (mut server, endpoint, server_key) = secure_server(&keys, &["--max-size", "20"]);
    let mut client = secure_client(&keys, "client.key", &endpoint, &server_key);
    client.send_line("\u{1b}[2Jcleared? 0123456789012345678901234567890");
    let shown = server.stdout_line();
    assert!(!shown.contains('\u{1b}'), "{shown:?}");
    assert!(shown.starts_with("\\x1b[2Jcleared?"), "{shown:?}");
    server.stderr_line_containing("only the first 20 are shown");
    let huge = "x".repeat(200_000);
    server.send_line(&huge);
    // Sealed as four Noise messages; shown up to the client's 64 KiB limit.
    assert_eq!(client.stdout_line().len(), 65_536);
    client.stderr_line_containing("the message had 200000 bytes");
}

/// `--keygen` writes an owner-only key and prints the public key the server
/// then announces; loose, short, garbled or missing key files and a bad
/// --server-key are refused with the reason.
#[test]
fn key_files_are_owner_only_and_bad_ones_are_refused_clearly() {
    let keys = folder("key-files");
    let (path, public_key) = keygen(&keys, "server.key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(public_key.len(), 44, "{public_key}");
    let (status, _, stderr) = run_to_end(SERVER, &["--keygen", &path], "");
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("already exists"), "{stderr}");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (status, _, stderr) = run_to_end(SERVER, &["--bind", "127.0.0.1:0", "--key", &path], "");
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("chmod 600"), "{stderr}");

    let short = keys.join("short.key");
    std::fs::write(&short, "c2hvcnQ=\n").unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (status, _, stderr) = run_to_end(SERVER, &["--key", short.to_str().unwrap()], "");
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("is 5 bytes long; a key is 32 bytes"),
        "{stderr}"
    );

    let garbled = keys.join("garbled.key");
    std::fs::write(&garbled, "%%% not base64 %%%\n").unwrap();
    std::fs::set_permissions(&garbled, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (status, _, stderr) = run_to_end(SERVER, &["--key", garbled.to_str().unwrap()], "");
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("not valid base64"), "{stderr}");

    let missing = keys.join("missing.key");
    let (status, _, stderr) = run_to_end(
        CLIENT,
        &[
            "--server-key",
            &public_key,
            "--key",
            missing.to_str().unwrap(),
        ],
        "hi\n",
    );
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("missing.key"), "{stderr}");
    assert!(!missing.exists(), "a named key file is never made up");

    let (status, _, stderr) = run_to_end(CLIENT, &["--server-key", "tooshort"], "hi\n");
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("--server-key"), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"));
}

/// Without --key, the client makes its key in the documented place on first
/// use (owner-only, in an owner-only folder) and uses the same key after.
#[test]
fn client_key_is_created_in_the_default_place_on_first_use() {
    let home = folder("default-key");
    let keys = folder("default-key-server");
    let (mut server, endpoint, server_key) = secure_server(&keys, &["--echo"]);
    let home_text = home.to_str().unwrap();
    let env = [("HOME", home_text), ("XDG_CONFIG_HOME", "")];
    let mut announced = Vec::new();
    for attempt in ["first", "second"] {
        let mut client = Proc::spawn_with_env(
            CLIENT,
            &["--connect", &endpoint, "--server-key", &server_key],
            &env,
        );
        client.send_line(attempt);
        assert_eq!(client.stdout_line(), attempt);
        announced.push(client.stderr_line_containing("this client's public key is"));
        client.close_stdin();
        assert!(client.wait().success());
    }
    assert_eq!(announced[0], announced[1], "the same key both times");
    let key = home.join(".config/zmq-chat/client.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let folder_mode = std::fs::metadata(key.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(folder_mode & 0o777, 0o700);
    server.assert_running();
}

/// Freeze a secure server (SIGSTOP) while a message waits for its reply:
/// the client drops the connection after --liveness, and when the server
/// thaws it shakes hands afresh and re-sends; the operator's reply arrives,
/// sealed in the new session, and the message was shown once.
#[test]
fn frozen_secure_server_answers_once_after_a_fresh_handshake() {
    let keys = folder("freeze");
    let (mut server, endpoint, server_key) = secure_server(&keys, &[]);
    let mut client = secure_client_with(
        &keys,
        "client.key",
        &endpoint,
        &server_key,
        &["--liveness", "0.5", "--give-up", "20"],
    );
    client.send_line("are you there?");
    assert_eq!(server.stdout_line(), "are you there?");
    client.stderr_line_containing("encrypted chat with server");
    server.signal("STOP");
    client.stderr_line_containing("lost the connection");
    server.signal("CONT");
    server.send_line("sorry, I froze");
    client.stderr_line_containing("re-sent the unanswered message");
    assert_eq!(client.stdout_line(), "sorry, I froze");
    // stderr is read by its own thread: give its lines a moment to arrive.
    let deadline = Instant::now() + DEADLINE;
    let handshakes = loop {
        let count = client
            .drain_stderr()
            .iter()
            .filter(|line| line.contains("encrypted chat with server"))
            .count();
        if count >= 2 || Instant::now() > deadline {
            break count;
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(handshakes, 2, "a fresh handshake after the reconnect");
    client.send_line("next");
    assert_eq!(
        server.stdout_line(),
        "next",
        "the frozen message was shown once"
    );
}

/// A secure client started before its server: the handshake waits in the
/// queue like a plain message would, and the chat starts when the server
/// appears.
#[test]
fn secure_client_started_before_its_server_is_answered_when_it_appears() {
    let keys = folder("client-first");
    let (key_file, server_key) = keygen(&keys, "server.key");
    let address = ipc_address("secure-client-first");
    let mut client = secure_client(&keys, "client.key", &address, &server_key);
    client.send_line("anyone there?");
    // A deliberate absence: no server for 300 ms while the client waits.
    std::thread::sleep(Duration::from_millis(300));
    let (_server, _) = Proc::server(&["--bind", &address, "--key", &key_file, "--echo"]);
    assert_eq!(client.stdout_line(), "anyone there?");
    client.stderr_line_containing("encrypted chat with server");
}

/// A key of small order (here all zeros) secures nothing: neither program
/// accepts one, as `--server-key` (a usage error) or on an allow list.
#[test]
fn an_all_zero_key_is_refused_by_both_programs() {
    let zeros = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let (status, _, stderr) = run_to_end(CLIENT, &["--server-key", zeros], "hi\n");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("point of small order"), "{stderr}");

    let keys = folder("zero-key");
    let (key_file, _) = keygen(&keys, "server.key");
    let allow = keys.join("allow.txt");
    std::fs::write(&allow, format!("{zeros}\n")).unwrap();
    let (status, _, stderr) = run_to_end(
        SERVER,
        &["--key", &key_file, "--allow", allow.to_str().unwrap()],
        "",
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 1 of") && stderr.contains("point of small order"),
        "{stderr}"
    );
}

/// A folder given as `--key` gets one line saying so (not "Is a directory").
#[test]
fn a_folder_given_as_the_key_is_named_as_such() {
    let keys = folder("key-is-folder");
    let (status, _, stderr) = run_to_end(SERVER, &["--key", keys.to_str().unwrap()], "");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is a folder, not a key file"), "{stderr}");
}

/// The 32 bytes of a base64 public key.
fn decode_key(key: &str) -> [u8; 32] {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap()
        .try_into()
        .unwrap()
}

/// Appends WireGuard's mac1 for the server whose public key is `server`
/// (keyed BLAKE2s-128 under BLAKE2s-256("mac1----" | key)), as an attacker
/// who knows the server's public key can.
fn append_mac1(frame: &mut Vec<u8>, server: &[u8; 32]) {
    use blake2::digest::consts::U16;
    use blake2::digest::{FixedOutput, KeyInit, Update};
    use blake2::{Blake2s256, Blake2sMac, Digest};
    let key = Blake2s256::new()
        .chain_update(b"mac1----")
        .chain_update(server)
        .finalize();
    let mut mac = <Blake2sMac<U16> as KeyInit>::new_from_slice(&key).unwrap();
    Update::update(&mut mac, frame);
    frame.extend_from_slice(&mac.finalize_fixed());
}

/// Sends 10,000 forged first handshake messages to `endpoint` over
/// `connections` DEALER connections, in turn, until done or `stop`; returns
/// how many were sent. With `server_key` they carry a valid mac1 (so each
/// costs the server a Diffie-Hellman unless its budget refuses it first).
/// Replies are read and dropped, so the flood never stalls on them.
fn flood_forged_handshakes(
    endpoint: &str,
    connections: usize,
    server_key: Option<[u8; 32]>,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> thread::JoinHandle<usize> {
    let (endpoint, stop) = (endpoint.to_string(), Arc::clone(stop));
    thread::spawn(move || {
        let context = zmq::Context::new();
        let sockets: Vec<zmq::Socket> = (0..connections)
            .map(|_| {
                let socket = plain_socket(&context, zmq::DEALER);
                socket.connect(&endpoint).unwrap();
                socket
            })
            .collect();
        let mut forged = b"zcs3H".to_vec();
        forged.extend_from_slice(&7u64.to_be_bytes());
        forged.extend((0..96u8).map(|byte| byte.wrapping_mul(37).wrapping_add(11)));
        if let Some(server_key) = server_key {
            append_mac1(&mut forged, &server_key);
        }
        let mut sent = 0;
        while sent < 10_000 && !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for socket in &sockets {
                let id = format!("zc1:00000000000f100d:{sent}");
                if socket
                    .send_multipart([id.as_bytes(), b"", &forged], zmq::DONTWAIT)
                    .is_ok()
                {
                    sent += 1;
                }
                while socket.recv_multipart(zmq::DONTWAIT).is_ok() {}
            }
        }
        sent
    })
}

/// 10,000 forged first handshake messages do not keep a legitimate client
/// from its first reply within a second, and make a handful of stderr
/// lines, not one per frame. From ten connections with a valid mac1 (each
/// costs a Diffie-Hellman), the connections' handshake budgets refuse most
/// unread; from a thousand connections without one (a scan, random bytes),
/// the mac1 check refuses each for the price of a hash.
#[test]
fn a_flood_of_forged_handshakes_delays_no_legitimate_client() {
    for (connections, mac1) in [(10, true), (1_000, false)] {
        let keys = folder(&format!("handshake-flood-{connections}"));
        let (mut server, endpoint, server_key) = secure_server(&keys, &["--echo"]);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let server_key_bytes = mac1.then(|| decode_key(&server_key));
        let flooding = flood_forged_handshakes(&endpoint, connections, server_key_bytes, &stop);
        let (client_key, _) = keygen(&keys, "client.key");
        // A thousand connections take a while to be made when the machine
        // is busy (other test binaries' brokers shutting down, say).
        server.stderr_line_containing_within("refused a handshake", Duration::from_secs(60));
        let started = Instant::now();
        let (status, stdout, stderr) = run_to_end(
            CLIENT,
            &[
                "--connect",
                &endpoint,
                "--server-key",
                &server_key,
                "--key",
                &client_key,
            ],
            "through the flood\n",
        );
        let took = started.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = flooding.join().unwrap();
        assert!(status.success(), "{stderr}");
        assert_eq!(stdout, "through the flood");
        assert!(
            took < Duration::from_secs(1),
            "the legitimate client took {took:?} ({sent} forged over {connections} connections)"
        );
        let lines = server.drain_stderr().len();
        assert!(
            lines < 20,
            "{lines} stderr lines for {sent} forged handshakes over {connections} connections"
        );
    }
}

/// `--public-key FILE` prints the public key of a key file, as `--keygen`
/// printed it when making the file, with both programs; a missing file is
/// one line of error, exit 1.
#[test]
fn public_key_prints_the_public_key_of_a_key_file() {
    let keys = folder("public-key");
    let (key_file, public) = keygen(&keys, "server.key");
    for program in [SERVER, CLIENT] {
        let (status, stdout, stderr) = run_to_end(program, &["--public-key", &key_file], "");
        assert!(status.success(), "{stderr}");
        assert_eq!(stdout.trim(), public);
    }
    let missing = keys.join("missing.key");
    let (status, _, stderr) = run_to_end(SERVER, &["--public-key", missing.to_str().unwrap()], "");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// The operator ends the chat (end of the server's script) while a secure
/// client's message waits: the goodbye is sealed, so the client believes it
/// and says the operator ended the chat (a forged, clear one it ignores:
/// see the secure channel's unit tests).
#[test]
fn a_secure_servers_goodbye_is_sealed_and_believed() {
    let keys = folder("sealed-goodbye");
    let (mut server, endpoint, server_key) = secure_server(&keys, &[]);
    let mut client = secure_client(&keys, "client.key", &endpoint, &server_key);
    client.send_line("are you leaving?");
    assert_eq!(server.stdout_line(), "are you leaving?");
    server.close_stdin();
    client.stderr_line_containing("operator ended the chat");
    assert_eq!(client.wait().code(), Some(1));
}

/// A chat-client whose config folder (for the known servers file and its
/// own key) is `config`, not the user's.
fn client_with_config(config: &Path, args: &[&str]) -> Proc {
    Proc::spawn_with_env(
        CLIENT,
        args,
        &[("XDG_CONFIG_HOME", config.to_str().unwrap())],
    )
}

/// Trust on first use (issue 15): with --secure a script must say it
/// accepts a new key; once accepted the key is remembered for the address,
/// which is then secure without any flag; a server there with another key,
/// or a plain one, is refused loudly, naming the file and line.
#[test]
fn trust_on_first_use_remembers_a_key_and_refuses_a_changed_one() {
    let keys = folder("tofu");
    let config = keys.join("config");
    let known = config.join("zmq-chat").join("known_servers");
    let (mut server, endpoint, server_key) = secure_server(&keys, &["--echo"]);

    let mut unasked = client_with_config(&config, &["--secure", &endpoint]);
    unasked.stderr_line_containing(&format!("presents the key {server_key}"));
    unasked.stderr_line_containing("pass --accept-new-key");
    assert_eq!(unasked.wait().code(), Some(1));
    assert!(!known.exists(), "nothing remembered without consent");

    let mut first = client_with_config(&config, &["--secure", "--accept-new-key", &endpoint]);
    first.stderr_line_containing(&format!("remembered the key of {endpoint} (line 1 of"));
    first.send_line("first use");
    assert_eq!(first.stdout_line(), "first use");
    first.close_stdin();
    assert_eq!(first.wait().code(), Some(0));
    let written = std::fs::read_to_string(&known).unwrap();
    assert_eq!(written, format!("{endpoint} {server_key}\n"));

    let mut later = client_with_config(&config, &[&endpoint]);
    later.stderr_line_containing(&format!(
        "secure mode with the key remembered for {endpoint}"
    ));
    later.send_line("known now");
    assert_eq!(later.stdout_line(), "known now");
    server.stderr_line_containing("encrypted session with client");
    later.close_stdin();
    assert_eq!(later.wait().code(), Some(0));
    server.signal("KILL");
    server.wait();

    let (other_file, _) = keygen(&keys, "impostor.key");
    let (mut impostor, _) = Proc::server(&["--bind", &endpoint, "--key", &other_file, "--echo"]);
    let mut fooled = client_with_config(&config, &[&endpoint]);
    let said = fooled.stderr_line_containing("THE SERVER'S KEY HAS CHANGED");
    assert!(
        said.contains(&format!("line 1 of {}", known.display())),
        "{said}"
    );
    assert_eq!(fooled.wait().code(), Some(1));
    impostor.signal("KILL");
    impostor.wait();

    let (_plain, _) = Proc::server(&["--bind", &endpoint, "--echo"]);
    let mut downgraded = client_with_config(&config, &[&endpoint]);
    downgraded.send_line("in clear?");
    downgraded.stderr_line_containing("not in secure mode");
    assert_eq!(downgraded.wait().code(), Some(1));
}
