//! Interactive mode, driven through a pseudo-terminal as a person would:
//! typing at the rustyline prompt, using history, `/help`, `/quit`, Ctrl-D
//! and Ctrl-C, and reading what the screen shows. (rexpect reads the screen
//! byte by byte as Latin-1, so the expected texts here are ASCII; non-ASCII
//! chats are covered in script mode.)

mod common;

use std::process::Command;

use common::{CLIENT, DEADLINE, Proc, SERVER, Scratch};
use rexpect::process::WaitStatus;
use rexpect::session::PtySession;

fn in_terminal(program: &str, args: &[&str]) -> PtySession {
    // rexpect turns the terminal's echo off; a person's terminal has it on,
    // and what it echoes outside the prompt is part of what they see.
    let mut command = Command::new("sh");
    command
        .args(["-c", "stty echo && exec \"$0\" \"$@\"", program])
        .args(args)
        .env("TERM", "xterm")
        .env("NO_COLOR", "1")
        // The prompt history goes to a folder of the test's, not the user's.
        .env("XDG_DATA_HOME", history_folder())
        .env_remove("RUST_BACKTRACE");
    rexpect::session::spawn_command(command, Some(DEADLINE.as_millis() as u64))
        .expect("spawn in a pty")
}

/// Types `keys` without pressing Enter.
fn type_keys(session: &mut PtySession, keys: &str) {
    session.send(keys).unwrap();
    session.flush().unwrap();
}

fn exit_code(session: &PtySession) -> Option<i32> {
    match session.process().wait().expect("wait for the process") {
        WaitStatus::Exited(_, code) => Some(code),
        _ => None,
    }
}

/// A person chats from the client's prompt: labels show who said what, a
/// status line says the client waits, Up-arrow recalls history, /help lists
/// the commands and /quit ends with exit code 0.
#[test]
fn client_prompt_chat_with_history_help_and_quit() {
    let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0"]);
    let mut client = in_terminal(CLIENT, &["--connect", &endpoint]);

    client.exp_string("you> ").unwrap();
    // Sent once connected: else the status says no server is there yet.
    client.exp_string("connected to ").unwrap();
    client.send_line("hello from a tty").unwrap();
    client.exp_string("waiting for the server's reply").unwrap();
    assert_eq!(server.stdout_line(), "hello from a tty");
    server.send_line("hi human \x1b[2J");
    client.exp_string("server> hi human \\x1b[2J").unwrap();

    client.exp_string("you> ").unwrap();
    client.send("\x1b[A").unwrap(); // Up arrow: the previous line comes back.
    client.send_line("").unwrap();
    assert_eq!(server.stdout_line(), "hello from a tty");
    server.send_line("again");
    client.exp_string("server> again").unwrap();

    client.send_line("/help").unwrap();
    client.exp_string("/quit").unwrap();
    client.send_line("/quit").unwrap();
    client.exp_eof().unwrap();
    assert_eq!(exit_code(&client), Some(0));
}

