//! `chat-server`: binds the chat's ROUTER socket (answering like REP, one
//! message at a time) and answers each message in turn. This file only
//! parses arguments and wires the library's [`ChatServer`] to the terminal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use zmq_chat::address::{DEFAULT_ADDRESS, Role};
use zmq_chat::cli;
use zmq_chat::clock::SystemClock;
use zmq_chat::desk::server::DeskOperator;
use zmq_chat::exit::{Exit, Program};
use zmq_chat::folders;
use zmq_chat::message::DEFAULT_MAX_MESSAGE_BYTES;
use zmq_chat::prompt::Prompt;
use zmq_chat::secure::keys::{AllowList, Identity};
use zmq_chat::secure::server::ServerSecurity;
use zmq_chat::server::{ChatServer, ReplySource};
use zmq_chat::shutdown::Shutdown;
use zmq_chat::terminal::{self, End, Screen, ScriptLines};
use zmq_chat::transport::{self, Router, ToClients};

const PROGRAM: &str = "chat-server";

/// Chat over ZeroMQ: wait for a client's message, show it, send your reply.
///
/// With a terminal, you type each reply at a prompt (/help lists commands).
/// Without one (stdin is a pipe or file), each stdin line is the reply to the
/// next message and each message is printed as one line: `yes ok | chat-server`
/// answers everything. The bound endpoint is printed on stderr as
/// `chat-server: listening on tcp://IP:PORT` as soon as it is ready.
#[derive(Parser)]
#[command(name = PROGRAM, version, after_help = Exit::help_table(Program::Server))]
struct Args {
    /// Where to listen, as --bind takes it (`chat-server 0.0.0.0:8877`)
    #[arg(value_name = "ADDR", conflicts_with = "bind")]
    address: Option<String>,

    // The help is an attribute, not a doc comment: rustdoc would read
    // "[IPv6]" as a link.
    #[arg(
        short,
        long,
        value_name = "ADDR",
        default_value = DEFAULT_ADDRESS,
        help = "Where to listen: IP:PORT, HOST:PORT, [IPv6]:PORT, a bare IP or host (port 8877), *:PORT or 0.0.0.0:PORT for all interfaces, tcp://… or ipc://…; port 0 or * picks a free port"
    )]
    bind: String,

    /// Reply to every message with the message itself, without an operator
    /// (for tests, bots and benchmarks). Stdin is not read, so its end ends
    /// nothing (it runs with stdin closed, as a service): Ctrl-C or SIGTERM
    /// ends it (exit code 130)
    #[arg(long)]
    echo: bool,

    /// Show at most this many bytes of a received message (the rest is
    /// reported, not shown)
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    max_size: usize,

    /// Secure mode: only encrypted chats (Noise IK), with this private key
    /// (make one with --keygen); clients need its public key, printed at
    /// start. With --desk: the desk's key, shared by its operators, which
    /// seals the desk end to end (the broker reads nothing)
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,

    /// With --key: let in only the clients whose public keys are in FILE
    /// (one base64 key per line, # comments)
    #[arg(long, value_name = "FILE", requires = "key")]
    allow: Option<PathBuf>,

    /// Keep no history of the replies typed at the prompt (by default it is
    /// kept, owner-only, in ~/.local/share/zmq-chat/chat-server.history)
    #[arg(long)]
    no_history: bool,

    /// Be an operator of the help desk NAME instead of listening: questions
    /// come through the broker (--broker) from any number of clients, each
    /// to one operator of any number, and wait there while none is online
    #[arg(long, value_name = "NAME", conflicts_with_all = ["address", "bind", "allow"])]
    desk: Option<String>,

    #[command(flatten)]
    brokers: cli::BrokerFlags,

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
    let security = args
        .key
        .as_deref()
        .filter(|_| args.desk.is_none())
        .map(|key| secure_mode(key, args.allow.as_deref()))
        .transpose()?;
    let shutdown = Shutdown::install().context("cannot install the Ctrl-C handler")?;
    let mut server = ChatServer::new(clients(args)?);
    server.show_at_most(args.max_size);
    let interactive = !args.echo && terminal::is_interactive();
    let mut screen = Screen::new(PROGRAM, "client", interactive).context("cannot set up stdout")?;
    args.output.apply(style, &mut screen)?;
    let mut prompt = if interactive {
        Some(prompt(args, &mut screen)?)
    } else {
        None
    };
    if let Some(security) = security {
        announce_secure_mode(&security, &screen);
        server.require_encryption(security);
    }
    if args.desk.is_some() {
        screen.notice(&format!("an operator of the {}", server.endpoint()));
    } else {
        screen.notice(&format!("listening on {}", server.endpoint()));
        announce_room(&screen);
    }
    screen.status("each message you receive waits for your reply; /help lists commands");

    let mut script;
    let replies = if args.echo {
        ReplySource::Echo
    } else if let Some(prompt) = &mut prompt {
        ReplySource::Operator(prompt)
    } else {
        script = ScriptLines::from_stdin(PROGRAM).separated_by(screen.separator());
        ReplySource::Operator(&mut script)
    };
    let end = server.run(replies, &screen, &shutdown, &SystemClock)?;
    Ok(match end {
        End::Interrupted if !interactive => Exit::Interrupted,
        End::Eof | End::Quit | End::Interrupted => Exit::Ok,
    })
}

