//! End-to-end chats between the real `chat-server` and `chat-client`
//! binaries in script mode, over real sockets on ephemeral ports.

mod common;

use common::{CLIENT, Proc, SERVER, ipc_address, run_to_end};

/// A conversation of several turns with non-ASCII text: each side sees
/// exactly what the other typed, one line per message, in order.
#[test]
fn multi_message_chat_both_ways_with_non_ascii_text() {
    let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0"]);
    let mut client = Proc::spawn(CLIENT, &["--connect", &endpoint]);

    let turns = [
        ("héllo wörld", "grüße ☕"),
        ("你好，世界", "こんにちは 🎉"),
        ("third: ok?", "ok!"),
    ];
    for (question, answer) in turns {
        client.send_line(question);
        assert_eq!(server.stdout_line(), question);
        server.send_line(answer);
        assert_eq!(client.stdout_line(), answer);
    }
    client.close_stdin();
    assert!(client.wait().success());
    server.close_stdin();
    assert!(server.wait().success(), "server should end cleanly on EOF");
}

/// Two clients talk to one server at once; REP routes each reply back to the
/// client that asked, so each client sees only its own echoes.
#[test]
fn two_clients_each_get_their_own_replies() {
    let (_server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0", "--echo"]);
    let mut alice = Proc::spawn(CLIENT, &["--connect", &endpoint]);
    let mut bob = Proc::spawn(CLIENT, &["--connect", &endpoint]);
    for round in 0..20 {
        alice.send_line(&format!("alice {round}"));
        bob.send_line(&format!("bob {round}"));
    }
    for round in 0..20 {
        assert_eq!(alice.stdout_line(), format!("alice {round}"));
        assert_eq!(bob.stdout_line(), format!("bob {round}"));
    }
}

/// Time independence: a client may start first; its message waits and is
/// answered as soon as a server binds the address.
#[test]
fn client_started_before_the_server_is_answered_when_it_appears() {
    let address = ipc_address("client-first");
    let mut client = Proc::spawn(CLIENT, &["--connect", &address]);
    client.send_line("anyone there?");
    // A deliberate absence: no server for half a second while the client waits.
    std::thread::sleep(std::time::Duration::from_millis(500));
    client.assert_running();

    let (mut server, _) = Proc::server(&["--bind", &address]);
    assert_eq!(server.stdout_line(), "anyone there?");
    server.send_line("yes, now");
    assert_eq!(client.stdout_line(), "yes, now");
}

/// `--bind 127.0.0.1:0` picks a free port and reports it in the ready line;
/// a client can use the reported endpoint as its --connect address.
#[test]
fn ready_line_reports_the_real_port() {
    let (_server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0", "--echo"]);
    let port: u16 = endpoint
        .strip_prefix("tcp://127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected endpoint {endpoint}"))
        .parse()
        .expect("a numeric port");
    assert_ne!(port, 0);
    let (status, stdout, _) = run_to_end(
        CLIENT,
        &["--connect", &format!("127.0.0.1:{port}")],
        "ping\n",
    );
    assert!(status.success());
    assert_eq!(stdout, "ping");
}

/// The wildcard port form `*` works like 0, and `*:PORT` binds all interfaces.
#[test]
fn wildcard_port_and_all_interfaces() {
    let (_server, endpoint) = Proc::server(&["--bind", "*:*", "--echo"]);
    let port = endpoint.rsplit(':').next().unwrap();
    let (status, stdout, _) = run_to_end(
        CLIENT,
        &["--connect", &format!("127.0.0.1:{port}")],
        "all\n",
    );
    assert!(status.success());
    assert_eq!(stdout, "all");
}

/// IPv6 really works: the server binds [::1] and a client chats over it.
#[test]
fn chat_over_ipv6_loopback() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        common::skip("this machine has no IPv6 loopback (::1)");
        return;
    }
    let (_server, endpoint) = Proc::server(&["--bind", "[::1]:0", "--echo"]);
    assert!(endpoint.starts_with("tcp://[::1]:"), "endpoint {endpoint}");
    let port = endpoint.rsplit(':').next().unwrap();
    let (status, stdout, _) = run_to_end(
        CLIENT,
        &["--connect", &format!("[::1]:{port}")],
        "over v6\n",
    );
    assert!(status.success());
    assert_eq!(stdout, "over v6");
}