/// Ctrl-D at the client's prompt ends the chat cleanly.
#[test]
fn ctrl_d_at_the_client_prompt_ends_cleanly() {
    let (_server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0", "--echo"]);
    let mut client = in_terminal(CLIENT, &["--connect", &endpoint]);
    client.exp_string("you> ").unwrap();
    client.send_control('d').unwrap();
    client.exp_eof().unwrap();
    assert_eq!(exit_code(&client), Some(0));
}

/// The server's operator sees each message with its sender's label, replies
/// at the "reply>" prompt, and ends with Ctrl-C at that prompt: the server
/// exits 0 and the waiting client is told the chat ended.
#[test]
fn server_operator_replies_at_the_prompt_and_ctrl_c_ends_cleanly() {
    let mut server = in_terminal(SERVER, &["--bind", "127.0.0.1:0"]);
    let (_, address) = server
        .exp_regex(r"tcp://127\.0\.0\.1:[0-9]+")
        .expect("the ready line names the bound port");
    server.exp_string("waiting for a message").unwrap();

    let mut client = Proc::spawn(CLIENT, &["--connect", &address]);
    client.send_line("question?");
    server
        .exp_regex(r"client \(127\.0\.0\.1:[0-9]+\)> question\?")
        .unwrap();
    server.exp_string("reply> ").unwrap();
    server.send_line("answer!").unwrap();
    assert_eq!(client.stdout_line(), "answer!");

    client.send_line("are you there?");
    server
        .exp_regex(r"client \(127\.0\.0\.1:[0-9]+\)> are you there\?")
        .unwrap();
    server.exp_string("reply> ").unwrap();
    server.send_control('c').unwrap();
    server.exp_eof().unwrap();
    assert_eq!(exit_code(&server), Some(0));
    client.stderr_line_containing("the chat has ended");
    assert_eq!(client.wait().code(), Some(1));
}

/// Ctrl-C while the server waits for a message (no prompt active) ends it
/// cleanly too, without a panic or backtrace.
#[test]
fn ctrl_c_while_the_server_waits_ends_cleanly() {
    let mut server = in_terminal(SERVER, &["--bind", "127.0.0.1:0"]);
    server.exp_string("waiting for a message").unwrap();
    server.send_control('c').unwrap();
    let rest = server.exp_eof().unwrap();
    assert!(!rest.contains("panicked"), "{rest}");
    assert_eq!(exit_code(&server), Some(0));
}

/// Interactive give-up: when the server is gone for longer than --give-up,
/// the unanswered message comes back at the prompt; Enter sends it again,
/// and a server that has come back answers it.
#[test]
fn given_up_message_is_offered_again_at_the_prompt() {
    let (mut server, address) = Proc::server(&["--bind", "127.0.0.1:0"]);
    let mut client = in_terminal(
        CLIENT,
        &["--connect", &address, "--liveness", "0.5", "--give-up", "1"],
    );
    client.exp_string("you> ").unwrap();
    client.send_line("do not lose me").unwrap();
    assert_eq!(server.stdout_line(), "do not lose me");
    server.signal("KILL");
    client
        .exp_string("unanswered message: do not lose me")
        .unwrap();
    client.exp_string("you> do not lose me").unwrap();

    let (mut back, _) = Proc::server(&["--bind", &address]);
    client.send_line("").unwrap(); // Enter: send the offered text as it is
    assert_eq!(back.stdout_line(), "do not lose me");
    back.send_line("got it this time");
    client.exp_string("server> got it this time").unwrap();
}

/// Issue 16, bug 1: a message given up on while no server ever existed,
/// then sent again from the prompt once the server is up, is shown to the
/// operator once, and the client gets the answer to it.
#[test]
fn a_message_sent_again_after_a_give_up_reaches_the_operator_once() {
    let address = common::ipc_address("give-up-once");
    let mut client = in_terminal(CLIENT, &["--connect", &address, "--give-up", "1"]);
    client.exp_string("you> ").unwrap();
    client.send_line("first try").unwrap();
    client.exp_string("unanswered message: first try").unwrap();
    client.exp_string("you> first try").unwrap();

    let (mut server, _) = Proc::server(&["--bind", &address]);
    client.send_line("").unwrap(); // Enter: send the offered text again
    assert_eq!(server.stdout_line(), "first try");
    server.send_line("the answer to it");
    client.exp_string("server> the answer to it").unwrap();
    client.send_line("second").unwrap();
    assert_eq!(
        server.stdout_line(),
        "second",
        "no second copy of the first"
    );
    server.send_line("ok");
    client.exp_string("server> ok").unwrap();
}

/// Where the programs these tests start keep their prompt history: a
/// folder of the tests' own in cargo's target folder, not the user's.
fn history_folder() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tty-data")
}

/// Writes a key with `--keygen` into `folder/NAME.key`; returns the file and
/// the public key.
fn keygen(folder: &Scratch, name: &str) -> (String, String) {
    common::keygen(&folder.join(format!("{name}.key")))
}