/// Where the clients come from: a desk's queue (--desk), or a ZeroMQ
/// socket bound where the flags say.
fn clients(args: &Args) -> anyhow::Result<Box<dyn ToClients>> {
    if let Some(name) = &args.desk {
        let desk = args.brokers.desk(name)?;
        // With --key, the desk is sealed: the key is the desk's, shared by
        // its operators.
        let key = args
            .key
            .as_deref()
            .map(|path| Identity::load(path).context("cannot use the --key file"))
            .transpose()?;
        if let Some(key) = &key {
            eprintln!(
                "{PROGRAM}: the desk is sealed end to end; its key is {} (fingerprint {}): clients pass it as --server-key, or learn it with --secure",
                key.public_key(),
                key.public_key().fingerprint()
            );
        }
        return Ok(Box::new(DeskOperator::open(&desk, key)?));
    }
    let address = args.address.as_ref().unwrap_or(&args.bind);
    let endpoint = cli::endpoint_from_flag(address, Role::Bind)
        .with_context(|| format!("invalid address to bind '{address}'"))?;
    Ok(Box::new(Router::bind(&zmq::Context::new(), &endpoint)?))
}

/// The operator's prompt, which the screen then writes through.
fn prompt(args: &Args, screen: &mut Screen) -> anyhow::Result<Prompt> {
    let history = (!args.no_history)
        .then(|| folders::history(PROGRAM))
        .flatten();
    let prompt = Prompt::new("reply> ", history)?;
    screen.print_above_prompt(prompt.printer());
    Ok(prompt)
}

/// Tells the operator the key clients need, and its fingerprint.
fn announce_secure_mode(security: &ServerSecurity, screen: &Screen) {
    screen.notice(&format!(
        "secure mode: clients connect with --server-key {}",
        security.public_key()
    ));
    screen.notice(&format!(
        "the key's fingerprint, for clients that learn it on first use (--secure): {}",
        security.public_key().fingerprint()
    ));
}

/// Raises the open-file limit as far as allowed (every connection holds a
/// descriptor) and says how many connections that leaves room for.
fn announce_room(screen: &Screen) {
    match transport::raise_open_file_limit() {
        Ok(limit) => screen.notice(&format!(
            "room for about {} connections (open-file limit {limit})",
            limit.saturating_sub(32)
        )),
        Err(error) => screen.notice(&format!("cannot read the open-file limit: {error}")),
    }
}

/// Loads the server's key and, if given, the allow list for secure mode.
fn secure_mode(key: &Path, allow: Option<&Path>) -> anyhow::Result<ServerSecurity> {
    let identity = Identity::load(key).context("cannot use the --key file")?;
    let allowed = match allow {
        Some(path) => {
            let list = AllowList::load(path).context("cannot use the --allow list")?;
            match list.len() {
                0 => eprintln!(
                    "{PROGRAM}: warning: {} lists no key: every client will be refused",
                    path.display()
                ),
                count => eprintln!(
                    "{PROGRAM}: secure mode: {count} client key(s) allowed (from {})",
                    path.display()
                ),
            }
            Some(list)
        }
        None => None,
    };
    Ok(ServerSecurity::new(identity, allowed))
}
