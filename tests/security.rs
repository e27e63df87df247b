//! Secure mode end to end: real binaries, real sockets, and a byte-level tap
//! (a TCP forwarder in the test) between client and server that records,
//! alters or replays what crosses it.

mod common;
#[path = "security/tap.rs"]
mod tap;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{CLIENT, DEADLINE, Proc, SERVER, Scratch, ipc_address, peer_socket, run_to_end};
use tap::{Tap, TapMode, find};

/// A fresh folder for one test's keys, removed with it.
fn folder(test: &str) -> Scratch {
    Scratch::new(&format!("security-{test}"))
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
        notice.contains(
            &zmq_chat::secure::keys::PublicKey::parse(&server_key, "the server key")
                .unwrap()
                .fingerprint()
        ),
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

/// One flipped byte in a sealed message: the server drops it and says so
/// (naming the connection it came on), answers in clear, seals nothing; the
/// client, which believes no clear word inside a session, shakes hands
/// again and sends it once more, and the reply comes. (Before, the client
/// believed a refusal and exited 1 with its message unanswered.)
#[test]
fn tampered_ciphertext_is_refused_and_the_message_arrives_once_sent_again() {
    let keys = folder("tamper");
    let (mut server, endpoint, server_key) = secure_server(&keys, &["--echo"]);
    let tap = Tap::start(&endpoint, TapMode::TamperFirstMessage);
    let mut client = secure_client(&keys, "client.key", &tap.endpoint, &server_key);
    client.send_line("transfer 10 euros");
    let dropped = server.stderr_line_containing("failed authentication");
    assert!(dropped.contains("(from 127.0.0.1:"), "{dropped}");
    assert_eq!(client.stdout_line(), "transfer 10 euros");
    assert_eq!(server.stdout_line(), "transfer 10 euros");
    client.send_line("and 20 more");
    assert_eq!(client.stdout_line(), "and 20 more");
    assert_eq!(
        server.stdout_line(),
        "and 20 more",
        "the altered message was shown once, whole"
    );
    client.close_stdin();
    assert_eq!(client.wait().code(), Some(0));
}

/// A long message cut short on the path (only the first of its two Noise
/// messages kept, the frame size fixed) is refused whole: the server shows
/// nothing of it, and the client's copy, sent again, arrives whole.
#[test]
fn a_long_message_cut_short_on_the_way_is_refused_not_shown_in_part() {
    let keys = folder("truncate");
    let (mut server, endpoint, server_key) = secure_server(&keys, &["--echo"]);
    let tap = Tap::start(&endpoint, TapMode::TruncateFirstMessage);
    let mut client = secure_client(&keys, "client.key", &tap.endpoint, &server_key);
    client.send_line(&"y".repeat(100_017));
    server.stderr_line_containing("failed authentication");
    let recorded = tap.client_to_server();
    assert!(
        find(&recorded, b"zcs3M").is_some(),
        "the message crossed the tap"
    );
    // Shown up to --max-size, with the size of the whole message.
    assert_eq!(server.stdout_line(), "y".repeat(65_536));
    server.stderr_line_containing("the message had 100017 bytes");
    assert_eq!(client.stdout_line(), "y".repeat(65_536));

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
/// server shows it once, answers the replay in clear, seals nothing, and
/// the genuine session goes on.
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
    // The refusal goes in clear; only the one sealed reply has crossed.
    tap.wait_for_bytes_to_client(b"zcs3R", 1);
    assert_eq!(
        find_all(&tap.server_to_client(), b"zcs3m"),
        1,
        "nothing sealed for the replay"
    );

    client.send_line("second");
    assert_eq!(server.stdout_line(), "second", "the replay was not shown");
    server.send_line("ok");
    assert_eq!(client.stdout_line(), "ok");
}

/// How many times `needle` occurs in `haystack`.
fn find_all(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|window| *window == needle)
        .count()
}

