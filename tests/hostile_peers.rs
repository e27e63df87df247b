//! Peers that do not follow the wire format: invalid UTF-8, terminal escape
//! sequences, several frames, empty and oversized messages. Neither binary
//! crashes or wedges; each shows the text safely and says what was odd.

mod common;

use common::{CLIENT, Proc, peer_socket, run_to_end};

/// Sends `frames` from a plain REQ peer to a script-mode `chat-server` and
/// returns the line the server printed; checks the server still replies.
fn server_shows(server: &mut Proc, peer: &zmq::Socket, frames: &[&[u8]]) -> String {
    peer.send_multipart(frames, 0).unwrap();
    let shown = server.stdout_line();
    server.send_line("still here");
    assert_eq!(
        peer.recv_bytes(0).expect("the server replies"),
        b"still here"
    );
    shown
}

/// Every odd message reaches the operator as one escaped line with an
/// explanation on stderr, and the server keeps serving a normal client.
#[test]
fn server_survives_and_explains_odd_messages() {
    let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0", "--max-size", "1000"]);
    let context = zmq::Context::new();
    let peer = peer_socket(&context, zmq::REQ);
    peer.connect(&endpoint).unwrap();

    assert_eq!(
        server_shows(&mut server, &peer, &[b"bad \xff\xfe bytes"]),
        "bad \u{FFFD}\u{FFFD} bytes"
    );
    server.stderr_line_containing("not valid UTF-8");

    let shown = server_shows(
        &mut server,
        &peer,
        &[b"\x1b[2J\x1b]0;owned\x07\rfake prompt$ "],
    );
    assert_eq!(shown, "\\x1b[2J\\x1b]0;owned\\x07\\rfake prompt$ ");
    assert!(!shown.contains('\x1b'));

    assert_eq!(
        server_shows(&mut server, &peer, &[b"line one\nline two"]),
        "line one\\nline two"
    );

    assert_eq!(
        server_shows(&mut server, &peer, &[b"part one", b"part two", b"3"]),
        "part one \u{241E} part two \u{241E} 3"
    );
    server.stderr_line_containing("had 3 frames");

    assert_eq!(server_shows(&mut server, &peer, &[b""]), "");

    let big = vec![b'x'; 5000];
    assert_eq!(server_shows(&mut server, &peer, &[&big]), "x".repeat(1000));
    server.stderr_line_containing("had 5000 bytes; only the first 1000 are shown");

    // A normal client is still served.
    server.send_line("hello normal client");
    let (status, stdout, _) = run_to_end(CLIENT, &["--connect", &endpoint], "hi\n");
    assert!(status.success());
    assert_eq!(stdout, "hello normal client");
    assert_eq!(server.stdout_line(), "hi");
}

/// A frame above the wire limit (16 MiB) is refused by ZeroMQ, which drops
/// that connection; the server never sees it and goes on serving others.
#[test]
fn server_drops_a_peer_that_sends_more_than_the_wire_limit() {
    let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0", "--echo"]);
    let context = zmq::Context::new();
    let flooder = peer_socket(&context, zmq::REQ);
    flooder
        .monitor("inproc://flooder", zmq::SocketEvent::DISCONNECTED as i32)
        .unwrap();
    let events = peer_socket(&context, zmq::PAIR);
    events.connect("inproc://flooder").unwrap();
    flooder.connect(&endpoint).unwrap();
    flooder.send(vec![b'z'; 17 * 1024 * 1024], 0).unwrap();
    // The server's ZeroMQ refuses the frame by dropping the connection.
    events
        .recv_multipart(0)
        .expect("the server drops the connection of a frame over the limit");

    let (status, stdout, _) = run_to_end(CLIENT, &["--connect", &endpoint], "after the flood\n");
    assert!(status.success());
    assert_eq!(stdout, "after the flood");
    assert_eq!(
        server.stdout_line(),
        "after the flood",
        "the huge frame was never shown"
    );
}

/// Frames a hostile server replies with, the line the client must show, and
/// the note it must print on stderr.
type OddReply<'a> = (&'a [&'a [u8]], &'a str, Option<&'a str>);

/// A plain REP server that answers with hostile replies: `chat-client` shows
/// each safely on one line, explains the oddity, and keeps chatting.
#[test]
fn client_survives_and_explains_odd_replies() {
    let context = zmq::Context::new();
    let peer = peer_socket(&context, zmq::REP);
    peer.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = peer.get_last_endpoint().unwrap().unwrap();
    let mut client = Proc::spawn(CLIENT, &["--connect", &endpoint, "--max-size", "100"]);

    let replies: [OddReply; 5] = [
        (
            &[b"\xc3\x28 invalid"],
            "\u{FFFD}( invalid",
            Some("not valid UTF-8"),
        ),
        (
            &[b"\x1b[31mred\x1b[0m\x07"],
            "\\x1b[31mred\\x1b[0m\\x07",
            None,
        ),
        (&[b"a", b"b"], "a \u{241E} b", Some("had 2 frames")),
        (
            &[&[b'y'; 300]],
            &"y".repeat(100),
            Some("had 300 bytes; only the first 100"),
        ),
        (&[b""], "", None),
    ];
    for (frames, shown, note) in replies {
        client.send_line("next?");
        assert_eq!(peer.recv_bytes(0).unwrap(), b"next?");
        peer.send_multipart(frames, 0).unwrap();
        assert_eq!(client.stdout_line(), shown);
        if let Some(note) = note {
            client.stderr_line_containing(note);
        }
    }
    client.send_line("still chatting");
    assert_eq!(peer.recv_bytes(0).unwrap(), b"still chatting");
    peer.send("yes", 0).unwrap();
    assert_eq!(client.stdout_line(), "yes");
}
