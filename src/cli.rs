//! What the binaries and examples share on the command line: address flags,
//! exit codes, and how a fatal error is reported.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::address::{ACCEPTED_FORMS, Address, AddressError, Endpoint, Role};
use crate::desk::Desk;
use crate::desk::brokers::{BrokerUrlError, broker_urls, certificate_authorities};
use crate::error::ChatError;
use crate::event::LocalTime;
use crate::exit::Exit;
use crate::secure::keys::{Identity, KeyError, PublicKey};
use crate::terminal::{Screen, Style};
use crate::transcript::{Transcript, TranscriptError};

/// Parses and resolves an address flag.
pub fn endpoint_from_flag(text: &str, role: Role) -> Result<Endpoint, AddressError> {
    Address::parse(text, role)?.resolve()
}

/// `--keygen FILE`: writes a new private key (owner-only) and prints its
/// public key on stdout as one base64 line, as `wg genkey | wg pubkey` would.
/// `--keygen -` prints the private key itself on stdout, as `wg genkey`.
///
/// # Errors
/// When a key cannot be made or the file cannot be written.
pub fn keygen(program: &str, path: &Path) -> Result<(), KeyError> {
    let identity = Identity::generate()?;
    if path == Path::new("-") {
        // As `wg genkey`: the private key on stdout, for a script to keep.
        println!("{}", identity.private_key_text());
        eprintln!(
            "{program}: the private key is above (keep it owner-only: chat-server --keygen FILE writes it so); its public key is {}, its fingerprint {}",
            identity.public_key(),
            identity.public_key().fingerprint()
        );
        return Ok(());
    }
    identity.write_new(path)?;
    println!("{}", identity.public_key());
    eprintln!(
        "{program}: wrote a new private key to {} (readable by you only); its public key is above, its fingerprint {}",
        path.display(),
        identity.public_key().fingerprint()
    );
    Ok(())
}

/// `--public-key FILE`: prints the public key of an existing private key
/// file on stdout as one base64 line, as `wg pubkey` and `ssh-keygen -y` do
/// (and its fingerprint on stderr, for a person to compare).
/// The file is checked as when it is used (owner-only, this user's).
///
/// # Errors
/// When the key file cannot be used ([`KeyError`] says why).
pub fn print_public_key(path: &Path) -> Result<(), KeyError> {
    let key = Identity::load(path)?.public_key();
    println!("{key}");
    eprintln!("fingerprint {}", key.fingerprint());
    Ok(())
}

/// Parses a public key flag (`--server-key`), for clap.
pub fn parse_public_key(text: &str) -> Result<PublicKey, String> {
    PublicKey::parse(text, &format!("'{text}'")).map_err(|error| error.to_string())
}

/// The list of accepted forms, appended to errors about the address's shape
/// (not to an unknown host, where the form was right).
pub fn accepted_forms_hint(error: &AddressError) -> String {
    match error {
        AddressError::UnknownHost(_) => String::new(),
        _ => format!(" (accepted: {ACCEPTED_FORMS})"),
    }
}

