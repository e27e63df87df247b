//! A worker: takes tasks, urgent ones first, and sends each result to the sink.

use std::thread;
use std::time::Duration;

use zmq_chat::address::Endpoint;
use zmq_chat::shutdown::Shutdown;
use zmq_chat::terminal::print_line;
use zmq_chat::transport;

use crate::PROGRAM;

/// How many tasks a worker may take from the normal lane, while tasks cost
/// nothing, before it looks at the urgent lane again. Looking at an empty
/// lane is a system call; doing it before every task halved the example's
/// throughput in the benchmark (BENCHMARKS.md: the target is 0.9x a bare
/// PUSH/PULL pipeline). After any task with a cost it looks every time.
const URGENT_CHECK_EVERY: u32 = 256;

pub fn work(
    context: &zmq::Context,
    [normal_at, urgent_at, sink_at]: &[Endpoint; 3],
    name: &str,
    quiet: bool,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let normal = transport::connect(context, zmq::PULL, normal_at)?;
    let urgent = transport::connect(context, zmq::PULL, urgent_at)?;
    let sink = transport::connect(context, zmq::PUSH, sink_at)?;
    // An idle worker wakes this often to look at the urgent lane.
    normal.set_rcvtimeo(1)?;
    eprintln!("{PROGRAM}: worker {name} ready");
    let mut since_urgent_check = URGENT_CHECK_EVERY;
    // One message and one result buffer for every task: at millions of
    // tasks a second, allocating per task halved the benchmark's rate.
    let mut task = zmq::Message::new();
    let mut result = Vec::new();
    while !shutdown.requested() {
        let mut took_urgent = false;
        if since_urgent_check >= URGENT_CHECK_EVERY {
            since_urgent_check = 0;
            took_urgent = receive_now(&urgent, &mut task)?;
        }
        if !took_urgent {
            match normal.recv(&mut task, 0) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => {
                    since_urgent_check = URGENT_CHECK_EVERY;
                    continue;
                }
                Err(error) => return Err(error.into()),
            }
        }
        since_urgent_check += 1;
        let Some((task, cost)) = parse_task(&task) else {
            eprintln!("{PROGRAM}: worker {name}: ignoring malformed task");
            continue;
        };
        if cost > 0 {
            thread::sleep(Duration::from_millis(cost));
            since_urgent_check = URGENT_CHECK_EVERY;
        }
        result.clear();
        result.extend_from_slice(task);
        result.push(b' ');
        result.extend_from_slice(name.as_bytes());
        // Short messages (33 bytes or less) travel inside libzmq's message
        // structure; longer ones cost an allocation each.
        sink.send(&result[..], 0)?;
        if !quiet {
            let task = String::from_utf8_lossy(task);
            let mut fields = task.split(' ');
            let (kind, id) = (fields.next(), fields.nth(1));
            print_line(format_args!(
                "worker {name}: did {} task {}",
                kind.unwrap_or(""),
                id.unwrap_or("")
            ));
        }
    }
    Ok(())
}

/// A task, `KIND BATCH ID COST_MS`: its `KIND BATCH ID` (which the result
/// repeats) and its cost; `None` if it is not one. Read as bytes, from the
/// end: no UTF-8 pass over what is only copied.
fn parse_task(task: &[u8]) -> Option<(&[u8], u64)> {
    let space = task.iter().rposition(|&byte| byte == b' ')?;
    let (head, cost) = (&task[..space], &task[space + 1..]);
    let cost = std::str::from_utf8(cost).ok()?.parse().ok()?;
    let mut fields = head.split(|&byte| byte == b' ');
    match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some(b"normal" | b"urgent"), Some(batch), Some(id), None)
            if !batch.is_empty() && !id.is_empty() && id.iter().all(u8::is_ascii_digit) =>
        {
            Some((head, cost))
        }
        _ => None,
    }
}

/// Receives into `message` if one is queued, without waiting.
fn receive_now(socket: &zmq::Socket, message: &mut zmq::Message) -> Result<bool, zmq::Error> {
    match socket.recv(message, zmq::DONTWAIT) {
        Ok(()) => Ok(true),
        Err(zmq::Error::EAGAIN) => Ok(false),
        Err(error) => Err(error),
    }
}
