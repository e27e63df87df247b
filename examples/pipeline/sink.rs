//! The sink: collects one batch's results and checks that each came once.

use std::collections::{BTreeMap, HashSet};
use std::process::ExitCode;

use zmq_chat::address::Endpoint;
use zmq_chat::display::escape_for_terminal;
use zmq_chat::exit::Exit;
use zmq_chat::shutdown::Shutdown;
use zmq_chat::terminal::print_line;

use crate::PROGRAM;

/// The batch the ventilator announced: `batch ID COUNT CHECKSUM`.
struct Batch {
    id: String,
    total: u64,
    checksum: u64,
}

/// What the sink knows of its batch.
#[derive(Default)]
struct Tally {
    batch: Option<Batch>,
    /// Task ids with a result (ids beyond the batch size are refused).
    seen: HashSet<u64>,
    duplicates: u64,
    /// Results of another batch than the announced one.
    stale: u64,
    /// Results that came before any announcement (on another connection
    /// than the ventilator's, they can overtake it): counted once it comes.
    early: Vec<String>,
    checksum: u64,
    per_worker: BTreeMap<String, u64>,
    /// Results of normal and of urgent tasks.
    normal: u64,
    urgent: u64,
}

/// The largest batch a sink takes (its set of ids then takes about 40 MiB).
const MAX_BATCH: u64 = 1_000_000;

/// Results kept while no batch is announced, at most.
const EARLY_RESULTS: usize = 4096;

impl Tally {
    fn complete(&self) -> bool {
        self.batch
            .as_ref()
            .is_some_and(|batch| self.seen.len() as u64 == batch.total)
    }

    /// Counts a result, `KIND BATCH ID WORKER` (the worker's name may hold
    /// spaces); `false` if it is not one.
    fn result(&mut self, result: &str, quiet: bool) -> bool {
        let fields: Vec<&str> = result.splitn(4, ' ').collect();
        let [kind @ ("normal" | "urgent"), batch, id, worker] = fields[..] else {
            return false;
        };
        let Ok(id) = id.parse::<u64>() else {
            return false;
        };
        match &self.batch {
            Some(announced) if announced.id == batch && (1..=announced.total).contains(&id) => {}
            None if self.early.len() < EARLY_RESULTS => {
                self.early.push(result.to_string());
                return true;
            }
            _ => {
                self.stale += 1;
                return true;
            }
        }
        if !self.seen.insert(id) {
            self.duplicates += 1;
            return true;
        }
        self.checksum += id;
        *self.per_worker.entry(worker.to_string()).or_default() += 1;
        match kind {
            "urgent" => self.urgent += 1,
            _ => self.normal += 1,
        }
        if !quiet {
            print_line(format_args!("result {kind} {id} from {worker}"));
        }
        true
    }

    /// Takes the ventilator's announcement, `batch ID COUNT CHECKSUM`;
    /// `false` if it is not one.
    fn announcement(&mut self, message: &str, quiet: bool) -> bool {
        let fields: Vec<&str> = message.split(' ').collect();
        let ["batch", id, total, checksum] = fields[..] else {
            return false;
        };
        let (Ok(total @ ..=MAX_BATCH), Ok(checksum)) = (total.parse(), checksum.parse()) else {
            return false;
        };
        if self.batch.is_some() {
            return false;
        }
        eprintln!("{PROGRAM}: sink: batch {id}: expecting {total} results");
        self.batch = Some(Batch {
            id: id.to_string(),
            total,
            checksum,
        });
        for result in std::mem::take(&mut self.early) {
            self.result(&result, quiet);
        }
        true
    }
}

pub fn collect(
    context: &zmq::Context,
    endpoint: &Endpoint,
    quiet: bool,
    shutdown: &Shutdown,
) -> anyhow::Result<ExitCode> {
    let socket = context.socket(zmq::PULL)?;
    // Wake up every 100 ms to notice Ctrl-C.
    socket.set_rcvtimeo(100)?;
    let bound = crate::bind(&socket, endpoint)?;
    eprintln!("{PROGRAM}: sink listening on {bound}");
    eprintln!("{PROGRAM}: sink: waiting for a ventilator's batch");
    let mut tally = Tally::default();
    while !tally.complete() {
        let message = match socket.recv_bytes(0) {
            Ok(message) => String::from_utf8_lossy(&message).into_owned(),
            Err(zmq::Error::EAGAIN | zmq::Error::EINTR) if !shutdown.requested() => continue,
            Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => {
                eprintln!("{PROGRAM}: sink interrupted");
                break;
            }
            Err(error) => return Err(error.into()),
        };
        if !tally.result(&message, quiet) && !tally.announcement(&message, quiet) {
            eprintln!(
                "{PROGRAM}: sink: ignoring malformed message {}",
                escape_for_terminal(&message)
            );
        }
    }
    Ok(report(&tally, shutdown.requested()))
}

fn report(tally: &Tally, interrupted: bool) -> ExitCode {
    let (total, checksum) = tally
        .batch
        .as_ref()
        .map_or((0, 0), |batch| (batch.total, batch.checksum));
    let received = tally.seen.len() as u64;
    let missing = total - received;
    let kinds: Vec<String> = [(tally.normal, "normal"), (tally.urgent, "urgent")]
        .into_iter()
        .filter(|&(count, _)| count > 0)
        .map(|(count, kind)| format!("{count} {kind}"))
        .collect();
    let workers: Vec<String> = tally
        .per_worker
        .iter()
        .map(|(worker, count)| format!("{worker}={count}"))
        .collect();
    // Without the ventilator's announcement there is nothing to be exact about.
    let exact = tally.batch.is_some() && missing == 0 && tally.duplicates == 0;
    print_line(format_args!(
        "sink: {received} results ({}), {} duplicates, {missing} missing, checksum {} {} expected {checksum}",
        kinds.join(", "),
        tally.duplicates,
        tally.checksum,
        if tally.checksum == checksum {
            "="
        } else {
            "!="
        },
    ));
    let stale = tally.stale + tally.early.len() as u64;
    if stale > 0 {
        print_line(format_args!(
            "sink: ignored {stale} results of another batch (left over from an earlier run?)"
        ));
    }
    print_line(format_args!("sink: per worker: {}", workers.join(" ")));
    print_line(format_args!(
        "sink: {}",
        if exact {
            "every task's result arrived exactly once"
        } else {
            "RESULTS INCOMPLETE"
        }
    ));
    match (exact, interrupted) {
        (true, _) => ExitCode::SUCCESS,
        (false, true) => ExitCode::from(Exit::Interrupted),
        (false, false) => ExitCode::from(Exit::Failure),
    }
}