/// In secure mode each side's screen says the chat is encrypted and labels
/// the peer with its key's fingerprint (`SHA256:` and 43 base64 characters,
/// as OpenSSH shows a host key).
#[test]
fn secure_chat_shows_encryption_and_the_peers_fingerprint() {
    let keys = Scratch::new("tty-keys");
    let (server_file, server_key) = keygen(&keys, "server");
    let (client_file, client_key) = keygen(&keys, "client");
    let mut server = in_terminal(SERVER, &["--bind", "127.0.0.1:0", "--key", &server_file]);
    server.exp_string("--server-key ").unwrap();
    server.exp_string("listening on ").unwrap();
    let endpoint = server.exp_regex(r"tcp://[0-9.]+:[0-9]+").unwrap().1;
    let mut client = in_terminal(
        CLIENT,
        &[
            "--connect",
            &endpoint,
            "--server-key",
            &server_key,
            "--key",
            &client_file,
        ],
    );
    client.exp_string("you> ").unwrap();
    client.send_line("hello securely").unwrap();
    server
        .exp_regex(&format!(
            r"client {} \(encrypted, 127\.0\.0\.1:[0-9]+\)> hello securely",
            regex::escape(&fingerprint(&client_key))
        ))
        .unwrap();
    server.exp_string("reply> ").unwrap();
    server.send_line("welcome").unwrap();
    client
        .exp_string(&format!(
            "encrypted chat with server {}",
            fingerprint(&server_key)
        ))
        .unwrap();
    client
        .exp_string(&format!(
            "server {} (encrypted)> welcome",
            fingerprint(&server_key)
        ))
        .unwrap();
    client.send_line("/quit").unwrap();
    client.exp_eof().unwrap();
}

