//! Fault injection: the chat recovers from a killed, frozen or restarted
//! server without losing or duplicating a message, gives up cleanly when the
//! server never returns, and never gives up on a live but slow operator.

mod common;

use std::time::{Duration, Instant};

use common::{CLIENT, Proc, peer_socket, wait_until};

/// Waits for `needle` on the client's stderr; returns how long it took.
fn time_until(client: &mut Proc, needle: &str) -> Duration {
    let start = Instant::now();
    client.stderr_line_containing(needle);
    start.elapsed()
}

/// The moment every fault below starts from: a script-mode server on a port
/// of its choosing, a client with `--liveness` and `--give-up` (seconds)
/// that has sent `text`, and the server showing it, its reply still to come.
/// Returns both and the server's endpoint (to restart it on).
fn message_waiting_at_server(liveness: &str, give_up: &str, text: &str) -> (Proc, Proc, String) {
    let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0"]);
    let mut client = Proc::spawn(
        CLIENT,
        &[
            "--connect",
            &endpoint,
            "--liveness",
            liveness,
            "--give-up",
            give_up,
        ],
    );
    client.send_line(text);
    assert_eq!(server.stdout_line(), text);
    (server, client, endpoint)
}

/// SIGKILL the server while a client waits: the client notices within 2 s;
/// a server restarted on the same port receives the pending message exactly
/// once, and the chat goes on.
#[test]
fn killed_server_is_detected_and_its_replacement_gets_the_message_once() {
    let (server, mut client, address) = message_waiting_at_server("1", "20", "pending message");

    server.signal("KILL");
    let detected = time_until(&mut client, "lost the connection");
    eprintln!("SIGKILL detected after {detected:?}");
    assert!(detected < Duration::from_secs(2), "took {detected:?}");

    let (mut restarted, _) = Proc::server(&["--bind", &address]);
    assert_eq!(restarted.stdout_line(), "pending message");
    client.stderr_line_containing("re-sent the unanswered message");
    restarted.send_line("answer after restart");
    assert_eq!(client.stdout_line(), "answer after restart");

    client.send_line("the chat goes on");
    assert_eq!(
        restarted.stdout_line(),
        "the chat goes on",
        "the pending message arrived exactly once"
    );
    restarted.send_line("it does");
    assert_eq!(client.stdout_line(), "it does");
}

/// SIGSTOP freezes the server without closing the connection: heartbeats
/// stop being answered and the client notices within its liveness timeout.
/// After SIGCONT the message is answered once, not shown twice.
#[test]
fn frozen_server_is_detected_and_answers_once_after_it_thaws() {
    let (mut server, mut client, _) = message_waiting_at_server("0.5", "20", "are you frozen?");

    server.signal("STOP");
    let detected = time_until(&mut client, "lost the connection");
    eprintln!("SIGSTOP detected after {detected:?} (liveness 0.5 s)");
    assert!(detected < Duration::from_secs(3), "took {detected:?}");

    server.signal("CONT");
    client.stderr_line_containing("re-sent the unanswered message");
    server.send_line("thawed");
    assert_eq!(client.stdout_line(), "thawed");
    client.send_line("next");
    assert_eq!(
        server.stdout_line(),
        "next",
        "the re-sent copy was not shown to the operator again"
    );
}

/// The server never comes back: after --give-up the client prints the
/// unanswered message and exits with code 3 in script mode.
#[test]
fn client_gives_up_and_keeps_the_message() {
    let (server, mut client, _) = message_waiting_at_server("0.5", "1", "lost in space ☄");
    server.signal("KILL");
    client.stderr_line_containing("unanswered message: lost in space ☄");
    assert_eq!(client.wait().code(), Some(3));
}

