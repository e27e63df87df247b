//! Pair: an exclusive, two-way connection between exactly two sockets.
//!
//! Either side may send at any time; there is no lock-step as in REQ/REP.
//!
//! Two processes over TCP (each line you type is sent; what arrives is
//! printed as `received: …`; Ctrl-D or Ctrl-C ends):
//!
//! ```sh
//! cargo run --example pair -- bind                 # terminal 1
//! cargo run --example pair -- connect              # terminal 2
//! ```
//!
//! Each side says when its peer connects and when it leaves (the socket
//! monitor's events): PAIR itself would not tell.
//!
//! Two threads of one process over `inproc://`, the signalling use the ZeroMQ
//! guide recommends PAIR for (a worker reports each step, the main thread
//! answers when all are done):
//!
//! ```sh
//! cargo run --example pair -- threads
//! ```

use std::collections::VecDeque;
use std::io::{self, BufRead};
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use zmq_chat::address::Role;
use zmq_chat::cli;
use zmq_chat::display::escape_for_terminal;
use zmq_chat::shutdown::Shutdown;
use zmq_chat::terminal::print_line;

const PROGRAM: &str = "pair";

const EXIT_CODES: &str = "\
Exit status:
  0    input ended (Ctrl-D), or Ctrl-C
  1    a runtime error (address in use, say)
  2    a usage error (unknown flag, malformed address)";

#[derive(Parser)]
#[command(about = "PAIR sockets: an exclusive two-way connection", after_help = EXIT_CODES)]
struct Args {
    #[command(subcommand)]
    role: PairRole,
}

