//! A worker: takes tasks, urgent ones first, and sends each result to the sink.

use std::thread;
use std::time::Duration;

use zmq_chat::address::Endpoint;
use zmq_chat::shutdown::Shutdown;
use zmq_chat::terminal::print_line;

use crate::PROGRAM;

pub fn work(
    context: &zmq::Context,
    [normal_at, urgent_at, sink_at]: &[Endpoint; 3],
    name: &str,
    quiet: bool,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let normal = context.socket(zmq::PULL)?;
    normal.connect(&normal_at.to_string())?;
    let urgent = context.socket(zmq::PULL)?;
    urgent.connect(&urgent_at.to_string())?;
    let sink = context.socket(zmq::PUSH)?;
    // At exit, results the sink has not taken are given a second, not forever.
    sink.set_linger(1000)?;
    sink.connect(&sink_at.to_string())?;
    eprintln!("{PROGRAM}: worker {name} ready");
    while !shutdown.requested() {
        // Wait for either lane (100 ms at most, to notice Ctrl-C); when
        // both have a task, the urgent one is taken first.
        let mut lanes = [
            urgent.as_poll_item(zmq::POLLIN),
            normal.as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut lanes, 100) {
            Ok(0) | Err(zmq::Error::EINTR) => continue,
            Ok(_) => {}
            Err(error) => return Err(error.into()),
        }
        let lane = if lanes[0].is_readable() {
            &urgent
        } else {
            &normal
        };
        let task = String::from_utf8_lossy(&lane.recv_bytes(0)?).into_owned();
        let Some((kind, batch, id, cost)) = parse_task(&task) else {
            eprintln!("{PROGRAM}: worker {name}: ignoring malformed task");
            continue;
        };
        thread::sleep(Duration::from_millis(cost));
        sink.send(format!("{kind} {batch} {id} {name}").as_bytes(), 0)?;
        if !quiet {
            print_line(format_args!("worker {name}: did {kind} task {id}"));
        }
    }
    Ok(())
}

/// A task, `KIND BATCH ID COST_MS`, in its fields; `None` if it is not one.
fn parse_task(task: &str) -> Option<(&str, &str, u64, u64)> {
    let fields: Vec<&str> = task.split(' ').collect();
    match fields[..] {
        [kind @ ("normal" | "urgent"), batch, id, cost] if !batch.is_empty() => {
            Some((kind, batch, id.parse().ok()?, cost.parse().ok()?))
        }
        _ => None,
    }
}