/// A slow operator on a live server: the reply comes long after the
/// liveness timeout and the give-up time, and the client waits for it.
#[test]
fn slow_operator_is_never_given_up_on() {
    let (mut server, mut client, _) = message_waiting_at_server("0.3", "0.5", "take your time");
    // A deliberately slow operator: three seconds, six times the give-up time.
    std::thread::sleep(Duration::from_secs(3));
    client.assert_running();
    server.send_line("sorry, I was thinking");
    assert_eq!(client.stdout_line(), "sorry, I was thinking");
    let stderr = client.drain_stderr();
    assert!(
        !stderr
            .iter()
            .any(|line| line.contains("lost the connection")),
        "{stderr:?}"
    );
}

/// A client that vanishes while its message waits for a reply: the operator
/// is told the reply could not be delivered, and the server serves on.
#[test]
fn server_survives_a_client_that_vanishes_mid_request() {
    let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0"]);
    let sockets_before_the_ghost = server.open_sockets();
    {
        let context = zmq::Context::new();
        let ghost = peer_socket(&context, zmq::REQ);
        ghost.connect(&endpoint).unwrap();
        ghost.send("ask and vanish", 0).unwrap();
        assert_eq!(server.stdout_line(), "ask and vanish");
    } // socket and context closed: the connection drops
    wait_until("the server closing the ghost's connection", || {
        server.open_sockets() <= sockets_before_the_ghost
    });
    server.send_line("too late");
    server.stderr_line_containing("the reply could not be delivered");

    let mut client = Proc::spawn(CLIENT, &["--connect", &endpoint]);
    client.send_line("I am still here");
    assert_eq!(server.stdout_line(), "I am still here");
    server.send_line("so am I");
    assert_eq!(client.stdout_line(), "so am I");
}

/// Bytes that are not ZeroMQ at all (garbage, an HTTP request) hit the
/// server's port; ZeroMQ drops those connections and the chat goes on.
#[test]
fn server_survives_raw_tcp_garbage_and_http() {
    use std::io::{Read, Write};
    let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0", "--echo"]);
    let port = endpoint.rsplit(':').next().unwrap();
    let payloads: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        &[0xff; 4096],
        b"\x00\x01\x02\x03 random \x1b[2J garbage",
    ];
    for payload in payloads {
        let mut stream = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let _ = stream.write_all(payload);
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink); // ZeroMQ closes it (or the timeout ends it)
    }
    server.assert_running();
    let (status, stdout, _) =
        common::run_to_end(CLIENT, &["--connect", &endpoint], "after the garbage\n");
    assert!(status.success());
    assert_eq!(stdout, "after the garbage");
}

/// Load: 50 concurrent clients, 200 messages each, against one echo server.
/// Every client gets exactly its own replies, in order, and the server's
/// memory stays flat over three more rounds after a warm-up round.
#[test]
fn fifty_clients_two_hundred_messages_each() {
    const CLIENTS: usize = 50;
    const MESSAGES: usize = 200;
    let (server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0", "--echo"]);
    let round = |round: usize| {
        let start = Instant::now();
        let clients: Vec<(Proc, String)> = (0..CLIENTS)
            .map(|client| {
                let mut process = Proc::spawn(CLIENT, &["--connect", &endpoint]);
                let input: String = (0..MESSAGES)
                    .map(|n| format!("round {round} client {client} message {n}\n"))
                    .collect();
                process.send_line(input.trim_end());
                process.close_stdin();
                (process, input)
            })
            .collect();
        for (mut process, input) in clients {
            assert!(process.wait().success());
            assert_eq!(process.remaining_stdout().join("\n"), input.trim_end());
        }
        start.elapsed()
    };
    let warm_up = round(1);
    let before = server.rss_kib();
    let timings: Vec<Duration> = (2..=4).map(round).collect();
    let after = server.rss_kib();
    eprintln!(
        "load: {CLIENTS} clients x {MESSAGES} messages per round: {warm_up:?} (warm-up), then {timings:?}; \
         server RSS {before} KiB after warm-up, {after} KiB after 3 more rounds ({} messages)",
        3 * CLIENTS * MESSAGES
    );
    // A leak of even 100 bytes per message would add about 3 MiB here.
    assert!(
        after <= before + 2048,
        "server memory grew from {before} KiB to {after} KiB"
    );
}
