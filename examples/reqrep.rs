//! Request/reply: clients ask, one server answers each request in turn.
//!
//! The server binds a REP socket; each client connects a REQ socket. REQ
//! and REP enforce lock-step: a REQ socket must receive the reply before
//! it may send again (a second send fails with EFSM, as the client shows),
//! and REP sends each reply back to the client that asked, so one server
//! serves many clients without mixing them up.
//!
//! ```sh
//! cargo run --example reqrep -- server                        # terminal 1
//! cargo run --example reqrep -- client --name alice           # terminal 2
//! cargo run --example reqrep -- client --name bob --count 5   # terminal 3
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use zmq_chat::address::Role;
use zmq_chat::cli;
use zmq_chat::display::escape_for_terminal;
use zmq_chat::shutdown::Shutdown;
use zmq_chat::terminal::print_line;

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
enum Args {
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
    let ran = match Args::parse() {
        Args::Server { bind, work_ms } => server(&bind, Duration::from_millis(work_ms)),
        Args::Client {
            connect,
            name,
            count,
            give_up,
        } => client(&connect, &name, count, Duration::from_secs(give_up)),
    };
    ran.unwrap_or_else(|error| cli::report(PROGRAM, error.as_ref()))
}

fn server(bind: &str, work: Duration) -> anyhow::Result<ExitCode> {
    let endpoint = cli::endpoint_from_flag(bind, Role::Bind)?.to_string();
    let shutdown = Shutdown::install()?;
    let context = zmq::Context::new();
    let socket = context.socket(zmq::REP)?;
    // Wake up every 100 ms to notice Ctrl-C.
    socket.set_rcvtimeo(100)?;
    // A client sending more is disconnected, not buffered whole.
    socket.set_maxmsgsize(64 * 1024)?;
    socket
        .bind(&endpoint)
        .with_context(|| format!("cannot bind {endpoint}"))?;
    // With port 0, the port the system chose.
    let bound = socket.get_last_endpoint()?.unwrap_or(endpoint);
    eprintln!("{PROGRAM}: server listening on {bound}");

    let mut served = 0u64;
    while !shutdown.requested() {
        let request = match socket.recv_multipart(0) {
            Ok(frames) => String::from_utf8_lossy(&frames.concat()).into_owned(),
            Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => continue,
            Err(error) => return Err(error.into()),
        };
        served += 1;
        print_line(format_args!(
            "server: request #{served}: {}",
            escape_for_terminal(&request)
        ));
        std::thread::sleep(work);
        // REP sends the reply to the client whose request it received.
        socket.send(format!("reply #{served} to '{request}'").as_bytes(), 0)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn client(connect: &str, name: &str, count: u32, give_up: Duration) -> anyhow::Result<ExitCode> {
    let endpoint = cli::endpoint_from_flag(connect, Role::Connect)?.to_string();
    let shutdown = Shutdown::install()?;
    let context = zmq::Context::new();
    let socket = context.socket(zmq::REQ)?;
    socket.set_rcvtimeo(100)?;
    // Unsent requests are dropped at exit, not waited for.
    socket.set_linger(0)?;
    socket.connect(&endpoint)?;
    eprintln!(
        "{PROGRAM}: client: asking the server at {endpoint} (up to {} s for each reply)",
        give_up.as_secs()
    );

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
        let reply = loop {
            match socket.recv_multipart(0) {
                Ok(frames) => break String::from_utf8_lossy(&frames.concat()).into_owned(),
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => {}
                Err(error) => return Err(error.into()),
            }
            if shutdown.requested() {
                anyhow::bail!("interrupted while waiting for the reply to request {number}");
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "{PROGRAM}: no server answered request {number} within {} s; is one running at {endpoint}?",
                    give_up.as_secs()
                );
                return Ok(ExitCode::from(3));
            }
        };
        print_line(format_args!("{name}: got {}", escape_for_terminal(&reply)));
    }
    Ok(ExitCode::SUCCESS)
}
