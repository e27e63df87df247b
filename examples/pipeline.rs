//! Push/pull: a ventilator fans tasks out to workers; a sink collects results.
//!
//! ```text
//!                 ┌──────────┐ normal tasks (PUSH→PULL, round-robin)
//!                 │ventilator├──────────────┬──────────────┐
//!                 └─┬──────┬─┘ urgent tasks │              │
//!     batch size    │      └──────────┐     │              │
//!     and checksum  │              ┌──▼─────▼─┐      ┌─────▼────┐
//!                   │              │ worker a │  …   │ worker b │
//!                   │              └────┬─────┘      └────┬─────┘
//!                 ┌─▼────┐  results     │                 │
//!                 │ sink │◄─────────────┴─────────────────┘
//!                 └──────┘  (PUSH→PULL, fair-queued)
//! ```
//!
//! The ventilator waits until `--workers N` workers are connected (its socket
//! monitor counts them), so round-robin spreads the tasks; it tells the sink
//! how many results to expect and their checksum (the sum of task ids), and
//! the sink reports per-worker counts, duplicates, missing results and
//! whether the checksum matches.
//!
//! **Priority**: urgent tasks travel on a second PUSH/PULL channel; before
//! taking a normal task a worker always drains the urgent channel, so urgent
//! tasks overtake a backlog of normal ones.
//!
//! ```sh
//! cargo run --example pipeline -- sink                                   # terminal 1
//! cargo run --example pipeline -- worker --name a                        # terminal 2
//! cargo run --example pipeline -- worker --name b                        # terminal 3
//! cargo run --example pipeline -- ventilator --workers 2 --urgent 5     # terminal 4
//! ```

use std::collections::{BTreeMap, HashSet};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use clap::{Parser, Subcommand};
use zmq_chat::address::{Endpoint, Role};
use zmq_chat::cli;
use zmq_chat::shutdown::Shutdown;
use zmq_chat::transport::{self, ConnectionEvent, ConnectionWatch, Received, TICK};

const PROGRAM: &str = "pipeline";

/// Queued tasks may take a while to be picked up by slow workers; the
/// ventilator waits this long for them to leave before it exits.
const VENTILATOR_LINGER: Duration = Duration::from_secs(60);

#[derive(Parser)]
#[command(about = "PUSH/PULL: a task pipeline with an urgent lane", after_help = cli::EXIT_CODES_HELP)]
struct Args {
    #[command(subcommand)]
    role: PipelineRole,
}

