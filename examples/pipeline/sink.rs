//! The sink: collects one batch's results and checks that each came once.

use std::collections::BTreeMap;
use std::process::ExitCode;

use zmq_chat::address::Endpoint;
use zmq_chat::exit::Exit;
use zmq_chat::shutdown::Shutdown;
use zmq_chat::terminal::print_line;
use zmq_chat::transport;

use crate::PROGRAM;

/// What the sink knows of its batch.
#[derive(Default)]
struct Tally {
    /// The batch announced: id, size, checksum.
    batch: Option<(String, u64, u64)>,
    /// Task ids with a result (ids beyond the batch size are refused).
    seen: SeenIds,
    duplicates: u64,
    /// Results of another batch than the announced one.
    stale: u64,
    /// Results that came before any announcement (on another connection
    /// than the ventilator's, they can overtake it): counted once it comes.
    early: Vec<Vec<u8>>,
    checksum: u64,
    per_worker: BTreeMap<Vec<u8>, u64>,
    /// Results of normal and of urgent tasks.
    normal: u64,
    urgent: u64,
}

impl Tally {
    fn complete(&self) -> bool {
        self.batch
            .as_ref()
            .is_some_and(|(_, total, _)| self.seen.count == *total)
    }

    /// Counts one result; `false` if it is not one.
    /// (Read as bytes: a UTF-8 pass over each result, which the sink reads
    /// millions of a second in the benchmark, cost it several percent.)
    fn result(&mut self, result: &[u8], quiet: bool) -> bool {
        let mut fields = result.splitn(4, |&byte| byte == b' ');
        let (Some(kind @ (b"normal" | b"urgent")), Some(batch), Some(id), Some(worker)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        let Some(id) = std::str::from_utf8(id)
            .ok()
            .and_then(|id| id.parse::<u64>().ok())
        else {
            return false;
        };
        match &self.batch {
            Some((announced, total, _))
                if announced.as_bytes() == batch && (1..=*total).contains(&id) => {}
            None if self.early.len() < EARLY_RESULTS => {
                self.early.push(result.to_vec());
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
        // A key is allocated once per worker, not once per result.
        match self.per_worker.get_mut(worker) {
            Some(count) => *count += 1,
            None => {
                self.per_worker.insert(worker.to_vec(), 1);
            }
        }
        match kind {
            b"urgent" => self.urgent += 1,
            _ => self.normal += 1,
        }
        if !quiet {
            let (kind, worker) = (
                String::from_utf8_lossy(kind),
                String::from_utf8_lossy(worker),
            );
            print_line(format_args!("result {kind} {id} from {worker}"));
        }
        true
    }
}

/// Which task ids have a result: a bit per id of the batch. (A HashSet
/// made the sink the pipeline's bottleneck in the benchmark, at about half
/// the target rate; the ids are dense, from 1, so a bit each does.)
#[derive(Default)]
struct SeenIds {
    bits: Vec<u64>,
    count: u64,
}

impl SeenIds {
    /// Marks `id` seen; false if it already was.
    fn insert(&mut self, id: u64) -> bool {
        let (word, bit) = ((id / 64) as usize, 1u64 << (id % 64));
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let fresh = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        self.count += u64::from(fresh);
        fresh
    }
}

/// The largest batch a sink takes: its bits then take 128 MiB.
const MAX_BATCH: u64 = 1 << 30;

/// Results kept while no batch is announced, at most.
const EARLY_RESULTS: usize = 4096;

pub fn collect(
    context: &zmq::Context,
    endpoint: &Endpoint,
    quiet: bool,
    shutdown: &Shutdown,
) -> anyhow::Result<ExitCode> {
    let (socket, bound) = transport::bind(context, zmq::PULL, endpoint)?;
    eprintln!("{PROGRAM}: sink listening on {bound}");
    eprintln!("{PROGRAM}: sink: waiting for a ventilator's batch");
    let mut tally = Tally::default();
    let mut message = zmq::Message::new();
    while !tally.complete() {
        match socket.recv(&mut message, 0) {
            Ok(()) => {}
            // The receive timeout: a chance to notice Ctrl-C.
            Err(zmq::Error::EAGAIN | zmq::Error::EINTR) if !shutdown.requested() => continue,
            Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => {
                eprintln!("{PROGRAM}: sink interrupted");
                break;
            }
            Err(error) => return Err(error.into()),
        }
        if tally.result(&message, quiet) {
            continue;
        }
        let message = String::from_utf8_lossy(&message);
        let fields: Vec<&str> = message.split(' ').collect();
        match fields[..] {
            ["batch", id, total, checksum] if tally.batch.is_none() => {
                if let (Ok(total @ ..=MAX_BATCH), Ok(checksum)) = (total.parse(), checksum.parse())
                {
                    eprintln!("{PROGRAM}: sink: batch {id}: expecting {total} results");
                    tally.batch = Some((id.to_string(), total, checksum));
                    for result in std::mem::take(&mut tally.early) {
                        tally.result(&result, quiet);
                    }
                }
            }
            _ => eprintln!(
                "{PROGRAM}: sink: ignoring malformed message {}",
                zmq_chat::display::escape_for_terminal(&message)
            ),
        }
    }
    Ok(report(&tally, shutdown.requested()))
}

fn report(tally: &Tally, interrupted: bool) -> ExitCode {
    let (total, checksum) = tally
        .batch
        .as_ref()
        .map_or((0, 0), |(_, total, checksum)| (*total, *checksum));
    let received = tally.seen.count;
    let missing = total - received;
    let kinds: Vec<String> = [(tally.normal, "normal"), (tally.urgent, "urgent")]
        .into_iter()
        .filter(|&(count, _)| count > 0)
        .map(|(count, kind)| format!("{count} {kind}"))
        .collect();
    let workers: Vec<String> = tally
        .per_worker
        .iter()
        .map(|(worker, count)| format!("{}={count}", String::from_utf8_lossy(worker)))
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
