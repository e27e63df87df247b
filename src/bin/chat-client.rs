//! `chat-client`: connects the chat's DEALER socket (keeping REQ's
//! lock-step, and re-sending after a lost connection), sends each line and
//! shows each reply. This file only parses arguments and wires the
//! library's [`ChatClient`] to the terminal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use zmq_chat::address::Endpoint;
use zmq_chat::address::{DEFAULT_ADDRESS, Role};
use zmq_chat::cli;
use zmq_chat::client::{ChatClient, ClientEnd, Liveness};
use zmq_chat::clock::SystemClock;
use zmq_chat::desk::Desk;
use zmq_chat::desk::client::{DeskClient, Sealing};
use zmq_chat::desk::trust::known_desk_key;
use zmq_chat::display::escape_for_terminal;
use zmq_chat::event::Kind;
use zmq_chat::exit::{Exit, Program};
use zmq_chat::folders;
use zmq_chat::message::DEFAULT_MAX_MESSAGE_BYTES;
use zmq_chat::prompt::Prompt;
use zmq_chat::secure::client::ClientSecurity;
use zmq_chat::secure::keys::{Identity, PublicKey, default_client_key_path, is_low_order};
use zmq_chat::secure::trust::{FirstUse, Trust, ask_at_terminal, known_server_key};
use zmq_chat::shutdown::Shutdown;
use zmq_chat::terminal::{self, End, LineSource, Screen, ScriptLines};
use zmq_chat::transport::Dealer;

const PROGRAM: &str = "chat-client";

/// Chat over ZeroMQ: send a message to a chat-server, wait for its reply.
///
/// With a terminal, you type at a prompt (/help lists commands). Without one
/// (stdin is a pipe or file), each stdin line is sent as one message and each
/// reply is printed as one line: `printf 'a\nb\n' | chat-client`. The server
/// may start after the client: messages wait until it appears.
#[derive(Parser)]
#[command(name = PROGRAM, version, after_help = Exit::help_table(Program::Client))]
struct Args {
    /// The server, as --connect takes it (`chat-client 192.0.2.7:8877`)
    #[arg(value_name = "ADDR", conflicts_with = "connect")]
    address: Option<String>,

    // The help is an attribute, not a doc comment: rustdoc would read
    // "[IPv6]" as a link.
    #[arg(
        short,
        long,
        value_name = "ADDR",
        default_value = DEFAULT_ADDRESS,
        help = "The server: IP:PORT, HOST:PORT, [IPv6]:PORT, a bare IP or host (port 8877), tcp://… or ipc://…"
    )]
    connect: String,

    /// Seconds without a heartbeat answer after which a frozen or
    /// unreachable server counts as gone (a slow operator never does)
    #[arg(long, value_name = "SECS", default_value_t = 3.0, value_parser = parse_seconds)]
    liveness: f64,

    /// Seconds to wait for a lost server to come back before handing the
    /// unanswered message back (script mode then exits with code 3)
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = parse_seconds)]
    give_up: f64,

    /// A name the server's operator sees with your messages (at most 32
    /// bytes; sent in clear and not proven, even in secure mode)
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    name: Option<String>,

    /// Show at most this many bytes of a received reply (the rest is
    /// reported, not shown)
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    max_size: usize,

    /// Secure mode: the server's public key (base64, as chat-server prints
    /// it); the chat is encrypted and nothing is sent to a server without it.
    /// With --desk: the desk's key, which seals the chat end to end
    #[arg(long, value_name = "BASE64", value_parser = cli::parse_public_key)]
    server_key: Option<PublicKey>,

    /// Secure mode without --server-key (trust on first use, as ssh): use
    /// the key remembered for this address in
    /// ~/.config/zmq-chat/known_servers, or learn it now after you confirm
    /// its fingerprint. An address listed there is always secure. With
    /// --desk: the desk's key, learned from its operators
    #[arg(long, conflicts_with = "server_key")]
    secure: bool,

    /// With --secure, for scripts: remember a new server's key without
    /// asking (check it another way: --secure trusts what first answers)
    #[arg(long, requires = "secure")]
    accept_new_key: bool,

    /// In secure mode or at a sealed desk: this client's private key [default:
    /// ~/.config/zmq-chat/client.key, created on first use]
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,

    /// Keep no history of the messages typed at the prompt (by default it is
    /// kept, owner-only, in ~/.local/share/zmq-chat/chat-client.history)
    #[arg(long)]
    no_history: bool,

    /// Ask the help desk NAME instead of one server: the question goes
    /// through the broker (--broker) to whichever operator is free, and
    /// waits there while none is online
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with_all = ["address", "connect"]
    )]
    desk: Option<String>,

    #[command(flatten)]
    brokers: cli::BrokerFlags,

    /// With --desk: ask every question in the urgent lane, which operators
    /// serve first (at the prompt, /urgent TEXT asks one so)
    #[arg(long, requires = "desk")]
    urgent: bool,

    /// With --desk: seconds a question waits for an operator before it
    /// expires unanswered (and is reported, now or when you come back)
    #[arg(long, value_name = "SECS", default_value_t = 86_400.0, value_parser = parse_seconds)]
    expire: f64,

    #[command(flatten)]
    output: cli::OutputFlags,

    #[command(flatten)]
    tasks: cli::Tasks,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(exit) => exit.into(),
        Err(error) => cli::report(PROGRAM, error.as_ref()),
    }
}

