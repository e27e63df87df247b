//! For scripts and for the record: `--json` events, `-0` (messages ended
//! by NUL, so they may hold newlines) and `--log` transcripts, with the
//! real programs talking over 127.0.0.1.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{CLIENT, Proc, Scratch};
use serde_json::Value;

/// The next JSON event on `program`'s stdout.
fn event(program: &mut Proc) -> Value {
    let line = program.stdout_line();
    serde_json::from_str(&line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"))
}

/// The next event of `kind`, after the ones of other kinds.
fn next_event(program: &mut Proc, kind: &str) -> Value {
    loop {
        let event = event(program);
        assert_eq!(event["v"], 1, "{event}");
        if event["event"] == kind {
            return event;
        }
    }
}

/// A message of three lines and one of emoji (a family, joined by
/// zero-width joiners, that the terminal escaping would show as escapes)
/// go from a `-0` client to a `--json -0` server and their answers back,
/// intact; the server's events say who connected and who sent what, with
/// the client's message ids; the client's transcript has all four, and
/// only its owner may read it.
#[test]
fn json_and_nul_separated_messages_carry_newlines_and_emoji_intact() {
    let three_lines = "line one\nline two\nline three";
    let emoji = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467} h\u{e9}llo \u{1F44B}";
    let answers = ["an answer\nof two lines", "\u{1F44D} r\u{e9}ponse"];

    let (mut server, endpoint) = Proc::json_server(&["--bind", "127.0.0.1:0", "-0"]);

    let folder = Scratch::new("scripts-log");
    let log = folder.join("chat.log");
    let log_arg = log.to_str().unwrap();
    let mut client = Proc::spawn(CLIENT, &["-0", "--log", log_arg, &endpoint]);
    let mut ids = Vec::new();
    for (question, answer) in [three_lines, emoji].into_iter().zip(answers) {
        client.send_raw(format!("{question}\0").as_bytes());
        if ids.is_empty() {
            let connected = next_event(&mut server, "connect");
            assert!(
                connected["time"].as_str().unwrap().ends_with('Z'),
                "{connected}"
            );
        }
        let message = next_event(&mut server, "message");
        assert_eq!(message["text"], question, "{message}");
        let from = message["from"].as_str().unwrap();
        assert!(from.starts_with("client (127.0.0.1:"), "{message}");
        ids.push(
            message["id"]
                .as_str()
                .expect("a chat-client's id")
                .to_string(),
        );
        server.send_raw(format!("{answer}\0").as_bytes());
    }
    client.close_stdin();
    assert!(client.wait().success());
    let shown = client.remaining_stdout().join("\n");
    assert_eq!(shown, format!("{}\0{}\0", answers[0], answers[1]));

    let kept = std::fs::read_to_string(&log).unwrap();
    let kept: Vec<Value> = kept
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let summary: Vec<(&str, &str, &str)> = kept
        .iter()
        .map(|event| {
            let field = |name: &str| event[name].as_str().unwrap_or_default();
            (field("event"), field("id"), field("text"))
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("sent", ids[0].as_str(), three_lines),
            ("message", ids[0].as_str(), answers[0]),
            ("sent", ids[1].as_str(), emoji),
            ("message", ids[1].as_str(), answers[1]),
        ]
    );
    let mode = std::fs::metadata(&log).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the transcript is owner-only");
    assert_eq!(next_event(&mut server, "leave")["event"], "leave");
}

/// A transcript others could read is refused before the chat starts,
/// saying what to do, and nothing is written to it.
#[test]
fn a_transcript_others_may_read_is_refused() {
    let folder = Scratch::new("scripts-open-log");
    let log = folder.join("open.log");
    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (status, _, stderr) = common::run_to_end(
        CLIENT,
        &["--log", log.to_str().unwrap(), "127.0.0.1:9"],
        "hello\n",
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("may be read by others (mode 644): chmod 600 it"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "");
}

/// With `--json`, a script hears of the server going and of the client
/// giving up as events of their own kinds, and the exit code is as
/// without it.
#[test]
fn json_events_say_when_the_server_goes_and_the_client_gives_up() {
    let (mut server, endpoint) = Proc::server(&["--bind", "127.0.0.1:0"]);
    let mut client = Proc::spawn(CLIENT, &["--json", "--give-up", "1", &endpoint]);
    client.send_line("anyone?");
    assert_eq!(server.stdout_line(), "anyone?");
    server.signal("KILL");
    server.wait();
    let left = next_event(&mut client, "leave");
    assert!(
        left["text"]
            .as_str()
            .unwrap()
            .starts_with("lost the connection"),
        "{left}"
    );
    let gave_up = next_event(&mut client, "give-up");
    assert!(
        gave_up["text"].as_str().unwrap().contains("anyone?"),
        "{gave_up}"
    );
    assert_eq!(client.wait().code(), Some(3));
}
