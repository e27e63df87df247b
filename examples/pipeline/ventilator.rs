//! The ventilator: waits for the workers and the sink, then sends one batch.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use zmq_chat::address::Endpoint;
use zmq_chat::exit::Exit;
use zmq_chat::shutdown::Shutdown;

use crate::{PROGRAM, bind};

/// A batch id unlikely to repeat, so the sink can tell this batch's
/// results from those of an earlier run.
pub fn random_batch_id() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now()) as u16
}

/// One batch: task ids 1..=normal are normal, the next `urgent` ids urgent.
pub struct Batch {
    pub id: u16,
    pub normal: u64,
    pub urgent: u64,
    pub work_ms: u64,
}

impl Batch {
    fn total(&self) -> u64 {
        self.normal + self.urgent
    }

    fn checksum(&self) -> u64 {
        (1..=self.total()).sum()
    }
}

pub fn ventilate(
    context: &zmq::Context,
    [normal_at, urgent_at]: &[Endpoint; 2],
    sink_at: &Endpoint,
    batch: &Batch,
    workers: usize,
    wait: Duration,
    shutdown: &Shutdown,
) -> anyhow::Result<ExitCode> {
    let normal = context.socket(zmq::PUSH)?;
    let urgent = context.socket(zmq::PUSH)?;
    let sink = context.socket(zmq::PUSH)?;
    // Queued tasks go when the workers take them; closing waits that long.
    let linger = wait.as_millis().try_into().unwrap_or(i32::MAX);
    // Monitors go on before binding or connecting, so no connection is missed.
    let mut monitors = Vec::new();
    for (socket, name) in [(&normal, "normal"), (&urgent, "urgent"), (&sink, "sink")] {
        socket.set_linger(linger)?;
        monitors.push(monitor(context, socket, name)?);
    }
    let normal_bound = bind(&normal, normal_at)?;
    let urgent_bound = bind(&urgent, urgent_at)?;
    sink.connect(&sink_at.to_string())?;
    eprintln!(
        "{PROGRAM}: ventilator: waiting for {workers} worker(s) on {normal_bound} and {urgent_bound}, and for the sink at {sink_at}"
    );
    let mut connected = [0usize; 3];
    let wanted = [workers, workers, 1];
    let deadline = Instant::now() + wait;
    while connected
        .iter()
        .zip(wanted)
        .any(|(&count, wanted)| count < wanted)
    {
        if shutdown.requested() {
            return Ok(ExitCode::from(Exit::Interrupted));
        }
        if Instant::now() >= deadline {
            let [normal, urgent, sink] = connected;
            eprintln!(
                "{PROGRAM}: ventilator: gave up after {} s: {} of {workers} worker(s) on the normal lane, {} on the urgent lane, {} sink (start them: pipeline worker, pipeline sink)",
                wait.as_secs(),
                normal,
                urgent,
                if sink > 0 { "a" } else { "no" }
            );
            return Ok(ExitCode::from(Exit::Failure));
        }
        // Wait up to 100 ms for a connection to come or go on any socket.
        let mut items: Vec<_> = monitors
            .iter()
            .map(|m| m.as_poll_item(zmq::POLLIN))
            .collect();
        match zmq::poll(&mut items, 100) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(error) => return Err(error.into()),
        }
        for (index, item) in items.iter().enumerate() {
            if !item.is_readable() {
                continue;
            }
            // An event is two frames: its number and value, then the address.
            let event = monitors[index].recv_multipart(0)?;
            let number = event[0]
                .first_chunk::<2>()
                .map(|raw| u16::from_le_bytes(*raw));
            match number.map(zmq::SocketEvent::from_raw) {
                Some(zmq::SocketEvent::HANDSHAKE_SUCCEEDED) => connected[index] += 1,
                Some(zmq::SocketEvent::DISCONNECTED) => {
                    connected[index] = connected[index].saturating_sub(1)
                }
                _ => {}
            }
        }
    }
    eprintln!(
        "{PROGRAM}: ventilator: {workers} worker(s) and the sink connected; sending batch {:04x}",
        batch.id
    );
    let announcement = format!(
        "batch {:04x} {} {}",
        batch.id,
        batch.total(),
        batch.checksum()
    );
    sink.send(announcement.as_bytes(), 0)?;
    // PUSH deals the tasks out round-robin to the workers connected.
    for (lane, kind, ids) in [
        (&normal, "normal", 1..=batch.normal),
        (&urgent, "urgent", batch.normal + 1..=batch.total()),
    ] {
        for id in ids {
            let task = format!("{kind} {:04x} {id} {}", batch.id, batch.work_ms);
            lane.send(task.as_bytes(), 0)?;
        }
    }
    eprintln!(
        "{PROGRAM}: ventilator: sent {} normal and {} urgent tasks; waiting up to {} s for the workers to take them",
        batch.normal,
        batch.urgent,
        wait.as_secs()
    );
    Ok(ExitCode::SUCCESS)
}

/// The socket `socket`'s monitor reports its connections on: a peer's
/// handshake done, a peer gone, as messages.
fn monitor(
    context: &zmq::Context,
    socket: &zmq::Socket,
    name: &str,
) -> anyhow::Result<zmq::Socket> {
    let events =
        zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32 | zmq::SocketEvent::DISCONNECTED as i32;
    let address = format!("inproc://ventilator-{name}");
    socket.monitor(&address, events)?;
    let monitor = context.socket(zmq::PAIR)?;
    monitor.connect(&address)?;
    Ok(monitor)
}