fn run(args: &Args) -> anyhow::Result<Exit> {
    if let Some(exit) = args
        .tasks
        .run(PROGRAM, Args::command)
        .map_err(anyhow::Error::from_boxed)?
    {
        return Ok(exit);
    }
    // Before any thread starts (the local time zone for --timestamps).
    let style = args.output.style();
    let shutdown = Shutdown::install().context("cannot install the Ctrl-C handler")?;
    let mut client = match &args.desk {
        Some(name) => ask_desk(args, name)?,
        None => {
            let address = args.address.as_ref().unwrap_or(&args.connect);
            let endpoint = cli::endpoint_from_flag(address, Role::Connect)
                .with_context(|| format!("invalid address to connect to '{address}'"))?;
            connect(args, &zmq::Context::new(), &endpoint, &shutdown)?
        }
    };
    let interactive = terminal::is_interactive();
    let mut screen = Screen::new(PROGRAM, "server", interactive).context("cannot set up stdout")?;
    args.output.apply(style, &mut screen)?;
    let mut lines = line_source(args, interactive, &mut screen)?;
    screen.status(&format!(
        "waiting for a server at {}; type a message (it waits for the server if need be), /help lists commands",
        client.endpoint()
    ));
    loop {
        let end = client.run(lines.as_mut(), &screen, &shutdown, &SystemClock)?;
        if let Some(exit) = conclude(end, &client, args, interactive, &screen, lines.as_mut()) {
            return Ok(exit);
        }
    }
}

/// The client for `endpoint`, in secure mode if a key is pinned (by
/// `--server-key`) or remembered or learned (trust on first use).
/// How the client judges that a server is gone, from the flags.
fn liveness(args: &Args) -> Liveness {
    Liveness {
        timeout: Duration::from_secs_f64(args.liveness),
        give_up: Duration::from_secs_f64(args.give_up),
    }
}

/// The client of the help desk `name` (--desk): its questions wait in the
/// broker for an operator, so no server is ever given up on.
fn ask_desk(args: &Args, name: &str) -> anyhow::Result<ChatClient> {
    let desk = args.brokers.desk(name)?;
    let sealing = desk_sealing(args, &desk)?;
    let mut client = ChatClient::new(
        Box::new(DeskClient::open(
            &desk,
            Duration::from_secs_f64(args.expire),
            sealing,
        )?),
        liveness(args),
        &SystemClock,
    );
    client.show_at_most(args.max_size);
    if let Some(name) = &args.name {
        client.call_yourself(name);
    }
    if args.urgent {
        client.ask_urgently();
    }
    Ok(client)
}

fn connect(
    args: &Args,
    context: &zmq::Context,
    endpoint: &Endpoint,
    shutdown: &Shutdown,
) -> anyhow::Result<ChatClient> {
    let liveness = liveness(args);
    let trust = match args.server_key {
        Some(key) => Some(Trust::Pinned(key)),
        None => known_server_key(
            PROGRAM,
            first_use(args),
            context,
            endpoint,
            shutdown,
            &mut std::io::stderr(),
            &mut ask_at_terminal,
        )?,
    };
    if trust.is_none() && args.key.is_some() {
        anyhow::bail!(
            "--key is for secure mode: add --server-key KEY, or --secure to learn the server's key"
        );
    }
    let security = trust.map(|trust| secure_mode(args, trust)).transpose()?;
    let mut client = ChatClient::new(
        Box::new(Dealer::connect(context, endpoint, liveness.timeout)?),
        liveness,
        &SystemClock,
    );
    client.show_at_most(args.max_size);
    if let Some(name) = &args.name {
        client.call_yourself(name);
    }
    if let Some(security) = security {
        client.require_encryption(security);
    }
    Ok(client)
}