/// Reports a fatal error as one line, `program: what went wrong: why`
/// (every cause in the chain, as `anyhow`'s `{:#}` shows it), and picks the
/// exit code: 2 for a bad address or broker URL, 0 for a closed stdout (`| head`), 1
/// otherwise.
pub fn report(program: &str, error: &(dyn std::error::Error + 'static)) -> ExitCode {
    let chain = || std::iter::successors(Some(error), |cause| cause.source());
    let broken_pipe = chain().any(|cause| {
        cause
            .downcast_ref::<ChatError>()
            .is_some_and(ChatError::is_broken_pipe)
            || cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return Exit::Ok.into();
    }
    let text = crate::error::describe(error);
    if chain().any(|cause| cause.is::<BrokerUrlError>()) {
        eprintln!("{program}: {text}");
        return Exit::Usage.into();
    }
    match chain().find_map(|cause| cause.downcast_ref::<AddressError>()) {
        Some(address_error) => {
            eprintln!("{program}: {text}{}", accepted_forms_hint(address_error));
            Exit::Usage.into()
        }
        None => {
            eprintln!("{program}: {text}");
            Exit::Failure.into()
        }
    }
}

/// What `--generate` writes: a man page, or a shell's completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Generated {
    /// A man page (roff), for `man`.
    Man,
    /// Completions for bash.
    Bash,
    /// Completions for zsh.
    Zsh,
    /// Completions for fish.
    Fish,
    /// Completions for elvish.
    Elvish,
    /// Completions for PowerShell.
    Powershell,
}

/// `--generate KIND`: writes the man page or completions of `command` (a
/// program's clap definition, so they list exactly its flags) to `out`.
///
/// # Errors
/// When `out` cannot be written.
pub fn generate(
    mut command: clap::Command,
    kind: Generated,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    use clap_complete::Shell;
    let shell = match kind {
        Generated::Man => return write_man_page(command, out),
        Generated::Bash => Shell::Bash,
        Generated::Zsh => Shell::Zsh,
        Generated::Fish => Shell::Fish,
        Generated::Elvish => Shell::Elvish,
        Generated::Powershell => Shell::PowerShell,
    };
    let name = command.get_name().to_string();
    clap_complete::generate(shell, &mut command, name, out);
    Ok(())
}

/// The man page of `command`: clap_mangen's sections, with a synopsis that
/// shows each flag's value (`[--connect ADDR]`, which clap_mangen's omits)
/// and a FILES section.
fn write_man_page(command: clap::Command, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let name = command.get_name().to_string();
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    writeln!(out, ".SH SYNOPSIS")?;
    writeln!(out, "{}", synopsis(&command))?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    writeln!(out, ".SH FILES")?;
    for (file, what) in files_of(&name) {
        writeln!(
            out,
            ".TP
{}
{}",
            roff_escape(file),
            roff_escape(what)
        )?;
    }
    man.render_extra_section(out)?;
    man.render_version_section(out)?;
    Ok(())
}

/// The synopsis line in roff: `\fBchat\-client\fR [\fB\-\-connect\fR \fIADDR\fR] …`.
fn synopsis(command: &clap::Command) -> String {
    let mut line = format!("\\fB{}\\fR", roff_escape(command.get_name()));
    for arg in command.get_arguments().filter(|arg| !arg.is_hide_set()) {
        let value = arg
            .get_value_names()
            .and_then(|names| names.first())
            .map(|name| format!(" \\fI{}\\fR", roff_escape(name)));
        let flag = match (arg.get_short(), arg.get_long()) {
            (Some(short), Some(long)) => {
                format!("\\fB\\-{short}\\fR|\\fB\\-\\-{}\\fR", roff_escape(long))
            }
            (None, Some(long)) => format!("\\fB\\-\\-{}\\fR", roff_escape(long)),
            (Some(short), None) => format!("\\fB\\-{short}\\fR"),
            // A positional argument: its value name alone.
            (None, None) => String::new(),
        };
        let value = match (flag.is_empty(), value) {
            (true, Some(value)) => value.trim_start().to_string(),
            (_, Some(value)) if arg.get_action().takes_values() => value,
            _ => String::new(),
        };
        line.push_str(&format!(" [{flag}{value}]"));
    }
    line
}

/// The files a program reads or writes, for its man page.
fn files_of(program: &str) -> Vec<(&'static str, &'static str)> {
    let mut files = Vec::new();
    if program == "chat-client" {
        files.push((
            "~/.config/zmq-chat/client.key",
            "The client's private key in secure mode when --key is not given (made on first use, owner-only); $XDG_CONFIG_HOME is honoured.",
        ));
        files.push((
            "~/.config/zmq-chat/known_servers",
            "The servers whose keys were accepted by trust on first use (--secure): one ENDPOINT KEY # FINGERPRINT line each, owner-only.",
        ));
        files.push((
            "~/.local/share/zmq-chat/chat-client.history",
            "The lines typed at the prompt (owner-only; --no-history keeps none); $XDG_DATA_HOME is honoured.",
        ));
    } else {
        files.push((
            "FILE of --key",
            "The server's private key in secure mode (one base64 line, owner-only; made with --keygen FILE).",
        ));
        files.push((
            "FILE of --allow",
            "The client public keys let in, one per line (# comments); group and others may not write it.",
        ));
        files.push((
            "~/.local/share/zmq-chat/chat-server.history",
            "The replies typed at the prompt (owner-only; --no-history keeps none); $XDG_DATA_HOME is honoured.",
        ));
    }
    files
}

/// `text` for roff: backslashes and hyphens escaped, no line starting
/// with a control character.
fn roff_escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('-', "\\-");
    match escaped.chars().next() {
        Some('.' | '\'') => format!("\\&{escaped}"),
        _ => escaped,
    }
}

/// The flags both programs have to name the help desk's brokers (with
/// `--desk`).
#[derive(clap::Args, Debug)]
pub struct BrokerFlags {
    /// With --desk: the RabbitMQ broker, amqp://USER@HOST:PORT/VHOST; give
    /// several (the nodes of a cluster) to have them tried in turn. Never
    /// a password here, where ps shows it: put the URLs in $ZMQ_CHAT_BROKER
    /// or a --broker-file [default: $ZMQ_CHAT_BROKER, else amqp://localhost]
    #[arg(long, value_name = "URL", requires = "desk")]
    pub broker: Vec<String>,

