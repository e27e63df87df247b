//! Push/pull: a ventilator fans tasks out to workers; a sink collects results.
//!
//! ```text
//!  ventilator ──normal (PUSH→PULL, round-robin)──► worker a ──┐
//!      │    └───urgent (a lane of its own)───────► worker b ──┼─► sink
//!      └──────── batch id, size and checksum ─────────────────┘  (PULL, fair-queued)
//! ```
//!
//! What it shows:
//! - **Waiting for workers.** PUSH spreads tasks over the workers connected
//!   *when it sends*: the ventilator waits until `--workers N` are connected
//!   (its socket monitor counts them), and until the sink is, or the first
//!   worker would take everything and the sink would never hear of the batch.
//! - **Priority.** Urgent tasks travel on a second lane, which a worker looks
//!   at before it takes a normal task, so they overtake a backlog.
//! - **Exactly once.** The sink is told the batch's id, size and checksum
//!   (the sum of the task ids) and reports duplicates, missing results and
//!   results of another batch (a stale worker's, say) separately.
//!
//! Messages are text: `batch BATCH COUNT CHECKSUM` to the sink, tasks
//! `KIND BATCH ID COST_MS`, and a result is its task with the worker's name
//! for the cost: `KIND BATCH ID WORKER`.
//!
//! ```sh
//! cargo run --example pipeline -- sink                                   # terminal 1
//! cargo run --example pipeline -- worker --name a                        # terminal 2
//! cargo run --example pipeline -- worker --name b                        # terminal 3
//! cargo run --example pipeline -- ventilator --workers 2 --urgent 5     # terminal 4
//! ```

mod sink;
mod ventilator;
mod worker;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use zmq_chat::address::{Endpoint, Role};
use zmq_chat::cli;
use zmq_chat::shutdown::Shutdown;

const PROGRAM: &str = "pipeline";

const EXIT_CODES: &str = "\
Exit status:
  0    done: the ventilator sent its batch, the sink saw every result exactly once
  1    a runtime error; the ventilator found no worker or sink within --wait;
       the sink's batch was incomplete or had duplicates
  2    a usage error (unknown flag, malformed address)
  130  interrupted (Ctrl-C) before the batch was complete";

#[derive(Parser)]
#[command(about = "PUSH/PULL: a task pipeline with an urgent lane", after_help = EXIT_CODES)]
struct Args {
    #[command(subcommand)]
    role: PipelineRole,
}

#[derive(Subcommand)]
enum PipelineRole {
    /// Send one batch of tasks to the workers
    Ventilator {
        /// Where workers take normal tasks
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5557")]
        bind: String,
        /// Where workers take urgent tasks
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5561")]
        bind_urgent: String,
        /// The sink, told the batch's id, size and checksum
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5558")]
        connect_sink: String,
        /// Number of normal tasks
        #[arg(long, default_value_t = 100)]
        tasks: u64,
        /// Number of urgent tasks, sent after the normal ones
        #[arg(long, default_value_t = 0)]
        urgent: u64,
        /// Simulated cost of each task
        #[arg(long, value_name = "MS", default_value_t = 1)]
        work_ms: u64,
        /// Wait until this many workers are connected before sending
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Give up when the workers or the sink are not there within this
        /// long, or the workers have not taken every task this long after
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        wait: u64,
    },
    /// Do tasks, urgent ones first, and send the results to the sink
    Worker {
        /// The ventilator's normal lane
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5557")]
        connect: String,
        /// The ventilator's urgent lane
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5561")]
        connect_urgent: String,
        /// The sink
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5558")]
        connect_sink: String,
        /// Name reported with each result (default: wPID)
        #[arg(long)]
        name: Option<String>,
        /// Do not print a line per task (for throughput measurements)
        #[arg(long)]
        quiet: bool,
    },
    /// Collect one batch of results and check it
    Sink {
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5558")]
        bind: String,
        /// Do not print a line per result, only the summary
        #[arg(long)]
        quiet: bool,
    },
}

/// Binds `socket` to `endpoint`; the address bound (the port chosen, for
/// port 0).
fn bind(socket: &zmq::Socket, endpoint: &Endpoint) -> anyhow::Result<String> {
    let endpoint = endpoint.to_string();
    socket
        .bind(&endpoint)
        .with_context(|| format!("cannot bind {endpoint}"))?;
    Ok(socket.get_last_endpoint()?.unwrap_or(endpoint))
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(error) => cli::report(PROGRAM, error.as_ref()),
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let context = zmq::Context::new();
    let shutdown = Shutdown::install()?;
    let endpoint = |text: &str, role| cli::endpoint_from_flag(text, role);
    match args.role {
        PipelineRole::Ventilator {
            bind,
            bind_urgent,
            connect_sink,
            tasks,
            urgent,
            work_ms,
            workers,
            wait,
        } => {
            let lanes = [
                endpoint(&bind, Role::Bind)?,
                endpoint(&bind_urgent, Role::Bind)?,
            ];
            let sink = endpoint(&connect_sink, Role::Connect)?;
            let batch = ventilator::Batch {
                id: ventilator::random_batch_id(),
                normal: tasks,
                urgent,
                work_ms,
            };
            let wait = Duration::from_secs(wait);
            ventilator::ventilate(&context, &lanes, &sink, &batch, workers, wait, &shutdown)
        }
        PipelineRole::Worker {
            connect,
            connect_urgent,
            connect_sink,
            name,
            quiet,
        } => {
            let endpoints = [
                endpoint(&connect, Role::Connect)?,
                endpoint(&connect_urgent, Role::Connect)?,
                endpoint(&connect_sink, Role::Connect)?,
            ];
            let name = name.unwrap_or_else(|| format!("w{}", std::process::id()));
            worker::work(&context, &endpoints, &name, quiet, &shutdown)?;
            Ok(ExitCode::SUCCESS)
        }
        PipelineRole::Sink { bind, quiet } => {
            sink::collect(&context, &endpoint(&bind, Role::Bind)?, quiet, &shutdown)
        }
    }
}
