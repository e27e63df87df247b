//! The concurrency rows: chat-server --echo against the bare ROUTER echo
//! under loads of 1 to 200 chat-clients, with a probe's round trips
//! meanwhile.

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use crate::Settings;
use crate::processes::{Reaper, start_echo_server};
use crate::roles::spawn_role;
use crate::round_trip::spawn_piped_client;
use crate::stats::{median_rate, percentile};
use crate::table::{Table, Target, micros};

/// How many chat-clients load the server at once, row by row.
pub const CONCURRENCY: [usize; 4] = [1, 10, 50, 200];

/// Round trips each loading client makes.
pub const CONCURRENT_ROUND_TRIPS: usize = 1_000;

/// The message size under load.
pub const CONCURRENT_SIZE: usize = 32;

/// What one load measured: messages per second over all clients, and each
/// of the probe's round trips meanwhile.
pub struct Load {
    rate: f64,
    probe: Vec<Duration>,
}

/// `clients` chat-clients make their round trips all at once against the
/// server at `endpoint`, while a probe in this process (a DEALER sending
/// the chat's envelope) makes one round trip a millisecond.
pub fn load(endpoint: &str, clients: usize) -> Load {
    let line = format!("{}\n", "x".repeat(CONCURRENT_SIZE));
    let mut children = Reaper((0..clients).map(|_| spawn_piped_client(endpoint)).collect());
    // A first round trip each, so every client is connected before the clock starts.
    let mut outputs = Vec::new();
    for child in &mut children.0 {
        child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
    }
    for child in &mut children.0 {
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        outputs.push(stdout);
    }
    let rest = line.repeat(CONCURRENT_ROUND_TRIPS - 1);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let started = Instant::now();
    let probe = std::thread::scope(|scope| {
        let probe = scope.spawn(|| probe_round_trips(endpoint, &stop));
        let mut loaders = Vec::new();
        for (child, mut stdout) in children.0.iter_mut().zip(outputs) {
            let mut stdin = child.stdin.take().unwrap();
            let rest = &rest;
            // Closing stdin after the last line ends the client after its
            // last reply; each reads its replies meanwhile.
            loaders.push(scope.spawn(move || stdin.write_all(rest.as_bytes()).unwrap()));
            loaders.push(scope.spawn(move || {
                let mut replies = String::new();
                stdout.read_to_string(&mut replies).unwrap();
                assert_eq!(replies.lines().count(), CONCURRENT_ROUND_TRIPS - 1);
            }));
        }
        for loader in loaders {
            loader.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        probe.join().unwrap()
    });
    let elapsed = started.elapsed();
    Load {
        rate: (clients * (CONCURRENT_ROUND_TRIPS - 1)) as f64 / elapsed.as_secs_f64(),
        probe,
    }
}

/// Runs of a concurrency level: a load of few clients lasts a fraction of a
/// second, so it takes more runs for a median that the machine's drift does
/// not decide; 200 clients' loads last seconds.
pub fn concurrency_runs(clients: usize, settings: &Settings) -> usize {
    if clients >= 200 {
        settings.concurrency_runs
    } else {
        settings.concurrency_runs * 3
    }
}

/// A chat-client's request, `[id, "", text]`, once a millisecond until
/// `stop`; the time of each round trip.
pub fn probe_round_trips(endpoint: &str, stop: &std::sync::atomic::AtomicBool) -> Vec<Duration> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::DEALER).unwrap();
    socket.set_linger(0).unwrap();
    socket.connect(endpoint).unwrap();
    let payload = [b'p'; CONCURRENT_SIZE];
    let mut times = Vec::new();
    let mut sequence = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        sequence += 1;
        // A new id each time: chat-server answers a repeated id from memory.
        let id = format!("zc1:00000000000feed5:{sequence}");
        let started = Instant::now();
        socket
            .send_multipart([id.as_bytes(), b"", &payload[..]], 0)
            .unwrap();
        let reply = socket.recv_multipart(0).unwrap();
        times.push(started.elapsed());
        assert_eq!(reply.last().map(Vec::len), Some(CONCURRENT_SIZE));
        std::thread::sleep(Duration::from_millis(1));
    }
    times
}

/// The concurrency rows for `clients` loading clients: `runs` runs, each
/// loading `chat-server --echo` and the bare ROUTER echo in turn (the order
/// alternating), each server new for its load.
pub fn concurrency_rows(table: &mut Table, clients: usize, runs: usize) {
    let (mut chat_rates, mut bare_rates) = (Vec::new(), Vec::new());
    let (mut chat_probe, mut bare_probe) = (Vec::new(), Vec::new());
    for run in 0..runs {
        for turn in 0..2 {
            if (run + turn) % 2 == 0 {
                let (server, endpoint) = start_echo_server();
                let _server = Reaper(vec![server]);
                let measured = load(&endpoint, clients);
                chat_rates.push(measured.rate);
                chat_probe.extend(measured.probe);
            } else {
                let (server, endpoint) = spawn_role(&["zmq-router-echo"]);
                let _server = Reaper(vec![server]);
                let measured = load(&endpoint, clients);
                bare_rates.push(measured.rate);
                bare_probe.extend(measured.probe);
            }
        }
    }
    table.rate_row(
        &format!(
            "N = {clients}, {CONCURRENT_ROUND_TRIPS} round trips each: chat-server --echo (msg/s)"
        ),
        &chat_rates,
        Some(median_rate(&bare_rates)),
    );
    table.rate_row(
        &format!(
            "N = {clients}, {CONCURRENT_ROUND_TRIPS} round trips each: bare ROUTER echo (msg/s)"
        ),
        &bare_rates,
        None,
    );
    let ratios: Vec<f64> = chat_rates
        .iter()
        .zip(&bare_rates)
        .map(|(c, b)| c / b)
        .collect();
    table.ratio_row(
        &format!("chat-server / bare ROUTER echo, N = {clients}, run by run"),
        &ratios,
        Some(Target::AtLeast(0.95)),
    );
    table.note(format!(
        "N = {clients}: probe round trip during the load, chat-server p50 {} / p99 {}; bare ROUTER echo p50 {} / p99 {}",
        micros(percentile(&mut chat_probe, 0.50)),
        micros(percentile(&mut chat_probe, 0.99)),
        micros(percentile(&mut bare_probe, 0.50)),
        micros(percentile(&mut bare_probe, 0.99)),
    ));
}
