//! The push/pull rows: the pipeline example against bare relays of the
//! same three stages (information only: an example keeps no trick for
//! speed).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::Settings;
use crate::processes::{Reaper, example_path, free_endpoint, start_listener};
use crate::roles::spawn_role;
use crate::stats::median_rate;
use crate::table::Table;

/// The three pipelines, run by run, and their ratios.
pub fn pipeline_rows(table: &mut Table, settings: &Settings) {
    // Each run has the three pipelines one after another, the order
    // rotating from run to run.
    let mut rates = [Vec::new(), Vec::new(), Vec::new()];
    let messages = settings.pipeline_messages;
    for run in 0..settings.pipeline_runs {
        for turn in 0..3 {
            let which = (run + turn) % 3;
            rates[which].push(match which {
                0 => pipeline_example(messages),
                1 => pipeline_relay(Relay::Bare, messages),
                _ => pipeline_relay(Relay::Reading, messages),
            });
        }
    }
    let [example, bare, reading] = rates;
    table.rate_row(
        "push/pull example (msg/s)",
        &example,
        Some(median_rate(&bare)),
    );
    table.rate_row("bare PUSH/PULL pipeline (msg/s)", &bare, None);
    table.rate_row(
        "PUSH/PULL relay reading each message (msg/s)",
        &reading,
        Some(median_rate(&bare)),
    );
    let paired =
        |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(a, b)| a / b).collect() };
    // Information only: the examples teach, and carry no trick for speed.
    table.ratio_row(
        "push/pull example / bare, run by run",
        &paired(&example, &bare),
        None,
    );
    table.ratio_row(
        "reading relay / bare, run by run",
        &paired(&reading, &bare),
        None,
    );
    table.ratio_row(
        "push/pull example / reading relay, run by run",
        &paired(&example, &reading),
        None,
    );
}

/// Messages per second from the ventilator's "sending" line to the sink's exit.
pub fn time_pipeline(mut ventilator: Child, sink: &mut Child, messages: usize) -> f64 {
    let mut lines = BufReader::new(ventilator.stderr.take().unwrap()).lines();
    let started = loop {
        let line = lines.next().expect("ventilator output").unwrap();
        if line.contains("sending") {
            break Instant::now();
        }
    };
    sink.wait().unwrap();
    let elapsed = started.elapsed();
    let _ = ventilator.wait();
    messages as f64 / elapsed.as_secs_f64()
}

pub fn pipeline_example(messages: usize) -> f64 {
    let example = example_path("pipeline");
    let (tasks, urgent) = (free_endpoint(), free_endpoint());
    let (mut sink, sink_at) =
        start_listener(&example, &["sink", "--bind", "127.0.0.1:0", "--quiet"]);
    let worker = Command::new(&example)
        .args([
            "worker",
            "--connect",
            &tasks,
            "--connect-urgent",
            &urgent,
            "--connect-sink",
            &sink_at,
            "--quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _reaper = Reaper(vec![worker]);
    let count = messages.to_string();
    let ventilator = Command::new(&example)
        .args([
            "ventilator",
            "--bind",
            &tasks,
            "--bind-urgent",
            &urgent,
            "--connect-sink",
            &sink_at,
        ])
        .args(["--tasks", &count, "--work-ms", "0", "--workers", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The example's sink also receives the batch announcement.
    time_pipeline(ventilator, &mut sink, messages)
}

/// The baseline pipelines: the same three stages as the example, with
/// workers and sinks that do nothing with a message ([`Relay::Bare`]) or
/// only look into it ([`Relay::Reading`]).
#[derive(Clone, Copy)]
pub enum Relay {
    Bare,
    Reading,
}

pub fn pipeline_relay(relay: Relay, messages: usize) -> f64 {
    let reading = match relay {
        Relay::Bare => None,
        Relay::Reading => Some("--reading"),
    };
    let count = messages.to_string();
    let sink: Vec<&str> = ["sink", &count].into_iter().chain(reading).collect();
    let (mut sink, sink_at) = spawn_role(&sink);
    let tasks = format!("tcp://{}", free_endpoint());
    let worker: Vec<&str> = ["worker", &tasks, &sink_at]
        .into_iter()
        .chain(reading)
        .collect();
    let (worker, _) = spawn_role(&worker);
    let _reaper = Reaper(vec![worker]);
    let (ventilator, _) = spawn_role(&["ventilator", &tasks, &count]);
    let rate = time_pipeline(ventilator, &mut sink, messages);
    let _ = sink.wait();
    rate
}