/// Chat over a Unix domain socket (`ipc://`) on one machine.
#[test]
fn chat_over_ipc() {
    let dir = common::Scratch::new("ipc");
    let address = format!("ipc://{}/chat.sock", dir.display());
    let (_server, endpoint) = Proc::server(&["--bind", &address, "--echo"]);
    assert_eq!(endpoint, address);
    let (status, stdout, _) = run_to_end(CLIENT, &["--connect", &address], "local\n");
    assert!(status.success());
    assert_eq!(stdout, "local");
}

/// Script mode: `printf 'a\nb\n' | chat-client` prints one line per reply on
/// stdout, nothing else, and ends with 0 at EOF.
#[test]
fn script_client_prints_exactly_one_line_per_reply() {
    let (_server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0", "--echo"]);
    let (status, stdout, stderr) = run_to_end(
        CLIENT,
        &["--connect", &endpoint],
        "a\nb\n\nlast line without newline",
    );
    assert_eq!(status.code(), Some(0));
    assert_eq!(stdout, "a\nb\n\nlast line without newline");
    assert!(
        !stderr.contains("waiting"),
        "no status chatter in script mode: {stderr}"
    );
}

/// `yes ok | chat-server` style: the server answers each message with the
/// next stdin line, and ends with 0 when its input ends while idle.
#[test]
fn script_server_replies_with_stdin_lines_and_exits_at_eof() {
    let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0"]);
    server.send_line("first reply");
    server.send_line("second reply");
    let (status, stdout, _) = run_to_end(CLIENT, &["--connect", &endpoint], "q1\nq2\n");
    assert!(status.success());
    assert_eq!(stdout, "first reply\nsecond reply");
    assert_eq!(server.stdout_line(), "q1");
    assert_eq!(server.stdout_line(), "q2");
    server.close_stdin();
    assert_eq!(server.wait().code(), Some(0));
}

/// When the server's operator stops while a client waits for a reply, the
/// client is told the chat ended (and shown its unanswered message) instead
/// of waiting forever.
#[test]
fn client_is_told_when_the_server_quits_while_it_waits() {
    let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0"]);
    let mut client = Proc::spawn(CLIENT, &["--connect", &endpoint]);
    client.send_line("will you answer?");
    assert_eq!(server.stdout_line(), "will you answer?");
    server.close_stdin();
    server.stderr_line_containing("unanswered");
    assert_eq!(server.wait().code(), Some(0));

    client.stderr_line_containing("operator ended the chat before replying; the chat has ended");
    client.stderr_line_containing("unanswered message: will you answer?");
    assert_eq!(client.wait().code(), Some(1));
}

/// Issue 26, point 6: `--echo` reads no stdin, so its end ends nothing (as
/// `--help` says); a signal ends it, with exit code 130.
#[test]
fn an_echo_server_runs_on_after_its_stdin_ends_until_a_signal() {
    let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0", "--echo"]);
    server.close_stdin();
    let (status, stdout, _) = run_to_end(CLIENT, &["--connect", &endpoint], "still here\n");
    assert!(status.success());
    assert_eq!(stdout, "still here");
    server.signal("TERM");
    assert_eq!(server.wait().code(), Some(130));
    let (_, help, _) = run_to_end(SERVER, &["--help"], "");
    assert!(help.contains("Stdin is not read"), "{help}");
}

/// Issue 26, point 5: in script mode, a reply cut to --max-size and a line
/// too long to send end the client with exit code 4, naming each line.
#[test]
fn data_not_delivered_whole_ends_a_script_with_its_own_exit_code() {
    let (_server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0", "--echo"]);
    let input = format!("short\n{}\nafter\n", "x".repeat(200_000));
    let (status, stdout, stderr) = run_to_end(CLIENT, &["--connect", &endpoint], &input);
    assert_eq!(status.code(), Some(4), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "every reply printed");
    assert_eq!(lines[1].len(), 65_536);
    assert!(
        stderr.contains("the reply to line 2 was cut to --max-size"),
        "{stderr}"
    );
    assert!(
        stderr.contains("not delivered whole: line(s) 2"),
        "{stderr}"
    );

    let too_long = format!("{}\nfine\n", "y".repeat(300_000));
    let (status, stdout, stderr) = run_to_end(CLIENT, &["--connect", &endpoint], &too_long);
    assert_eq!(status.code(), Some(4), "{stderr}");
    assert_eq!(stdout, "fine", "the next line is still sent");
    assert!(stderr.contains("line 1 not sent"), "{stderr}");

    let (status, _, stderr) = run_to_end(CLIENT, &["--connect", &endpoint], "all\nwhole\n");
    assert_eq!(status.code(), Some(0), "{stderr}");
    let (_, help, _) = run_to_end(CLIENT, &["--help"], "");
    assert!(help.contains("4    script mode: the input ended"), "{help}");
}