    /// With --desk: a file of broker URLs, one a line, passwords allowed
    /// (readable by you only: chmod 600)
    #[arg(
        long,
        value_name = "FILE",
        requires = "desk",
        conflicts_with = "broker"
    )]
    pub broker_file: Option<PathBuf>,

    /// With --desk and amqps:// brokers: also trust the certificate
    /// authorities in FILE (PEM), besides the system's
    #[arg(long, value_name = "FILE", requires = "desk")]
    pub ca: Option<PathBuf>,
}

impl BrokerFlags {
    /// The desk `name` on the brokers these flags name (or the environment,
    /// or the default).
    ///
    /// # Errors
    /// A password on the command line, a broker file others may read, a
    /// URL that does not parse, a `--ca` file without a certificate.
    pub fn desk(&self, name: &str) -> Result<Desk, BrokerUrlError> {
        Ok(Desk {
            name: name.to_string(),
            brokers: broker_urls(&self.broker, self.broker_file.as_deref())?,
            ca: self
                .ca
                .as_deref()
                .map(certificate_authorities)
                .transpose()?,
        })
    }
}

/// The flags both programs have for how they write what happens: for
/// scripts (`--json`, `-0`) and for the record (`--timestamps`, `--log`).
#[derive(clap::Args, Debug)]
pub struct OutputFlags {
    /// Write every event as one JSON object a line on stdout: each message
    /// with its id, sender and time; connects and leaves; refusals;
    /// give-ups; notices (the fields: docs/GUIDE.md)
    #[arg(long)]
    pub json: bool,

    /// In script mode, end each message with a NUL byte instead of a
    /// newline, read and written (JSON lines still end with a newline), so
    /// that a message may hold newlines
    #[arg(short = '0', long)]
    pub null: bool,

    /// Show each message after the local time it arrived (HH:MM:SS)
    #[arg(long)]
    pub timestamps: bool,

    /// Append a transcript of the chat to FILE, as JSON lines (the file
    /// readable by you only; no key is ever written)
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
}

impl OutputFlags {
    /// The screen's style. Call it before any thread starts: with
    /// `--timestamps` it reads the local time zone (see [`LocalTime::detect`]).
    pub fn style(&self) -> Style {
        Style {
            json: self.json,
            nul: self.null,
            timestamps: self.timestamps.then(LocalTime::detect),
        }
    }

    /// Sets `screen` up as these flags say: its style, its transcript.
    ///
    /// # Errors
    /// When the transcript cannot be opened or others may read it.
    pub fn apply(&self, style: Style, screen: &mut Screen) -> Result<(), TranscriptError> {
        screen.set_style(style);
        if let Some(path) = &self.log {
            screen.keep_transcript(Transcript::open(path)?);
        }
        Ok(())
    }
}

/// The flags both programs have that run a task instead of the chat, and
/// exit: key files, man pages and completions.
#[derive(clap::Args, Debug)]
pub struct Tasks {
    /// Write this program's man page or shell completions to stdout, exit
    #[arg(long, value_name = "KIND", value_enum, exclusive = true, hide = true)]
    pub generate: Option<Generated>,

    /// Write a new private key to FILE (owner-only), print its public key, exit
    #[arg(long, value_name = "FILE", exclusive = true)]
    pub keygen: Option<PathBuf>,

    /// Print the public key of the private key FILE (for a peer, or an
    /// --allow list) and exit
    #[arg(long, value_name = "FILE", exclusive = true)]
    pub public_key: Option<PathBuf>,
}

impl Tasks {
    /// Runs the task asked for, if one was: `Some(Exit::Ok)` once it is
    /// done. `command` is the program's clap definition (for `--generate`).
    ///
    /// # Errors
    /// When the task fails: a key file that cannot be written or read, a
    /// closed stdout.
    pub fn run(
        &self,
        program: &str,
        command: impl FnOnce() -> clap::Command,
    ) -> Result<Option<Exit>, Box<dyn std::error::Error + Send + Sync>> {
        if let Some(kind) = self.generate {
            match generate(command(), kind, &mut std::io::stdout().lock()) {
                // A closed stdout (`--generate man | head`) ends quietly.
                Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
                written => written?,
            }
        } else if let Some(path) = &self.keygen {
            keygen(program, path)?;
        } else if let Some(path) = &self.public_key {
            print_public_key(path)?;
        } else {
            return Ok(None);
        }
        Ok(Some(Exit::Ok))
    }
}
