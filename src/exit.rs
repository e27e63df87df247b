//! How the programs end: one [`Exit`] per exit code, with what it means for
//! each program. The `Exit status:` tables of `--help` (and so the man
//! pages) are made from it, the programs return it, and a test checks the
//! README's table against it, so the three cannot drift apart.

use std::fmt::Write as _;
use std::process::ExitCode;

/// Which program a table is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// `chat-client`.
    Client,
    /// `chat-server`.
    Server,
}

/// An exit code of `chat-client` or `chat-server`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The chat ended normally.
    Ok,
    /// Something failed at run time.
    Failure,
    /// The command line is wrong.
    Usage,
    /// Script mode: no server came back within `--give-up`.
    GaveUp,
    /// Script mode: the input ended, but a line was not delivered whole.
    Incomplete,
    /// Script mode: a signal stopped the program mid-chat.
    Interrupted,
}

impl Exit {
    /// Every exit code, in the order of the tables.
    pub const ALL: [Exit; 6] = [
        Exit::Ok,
        Exit::Failure,
        Exit::Usage,
        Exit::GaveUp,
        Exit::Incomplete,
        Exit::Interrupted,
    ];

    /// The number the shell sees.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::GaveUp => 3,
            Exit::Incomplete => 4,
            // 128 + SIGINT, as a shell reports a program ended by Ctrl-C.
            Exit::Interrupted => 130,
        }
    }

    /// What this code means for `program`; `None` if it never ends so.
    pub fn meaning(self, program: Program) -> Option<&'static str> {
        match (self, program) {
            (Exit::Ok, Program::Client) => Some(
                "the chat ended normally: end of input; in a terminal /quit, Ctrl-D or Ctrl-C, also while a reply is awaited (the unanswered message and the lines queued meanwhile are printed)",
            ),
            (Exit::Ok, Program::Server) => {
                Some("the chat ended normally: end of input, /quit, Ctrl-D or Ctrl-C at the prompt")
            }
            (Exit::Failure, Program::Client) => Some(
                "a runtime error: the server's operator ended the chat mid-message, a refusal (secure/plain mismatch, wrong or changed server key, not allowed), a help desk question that expired, a broker gone for good, a bad key file",
            ),
            (Exit::Failure, Program::Server) => Some(
                "a runtime error: address in use, permission denied, a bad key file or allow list, a broker gone for good",
            ),
            (Exit::Usage, _) => Some(
                "a usage error: unknown flag, malformed address, unknown host, a broker URL with a password on the command line",
            ),
            (Exit::GaveUp, Program::Client) => Some(
                "script mode: no server came back within --give-up (the unanswered message is printed on stderr)",
            ),
            (Exit::Incomplete, Program::Client) => Some(
                "script mode: the input ended, but a line was not delivered whole: too long to send, or its reply cut to --max-size (each line is named by its number on stderr)",
            ),
            (Exit::Interrupted, Program::Client) => Some(
                "script mode: interrupted by a signal (Ctrl-C, SIGTERM); a message in flight is printed",
            ),
            (Exit::Interrupted, Program::Server) => {
                Some("script mode: interrupted by a signal (Ctrl-C, SIGTERM)")
            }
            (Exit::GaveUp | Exit::Incomplete, Program::Server) => None,
        }
    }

    /// The `Exit status:` table at the end of `program`'s `--help`, each
    /// meaning wrapped to fit 80 columns.
    pub fn help_table(program: Program) -> String {
        let mut table = String::from("Exit status:");
        for exit in Exit::ALL {
            let Some(meaning) = exit.meaning(program) else {
                continue;
            };
            let _ = write!(table, "\n  {:<5}", exit.code());
            let mut column = 7;
            for word in meaning.split(' ') {
                if column > 7 && column + 1 + word.len() > 79 {
                    table.push_str("\n       ");
                    column = 7;
                }
                if column > 7 {
                    table.push(' ');
                    column += 1;
                }
                table.push_str(word);
                column += word.len();
            }
        }
        table
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_program_lists_only_its_own_codes() {
        let codes = |program| -> Vec<u8> {
            Exit::ALL
                .into_iter()
                .filter(|exit| exit.meaning(program).is_some())
                .map(Exit::code)
                .collect()
        };
        assert_eq!(codes(Program::Client), [0, 1, 2, 3, 4, 130]);
        assert_eq!(codes(Program::Server), [0, 1, 2, 130]);
    }

    #[test]
    fn the_help_table_is_wrapped_under_its_meaning_column() {
        let table = Exit::help_table(Program::Server);
        assert_eq!(
            table,
            "Exit status:
  0    the chat ended normally: end of input, /quit, Ctrl-D or Ctrl-C at the
       prompt
  1    a runtime error: address in use, permission denied, a bad key file or
       allow list, a broker gone for good
  2    a usage error: unknown flag, malformed address, unknown host, a broker
       URL with a password on the command line
  130  script mode: interrupted by a signal (Ctrl-C, SIGTERM)"
        );
        for line in Exit::help_table(Program::Client).lines() {
            assert!(line.len() < 80, "{line:?}");
        }
    }
}
