//! The chat measured against its floor, side by side in one run.
//!
//! `cargo bench` (`cargo bench --bench roundtrip -- --help` lists the
//! flags: `--quick` for a short run; `--round-trip`, `--concurrency`,
//! `--pipeline`, `--amqp`, `--desk` or `--desk-sealing` for one group of
//! rows alone, as when comparing two builds). Every measurement runs
//! as real processes on 127.0.0.1:
//!
//! 1. chat round trip: `chat-client` in script mode against `chat-server --echo`,
//!    and against `chat-server` answering each message with a line of its
//!    stdin (the operator's path, as `yes ok | chat-server` or a person
//!    answers: the message is shown, then a reply line is read and sent);
//! 2. baselines: a bare `zmq` REQ/REP ping-pong and a bare `std::net` TCP
//!    ping-pong (TCP_NODELAY, length-prefixed), same sizes and counts; and,
//!    to tell the chat's own cost from its design's, a bare `zmq` DEALER
//!    sending exactly what chat-client sends (`[id, "", text]`, with its
//!    heartbeats and receive timeout) to a bare REP echo, and the same
//!    DEALER to a bare ROUTER echo that handles frames as chat-server does;
//! 3. start-up of each binary to ready / to its first reply;
//! 4. peak RSS of both binaries, and the server's RSS before and after
//!    100,000 messages;
//! 5. concurrency: N = 1, 10, 50 and 200 chat-client processes making
//!    1,000 round trips each at once, against `chat-server --echo` and
//!    against the bare ROUTER echo: total messages per second, and the
//!    round trips of a probe that asks once a millisecond meanwhile;
//! 6. the push/pull example's throughput against a bare PUSH/PULL pipeline
//!    of the same three stages (a constant task, passed on unread), and
//!    against a relay whose worker and sink look into every message.
//!
//! The baseline peers are this same executable started with a role as its
//! subcommand (`roles`), so nothing but the code under test differs
//! between rows.
//! Runs are interleaved: in a round-trip run the chat and its baselines stay
//! up side by side and take turns at blocks of 500 round trips, in an order
//! that reverses from block to block; pipeline runs rotate which goes
//! first. So drift and warm caches hit all alike. On a shared machine single
//! runs still spread by ±10% and more, so the verdict on each target is the
//! median of the paired, run-by-run ratios, with a distribution-free 95%
//! confidence interval for that median.

mod amqp;
mod concurrency;
mod desk;
mod pipeline;
mod processes;
mod roles;
mod round_trip;
mod stats;
mod table;

use clap::Parser;

use roles::Role;
use table::Table;

pub const SERVER: &str = env!("CARGO_BIN_EXE_chat-server");
pub const CLIENT: &str = env!("CARGO_BIN_EXE_chat-client");
pub const WARM_UP: usize = 200;

/// How much each group of rows measures.
pub struct Settings {
    pub messages: usize,
    pub runs: usize,
    pub pipeline_messages: usize,
    /// Pipeline runs are short and spread widely: more of them.
    pub pipeline_runs: usize,
    pub memory_messages: usize,
    pub startups: usize,
    /// Runs of each concurrency level (each runs both servers).
    pub concurrency_runs: usize,
    /// Runs of the AMQP publishers and subscribers.
    pub amqp_runs: usize,
}

impl Settings {
    fn new(quick: bool) -> Settings {
        match quick {
            true => Settings {
                messages: 2_000,
                runs: 5,
                pipeline_messages: 50_000,
                pipeline_runs: 5,
                memory_messages: 10_000,
                startups: 5,
                concurrency_runs: 2,
                amqp_runs: 3,
            },
            false => Settings {
                messages: 10_000,
                runs: 15,
                pipeline_messages: 500_000,
                pipeline_runs: 30,
                memory_messages: 100_000,
                startups: 20,
                concurrency_runs: 7,
                amqp_runs: 10,
            },
        }
    }
}

/// The benchmark's flags; without one naming a group, every row but the
/// desk's.
#[derive(Parser)]
#[command(
    about = "The chat measured against its floor (BENCHMARKS.md)",
    subcommand_help_heading = "Baseline peers (the benchmark starts them itself)",
    subcommand_value_name = "ROLE"
)]
struct Args {
    /// A baseline peer: this executable, started by the benchmark itself
    #[command(subcommand)]
    role: Option<Role>,
    /// A short run: fewer messages and runs
    #[arg(long)]
    quick: bool,
    /// The round-trip rows alone
    #[arg(long, group = "rows")]
    round_trip: bool,
    /// The concurrency rows alone (servers under load)
    #[arg(long, group = "rows")]
    concurrency: bool,
    /// The push/pull rows alone
    #[arg(long, group = "rows")]
    pipeline: bool,
    /// The AMQP example's rows alone (a broker on 127.0.0.1:5672)
    #[arg(long, group = "rows")]
    amqp: bool,
    /// The help desk's rows (a broker on 127.0.0.1:5672)
    #[arg(long, group = "rows")]
    desk: bool,
    /// The desk sealed and in clear alone
    #[arg(long, group = "rows")]
    desk_sealing: bool,
    /// What `cargo bench` passes: nothing to do
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = Args::parse();
    if let Some(role) = args.role {
        return role.run();
    }
    let settings = Settings::new(args.quick);
    let mut table = Table::default();
    let all = !(args.round_trip
        || args.concurrency
        || args.pipeline
        || args.amqp
        || args.desk
        || args.desk_sealing);
    if all || args.round_trip {
        round_trip::round_trip_rows(&mut table, &settings);
    }
    if all || args.concurrency {
        for clients in concurrency::CONCURRENCY {
            let runs = concurrency::concurrency_runs(clients, &settings);
            concurrency::concurrency_rows(&mut table, clients, runs);
        }
    }
    if all {
        round_trip::start_up_and_memory_rows(&mut table, &settings);
    }
    if all || args.pipeline {
        pipeline::pipeline_rows(&mut table, &settings);
    }
    if all || args.amqp {
        amqp::amqp_rows(&mut table, settings.amqp_runs);
    }
    if args.desk {
        desk::desk_rows(&mut table, settings.amqp_runs);
    }
    if args.desk_sealing {
        desk::sealing_rows(&mut table, settings.amqp_runs);
    }
    table.print(&settings);
}