/// Issue 24, bug 1: a peer that replays a victim's recorded sealed message
/// from a connection of its own (or sends garbage with the victim's server
/// index) gets a clear refusal; nothing is sealed in the victim's session,
/// whose next reply still opens; the operator's notice names the
/// attacker's connection, not the victim's key. (Before, the refusal was
/// sealed in the victim's session, and the victim's next genuine reply
/// failed authentication: exit 1.)
#[test]
fn a_sealed_message_replayed_from_another_connection_breaks_no_session() {
    let keys = folder("replay-elsewhere");
    let (mut server, endpoint, server_key) = secure_server(&keys, &[]);
    let tap = Tap::start(&endpoint, TapMode::Forward);
    let mut victim = secure_client(&keys, "victim.key", &tap.endpoint, &server_key);
    let victim_key = victim.stderr_line_containing("this client's public key is");
    victim.send_line("pay 100");
    assert_eq!(server.stdout_line(), "pay 100");

    let context = zmq::Context::new();
    let attacker = peer_socket(&context, zmq::DEALER);
    attacker.connect(&endpoint).unwrap();
    let recorded = tap.first_message_frames();
    let mut garbage = recorded.clone();
    let body = garbage.last_mut().unwrap();
    body.truncate(5 + 8);
    body.extend_from_slice(&[0, 20]);
    body.extend_from_slice(&[7; 20]);
    for frames in [recorded, garbage] {
        attacker.send_multipart(&frames, 0).unwrap();
        let answer = attacker.recv_multipart(0).unwrap();
        let refusal = answer.last().unwrap();
        assert!(
            refusal.starts_with(b"zcs3R"),
            "answered in clear: {answer:?}"
        );
    }
    let notice = server.stderr_line_containing("failed authentication");
    assert!(notice.contains("(from 127.0.0.1:"), "{notice}");
    let victim_key = victim_key
        .rsplit("is ")
        .next()
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert!(!notice.contains(&fingerprint(victim_key)), "{notice}");

    server.send_line("paid");
    assert_eq!(victim.stdout_line(), "paid");
    victim.send_line("thanks");
    assert_eq!(server.stdout_line(), "thanks");
    server.send_line("welcome");
    assert_eq!(victim.stdout_line(), "welcome");
    victim.close_stdin();
    assert_eq!(victim.wait().code(), Some(0));
}

/// The fingerprint of a public key, as the programs show it.
fn fingerprint(public_key: &str) -> String {
    zmq_chat::secure::keys::PublicKey::parse(public_key, "a test key")
        .unwrap()
        .fingerprint()
}

/// Issue 24, bug 2: a duplicate of the waiting message, made on the path,
/// makes no refusal the client believes: it goes on waiting and shows the
/// operator's reply, and the operator sees the message once. (Before, the
/// client printed "the server refused the message" and exited 1.)
#[test]
fn an_on_path_duplicate_of_the_waiting_message_is_no_refusal() {
    let keys = folder("duplicate");
    let (mut server, endpoint, server_key) = secure_server(&keys, &[]);
    let tap = Tap::start(&endpoint, TapMode::Forward);
    let mut client = secure_client(&keys, "client.key", &tap.endpoint, &server_key);
    client.send_line("hello");
    assert_eq!(server.stdout_line(), "hello");
    tap.replay_first_message();
    // Said once the duplicate is answered: the answer is ahead of the reply.
    server.stderr_line_containing("failed authentication");
    server.send_line("hi there");
    assert_eq!(client.stdout_line(), "hi there");
    client.send_line("next");
    assert_eq!(server.stdout_line(), "next", "hello was shown once");
    server.send_line("ok");
    assert_eq!(client.stdout_line(), "ok");
    client.close_stdin();
    assert_eq!(client.wait().code(), Some(0));
    let said = client.drain_stderr().join("\n");
    assert!(!said.contains("refused"), "{said}");
}

/// Issue 24, bug 3: inside a session with a remembered key, a clear refusal
/// "made for another server key" injected on the path raises no alarm:
/// the chat goes on. (Before: THE SERVER'S KEY HAS CHANGED, exit 1.)
#[test]
fn a_forged_wrong_key_refusal_inside_a_session_raises_no_alarm() {
    let keys = folder("forged-wrong-key");
    let config = keys.join("config");
    let (mut server, endpoint, server_key) = secure_server(&keys, &[]);
    let tap = Tap::start(&endpoint, TapMode::Forward);
    let known = config.join("zmq-chat");
    std::fs::create_dir_all(&known).unwrap();
    std::fs::write(
        known.join("known_servers"),
        format!("{} {server_key}\n", tap.endpoint),
    )
    .unwrap();
    let mut client = client_with_config(&config, &[&tap.endpoint]);
    client.send_line("first");
    assert_eq!(server.stdout_line(), "first");
    server.send_line("one");
    assert_eq!(client.stdout_line(), "one");
    client.send_line("second");
    assert_eq!(server.stdout_line(), "second");
    let id = last_message_id(&tap.client_to_server());
    let forged = b"zcs3R\x05the server could not read the handshake: wrong --server-key";
    tap.inject_to_client(&[&id, b"", forged]);
    tap.inject_to_client(&[&marked(&id, "refused"), b"", b"go away"]);
    server.send_line("two");
    assert_eq!(client.stdout_line(), "two");
    client.close_stdin();
    assert_eq!(client.wait().code(), Some(0));
    let said = client.drain_stderr().join("\n");
    assert!(
        !said.contains("CHANGED") && !said.contains("refused"),
        "{said}"
    );
}