/// A server in a terminal, and the endpoint it listens on, once it waits.
fn server_in_terminal(extra: &[&str]) -> (PtySession, String) {
    let mut args = vec!["--bind", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut server = in_terminal(SERVER, &args);
    let (_, address) = server
        .exp_regex(r"tcp://127\.0\.0\.1:[0-9]+")
        .expect("the ready line names the bound port");
    server.exp_string("waiting for a message").unwrap();
    (server, address)
}

/// Issue 16, bug 3: Ctrl-D and /quit while the server waits for a message
/// end it at once, exit 0, without a message having to arrive first.
#[test]
fn ctrl_d_or_quit_while_the_server_waits_ends_it_at_once() {
    for keys in ["\x04", "/quit\n"] {
        let (mut server, _) = server_in_terminal(&[]);
        type_keys(&mut server, keys);
        server.exp_eof().unwrap();
        assert_eq!(exit_code(&server), Some(0), "after {keys:?}");
    }
}

/// Issue 16, bug 2: what the operator types while no message is shown
/// answers nothing: a finished line is refused with a notice, an unfinished
/// one is discarded when the message arrives (and the operator is told),
/// and the reply is what is typed after the message is shown. What is
/// typed while no message waits is not echoed.
#[test]
fn the_operator_cannot_answer_a_message_before_seeing_it() {
    let (mut server, address) = server_in_terminal(&[]);
    server.send_line("blind answer").unwrap();
    server
        .exp_string("not sent: no message is waiting")
        .unwrap();
    // Not echoed (keys are taken as a password prompt takes them); a
    // client connecting meanwhile, and its notice, leave it as it is.
    type_keys(&mut server, "half typed");
    let mut client = Proc::spawn(CLIENT, &["--connect", &address]);
    server.exp_string("a client connected from").unwrap();
    client.send_line("question?");
    let before = server
        .exp_string("discarded 10 bytes typed before this message arrived")
        .unwrap();
    assert!(!before.contains("not sent"), "{before:?}");
    assert!(!before.contains("half typed"), "not echoed: {before:?}");
    server
        .exp_regex(r"client \(127\.0\.0\.1:[0-9]+\)> question\?")
        .unwrap();
    server.exp_string("reply> ").unwrap();
    server.send_line("seen answer").unwrap();
    assert_eq!(client.stdout_line(), "seen answer");
}

/// Issue 16, bug 4: text typed at the client while its message waits for
/// the reply is not run into by the reply: the reply starts on a line of its
/// own, and the typed text is still there at the next prompt.
#[test]
fn a_reply_does_not_run_into_text_typed_meanwhile() {
    let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0"]);
    let mut client = in_terminal(CLIENT, &["--connect", &endpoint]);
    client.exp_string("you> ").unwrap();
    // Sent once connected: else the status says no server is there yet.
    client.exp_string("connected to ").unwrap();
    client.send_line("first").unwrap();
    client.exp_string("waiting for the server's reply").unwrap();
    assert_eq!(server.stdout_line(), "first");
    // Keys are taken unechoed while the client waits (issue 26, point 3);
    // what is half typed when the reply comes is back at the prompt.
    type_keys(&mut client, "partial typed");
    server.send_line("ok got it");
    let before = client.exp_string("server> ok got it").unwrap();
    assert!(
        before.ends_with('\n'),
        "the reply starts on its own line, after {before:?}"
    );
    // The prompt is drawn, then the text typed ahead is read into it.
    client.exp_regex("you> [^\n]*partial typed").unwrap();
    client.send_line(" and finished").unwrap();
    assert_eq!(server.stdout_line(), "partial typed and finished");
}

/// Issue 16, point 8: a line sent in one run is in the history of the next
/// (Up arrow), kept in an owner-only file; with --no-history none is kept.
#[test]
fn history_survives_a_restart_unless_turned_off() {
    use std::os::unix::fs::PermissionsExt;
    let folder = Scratch::new("history");
    let data = folder.join("data");
    let in_terminal_with_data = |args: &[&str]| {
        let mut command = Command::new("sh");
        command
            .args(["-c", "stty echo && exec \"$0\" \"$@\"", CLIENT])
            .args(args)
            .env("TERM", "xterm")
            .env("NO_COLOR", "1")
            .env("XDG_DATA_HOME", &data);
        rexpect::session::spawn_command(command, Some(DEADLINE.as_millis() as u64)).unwrap()
    };
    let (_server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0", "--echo"]);
    let mut first = in_terminal_with_data(&["--connect", &endpoint]);
    first.exp_string("you> ").unwrap();
    first.send_line("remember me").unwrap();
    first.exp_string("server> remember me").unwrap();
    first.send_line("/quit").unwrap();
    first.exp_eof().unwrap();
    let file = data.join("zmq-chat").join("chat-client.history");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());

    let mut second = in_terminal_with_data(&["--connect", &endpoint]);
    second.exp_string("you> ").unwrap();
    type_keys(&mut second, "\x1b[A"); // Up arrow
    second.exp_string("remember me").unwrap();
    second.send_line("").unwrap();
    second.exp_string("server> remember me").unwrap();
    second.send_line("/quit").unwrap();
    second.exp_eof().unwrap();

    std::fs::remove_dir_all(&data).unwrap();
    let mut private = in_terminal_with_data(&["--connect", &endpoint, "--no-history"]);
    private.exp_string("you> ").unwrap();
    private.send_line("forget me").unwrap();
    private.exp_string("server> forget me").unwrap();
    private.send_line("/quit").unwrap();
    private.exp_eof().unwrap();
    assert!(!file.exists(), "--no-history wrote {}", file.display());
}

/// Issue 16, point 6: an idle client says it waits for a server until one
/// is there, then that it is connected, and tells the user when the server
/// goes away and comes back, without anything being sent.
#[test]
fn an_idle_client_is_told_when_the_server_comes_goes_and_comes_back() {
    let address = common::ipc_address("presence");
    let mut client = in_terminal(CLIENT, &[&address]);
    client
        .exp_string(&format!("waiting for a server at {address}"))
        .unwrap();
    client.exp_string("you> ").unwrap();
    let (server, _) = Proc::server(&["--bind", &address, "--echo"]);
    client
        .exp_string(&format!("connected to {address}"))
        .unwrap();
    server.signal("KILL");
    client
        .exp_string(&format!("the server at {address} went away"))
        .unwrap();
    let (_back, _) = Proc::server(&["--bind", &address, "--echo"]);
    client
        .exp_string(&format!("the server at {address} is back"))
        .unwrap();
    client.send_line("still there?").unwrap();
    client.exp_string("server> still there?").unwrap();
}

/// The fingerprint of a public key, as the programs show it.
fn fingerprint(public_key: &str) -> String {
    zmq_chat::secure::keys::PublicKey::parse(public_key, "a test key")
        .unwrap()
        .fingerprint()
}

/// Issue 16, point 5: the operator is told who connects and leaves, with
/// the address; messages are labelled with the sender's name (--name) and
/// address; messages that arrive while a reply is typed are counted, and
/// the prompt of the next says how many more wait; a client that leaves
/// while its reply is typed is flagged before the reply is sent.
#[test]
fn the_operator_sees_who_comes_and_goes_and_what_waits() {
    let (mut server, address) = server_in_terminal(&[]);
    let mut alice = Proc::spawn(CLIENT, &[&address, "--name", "alice"]);
    server
        .exp_regex(r"a client connected from 127\.0\.0\.1:[0-9]+")
        .unwrap();
    alice.send_line("hello from alice");
    server
        .exp_regex(r"alice \(127\.0\.0\.1:[0-9]+\)> hello from alice")
        .unwrap();
    server.exp_string("reply> ").unwrap();

    let mut bob = Proc::spawn(CLIENT, &[&address]);
    bob.send_line("bob here");
    let mut carol = Proc::spawn(CLIENT, &[&address]);
    server
        .exp_string("another message is waiting for you")
        .unwrap();
    carol.send_line("carol too");
    server
        .exp_string("2 more messages are waiting for you")
        .unwrap();
    alice.signal("KILL");
    server
        .exp_regex(r"the client you are answering at 127\.0\.0\.1:[0-9]+ has left")
        .unwrap();
    server.send_line("too late").unwrap();
    server
        .exp_regex(r"client \(127\.0\.0\.1:[0-9]+\)> bob here")
        .unwrap();
    server.exp_string("reply (1 more waiting)> ").unwrap();
    server.send_line("hi bob").unwrap();
    assert_eq!(bob.stdout_line(), "hi bob");
    server
        .exp_regex(r"client \(127\.0\.0\.1:[0-9]+\)> carol too")
        .unwrap();
    server.exp_string("reply> ").unwrap();
    server.send_line("hi carol").unwrap();
    assert_eq!(carol.stdout_line(), "hi carol");
    drop(bob);
    server
        .exp_regex(r"the client at 127\.0\.0\.1:[0-9]+ left")
        .unwrap();
}

/// Trust on first use at a terminal (issue 15): --secure shows the key the
/// server presents and asks; "n" ends without remembering anything, "y"
/// remembers it and the chat is encrypted.
#[test]
fn a_new_servers_key_is_remembered_only_when_the_user_accepts_it() {
    let keys = Scratch::new("tty-tofu");
    let (server_file, server_key) = keygen(&keys, "tofu-server");
    let config = keys.join("config");
    let known = config.join("zmq-chat").join("known_servers");
    let (_server, endpoint) =
        Proc::server(&["--bind", "127.0.0.1:0", "--key", &server_file, "--echo"]);
    let client_with_config = || {
        let mut command = Command::new("sh");
        command
            .args([
                "-c",
                "stty echo && exec \"$0\" \"$@\"",
                CLIENT,
                "--secure",
                &endpoint,
            ])
            .env("TERM", "xterm")
            .env("NO_COLOR", "1")
            .env("XDG_CONFIG_HOME", &config)
            .env("XDG_DATA_HOME", &config);
        rexpect::session::spawn_command(command, Some(DEADLINE.as_millis() as u64)).unwrap()
    };
    let mut refusing = client_with_config();
    refusing
        .exp_string(&format!("presents the key {server_key}"))
        .unwrap();
    refusing.exp_string("[y/N] ").unwrap();
    refusing.send_line("n").unwrap();
    refusing.exp_string("key not accepted").unwrap();
    refusing.exp_eof().unwrap();
    assert_eq!(exit_code(&refusing), Some(1));
    assert!(!known.exists());

    let mut accepting = client_with_config();
    accepting.exp_string("[y/N] ").unwrap();
    accepting.send_line("y").unwrap();
    accepting.exp_string("remembered the key of").unwrap();
    accepting.exp_string("you> ").unwrap();
    accepting.send_line("hello, known server").unwrap();
    accepting
        .exp_regex(r"server [^ ]+ \(encrypted\)> hello, known server")
        .unwrap();
    accepting.send_line("/quit").unwrap();
    accepting.exp_eof().unwrap();
    assert!(
        std::fs::read_to_string(&known)
            .unwrap()
            .contains(&server_key)
    );
}

/// A client in a terminal whose first message, `first`, waits at `server`.
fn client_waiting(server: &mut Proc, endpoint: &str) -> PtySession {
    let mut client = in_terminal(CLIENT, &["--connect", endpoint]);
    client.exp_string("you> ").unwrap();
    // Sent once connected: else the status says no server is there yet.
    client.exp_string("connected to ").unwrap();
    client.send_line("first").unwrap();
    client.exp_string("waiting for the server's reply").unwrap();
    assert_eq!(server.stdout_line(), "first");
    client
}

/// Issue 26, point 1: lines typed while the client waits for a reply are
/// kept, in order, each said so, and sent one per turn as replies come.
#[test]
fn lines_typed_while_the_client_waits_are_queued_and_sent_in_order() {
    let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0"]);
    let mut client = client_waiting(&mut server, &endpoint);
    client.send_line("second").unwrap();
    client.exp_string("queued (1 waiting").unwrap();
    client.send_line("third").unwrap();
    client.exp_string("queued (2 waiting").unwrap();
    server.send_line("one");
    client.exp_string("server> one").unwrap();
    assert_eq!(server.stdout_line(), "second");
    server.send_line("two");
    client.exp_string("server> two").unwrap();
    assert_eq!(server.stdout_line(), "third");
    server.send_line("three");
    client.exp_string("server> three").unwrap();
    client.exp_string("you> ").unwrap();
    client.send_line("/quit").unwrap();
    client.exp_eof().unwrap();
    assert_eq!(exit_code(&client), Some(0));
}

/// Issue 26, point 2: Ctrl-D, /quit and Ctrl-C while the client waits end
/// it at once, exit code 0, naming the unanswered message and the lines
/// typed meanwhile that were not sent.
#[test]
fn ctrl_d_quit_or_ctrl_c_while_the_client_waits_end_it_at_once() {
    for keys in ["\x04", "/quit\n", "\x03"] {
        let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0"]);
        let mut client = client_waiting(&mut server, &endpoint);
        client.send_line("and then this").unwrap();
        client.exp_string("queued (1 waiting").unwrap();
        type_keys(&mut client, keys);
        client.exp_string("unanswered message: first").unwrap();
        client.exp_string("not sent: and then this").unwrap();
        client.exp_eof().unwrap();
        assert_eq!(exit_code(&client), Some(0), "after {keys:?}");
    }
}

/// Issue 26, point 3: keys pressed while the client waits (arrows) are
/// neither echoed raw nor replayed into the next line.
#[test]
fn keys_pressed_while_the_client_waits_leave_the_screen_clean() {
    let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0"]);
    let mut client = client_waiting(&mut server, &endpoint);
    type_keys(&mut client, "\x1b[A\x1b[B\x1b[D\x1bOC");
    server.send_line("the reply");
    let before = client.exp_string("server> the reply").unwrap();
    assert!(!before.contains("^["), "echoed raw: {before:?}");
    client.exp_string("you> ").unwrap();
    client.send_line("next").unwrap();
    assert_eq!(
        server.stdout_line(),
        "next",
        "no key replayed into the line"
    );
}

/// Issue 26, point 4: the operator may ask for /help before any message.
#[test]
fn the_operator_may_ask_for_help_before_any_message() {
    let (mut server, _) = server_in_terminal(&[]);
    server.send_line("/help").unwrap();
    server.exp_string("/quit    end the chat").unwrap();
    type_keys(&mut server, "\x04");
    server.exp_eof().unwrap();
    assert_eq!(exit_code(&server), Some(0));
}

/// An interactive shell with job control in a terminal, as a person has:
/// Ctrl-Z stops the job in the foreground and `fg` continues it. Its
/// terminal echoes, as a person's does (rexpect turns echo off): what the
/// shell puts back when a program stops is what a person would see.
fn shell_with_job_control() -> PtySession {
    let mut command = Command::new("bash");
    command
        .args(["--norc", "--noprofile", "-i"])
        .env("PS1", "shell$ ")
        .env("TERM", "xterm")
        .env("NO_COLOR", "1")
        .env("XDG_DATA_HOME", history_folder())
        .env_remove("RUST_BACKTRACE");
    let mut shell = rexpect::session::spawn_command(command, Some(DEADLINE.as_millis() as u64))
        .expect("spawn bash in a pty");
    shell.exp_string("shell$ ").unwrap();
    shell.send_line("stty echo").unwrap();
    shell.exp_string("shell$ ").unwrap();
    shell
}

/// Ctrl-Z stops the foreground program and `fg` continues it.
fn stop_and_continue(shell: &mut PtySession) {
    shell.send_control('z').unwrap();
    shell.exp_string("Stopped").unwrap();
    shell.exp_string("shell$ ").unwrap();
    shell.send_line("fg").unwrap();
}

/// Ends the shell once the program in it has ended.
fn exit_shell(mut shell: PtySession) {
    shell.exp_string("shell$ ").unwrap();
    shell.send_line("exit").unwrap();
    shell.exp_eof().unwrap();
}

/// Issue 26, point 3: after Ctrl-Z and `fg` the client is back as it was.
/// At the prompt, the line being typed is drawn again and edited key by
/// key (Ctrl-U empties it: the terminal's own line mode would have sent
/// the keys to the end of the old line); while a reply is awaited, the
/// status line is shown again and keys are still taken unechoed.
#[test]
fn ctrl_z_and_fg_bring_the_client_back_as_it_was() {
    let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0"]);
    let mut shell = shell_with_job_control();
    shell
        .send_line(&format!("{CLIENT} --connect {endpoint}"))
        .unwrap();
    shell.exp_string("connected to ").unwrap();
    type_keys(&mut shell, "draft");
    stop_and_continue(&mut shell);
    shell.exp_string("you> draft").unwrap();
    shell.send_control('u').unwrap();
    shell.send_line("fresh").unwrap();
    assert_eq!(server.stdout_line(), "fresh");
    shell.exp_string("waiting for the server's reply").unwrap();

    stop_and_continue(&mut shell);
    shell.exp_string("waiting for the server's reply").unwrap();
    shell.send_line("next").unwrap();
    let before = shell.exp_string("queued (1 waiting").unwrap();
    assert!(!before.contains("next"), "echoed after fg: {before:?}");
    server.send_line("the reply");
    shell.exp_string("server> the reply").unwrap();
    assert_eq!(server.stdout_line(), "next");
    server.send_line("another");
    shell.exp_string("server> another").unwrap();
    shell.exp_string("you> ").unwrap();
    shell.send_line("/quit").unwrap();
    exit_shell(shell);
}

/// Issue 26, point 3, the operator's side: after Ctrl-Z and `fg` the
/// server says again what it waits for and still takes keys unechoed, and
/// the reply being typed is drawn again and edited key by key.
#[test]
fn ctrl_z_and_fg_bring_the_server_back_as_it_was() {
    let mut shell = shell_with_job_control();
    shell
        .send_line(&format!("{SERVER} --bind 127.0.0.1:0"))
        .unwrap();
    let (_, address) = shell
        .exp_regex(r"tcp://127\.0\.0\.1:[0-9]+")
        .expect("the ready line names the bound port");
    shell.exp_string("waiting for a message").unwrap();
    stop_and_continue(&mut shell);
    shell.exp_string("waiting for a message").unwrap();
    shell.send_line("early").unwrap();
    let before = shell.exp_string("not sent: no message is waiting").unwrap();
    assert!(!before.contains("early"), "echoed after fg: {before:?}");

    let mut client = Proc::spawn(CLIENT, &["--connect", &address]);
    client.send_line("question?");
    shell.exp_string("> question?").unwrap();
    shell.exp_string("reply> ").unwrap();
    type_keys(&mut shell, "draft");
    stop_and_continue(&mut shell);
    shell.exp_string("reply> draft").unwrap();
    shell.send_control('u').unwrap();
    shell.send_line("answer").unwrap();
    assert_eq!(client.stdout_line(), "answer");
    client.close_stdin();
    assert_eq!(client.wait().code(), Some(0));
    type_keys(&mut shell, "\x04");
    exit_shell(shell);
}

/// A person types at a terminal while stdout goes to a file or a pipe
/// (`chat-client | tee chat.log`): no prompt can be drawn there, so each
/// line typed is a message and each reply one line of the file, as in a
/// script; Ctrl-D ends it with exit code 0. (This was an error,
/// `ENOTTY: Not a typewriter` twice, exit code 1.)
#[test]
fn typing_at_a_terminal_with_stdout_in_a_file_chats_as_a_script_does() {
    let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0"]);
    let folder = Scratch::new("tty-stdout-file");
    let log = folder.join("chat.log");
    let mut command = Command::new("sh");
    command
        .args(["-c", "exec \"$0\" --connect \"$1\" > \"$2\""])
        .arg(CLIENT)
        .arg(&endpoint)
        .arg(&log)
        .env("TERM", "xterm")
        .env_remove("RUST_BACKTRACE");
    let mut client = rexpect::session::spawn_command(command, Some(DEADLINE.as_millis() as u64))
        .expect("spawn in a pty");
    client.send_line("typed here").unwrap();
    assert_eq!(server.stdout_line(), "typed here");
    server.send_line("written there");
    client.send_control('d').unwrap();
    client.exp_eof().unwrap();
    assert_eq!(exit_code(&client), Some(0));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "written there\n");
}

