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

use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use clap::{Parser, Subcommand};
use zmq_chat::address::{Endpoint, Role};
use zmq_chat::cli;
use zmq_chat::shutdown::Shutdown;
use zmq_chat::transport::{self, ConnectionEvent, ConnectionWatch, TICK};

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

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(error) => cli::report(PROGRAM, error.as_ref()),
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
            let name = name.unwrap_or_else(|| format!("w{}", std::process::id()));
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
    // Monitors go on before binding, or a worker that connects at once
    // would never be counted.
    let normal = transport::socket_for(context, zmq::PUSH, normal_at)?;
    let urgent = transport::socket_for(context, zmq::PUSH, urgent_at)?;
    let watches = [
        ConnectionWatch::attach(context, &normal)?,
        ConnectionWatch::attach(context, &urgent)?,
    ];
    let normal_bound = transport::bind_socket(&normal, normal_at)?;
    let urgent_bound = transport::bind_socket(&urgent, urgent_at)?;
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
    // One buffer for every task, and only the id written per task, with
    // itoa: a `write!` would cost more than sending the task does.
    let cost = format!(" {}", batch.work_ms);
    let mut id_digits = itoa::Buffer::new();
    let mut task = Vec::with_capacity(48);
    for (lane, kind, ids) in [
        (&normal, Kind::Normal, 1..=batch.normal),
        (&urgent, Kind::Urgent, batch.normal + 1..=batch.total()),
    ] {
        for id in ids {
            task.clear();
            task.extend_from_slice(kind.name().as_bytes());
            task.push(b' ');
            task.extend_from_slice(id_digits.format(id).as_bytes());
            task.extend_from_slice(cost.as_bytes());
            lane.send(&task[..], 0)?;
        }
    }
    eprintln!(
        "{PROGRAM}: ventilator: sent {} normal and {} urgent tasks",
        batch.normal, batch.urgent
    );
    Ok(())
}

/// How often a busy worker looks at the urgent lane. Checking an empty
/// socket costs system calls, so a worker racing through cheap tasks (no
/// simulated cost) checks once every this many; any task with a cost is
/// always followed by a check. An urgent task thus waits behind at most this
/// many cheap normal tasks.
const URGENT_CHECK_EVERY: u32 = 256;

/// How long an idle worker waits on the normal lane before it looks at the
/// urgent lane again: the longest an urgent task waits for an idle worker.
const IDLE_WAIT: Duration = Duration::from_millis(1);

/// The two kinds of task, each on its own lane.
#[derive(Clone, Copy)]
enum Kind {
    Normal,
    Urgent,
}

impl Kind {
    const ALL: [Kind; 2] = [Kind::Normal, Kind::Urgent];

    fn name(self) -> &'static str {
        match self {
            Kind::Normal => "normal",
            Kind::Urgent => "urgent",
        }
    }

    /// The kind a message starts with, and the rest after its space.
    fn take(message: &[u8]) -> Option<(Kind, &[u8])> {
        Kind::ALL.into_iter().find_map(|kind| {
            let rest = message.strip_prefix(kind.name().as_bytes())?;
            Some((kind, rest.strip_prefix(b" ")?))
        })
    }
}

/// A decimal number straight from message bytes (no UTF-8 pass); `None` for
/// anything else, or above u64.
fn parse_number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |number, &digit| {
        digit
            .is_ascii_digit()
            .then(|| number * 10 + u64::from(digit - b'0'))
    })
}

/// A decimal number up to the next space, and what follows that space.
fn take_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let space = bytes.iter().position(|&byte| byte == b' ')?;
    Some((parse_number(&bytes[..space])?, &bytes[space + 1..]))
}

/// A task, `KIND ID COST`: the task without its cost (`KIND ID`, which the
/// result repeats) and the cost in ms. Read from the end: the cost is a digit
/// or two, and the rest need not be looked at byte by byte.
fn parse_task(task: &[u8]) -> Option<(&[u8], u64)> {
    let space = task.iter().rposition(|&byte| byte == b' ')?;
    let (kind_and_id, cost) = (&task[..space], &task[space + 1..]);
    let (_, id) = Kind::take(kind_and_id)?;
    (!id.is_empty()).then_some((kind_and_id, parse_number(cost)?))
}

