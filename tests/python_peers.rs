//! Interoperability with real pyzmq programs, like the pair this project
//! descends from: one UTF-8 frame per message, `send_string` and `recv`.
//!
//! Needs python3 with pyzmq (`pip install pyzmq`; `.ci/run` installs it).
//! Without it the tests say why they skipped.

mod common;

use common::{CLIENT, Proc};

/// The Python side, started with `python3 -c`, or `None` (and a note) when
/// python3 or pyzmq is not installed.
fn python(script: &str) -> Option<Proc> {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import zmq"])
        .output();
    if !probe.is_ok_and(|output| output.status.success()) {
        common::skip("python3 with pyzmq is not installed (pip install pyzmq)");
        return None;
    }
    Some(Proc::spawn("python3", &["-c", script]))
}

/// A plain pyzmq REQ client, written as the original programs were, types to
/// `chat-server`; each side sees exactly what the other sent.
#[test]
fn pyzmq_req_client_chats_with_chat_server() {
    let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0"]);
    let script = format!(
        r#"
import sys, zmq
socket = zmq.Context().socket(zmq.REQ)
socket.setsockopt(zmq.RCVTIMEO, 10000)
socket.connect("{endpoint}")
for text in ["héllo from pyzmq ☕", "second"]:
    socket.send_string(text)
    print("reply:", socket.recv().decode(), flush=True)
"#
    );
    let Some(mut peer) = python(&script) else {
        return;
    };
    assert_eq!(server.stdout_line(), "héllo from pyzmq ☕");
    server.send_line("grüße from Rust");
    assert_eq!(peer.stdout_line(), "reply: grüße from Rust");
    assert_eq!(server.stdout_line(), "second");
    server.send_line("bye");
    assert_eq!(peer.stdout_line(), "reply: bye");
    assert!(peer.wait().success());
}

/// `chat-client` talks to a plain pyzmq REP server: the server receives one
/// frame of UTF-8 (our message id and `--name` travel in the envelope it
/// never sees) and its `send_string` reply is shown.
#[test]
fn chat_client_chats_with_pyzmq_rep_server() {
    let script = r#"
import zmq
socket = zmq.Context().socket(zmq.REP)
socket.setsockopt(zmq.RCVTIMEO, 10000)
socket.bind("tcp://127.0.0.1:*")
print(socket.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
for answer in ["salut 🎉", "fin"]:
    frames = socket.recv_multipart()
    print("got:", [frame.decode() for frame in frames], flush=True)
    socket.send_string(answer)
"#;
    let Some(mut peer) = python(script) else {
        return;
    };
    let endpoint = peer.stdout_line();
    // With --name the envelope holds one more frame, which REP hides too.
    let mut client = Proc::spawn(CLIENT, &["--connect", &endpoint, "--name", "alice"]);
    client.send_line("bonjour ☕");
    assert_eq!(peer.stdout_line(), "got: ['bonjour ☕']");
    assert_eq!(client.stdout_line(), "salut 🎉");
    client.send_line("encore");
    assert_eq!(peer.stdout_line(), "got: ['encore']");
    assert_eq!(client.stdout_line(), "fin");
    client.close_stdin();
    assert!(client.wait().success());
}
