//! What a user expects around the two programs: `--version` names the
//! program, and each writes its own man page and shell completions, which
//! list every flag its `--help` does.

mod common;

use common::{CLIENT, SERVER, run_to_end};

/// The long flags `program --help` lists (`--connect`, …).
fn flags(program: &str) -> Vec<String> {
    let (status, help, _) = run_to_end(program, &["--help"], "");
    assert!(status.success());
    // Option lines start with the flag (`-c, --connect <ADDR>`); prose that
    // names a flag does not.
    let mut flags: Vec<String> = help
        .lines()
        .filter(|line| line.trim_start().starts_with('-'))
        .filter_map(|line| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix("--"))
                .map(|word| format!("--{}", word.trim_end_matches(',')))
        })
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

/// Each program's `--help` lists its own exit codes: the server's none of
/// the client's (no code 3, no --give-up).
#[test]
fn each_program_lists_its_own_exit_codes() {
    let (_, server_help, _) = run_to_end(SERVER, &["--help"], "");
    let (_, client_help, _) = run_to_end(CLIENT, &["--help"], "");
    let codes = |help: &str| -> Vec<String> {
        let table = help.split("Exit status:").nth(1).unwrap_or_default();
        table
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|word| word.parse::<u8>().is_ok())
            .map(String::from)
            .collect()
    };
    assert_eq!(codes(&server_help), ["0", "1", "2", "130"]);
    // 4: issue 26, point 5 (a line not delivered whole).
    assert_eq!(codes(&client_help), ["0", "1", "2", "3", "4", "130"]);
    assert!(!server_help.contains("--give-up"), "{server_help}");
}

/// Issue 19: `--version` says which program it is.
#[test]
fn version_names_the_program() {
    for (program, name) in [(SERVER, "chat-server"), (CLIENT, "chat-client")] {
        let (status, stdout, _) = run_to_end(program, &["--version"], "");
        assert!(status.success());
        assert_eq!(
            stdout.trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION"))
        );
    }
}

/// Issue 19: `--generate man|bash|zsh|fish|elvish|powershell` writes a man
/// page or completions on stdout that mention every flag of `--help`; the
/// flag itself is not in `--help`.
#[test]
fn man_pages_and_completions_list_every_flag() {
    for program in [SERVER, CLIENT] {
        let flags = flags(program);
        assert!(flags.len() >= 10, "{flags:?}");
        assert!(
            !flags.contains(&"--generate".to_string()),
            "hidden from --help"
        );
        for kind in ["man", "bash", "zsh", "fish", "elvish", "powershell"] {
            let (status, text, stderr) = run_to_end(program, &["--generate", kind], "");
            assert!(status.success(), "{program} --generate {kind}: {stderr}");
            // roff escapes hyphens; fish names long flags `-l NAME`.
            let text = text.replace("\\-", "-");
            for flag in &flags {
                let wanted = match kind {
                    "fish" => format!("-l {}", &flag[2..]),
                    _ => flag.clone(),
                };
                assert!(
                    text.contains(&wanted),
                    "{program} --generate {kind} does not mention {flag}"
                );
            }
        }
    }
}

/// Issue 26, point 16: a skipped test's line names the test and what it
/// needs, in the form the README's grep (`^skipped:`) finds.
#[test]
fn a_skip_names_the_test_and_what_it_needs() {
    let line = common::skip_line("needs a unicorn (apt-get install unicorn)");
    assert_eq!(
        line,
        "skipped: a_skip_names_the_test_and_what_it_needs: needs a unicorn (apt-get install unicorn)"
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains("grep '^skipped:'"),
        "the README says how to list skips"
    );
}

/// Issue 26, point 13: the README's install lines for man pages and
/// completions work in a fresh home folder, as they are written (bash).
#[test]
fn the_readmes_install_lines_work_in_a_fresh_home() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Man pages and completions")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the README has the section");
    let commands: Vec<&str> = section
        .split("```sh\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .flat_map(str::lines)
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert!(commands.len() >= 8, "{commands:?}");
    let home = common::Scratch::new("readme-home");
    let bin = std::path::Path::new(SERVER).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for command in &commands {
        let output = std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", command])
            .env("HOME", &*home)
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for written in [
        ".local/share/man/man1/chat-client.1",
        ".local/share/man/man1/chat-server.1",
        ".local/share/bash-completion/completions/chat-client",
        ".zfunc/_chat-server",
    ] {
        let size = std::fs::metadata(home.join(written)).map_or(0, |file| file.len());
        assert!(size > 100, "{written}: {size} bytes");
    }
}

/// Issue 26, point 15: the man pages' synopsis shows each flag's value, and
/// a FILES section names the key files, known_servers and the history.
#[test]
fn man_pages_have_placeholders_and_a_files_section() {
    let (_, client, _) = run_to_end(CLIENT, &["--generate", "man"], "");
    assert!(
        client.contains("\\fB\\-\\-connect\\fR \\fIADDR\\fR"),
        "{client}"
    );
    let files = client.split(".SH FILES").nth(1).expect("a FILES section");
    for name in ["client.key", "known_servers", "chat\\-client.history"] {
        assert!(files.contains(name), "{name} in {files}");
    }
    let (_, server, _) = run_to_end(SERVER, &["--generate", "man"], "");
    assert!(
        server.contains("\\fB\\-\\-bind\\fR \\fIADDR\\fR"),
        "{server}"
    );
    assert!(server.contains(".SH FILES"), "{server}");
    let (status, _, stderr) = run_to_end(CLIENT, &["--generate", "man"], "");
    assert!(status.success() && stderr.is_empty(), "{stderr}");
}

/// The README's table of exit codes lists exactly the codes the programs
/// end with (`zmq_chat::exit::Exit`, which their `--help` tables come
/// from), in the same order.
#[test]
fn the_readmes_exit_codes_are_the_programs_own() {
    use zmq_chat::exit::Exit;
    let readme = include_str!("../README.md");
    let table = readme
        .split("## Exit codes")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("an Exit codes section in the README");
    let codes: Vec<u8> = table
        .lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|line| line.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(codes, Exit::ALL.map(Exit::code));
}

/// Issue 30: the flags for scripts and for the record are in each
/// program's `--help` (and so, by the test above, in its man page and
/// completions), `-0` as the short form of `--null`.
#[test]
fn the_flags_for_scripts_and_the_record_are_listed() {
    for program in [SERVER, CLIENT] {
        let listed = flags(program);
        for flag in ["--json", "--null", "--timestamps", "--log"] {
            assert!(listed.contains(&flag.to_string()), "{program}: {flag}");
        }
        let (_, help, _) = run_to_end(program, &["--help"], "");
        assert!(help.contains("-0, --null"), "{help}");
    }
}