/// A message of several lines typed with Alt-Enter goes as one message;
/// with `--timestamps` each message is shown after its time, and one of
/// several lines indented under its label.
#[test]
fn alt_enter_types_a_message_of_several_lines_and_timestamps_show_each_time() {
    // The server's messages as JSON lines (one a line, whatever the
    // text), its replies ended by NUL (so one may hold a newline).
    let (mut server, endpoint) = Proc::json_server(&["--bind", "127.0.0.1:0", "-0"]);
    let mut client = in_terminal(CLIENT, &["--timestamps", "--connect", &endpoint]);
    client.exp_string("you> ").unwrap();
    client.exp_string("connected to ").unwrap();
    // Alt-Enter: Esc, then Enter, as a terminal sends it.
    type_keys(&mut client, "first line\x1b\rsecond line");
    client.send_line("").unwrap();
    let message = loop {
        let line = server.stdout_line();
        if line.contains(r#""event":"message""#) {
            break line;
        }
    };
    assert!(
        message.contains(r#""text":"first line\nsecond line""#),
        "{message}"
    );
    server.send_raw(b"two\nlines\0");
    // "[HH:MM:SS] server> ": the second line starts under the first.
    client
        .exp_regex(r"\[[0-2][0-9]:[0-5][0-9]:[0-6][0-9]\] server> two\r?\n {19}lines")
        .unwrap();
    client.send_line("/quit").unwrap();
    client.exp_eof().unwrap();
    assert_eq!(exit_code(&client), Some(0));
}
