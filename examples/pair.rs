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
//! Two threads of one process over `inproc://`, the signalling use the ZeroMQ
//! guide recommends PAIR for (a worker reports each step, the main thread
//! answers when all are done):
//!
//! ```sh
//! cargo run --example pair -- threads
//! ```

use std::process::ExitCode;
use std::thread;

use clap::{Parser, Subcommand};
use zmq_chat::address::Role;
use zmq_chat::cli;
use zmq_chat::display::escape_for_terminal;
use zmq_chat::shutdown::Shutdown;
use zmq_chat::terminal::{Line, ScriptLines};
use zmq_chat::transport::{self, TICK};

const PROGRAM: &str = "pair";

#[derive(Parser)]
#[command(about = "PAIR sockets: an exclusive two-way connection", after_help = cli::EXIT_CODES_HELP)]
struct Args {
    #[command(subcommand)]
    role: PairRole,
}

#[derive(Subcommand)]
enum PairRole {
    /// Listen for the one peer (port 0 picks a free port, reported on stderr)
    Bind {
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5555")]
        address: String,
    },
    /// Connect to the listening peer
    Connect {
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5555")]
        address: String,
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
        PairRole::Bind { address } => {
            let endpoint = cli::endpoint_from_flag(&address, Role::Bind)?;
            let (socket, bound) = transport::bind(&context, zmq::PAIR, &endpoint)?;
            eprintln!("{PROGRAM}: listening on {bound}");
            converse(&socket)
        }
        PairRole::Connect { address } => {
            let endpoint = cli::endpoint_from_flag(&address, Role::Connect)?;
            let socket = transport::connect(&context, zmq::PAIR, &endpoint)?;
            eprintln!("{PROGRAM}: connecting to {endpoint}");
            converse(&socket)
        }
        PairRole::Threads { steps } => signal_between_threads(&context, steps),
    }
}

/// Sends each stdin line and prints each received message, in whatever order
/// they happen: PAIR has no turn-taking.
fn converse(socket: &zmq::Socket) -> anyhow::Result<()> {
    let shutdown = Shutdown::install()?;
    let mut input = ScriptLines::from_stdin(PROGRAM);
    while !shutdown.requested() {
        while let Some(line) = input.poll_line() {
            match line? {
                Line::Text(text) => socket.send(text.as_bytes(), 0)?,
                Line::End(_) => return Ok(()),
            }
        }
        if socket.poll(zmq::POLLIN, TICK.as_millis() as i64)? > 0 {
            let message = socket.recv_bytes(0)?;
            println!(
                "received: {}",
                escape_for_terminal(&String::from_utf8_lossy(&message))
            );
        }
    }
    Ok(())
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
        println!("worker: main thread says '{answer}'");
        Ok(())
    });
    for _ in 0..steps {
        let signal = main_side.recv_string(0)?.unwrap_or_default();
        println!("main: worker says '{signal}'");
    }
    main_side.send("all steps seen, stop", 0)?;
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("the worker thread panicked"))??;
    Ok(())
}