/// A result, `result KIND ID WORKER` (the worker's name may hold spaces), in
/// one pass; `None` for anything else (the batch announcement, or a malformed
/// message, handled by the caller).
fn parse_result(message: &[u8]) -> Option<(Kind, u64, &[u8])> {
    let (kind, rest) = Kind::take(message.strip_prefix(b"result ")?)?;
    let (id, worker) = take_number(rest)?;
    (!worker.is_empty()).then_some((kind, id, worker))
}

/// Receives without waiting; false when nothing is queued.
fn try_receive(socket: &zmq::Socket, message: &mut zmq::Message) -> Result<bool, zmq::Error> {
    match socket.recv(message, zmq::DONTWAIT) {
        Ok(()) => Ok(true),
        Err(zmq::Error::EAGAIN) => Ok(false),
        Err(error) => Err(error),
    }
}

fn work(
    context: &zmq::Context,
    endpoints: &[Endpoint; 3],
    name: &str,
    quiet: bool,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let normal = transport::connect(context, zmq::PULL, &endpoints[0])?;
    normal.set_rcvtimeo(IDLE_WAIT.as_millis() as i32)?;
    let urgent = transport::connect(context, zmq::PULL, &endpoints[1])?;
    let sink = transport::connect(context, zmq::PUSH, &endpoints[2])?;
    eprintln!("{PROGRAM}: worker {name} ready");
    let mut task = zmq::Message::new();
    // "result KIND ID NAME": the prefix stays, the task's "KIND ID" and the
    // name are written after it.
    const RESULT: &[u8] = b"result ";
    let mut result = RESULT.to_vec();
    // Cheap tasks since the urgent lane was last looked at; starts "due".
    let mut since_urgent_check = URGENT_CHECK_EVERY;
    while !shutdown.requested() {
        // Priority: the urgent lane is looked at before every normal task
        // (every URGENT_CHECK_EVERY tasks while tasks cost nothing).
        let check_urgent = since_urgent_check >= URGENT_CHECK_EVERY;
        let took_urgent = check_urgent && try_receive(&urgent, &mut task)?;
        since_urgent_check = if check_urgent {
            0
        } else {
            since_urgent_check + 1
        };
        if !took_urgent {
            // A queued task is taken at once; with none, this blocks for at
            // most IDLE_WAIT (one wake-up when a task comes, cheaper than
            // polling both lanes), then the urgent lane is looked at again.
            // (No separate non-blocking try first: on an empty socket that
            // costs a system call of its own.)
            match normal.recv(&mut task, 0) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {
                    since_urgent_check = URGENT_CHECK_EVERY;
                    continue;
                }
                Err(error) => return Err(error.into()),
            }
        }
        // Each look into a zmq::Message costs two calls into libzmq: one here.
        let task_bytes: &[u8] = &task;
        let Some((kind_and_id, cost)) = parse_task(task_bytes) else {
            eprintln!("{PROGRAM}: worker {name}: ignoring malformed task");
            continue;
        };
        if cost > 0 {
            thread::sleep(Duration::from_millis(cost));
            since_urgent_check = URGENT_CHECK_EVERY;
        }
        result.truncate(RESULT.len());
        result.extend_from_slice(kind_and_id);
        result.push(b' ');
        result.extend_from_slice(name.as_bytes());
        sink.send(&result[..], 0)?;
        if !quiet {
            let task = String::from_utf8_lossy(kind_and_id);
            let (kind, id) = task.split_once(' ').unwrap_or_default();
            println!("worker {name}: did {kind} task {id}");
        }
    }
    Ok(())
}

/// The sink's running account of one batch.
#[derive(Default)]
struct Tally {
    expected: Option<(u64, u64)>,
    seen: SeenIds,
    received: u64,
    duplicates: u64,
    checksum: u64,
    per_worker: Counts,
    per_kind: [u64; Kind::ALL.len()],
}

/// Which task ids have a result: one bit per id (ids are dense, from 1).
#[derive(Default)]
struct SeenIds {
    bits: Vec<u64>,
    len: u64,
}

/// Ids above this are malformed: the bitmap would otherwise grow without bound.
const MAX_TASK_ID: u64 = 1 << 32;

