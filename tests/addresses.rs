//! What a user sees when an address is wrong or unusable: one line on
//! stderr naming the bad part, no backtrace, and the documented exit code.

mod common;

use common::{CLIENT, Proc, SERVER, run_to_end};

fn assert_one_clear_line(stderr: &str, program: &str, needle: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got {stderr:?}");
    assert!(lines[0].starts_with(&format!("{program}: ")), "{stderr:?}");
    assert!(lines[0].contains(needle), "{needle:?} not in {stderr:?}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr:?}"
    );
}

/// Each malformed address is a usage error (exit 2) whose message names the
/// offending part, for both binaries.
#[test]
fn malformed_addresses_are_usage_errors_naming_the_bad_part() {
    let cases = [
        ("127.0.0.1:99999", "port 99999 is out of range"),
        ("127.0.0.1:http", "port 'http' is not a number"),
        ("udp://127.0.0.1:5", "unknown scheme 'udp://'"),
        ("127.0.0.1:", "nothing after ':'"),
        (":8877", "nothing before ':'"),
        ("[::zz]:1", "'[::zz]' is not an IPv6 address"),
        ("::1:8877:", "put the address in brackets"),
        ("bad host!:1", "'bad host!' is not a valid host name"),
        ("ipc://", "ipc:// needs a socket path"),
        // Issue 26, point 8: typos the C library would have taken.
        ("1.2.3:8877", "'1.2.3' is not an IPv4 address"),
        ("::1:8877", "as in [::1]:8877"),
    ];
    for (address, needle) in cases {
        for (program, flag) in [(SERVER, "--bind"), (CLIENT, "--connect")] {
            let (status, stdout, stderr) = run_to_end(program, &[flag, address], "");
            let name = program.rsplit('/').next().unwrap();
            assert_eq!(status.code(), Some(2), "{name} {flag} {address}: {stderr}");
            assert!(stdout.is_empty());
            assert_one_clear_line(&stderr, name, needle);
            assert!(
                stderr.contains("accepted: "),
                "the accepted forms are listed: {stderr}"
            );
        }
    }
}

/// A host name that does not resolve is a usage error naming the host.
#[test]
fn unresolvable_host_is_named() {
    let (status, _, stderr) = run_to_end(CLIENT, &["--connect", "no-such-host.invalid:8877"], "");
    assert_eq!(status.code(), Some(2));
    assert_one_clear_line(
        &stderr,
        "chat-client",
        "cannot resolve host 'no-such-host.invalid'",
    );
}

/// Wildcards belong to --bind: the client rejects them with an explanation.
#[test]
fn client_rejects_wildcards() {
    let (status, _, stderr) = run_to_end(CLIENT, &["--connect", "*:8877"], "");
    assert_eq!(status.code(), Some(2));
    assert_one_clear_line(&stderr, "chat-client", "only works with --bind");
    let (status, _, stderr) = run_to_end(CLIENT, &["--connect", "127.0.0.1:0"], "");
    assert_eq!(status.code(), Some(2));
    assert_one_clear_line(&stderr, "chat-client", "only works with --bind");
}

/// A port already taken is a runtime error (exit 1) that says so and what to do.
#[test]
fn port_in_use_is_reported() {
    let (_first, endpoint) = Proc::server(&["--bind", "127.0.0.1:0", "--echo"]);
    let (status, _, stderr) = run_to_end(SERVER, &["--bind", &endpoint], "");
    assert_eq!(status.code(), Some(1));
    assert_one_clear_line(&stderr, "chat-server", "address already in use");
    assert!(stderr.contains(&endpoint) && stderr.contains("choose another port"));
}

/// An address that is not this machine's is refused clearly.
#[test]
fn foreign_address_cannot_be_bound() {
    // 192.0.2.0/24 is TEST-NET-1: never assigned to a real interface. Binding
    // fails locally; no packet leaves the machine.
    let (status, _, stderr) = run_to_end(SERVER, &["--bind", "192.0.2.1:0"], "");
    assert_eq!(status.code(), Some(1));
    assert_one_clear_line(&stderr, "chat-server", "this machine has no such address");
}