/// The id frame of the last message that crossed toward the server.
fn last_message_id(recorded: &[u8]) -> Vec<u8> {
    let at = recorded
        .windows(4)
        .rposition(|window| window == b"zc1:")
        .expect("a message id crossed the tap");
    let length = recorded[at - 1] as usize;
    recorded[at..at + length].to_vec()
}

/// An id frame with an envelope mark (`zc1:…:refused`).
fn marked(id: &[u8], mark: &str) -> Vec<u8> {
    [id, b":", mark.as_bytes()].concat()
}

/// Issue 24, bug 4: the connection is cut while the operator types; the
/// client reconnects, shakes hands again and re-sends; the reply, sealed in
/// the new session, reaches it once. (Before, the reply was sealed in the
/// old session, ignored, and the client waited for ever.) Plain mode too.
#[test]
fn a_connection_lost_while_the_operator_types_loses_no_reply() {
    let keys = folder("cut-while-typing");
    for secure in [true, false] {
        let (mut server, endpoint, server_key) = if secure {
            secure_server(&keys, &[])
        } else {
            let (server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0"]);
            (server, endpoint, String::new())
        };
        let tap = Tap::start(&endpoint, TapMode::Forward);
        let liveness = ["--liveness", "1"];
        let mut client = if secure {
            let name = format!("client-{secure}.key");
            secure_client_with(&keys, &name, &tap.endpoint, &server_key, &liveness)
        } else {
            Proc::spawn(
                CLIENT,
                &[&["--connect", &tap.endpoint][..], &liveness].concat(),
            )
        };
        client.send_line("are you there?");
        assert_eq!(server.stdout_line(), "are you there?");
        tap.cut();
        client.stderr_line_containing("re-sent the unanswered message");
        server.stderr_line_containing("the client you are answering sent its message again");
        server.send_line("yes");
        assert_eq!(client.stdout_line(), "yes");
        client.send_line("good");
        assert_eq!(server.stdout_line(), "good", "the question was shown once");
        server.send_line("bye");
        assert_eq!(client.stdout_line(), "bye");
        client.close_stdin();
        assert_eq!(client.wait().code(), Some(0), "secure: {secure}");
    }
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
    let req = peer_socket(&context, zmq::REQ);
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

/// Where a flood comes from: `connections` DEALER connections, spread
/// over `hosts` loopback addresses from 127.0.0.2 on (none of them the
/// 127.0.0.1 legitimate clients come from).
#[derive(Clone, Copy)]
struct Flood {
    connections: usize,
    hosts: usize,
}

/// Sends up to 10,000 forged first handshake messages to `endpoint` as
/// `flood` says, in turn, until done, then reads replies until `stop`;
/// counts them in `sent_so_far` and returns how many were sent.
/// With `server_key` they carry a valid mac1 (so each would cost the server
/// a Diffie-Hellman unless its budget refuses it first). Replies are read
/// and dropped, so the flood never stalls on them.
fn flood_forged_handshakes(
    endpoint: &str,
    flood: Flood,
    server_key: Option<[u8; 32]>,
    stop: &Arc<std::sync::atomic::AtomicBool>,
    sent_so_far: &Arc<std::sync::atomic::AtomicUsize>,
) -> thread::JoinHandle<usize> {
    let port = endpoint.rsplit(':').next().unwrap().to_string();
    let (stop, sent_so_far) = (Arc::clone(stop), Arc::clone(sent_so_far));
    thread::spawn(move || {
        let context = zmq::Context::new();
        let sockets: Vec<zmq::Socket> = (0..flood.connections)
            .map(|connection| {
                let socket = peer_socket(&context, zmq::DEALER);
                // Queued only on connections made: a frame queued on a
                // connection still being made would be dropped unsent when
                // the flood ends (linger 0), and a busy machine makes
                // connections slowly (the cause of this test's old flake).
                socket.set_immediate(true).unwrap();
                let host = 2 + connection % flood.hosts;
                socket
                    .connect(&format!("tcp://127.0.0.{host}:0;127.0.0.1:{port}"))
                    .unwrap();
                socket
            })
            .collect();
        let mut forged = b"zcs3H".to_vec();
        forged.extend_from_slice(&7u64.to_be_bytes());
        forged.extend((0..96u8).map(|byte| byte.wrapping_mul(37).wrapping_add(11)));
        if let Some(server_key) = server_key {
            append_mac1(&mut forged, &server_key);
        }
        // One each first, waiting for its connection, so that the flood
        // comes from all its hosts at once.
        let first = |socket: &zmq::Socket| {
            socket.set_sndtimeo(DEADLINE.as_millis() as i32)?;
            socket.send_multipart([&b"zc1:00000000000f100d:0"[..], b"", &forged], 0)
        };
        for socket in &sockets {
            first(socket).unwrap();
        }
        let mut sent = sockets.len();
        sent_so_far.store(sent, std::sync::atomic::Ordering::Relaxed);
        // The sockets stay open until told to stop, so that nothing queued
        // is dropped unsent.
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for socket in &sockets {
                let id = format!("zc1:00000000000f100d:{sent}");
                if sent < 10_000
                    && socket
                        .send_multipart([id.as_bytes(), b"", &forged], zmq::DONTWAIT)
                        .is_ok()
                {
                    sent += 1;
                    sent_so_far.store(sent, std::sync::atomic::Ordering::Relaxed);
                }
                while socket.recv_multipart(zmq::DONTWAIT).is_ok() {}
            }
            if sent == 10_000 {
                thread::sleep(Duration::from_millis(10));
            }
        }
        sent
    })
}

/// Issue 24, point 7: 10,000 forged first handshake messages keep neither a
/// live session nor a legitimate client from its reply within a second,
/// cost the server a small part of the CPU a Diffie-Hellman each would, and
/// make a handful of stderr lines. From 330 connections of one host with a
/// valid mac1 (each would cost a Diffie-Hellman), the host's budget
/// refuses all but a few unread; from 200 connections spread over 100
/// hosts, the server's own budget does; from a thousand connections
/// without a mac1 (a scan, random bytes), the mac1 check refuses each for
/// the price of a hash.
#[test]
fn a_flood_of_forged_handshakes_delays_no_legitimate_client() {
    let floods = [
        (
            Flood {
                connections: 330,
                hosts: 1,
            },
            true,
            "one address",
        ),
        (
            Flood {
                connections: 200,
                hosts: 100,
            },
            true,
            "in all",
        ),
        (
            Flood {
                connections: 1_000,
                hosts: 1,
            },
            false,
            "another server key",
        ),
    ];
    for (flood, mac1, refused_as) in floods {
        let name = format!("handshake-flood-{}-{}", flood.connections, flood.hosts);
        let keys = folder(&name);
        let (mut server, endpoint, server_key) = secure_server(&keys, &["--echo"]);
        let mut live = secure_client(&keys, "live.key", &endpoint, &server_key);
        live.send_line("before the flood");
        assert_eq!(live.stdout_line(), "before the flood");
        let cpu_before = server.cpu_time();
        let flood_started = Instant::now();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let server_key_bytes = mac1.then(|| decode_key(&server_key));
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let flooding = flood_forged_handshakes(&endpoint, flood, server_key_bytes, &stop, &sent);
        // A thousand connections take a while to be made when the machine
        // is busy (other test binaries' brokers shutting down, say).
        server.stderr_line_containing_within(refused_as, Duration::from_secs(60));

        let started = Instant::now();
        live.send_line("during the flood");
        assert_eq!(live.stdout_line(), "during the flood");
        let live_took = started.elapsed();
        let (client_key, _) = keygen(&keys, "client.key");
        let args = [
            "--connect",
            &endpoint,
            "--server-key",
            &server_key,
            "--key",
            &client_key,
        ];
        let started = Instant::now();
        let (status, stdout, stderr) = run_to_end(CLIENT, &args, "through the flood\n");
        let new_took = started.elapsed();
        common::wait_until("the whole flood is sent", || {
            sent.load(std::sync::atomic::Ordering::Relaxed) == 10_000
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = flooding.join().unwrap();
        let cpu = server.cpu_time() - cpu_before;
        let wall = flood_started.elapsed();
        let what = format!(
            "{sent} forged over {} connections from {} hosts: server CPU {cpu:?} in {wall:?}, live round trip {live_took:?}, new client {new_took:?}",
            flood.connections, flood.hosts
        );
        println!("flood: {what}");
        assert!(status.success(), "{stderr}\n{what}");
        assert_eq!(stdout, "through the flood");
        assert!(live_took < Duration::from_secs(1), "{what}");
        // From many hosts, the server's budget refuses new handshakes
        // while the flood's burst lasts: the client tries again after a
        // pause (half a second, then a second), and gets through.
        let new_limit = Duration::from_secs(if flood.hosts > 1 { 3 } else { 1 });
        assert!(new_took < new_limit, "{what}");
        // A Diffie-Hellman each would be over 6 s of CPU even in a release
        // build (0.6 ms each); the budget lets through at most a few hundred.
        assert!(cpu < Duration::from_secs(3), "{what}");
        let lines = server.drain_stderr().len();
        assert!(lines < 20, "{lines} stderr lines: {what}");
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
        assert!(stderr.contains(&fingerprint(&public)), "{stderr}");
    }
    let missing = keys.join("missing.key");
    let (status, _, stderr) = run_to_end(SERVER, &["--public-key", missing.to_str().unwrap()], "");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// Issue 26, point 12: `--keygen -` prints the private key on stdout (as
/// `wg genkey`), writes no file named `-`, and the key it prints works as a
/// key file's line.
#[test]
fn keygen_to_a_dash_prints_the_private_key_and_writes_no_file() {
    let keys = folder("keygen-dash");
    let mut command = std::process::Command::new(SERVER);
    command.args(["--keygen", "-"]).current_dir(&*keys);
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!keys.join("-").exists(), "no file named -");
    let private = String::from_utf8(output.stdout).unwrap();
    assert_eq!(private.trim().len(), 44, "{private}");
    let file = keys.join("from-stdout.key");
    std::fs::write(&file, &private).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (status, public, _) = run_to_end(SERVER, &["--public-key", file.to_str().unwrap()], "");
    assert!(status.success());
    assert!(
        stderr.contains(public.trim()),
        "stderr names its public key: {stderr}"
    );
}

/// Issue 24, point 5: wherever a key is shown for a person to compare, it is
/// shown as OpenSSH shows a host key, `SHA256:` and 43 base64 characters of
/// its hash: `--keygen`, the server's start, the client's own key, the
/// trust-on-first-use prompt, the operator's labels (see interactive.rs),
/// the known servers file; the key itself where one is pasted.
#[test]
fn fingerprints_are_sha256_of_the_whole_key_everywhere_one_is_compared() {
    let keys = folder("fingerprints");
    let key_file = keys.join("server.key");
    let key_file = key_file.to_str().unwrap();
    let (status, stdout, stderr) = run_to_end(SERVER, &["--keygen", key_file], "");
    assert!(status.success(), "{stderr}");
    let server_key = stdout.trim();
    let server_print = fingerprint(server_key);
    assert!(server_print.starts_with("SHA256:"), "{server_print}");
    assert_eq!(server_print.len(), "SHA256:".len() + 43, "{server_print}");
    assert!(stderr.contains(&server_print), "--keygen: {stderr}");

    let (mut server, endpoint) =
        Proc::server(&["--bind", "127.0.0.1:0", "--key", key_file, "--echo"]);
    server.stderr_line_containing(&format!("first use (--secure): {server_print}"));
    let config = keys.join("config");
    let mut client = client_with_config(&config, &["--secure", "--accept-new-key", &endpoint]);
    client.stderr_line_containing(&format!("(fingerprint {server_print})"));
    let own = client.stderr_line_containing("this client's public key is");
    let client_key = own.rsplit("is ").next().unwrap().split(' ').next().unwrap();
    assert!(own.contains(&fingerprint(client_key)), "{own}");
    client.send_line("hello");
    assert_eq!(client.stdout_line(), "hello");
    server.stderr_line_containing(&format!(
        "session with client {} started",
        fingerprint(client_key)
    ));
    let known = std::fs::read_to_string(config.join("zmq-chat").join("known_servers")).unwrap();
    assert!(
        known.contains(&format!("{server_key} # {server_print}")),
        "{known}"
    );
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
    assert_eq!(
        written,
        format!("{endpoint} {server_key} # {}\n", fingerprint(&server_key))
    );

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