/// Where the lines to send come from: the prompt (whose printer the
/// screen then writes through), or stdin as a script.
fn line_source(
    args: &Args,
    interactive: bool,
    screen: &mut Screen,
) -> anyhow::Result<Box<dyn LineSource>> {
    if !interactive {
        let lines = ScriptLines::from_stdin(PROGRAM).separated_by(screen.separator());
        return Ok(Box::new(lines));
    }
    let history = (!args.no_history)
        .then(|| folders::history(PROGRAM))
        .flatten();
    let prompt = Prompt::new("you> ", history)?;
    screen.print_above_prompt(prompt.printer());
    Ok(Box::new(prompt))
}

/// Tells the user how the chat ended and picks the exit code; `None` when
/// the chat goes on (a message given up on at the prompt is offered there
/// again, not lost).
fn conclude(
    end: ClientEnd,
    client: &ChatClient,
    args: &Args,
    interactive: bool,
    screen: &Screen,
    lines: &mut dyn LineSource,
) -> Option<Exit> {
    let script = !interactive;
    Some(match end {
        ClientEnd::Finished(End::Interrupted) if script => Exit::Interrupted,
        ClientEnd::Finished(_) if script && client.incomplete_lines().1 > 0 => {
            name_incomplete_lines(client, screen);
            Exit::Incomplete
        }
        ClientEnd::Finished(_) => Exit::Ok,
        ClientEnd::GaveUp { unanswered } => {
            return gave_up(&unanswered, client, args, script, screen, lines);
        }
        ClientEnd::ServerEnded { unanswered } => {
            let reason = "the server's operator ended the chat before replying; the chat has ended";
            failed(Kind::Leave, reason, Some(&unanswered), screen)
        }
        ClientEnd::Refused { reason, unanswered } => {
            failed(Kind::Refusal, &reason, Some(&unanswered), screen)
        }
        ClientEnd::Failed { reason } => failed(Kind::Notice, &reason, None, screen),
        ClientEnd::InterruptedWaiting { unanswered, unsent } => {
            ended_waiting("interrupted", &unanswered, &unsent, screen);
            // At a terminal Ctrl-C ends the chat as /quit does, waiting
            // or not; a script is told it was interrupted.
            if script { Exit::Interrupted } else { Exit::Ok }
        }
        ClientEnd::QuitWaiting {
            unanswered, unsent, ..
        } => {
            ended_waiting(
                "ended while waiting for the reply",
                &unanswered,
                &unsent,
                screen,
            );
            Exit::Ok
        }
    })
}

/// Says that no server answered within `--give-up`: a script ends with its
/// exit code; at the prompt the message is offered again (`None`: the chat
/// goes on), not lost.
fn gave_up(
    unanswered: &str,
    client: &ChatClient,
    args: &Args,
    script: bool,
    screen: &Screen,
    lines: &mut dyn LineSource,
) -> Option<Exit> {
    screen.tell(
        Kind::GiveUp,
        &format!(
            "no server answered at {} within {} s; unanswered message: {}",
            client.endpoint(),
            args.give_up,
            escape_for_terminal(unanswered)
        ),
    );
    if script {
        return Some(Exit::GaveUp);
    }
    screen.status("the message is back at the prompt: press Enter to send it again, or edit it");
    if let Some(person) = lines.person() {
        person.offer(unanswered);
    }
    None
}

/// Says why the chat failed (an event of `kind`), and the message left
/// unanswered if any.
fn failed(kind: Kind, reason: &str, unanswered: Option<&str>, screen: &Screen) -> Exit {
    screen.tell(kind, reason);
    if let Some(text) = unanswered {
        screen.notice(&format!(
            "unanswered message: {}",
            escape_for_terminal(text)
        ));
    }
    Exit::Failure
}

