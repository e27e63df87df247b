//! Interoperability with plain peers: programs that, like the original pyzmq
//! scripts, send one UTF-8 frame per message (`send_string`) and read one
//! frame (`recv`). The peers here are written with the `zmq` crate directly.

mod common;

use common::{CLIENT, Proc, peer_socket};

/// A plain REQ client types to `chat-server`: the operator sees the text, and
/// the plain client gets the reply as exactly one frame of UTF-8, no newline.
#[test]
fn plain_req_peer_chats_with_chat_server() {
    let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0"]);
    let context = zmq::Context::new();
    let peer = peer_socket(&context, zmq::REQ);
    peer.connect(&endpoint).unwrap();

    for (question, answer) in [("héllo from python", "réponse ✓"), ("second", "")] {
        peer.send(question, 0).unwrap();
        assert_eq!(server.stdout_line(), question);
        server.send_line(answer);
        let reply = peer.recv_bytes(0).expect("reply within the deadline");
        assert_eq!(reply, answer.as_bytes());
        assert!(
            !peer.get_rcvmore().unwrap(),
            "the reply must be a single frame"
        );
    }
}

/// `chat-client` talks to a plain REP server: the server receives exactly one
/// frame holding the typed text, and its one-frame reply is shown.
#[test]
fn chat_client_chats_with_plain_rep_peer() {
    let context = zmq::Context::new();
    let peer = peer_socket(&context, zmq::REP);
    peer.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = peer.get_last_endpoint().unwrap().unwrap();
    let mut client = Proc::spawn(CLIENT, &["--connect", &endpoint]);

    for (question, answer) in [("bonjour ☕", "salut 🎉"), ("encore", "fin")] {
        client.send_line(question);
        let frames = peer
            .recv_multipart(0)
            .expect("a request within the deadline");
        assert_eq!(
            frames,
            vec![question.as_bytes().to_vec()],
            "one frame, UTF-8, no newline"
        );
        peer.send(answer, 0).unwrap();
        assert_eq!(client.stdout_line(), answer);
    }
    client.close_stdin();
    assert!(client.wait().success());
}
