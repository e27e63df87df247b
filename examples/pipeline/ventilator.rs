//! The ventilator: waits for the workers and the sink, then sends one batch.

use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use zmq_chat::address::Endpoint;
use zmq_chat::clock::TICK;
use zmq_chat::exit::Exit;
use zmq_chat::shutdown::Shutdown;
use zmq_chat::transport::{self, ConnectionEvent, ConnectionWatch};

use crate::PROGRAM;

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
    // Monitors go on before binding or connecting, so no connection is missed.
    let normal = transport::socket_for(context, zmq::PUSH, normal_at)?;
    let urgent = transport::socket_for(context, zmq::PUSH, urgent_at)?;
    let sink = transport::socket_for(context, zmq::PUSH, sink_at)?;
    let watches = [&normal, &urgent, &sink].map(|socket| ConnectionWatch::attach(context, socket));
    let [normal_watch, urgent_watch, sink_watch] = watches;
    let normal_bound = transport::bind_socket(&normal, normal_at)?;
    let urgent_bound = transport::bind_socket(&urgent, urgent_at)?;
    transport::connect_socket(&sink, sink_at)?;
    eprintln!(
        "{PROGRAM}: ventilator: waiting for {workers} worker(s) on {normal_bound} and {urgent_bound}, and for the sink at {sink_at}"
    );
    // Queued tasks go when the workers take them; closing waits that long.
    for socket in [&normal, &urgent, &sink] {
        socket.set_linger(wait.as_millis().try_into().unwrap_or(i32::MAX))?;
    }
    let mut connected = [0usize; 3];
    let wanted = [workers, workers, 1];
    let watches = [normal_watch?, urgent_watch?, sink_watch?];
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
