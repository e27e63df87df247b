//! What an interactive user's line means: a message, or a `/command`.

/// The commands listed by `/help`.
pub const HELP: &str = "\
commands:
  /help    show this list
  /quit    end the chat (Ctrl-D and Ctrl-C do too, also while waiting)
  /urgent TEXT  ask TEXT in the help desk's urgent lane (--desk)
  //text   send a message that starts with '/'
anything else you type is sent as one message.
Up and Down recall earlier lines, kept between runs (--no-history: none).
What happens meanwhile (replies, who comes and goes) is shown above the
line you are typing; the server's operator answers only what is shown.";

/// One line typed at the interactive prompt, interpreted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Send this text as a message.
    Send(String),
    /// Send this text in the urgent lane (the help desk's).
    Urgent(String),
    /// End the chat.
    Quit,
    /// Show [`HELP`].
    Help,
    /// An empty line: nothing to do.
    Nothing,
    /// A `/word` that is not a command.
    Unknown(String),
}

impl Command {
    /// Interprets a line typed at the prompt (without its line ending).
    pub fn interpret(line: &str) -> Command {
        if let Some(text) = line.strip_prefix("//") {
            return Command::Send(format!("/{text}"));
        }
        if let Some(text) = line.strip_prefix("/urgent ")
            && !text.trim().is_empty()
        {
            return Command::Urgent(text.to_string());
        }
        match line.trim() {
            "" => Command::Nothing,
            "/quit" | "/exit" | "/q" => Command::Quit,
            "/help" | "/?" => Command::Help,
            word if line.starts_with('/') => {
                Command::Unknown(word.split_whitespace().next().unwrap_or(word).to_string())
            }
            _ => Command::Send(line.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_messages_unless_they_are_commands() {
        assert_eq!(Command::interpret("hello"), Command::Send("hello".into()));
        assert_eq!(
            Command::interpret("  spaced  "),
            Command::Send("  spaced  ".into())
        );
        assert_eq!(Command::interpret("/quit"), Command::Quit);
        assert_eq!(Command::interpret(" /quit "), Command::Quit);
        assert_eq!(Command::interpret("/help"), Command::Help);
        assert_eq!(
            Command::interpret("/urgent the lift is stuck"),
            Command::Urgent("the lift is stuck".into())
        );
        assert_eq!(
            Command::interpret("/urgent "),
            Command::Unknown("/urgent".into())
        );
        assert_eq!(Command::interpret(""), Command::Nothing);
        assert_eq!(Command::interpret("   "), Command::Nothing);
        assert_eq!(
            Command::interpret("/nope now"),
            Command::Unknown("/nope".into())
        );
        assert_eq!(
            Command::interpret("//etc/hosts"),
            Command::Send("/etc/hosts".into())
        );
    }
}