/// Binding a privileged port without the rights to is "permission denied".
/// As root the test drops to user `nobody` with setpriv to see the refusal.
#[test]
fn privileged_port_without_rights_is_permission_denied() {
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let (status, stderr) = if is_root {
        let output = std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                SERVER,
                "--bind",
                "127.0.0.1:1",
            ])
            .stdin(std::process::Stdio::null())
            .output();
        match output {
            Ok(output) => (
                output.status,
                String::from_utf8_lossy(&output.stderr).into_owned(),
            ),
            Err(error) => {
                common::skip(&format!(
                    "running as root and setpriv is unavailable ({error}); Debian: apt-get install util-linux"
                ));
                return;
            }
        }
    } else {
        let (status, _, stderr) = run_to_end(SERVER, &["--bind", "127.0.0.1:1"], "");
        (status, stderr)
    };
    if stderr.contains("cannot execute") || stderr.contains("Permission denied (os error") {
        common::skip(&format!(
            "user nobody cannot run the test binary here (the target folder must be readable by others): {stderr}"
        ));
        return;
    }
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_one_clear_line(&stderr, "chat-server", "permission denied");
}

/// `--help` documents the address forms and the exit codes.
#[test]
fn help_documents_addresses_and_exit_codes() {
    for program in [SERVER, CLIENT] {
        let output = std::process::Command::new(program)
            .arg("--help")
            .output()
            .unwrap();
        assert!(output.status.success());
        let help = String::from_utf8(output.stdout).unwrap();
        for needle in ["[IPv6]:PORT", "Exit status:", "130", "usage error"] {
            assert!(
                help.contains(needle),
                "{needle:?} missing from --help of {program}"
            );
        }
    }
}

/// A wrong flag is a usage error with exit code 2 (clap's convention).
#[test]
fn unknown_flag_is_a_usage_error() {
    let (status, _, stderr) = run_to_end(SERVER, &["--frobnicate"], "");
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("--frobnicate"));
}

/// Issue 16, point 7: the address may be given as a positional argument, as
/// `nc` and `ssh` take it; the flag and a positional address together are a
/// usage error.
#[test]
fn the_address_may_be_given_without_its_flag() {
    let (_server, endpoint) = Proc::server(&["127.0.0.1:0", "--echo"]);
    let (status, stdout, stderr) = run_to_end(CLIENT, &[&endpoint], "positional\n");
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, "positional");
    for (program, flag) in [(SERVER, "--bind"), (CLIENT, "--connect")] {
        let (status, _, stderr) = run_to_end(program, &["127.0.0.1:1", flag, "127.0.0.1:2"], "");
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("cannot be used with"), "{stderr}");
    }
    let (status, _, stderr) = run_to_end(CLIENT, &["127.0.0.1:99999"], "");
    assert_eq!(status.code(), Some(2));
    assert_one_clear_line(&stderr, "chat-client", "port 99999 is out of range");
}

/// Issue 26, point 7: an `ipc://` path that is an ordinary file is refused
/// and left untouched (libzmq would have deleted it); a socket a live server
/// answers on is refused as in use; a stale socket is replaced.
#[test]
fn an_ipc_path_that_is_not_a_stale_socket_is_refused_and_left_alone() {
    let folder = common::Scratch::new("ipc-bind");
    let file = folder.join("notes.txt");
    std::fs::write(&file, "precious").unwrap();
    let address = format!("ipc://{}", file.display());
    let (status, _, stderr) = run_to_end(SERVER, &["--bind", &address, "--echo"], "");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_one_clear_line(&stderr, "chat-server", "exists and is not a socket");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");

    let socket = format!("ipc://{}", folder.join("chat.sock").display());
    let (mut live, _) = Proc::server(&["--bind", &socket, "--echo"]);
    let (status, _, stderr) = run_to_end(SERVER, &["--bind", &socket, "--echo"], "");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_one_clear_line(&stderr, "chat-server", "already in use");
    let (status, stdout, _) = run_to_end(CLIENT, &["--connect", &socket], "still mine\n");
    assert!(status.success());
    assert_eq!(stdout, "still mine", "the live server kept its socket");

    live.signal("KILL");
    live.wait();
    let (_replacement, _) = Proc::server(&["--bind", &socket, "--echo"]);
    let (status, stdout, _) = run_to_end(CLIENT, &["--connect", &socket], "stale replaced\n");
    assert!(status.success());
    assert_eq!(stdout, "stale replaced");
}
