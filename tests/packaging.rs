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
    assert_eq!(codes(&client_help), ["0", "1", "2", "3", "130"]);
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