/// Says how a chat ended while a reply was awaited: the unanswered
/// message, and the lines typed meanwhile that were never sent.
fn ended_waiting(how: &str, unanswered: &str, unsent: &[String], screen: &Screen) {
    screen.notice(&format!(
        "{how}; unanswered message: {}",
        escape_for_terminal(unanswered)
    ));
    for line in unsent {
        screen.notice(&format!("not sent: {}", escape_for_terminal(line)));
    }
}

/// Names the lines of a script that were not delivered whole (the first
/// few by number, the rest counted).
fn name_incomplete_lines(client: &ChatClient, screen: &Screen) {
    let (named, count) = client.incomplete_lines();
    let lines: Vec<String> = named.iter().map(u64::to_string).collect();
    let more = match count - named.len() as u64 {
        0 => String::new(),
        more => format!(" and {more} more"),
    };
    screen.notice(&format!(
        "not delivered whole: line(s) {}{more} (see above)",
        lines.join(", ")
    ));
}

/// Loads (or on first use creates) the client's key for secure mode; the
/// server's key is pinned as `trust` says.
fn secure_mode(args: &Args, trust: Trust) -> anyhow::Result<ClientSecurity> {
    Ok(trust.into_security(client_identity(args)?))
}

/// End-to-end sealing at a desk, with the desk's key pinned
/// (`--server-key`), remembered, or learned (`--secure`); `None`: the desk
/// in clear.
fn desk_sealing(args: &Args, desk: &Desk) -> anyhow::Result<Option<Sealing>> {
    let trust = match args.server_key {
        Some(key) => Some(Trust::Pinned(key)),
        None => known_desk_key(
            PROGRAM,
            first_use(args),
            desk,
            &mut std::io::stderr(),
            &mut ask_at_terminal,
        )?,
    };
    let Some(trust) = trust else {
        if args.key.is_some() {
            anyhow::bail!(
                "--key at a desk seals the chat: add --server-key KEY (the desk's), or --secure to learn it"
            );
        }
        return Ok(None);
    };
    if is_low_order(&trust.key().0) {
        anyhow::bail!("the desk's key is of small order, which proves nothing: it cannot be used");
    }
    let desk_key = trust.key();
    let remember = match trust {
        Trust::Learned(_, known, entry) => Some((known, entry)),
        _ => None,
    };
    Ok(Some(Sealing {
        identity: client_identity(args)?,
        desk: desk_key,
        remember,
    }))
}

/// What trust on first use may do, from the flags.
fn first_use(args: &Args) -> FirstUse {
    FirstUse {
        learn: args.secure,
        accept_without_asking: args.accept_new_key,
        can_ask: terminal::stdin_is_interactive(),
        wait: Duration::from_secs_f64(args.give_up),
    }
}

/// This client's key in secure mode or at a sealed desk.
fn client_identity(args: &Args) -> anyhow::Result<Identity> {
    // A key named on the command line must exist (a typo must not quietly
    // become a new identity); the default one is made on first use.
    let (identity, created, path) = match &args.key {
        Some(path) => (
            Identity::load(path).context("cannot use the --key file")?,
            false,
            path.clone(),
        ),
        None => {
            let path = default_client_key_path().context(
                "no --key given and no home folder for the default key; pass --key FILE",
            )?;
            let (identity, created) =
                Identity::load_or_create(&path).context("cannot use the client key")?;
            (identity, created, path)
        }
    };
    if created {
        eprintln!("{PROGRAM}: created a new client key in {}", path.display());
    }
    eprintln!(
        "{PROGRAM}: secure mode: this client's public key is {} (for the server's --allow list; its operator sees it as {})",
        identity.public_key(),
        identity.public_key().fingerprint()
    );
    Ok(identity)
}

/// Checks a `--name`: 1 to 32 bytes, no control characters.
fn parse_name(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > zmq_chat::MAX_NAME_BYTES {
        return Err(format!(
            "a name has 1 to {} bytes; '{text}' has {}",
            zmq_chat::MAX_NAME_BYTES,
            text.len()
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("a name may not contain control characters".to_string());
    }
    Ok(text.to_string())
}

/// Parses a positive number of seconds, fractions allowed ("0.5").
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 && seconds < 1e9 => Ok(seconds),
        _ => Err(format!("'{text}' is not a positive number of seconds")),
    }
}