#[derive(Subcommand)]
enum PipelineRole {
    /// Send a batch of tasks to the workers
    Ventilator {
        /// Where workers take normal tasks
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5557")]
        bind: String,
        /// Where workers take urgent tasks
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5561")]
        urgent_bind: String,
        /// The sink, told the batch size and checksum
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5558")]
        sink: String,
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
    },
    /// Do tasks, urgent ones first, and send the results to the sink
    Worker {
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5557")]
        tasks_from: String,
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5561")]
        urgent_from: String,
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5558")]
        sink: String,
        /// Name reported with each result (default: worker-PID)
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

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(error) => cli::report(PROGRAM, &error),
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let context = zmq::Context::new();
    let shutdown = Shutdown::install()?;
    match args.role {
        PipelineRole::Ventilator {
            bind,
            urgent_bind,
            sink,
            tasks,
            urgent,
            work_ms,
            workers,
        } => {
            let normal = cli::endpoint_from_flag(&bind, Role::Bind)?;
            let urgent_at = cli::endpoint_from_flag(&urgent_bind, Role::Bind)?;
            let sink = cli::endpoint_from_flag(&sink, Role::Connect)?;
            let batch = Batch {
                normal: tasks,
                urgent,
                work_ms,
            };
            ventilate(
                &context,
                [&normal, &urgent_at],
                &sink,
                batch,
                workers,
                &shutdown,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        PipelineRole::Worker {
            tasks_from,
            urgent_from,
            sink,
            name,
            quiet,
        } => {
            let endpoints = [
                cli::endpoint_from_flag(&tasks_from, Role::Connect)?,
                cli::endpoint_from_flag(&urgent_from, Role::Connect)?,
                cli::endpoint_from_flag(&sink, Role::Connect)?,
            ];
            let name = name.unwrap_or_else(|| format!("worker-{}", std::process::id()));
            work(&context, &endpoints, &name, quiet, &shutdown)?;
            Ok(ExitCode::SUCCESS)
        }
        PipelineRole::Sink { bind, quiet } => {
            let endpoint = cli::endpoint_from_flag(&bind, Role::Bind)?;
            collect(&context, &endpoint, quiet, &shutdown)
        }
    }
}

/// What the ventilator sends: task ids 1..=normal are normal, the next
/// `urgent` ids urgent.
struct Batch {
    normal: u64,
    urgent: u64,
    work_ms: u64,
}

impl Batch {
    fn total(&self) -> u64 {
        self.normal + self.urgent
    }

    fn checksum(&self) -> u64 {
        (1..=self.total()).sum()
    }
}

fn ventilate(
    context: &zmq::Context,
    [normal_at, urgent_at]: [&Endpoint; 2],
    sink_at: &Endpoint,
    batch: Batch,
    workers: usize,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let (normal, normal_bound) = transport::bind(context, zmq::PUSH, normal_at)?;
    let (urgent, urgent_bound) = transport::bind(context, zmq::PUSH, urgent_at)?;
    let watches = [
        ConnectionWatch::attach(context, &normal)?,
        ConnectionWatch::attach(context, &urgent)?,
    ];
    eprintln!(
        "{PROGRAM}: ventilator: normal tasks on {normal_bound}, urgent tasks on {urgent_bound}"
    );
    for socket in [&normal, &urgent] {
        socket.set_linger(VENTILATOR_LINGER.as_millis() as i32)?;
    }
    let sink = transport::connect(context, zmq::PUSH, sink_at)?;
    sink.set_linger(VENTILATOR_LINGER.as_millis() as i32)?;
    sink.send(
        format!("batch {} {}", batch.total(), batch.checksum()).as_bytes(),
        0,
    )?;

    // PUSH round-robins over the workers connected *now*: start only when
    // all expected workers are on both channels, or the first takes it all.
    let mut connected = [0usize; 2];
    while connected.iter().any(|&count| count < workers) {
        if shutdown.requested() {
            return Ok(());
        }
        for (watch, count) in watches.iter().zip(connected.iter_mut()) {
            while let Some(event) = watch.try_next()? {
                match event {
                    ConnectionEvent::Connected => *count += 1,
                    ConnectionEvent::Disconnected => *count = count.saturating_sub(1),
                    _ => {}
                }
            }
        }
        thread::sleep(TICK / 10);
    }
    eprintln!("{PROGRAM}: ventilator: {workers} worker(s) connected; sending");
    for id in 1..=batch.normal {
        normal.send(format!("normal {id} {}", batch.work_ms).as_bytes(), 0)?;
    }
    for id in batch.normal + 1..=batch.total() {
        urgent.send(format!("urgent {id} {}", batch.work_ms).as_bytes(), 0)?;
    }
    eprintln!(
        "{PROGRAM}: ventilator: sent {} normal and {} urgent tasks",
        batch.normal, batch.urgent
    );
    Ok(())
}

fn work(
    context: &zmq::Context,
    endpoints: &[Endpoint; 3],
    name: &str,
    quiet: bool,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let normal = transport::connect(context, zmq::PULL, &endpoints[0])?;
    let urgent = transport::connect(context, zmq::PULL, &endpoints[1])?;
    let sink = transport::connect(context, zmq::PUSH, &endpoints[2])?;
    eprintln!("{PROGRAM}: worker {name} ready");
    while !shutdown.requested() {
        // Priority: the urgent lane is always emptied before a normal task is taken.
        let task = match urgent.recv_bytes(zmq::DONTWAIT) {
            Ok(task) => task,
            Err(zmq::Error::EAGAIN) => match normal.recv_bytes(zmq::DONTWAIT) {
                Ok(task) => task,
                Err(zmq::Error::EAGAIN) => {
                    let mut items = [
                        urgent.as_poll_item(zmq::POLLIN),
                        normal.as_poll_item(zmq::POLLIN),
                    ];
                    match zmq::poll(&mut items, TICK.as_millis() as i64) {
                        Ok(_) | Err(zmq::Error::EINTR) => continue,
                        Err(error) => return Err(error.into()),
                    }
                }
                Err(error) => return Err(error.into()),
            },
            Err(error) => return Err(error.into()),
        };
        let task = String::from_utf8_lossy(&task).into_owned();
        let mut fields = task.split(' ');
        let (Some(kind), Some(id), cost) = (fields.next(), fields.next(), fields.next()) else {
            eprintln!("{PROGRAM}: worker {name}: ignoring malformed task {task:?}");
            continue;
        };
        let cost: u64 = cost.and_then(|c| c.parse().ok()).unwrap_or(0);
        thread::sleep(Duration::from_millis(cost));
        sink.send(format!("result {kind} {id} {name}").as_bytes(), 0)?;
        if !quiet {
            println!("worker {name}: did {kind} task {id}");
        }
    }
    Ok(())
}

/// The sink's running account of one batch.
#[derive(Default)]
struct Tally {
    expected: Option<(u64, u64)>,
    seen: HashSet<u64>,
    received: u64,
    duplicates: u64,
    checksum: u64,
    per_worker: BTreeMap<String, u64>,
    per_kind: BTreeMap<String, u64>,
}

fn collect(
    context: &zmq::Context,
    endpoint: &Endpoint,
    quiet: bool,
    shutdown: &Shutdown,
) -> anyhow::Result<ExitCode> {
    let (socket, bound) = transport::bind(context, zmq::PULL, endpoint)?;
    eprintln!("{PROGRAM}: sink listening on {bound}");
    let mut tally = Tally::default();
    while tally
        .expected
        .is_none_or(|(total, _)| tally.seen.len() as u64 != total)
    {
        let Received::Message(frames) = transport::receive(&socket, None, shutdown, || true)?
        else {
            eprintln!("{PROGRAM}: sink interrupted");
            break;
        };
        let text = String::from_utf8_lossy(&frames.concat()).into_owned();
        let fields: Vec<&str> = text.split(' ').collect();
        match fields.as_slice() {
            ["batch", total, checksum] => {
                tally.expected = total.parse().ok().zip(checksum.parse().ok());
            }
            ["result", kind, id, worker] => {
                let Ok(id) = id.parse::<u64>() else { continue };
                tally.received += 1;
                if !tally.seen.insert(id) {
                    tally.duplicates += 1;
                    continue;
                }
                tally.checksum += id;
                *tally.per_worker.entry(worker.to_string()).or_default() += 1;
                *tally.per_kind.entry(kind.to_string()).or_default() += 1;
                if !quiet {
                    println!("result {kind} {id} from {worker}");
                }
            }
            _ => eprintln!("{PROGRAM}: sink: ignoring malformed message {text:?}"),
        }
    }
    Ok(report(&tally))
}

fn report(tally: &Tally) -> ExitCode {
    let (total, checksum) = tally.expected.unwrap_or((0, 0));
    let missing = total.saturating_sub(tally.seen.len() as u64);
    let kinds: Vec<String> = tally
        .per_kind
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect();
    let workers: Vec<String> = tally
        .per_worker
        .iter()
        .map(|(worker, n)| format!("{worker}={n}"))
        .collect();
    let exact = missing == 0 && tally.duplicates == 0 && tally.checksum == checksum;
    println!(
        "sink: {} results ({}), {} duplicates, {missing} missing, checksum {} {} expected {checksum}",
        tally.seen.len(),
        kinds.join(", "),
        tally.duplicates,
        tally.checksum,
        if tally.checksum == checksum {
            "="
        } else {
            "!="
        },
    );
    println!("sink: per worker: {}", workers.join(" "));
    println!(
        "sink: {}",
        if exact {
            "every task's result arrived exactly once"
        } else {
            "RESULTS INCOMPLETE"
        }
    );
    if exact {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(cli::EXIT_FAILURE)
    }
}