impl SeenIds {
    /// Marks `id` seen; false if it already was.
    fn insert(&mut self, id: u64) -> bool {
        let (word, bit) = ((id / 64) as usize, 1u64 << (id % 64));
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let fresh = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        self.len += u64::from(fresh);
        fresh
    }
}

/// Counts per key, for the few keys (workers) a batch has: a short list is
/// faster to scan than a map is to hash, and allocates once per key.
#[derive(Default)]
struct Counts {
    counts: Vec<(Vec<u8>, u64)>,
    /// The key added last: results come in runs from the same worker.
    last: usize,
}

impl Counts {
    /// Counts `key` once more. Inlined for the usual case, the same key as
    /// last time; anything else goes to `add_other`.
    #[inline]
    fn add(&mut self, key: &[u8]) {
        match self.counts.get_mut(self.last) {
            Some((known, count)) if known == key => *count += 1,
            _ => self.add_other(key),
        }
    }

    fn add_other(&mut self, key: &[u8]) {
        match self.counts.iter().position(|(known, _)| known == key) {
            Some(index) => {
                self.counts[index].1 += 1;
                self.last = index;
            }
            None => {
                self.last = self.counts.len();
                self.counts.push((key.to_vec(), 1));
            }
        }
    }

    fn sorted(&self) -> Vec<(String, u64)> {
        let mut counts: Vec<(String, u64)> = self
            .counts
            .iter()
            .map(|(key, n)| (String::from_utf8_lossy(key).into_owned(), *n))
            .collect();
        counts.sort();
        counts
    }
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
    let mut message = zmq::Message::new();
    while tally
        .expected
        .is_none_or(|(total, _)| tally.seen.len != total)
    {
        match socket.recv(&mut message, 0) {
            Ok(()) => {}
            // The receive timeout: a chance to notice Ctrl-C.
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) if !shutdown.requested() => continue,
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {
                eprintln!("{PROGRAM}: sink interrupted");
                break;
            }
            Err(error) => return Err(error.into()),
        }
        // Results are nearly every message: read them in one pass. A result
        // with an impossible id is dropped like a malformed message.
        if let Some((kind, id, worker)) =
            parse_result(&message).filter(|&(_, id, _)| id <= MAX_TASK_ID)
        {
            tally.received += 1;
            if !tally.seen.insert(id) {
                tally.duplicates += 1;
                continue;
            }
            tally.checksum += id;
            tally.per_worker.add(worker);
            tally.per_kind[kind as usize] += 1;
            if !quiet {
                let (kind, worker) = (kind.name(), String::from_utf8_lossy(worker));
                println!("result {kind} {id} from {worker}");
            }
            continue;
        }
        let mut fields = message.split(|&byte| byte == b' ');
        let parse = |field: Option<&[u8]>| parse_number(field?);
        match (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) {
            (Some(b"batch"), total, checksum, None, None) => {
                tally.expected = parse(total).zip(parse(checksum));
            }
            _ => eprintln!(
                "{PROGRAM}: sink: ignoring malformed message {:?}",
                String::from_utf8_lossy(&message)
            ),
        }
    }
    Ok(report(&tally, shutdown.requested()))
}

fn report(tally: &Tally, interrupted: bool) -> ExitCode {
    let (total, checksum) = tally.expected.unwrap_or((0, 0));
    let missing = total.saturating_sub(tally.seen.len);
    let kinds: Vec<String> = Kind::ALL
        .into_iter()
        .zip(tally.per_kind)
        .filter(|&(_, n)| n > 0)
        .map(|(kind, n)| format!("{n} {}", kind.name()))
        .collect();
    let workers: Vec<String> = tally
        .per_worker
        .sorted()
        .iter()
        .map(|(worker, n)| format!("{worker}={n}"))
        .collect();
    // Without the ventilator's announcement there is nothing to be exact about.
    let exact = tally.expected.is_some()
        && missing == 0
        && tally.duplicates == 0
        && tally.checksum == checksum;
    println!(
        "sink: {} results ({}), {} duplicates, {missing} missing, checksum {} {} expected {checksum}",
        tally.seen.len,
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
    match (exact, interrupted) {
        (true, _) => ExitCode::SUCCESS,
        (false, true) => ExitCode::from(cli::EXIT_INTERRUPTED),
        (false, false) => ExitCode::from(cli::EXIT_FAILURE),
    }
}
