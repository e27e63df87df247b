//! Request/reply: clients ask, one server answers each request in turn.
//!
//! REQ and REP enforce lock-step: a REQ socket must receive the reply before
//! it may send again (a second send fails with EFSM, as the client shows),
//! and REP routes each reply back to the client that asked, so one server
//! serves many clients without mixing them up.
//!
//! ```sh
//! cargo run --example reqrep -- server                        # terminal 1
//! cargo run --example reqrep -- client --name alice           # terminal 2
//! cargo run --example reqrep -- client --name bob --count 5   # terminal 3
//! ```

use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use zmq_chat::address::Role;
use zmq_chat::cli;
use zmq_chat::display::escape_for_terminal;
use zmq_chat::shutdown::Shutdown;
use zmq_chat::terminal::print_line;
use zmq_chat::transport::{self, Received};

const PROGRAM: &str = "reqrep";

const EXIT_CODES: &str = "\
Exit status:
  0    the server was stopped (Ctrl-C), or the client got every reply
  1    a runtime error (address in use, say), or the client was interrupted
       while waiting for a reply
  2    a usage error (unknown flag, malformed address)
  3    the client: no server answered within --give-up";

#[derive(Parser)]
#[command(about = "REQ/REP: lock-step requests and replies", after_help = EXIT_CODES)]
struct Args {
    #[command(subcommand)]
    role: ReqRepRole,
}

#[derive(Subcommand)]
enum ReqRepRole {
    /// Answer every request (port 0 picks a free port, reported on stderr)
    Server {
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5570")]
        bind: String,
        /// Pretend each request takes this long to serve
        #[arg(long, value_name = "MS", default_value_t = 0)]
        work_ms: u64,
    },
    /// Send requests one after another, each after the previous reply
    Client {
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5570")]
        connect: String,
        /// Name used in the requests, to tell clients apart
        #[arg(long, default_value = "client")]
        name: String,
        /// How many requests to send
        #[arg(long, default_value_t = 3)]
        count: u32,
        /// Seconds to wait for a reply before giving up (a REQ socket
        /// queues its request until a server is there)
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        give_up: u64,
    },
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => cli::report(PROGRAM, error.as_ref()),
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let context = zmq::Context::new();
    let shutdown = Shutdown::install()?;
    match args.role {
        ReqRepRole::Server { bind, work_ms } => {
            let endpoint = cli::endpoint_from_flag(&bind, Role::Bind)?;
            let (socket, bound) = transport::bind(&context, zmq::REP, &endpoint)?;
            eprintln!("{PROGRAM}: server listening on {bound}");
            serve(&socket, &shutdown, Duration::from_millis(work_ms))
        }
        ReqRepRole::Client {
            connect,
            name,
            count,
            give_up,
        } => {
            let endpoint = cli::endpoint_from_flag(&connect, Role::Connect)?;
            let socket = transport::connect(&context, zmq::REQ, &endpoint)?;
            eprintln!(
                "{PROGRAM}: client: asking the server at {endpoint} (up to {give_up} s for each reply)"
            );
            let give_up = Duration::from_secs(give_up);
            match ask(&socket, &shutdown, &name, count, give_up)? {
                Asked::All => Ok(()),
                Asked::NoServer(number) => {
                    eprintln!(
                        "{PROGRAM}: no server answered request {number} within {} s; is one running at {endpoint}?",
                        give_up.as_secs()
                    );
                    std::process::exit(3);
                }
            }
        }
    }
}

fn serve(socket: &zmq::Socket, shutdown: &Shutdown, work: Duration) -> anyhow::Result<()> {
    let mut served = 0u64;
    loop {
        let Received::Message(frames) = transport::receive(socket, shutdown, || true)? else {
            return Ok(());
        };
        served += 1;
        let request = String::from_utf8_lossy(&frames.concat()).into_owned();
        print_line(format_args!(
            "server: request #{served}: {}",
            escape_for_terminal(&request)
        ));
        thread::sleep(work);
        socket.send(format!("reply #{served} to '{request}'").as_bytes(), 0)?;
    }
}

/// How the client's requests went.
enum Asked {
    /// Every request got its reply.
    All,
    /// No reply to this request within the give-up time.
    NoServer(u32),
}

fn ask(
    socket: &zmq::Socket,
    shutdown: &Shutdown,
    name: &str,
    count: u32,
    give_up: Duration,
) -> anyhow::Result<Asked> {
    for number in 1..=count {
        socket.send(format!("{name} request {number}").as_bytes(), 0)?;
        if number == 1 {
            // Lock-step made visible: REQ refuses a second send before the reply.
            match socket.send("one too many", 0) {
                Err(error) => print_line(format_args!(
                    "{name}: a second send before the reply is refused: {error}"
                )),
                Ok(()) => anyhow::bail!("REQ accepted two sends in a row; lock-step broken"),
            }
        }
        let deadline = Instant::now() + give_up;
        let frames = match transport::receive(socket, shutdown, || Instant::now() < deadline)? {
            Received::Message(frames) => frames,
            Received::Abandoned => return Ok(Asked::NoServer(number)),
            Received::Interrupted => {
                anyhow::bail!("interrupted while waiting for the reply to request {number}")
            }
        };
        let reply = String::from_utf8_lossy(&frames.concat()).into_owned();
        print_line(format_args!("{name}: got {}", escape_for_terminal(&reply)));
    }
    Ok(Asked::All)
}