#[derive(Subcommand)]
enum PairRole {
    /// Listen for the one peer (port 0 picks a free port, reported on stderr)
    Bind {
        /// Where to listen
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5555")]
        bind: String,
    },
    /// Connect to the listening peer
    Connect {
        /// The listening peer
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5555")]
        connect: String,
    },
    /// Two threads signalling each other over inproc://
    Threads {
        /// How many steps the worker thread reports
        #[arg(long, default_value_t = 3)]
        steps: u32,
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
    match args.role {
        PairRole::Bind { bind } => {
            let endpoint = cli::endpoint_from_flag(&bind, Role::Bind)?.to_string();
            let (socket, monitor) = watched_pair(&context)?;
            socket
                .bind(&endpoint)
                .with_context(|| format!("cannot bind {endpoint}"))?;
            let bound = socket.get_last_endpoint()?.unwrap_or(endpoint);
            eprintln!("{PROGRAM}: listening on {bound}");
            converse(&socket, &monitor)
        }
        PairRole::Connect { connect } => {
            let endpoint = cli::endpoint_from_flag(&connect, Role::Connect)?;
            let (socket, monitor) = watched_pair(&context)?;
            socket.connect(&endpoint.to_string())?;
            eprintln!("{PROGRAM}: connecting to {endpoint}");
            converse(&socket, &monitor)
        }
        PairRole::Threads { steps } => signal_between_threads(&context, steps),
    }
}

/// A PAIR socket, and the socket its monitor reports on: PAIR itself says
/// nothing of its peer coming and going; its monitor does, as messages on
/// an inproc socket (attached before any connection, to miss none).
fn watched_pair(context: &zmq::Context) -> anyhow::Result<(zmq::Socket, zmq::Socket)> {
    let socket = context.socket(zmq::PAIR)?;
    // At exit, lines the peer has not taken yet get a second to go.
    socket.set_linger(1000)?;
    let events =
        zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32 | zmq::SocketEvent::DISCONNECTED as i32;
    socket.monitor("inproc://pair-monitor", events)?;
    let monitor = context.socket(zmq::PAIR)?;
    monitor.connect("inproc://pair-monitor")?;
    Ok((socket, monitor))
}

/// Sends each stdin line and prints each received message, in whatever order
/// they happen: PAIR has no turn-taking. Says when the peer comes and goes.
fn converse(socket: &zmq::Socket, monitor: &zmq::Socket) -> anyhow::Result<()> {
    let shutdown = Shutdown::install()?;
    let input = read_lines_on_a_thread();
    // PAIR blocks a send while no peer is connected: lines wait here
    // instead (input is read no further while this many wait).
    let mut unsent: VecDeque<String> = VecDeque::new();
    let mut input_ended = false;
    while !shutdown.requested() {
        while !input_ended && unsent.len() < MAX_UNSENT {
            match input.try_recv() {
                Ok(line) => unsent.push_back(line),
                Err(mpsc::TryRecvError::Disconnected) => input_ended = true,
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        while let Some(text) = unsent.front() {
            match socket.send(text.as_bytes(), zmq::DONTWAIT) {
                Ok(()) => {
                    unsent.pop_front();
                }
                Err(zmq::Error::EAGAIN) => break,
                Err(error) => return Err(error.into()),
            }
        }
        if input_ended && unsent.is_empty() {
            return Ok(());
        }
        // Wait up to 100 ms for a message from the peer or its monitor.
        let mut items = [
            socket.as_poll_item(zmq::POLLIN),
            monitor.as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut items, 100) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(error) => return Err(error.into()),
        }
        if items[0].is_readable() {
            let message = socket.recv_bytes(0)?;
            print_line(format_args!(
                "received: {}",
                escape_for_terminal(&String::from_utf8_lossy(&message))
            ));
        }
        if items[1].is_readable() {
            // An event is two frames: its number and value, then the address.
            let event = monitor.recv_multipart(0)?;
            let number = event[0]
                .first_chunk::<2>()
                .map(|raw| u16::from_le_bytes(*raw));
            match number.map(zmq::SocketEvent::from_raw) {
                Some(zmq::SocketEvent::HANDSHAKE_SUCCEEDED) => {
                    eprintln!("{PROGRAM}: the peer is connected")
                }
                Some(zmq::SocketEvent::DISCONNECTED) => {
                    eprintln!("{PROGRAM}: the peer left; lines typed now wait for it to come back")
                }
                _ => {}
            }
        }
    }
    if !unsent.is_empty() {
        eprintln!(
            "{PROGRAM}: {} line(s) not sent: no peer took them",
            unsent.len()
        );
    }
    Ok(())
}

/// Lines typed while no peer is there, kept at most.
const MAX_UNSENT: usize = 1000;

/// Reads stdin's lines on a thread of their own (a read blocks), handing
/// each over; the channel closes at the end of input.
fn read_lines_on_a_thread() -> mpsc::Receiver<String> {
    let (lines, input) = mpsc::sync_channel(MAX_UNSENT);
    thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut line = Vec::new();
        while stdin
            .read_until(b'\n', &mut line)
            .is_ok_and(|read| read > 0)
        {
            let text = String::from_utf8_lossy(&line);
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            if lines.send(text.to_string()).is_err() {
                return;
            }
            line.clear();
        }
    });
    input
}

/// The main thread binds first (inproc requires bind before connect in
/// libzmq < 4.2 and it keeps the roles clear), then starts the worker.
fn signal_between_threads(context: &zmq::Context, steps: u32) -> anyhow::Result<()> {
    let main_side = context.socket(zmq::PAIR)?;
    main_side.bind("inproc://steps")?;
    let worker_side = context.socket(zmq::PAIR)?;
    let worker = thread::spawn(move || -> Result<(), zmq::Error> {
        worker_side.connect("inproc://steps")?;
        for step in 1..=steps {
            worker_side.send(format!("step {step} done").as_bytes(), 0)?;
        }
        let answer = worker_side.recv_string(0)?.unwrap_or_default();
        print_line(format_args!("worker: main thread says '{answer}'"));
        Ok(())
    });
    for _ in 0..steps {
        let signal = main_side.recv_string(0)?.unwrap_or_default();
        print_line(format_args!("main: worker says '{signal}'"));
    }
    main_side.send("all steps seen, stop", 0)?;
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("the worker thread panicked"))??;
    Ok(())
}
