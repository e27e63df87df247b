//! The AMQP example's rows (a broker on 127.0.0.1:5672): its publisher
//! against the Python `message_queue` one, and its subscriber at two
//! prefetches (information only).

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::processes::{built_example, run_with_input};
use crate::table::Table;

/// Messages per AMQP run: issue 18's 10,000 persistent messages.
pub const AMQP_MESSAGES: usize = 10_000;

/// A publisher as the Python `message_queue` library publishes: pika, a
/// durable queue, persistent JSON, each message confirmed before the next.
pub const PYTHON_PUBLISHER: &str = r#"
import json, sys, pika
queue, count = sys.argv[1], int(sys.argv[2])
connection = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2f"))
channel = connection.channel()
channel.queue_declare(queue=queue, durable=True)
channel.confirm_delivery()
properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
for n in range(1, count + 1):
    channel.basic_publish(exchange="", routing_key=queue, body=json.dumps({"n": n}), properties=properties)
connection.close()
"#;

/// The AMQP example's publisher (pipelined confirms, one by one) and the
/// Python one, and its subscriber at prefetch 1 and 1000,
/// each moving 10,000 persistent messages through the broker on
/// 127.0.0.1:5672, timed from the process's start to its exit. Skipped,
/// with a note, without a broker or the example.
pub fn amqp_rows(table: &mut Table, runs: usize) {
    let broker: std::net::SocketAddr = "127.0.0.1:5672".parse().unwrap();
    if TcpStream::connect_timeout(&broker, Duration::from_secs(1)).is_err() {
        table.note(
            "AMQP rows skipped: no broker on 127.0.0.1:5672 (bash scripts/rabbitmq start)".into(),
        );
        return;
    }
    let Some(example) = built_example("amqp") else {
        table.note("AMQP rows skipped: the amqp example is not built (cargo build --release --features amqp --example amqp)".into());
        return;
    };
    let python = Command::new("python3")
        .args(["-c", "import pika"])
        .output()
        .is_ok_and(|output| output.status.success());
    let input: String = (1..=AMQP_MESSAGES)
        .map(|n| format!("{{\"n\":{n}}}\n"))
        .collect();
    let publishers: [(&str, Option<&str>); 3] = [
        ("pipelined confirms (--in-flight 1024)", Some("1024")),
        ("confirmed one by one (--in-flight 1)", Some("1")),
        ("Python, as message_queue publishes", None),
    ];
    let mut published: [Vec<f64>; 3] = Default::default();
    let mut consumed: [Vec<f64>; 2] = Default::default();
    for run in 0..runs {
        let queues: Vec<String> = (0..publishers.len())
            .map(|slot| format!("zmq-chat-bench.{}.{run}.{slot}", std::process::id()))
            .collect();
        for turn in 0..publishers.len() {
            let slot = (run + turn) % publishers.len();
            let queue = &queues[slot];
            let started = Instant::now();
            let ok = match publishers[slot].1 {
                Some(in_flight) => run_with_input(
                    Command::new(&example).args([
                        "publish",
                        "--queue",
                        queue,
                        "--in-flight",
                        in_flight,
                    ]),
                    &input,
                ),
                None if python => run_with_input(
                    Command::new("python3").args([
                        "-c",
                        PYTHON_PUBLISHER,
                        queue,
                        &AMQP_MESSAGES.to_string(),
                    ]),
                    "",
                ),
                None => continue,
            };
            assert!(ok, "{} failed", publishers[slot].0);
            published[slot].push(AMQP_MESSAGES as f64 / started.elapsed().as_secs_f64());
        }
        // Each subscriber drains a queue just filled; the Python one's is
        // drained untimed (when it was filled).
        for (index, (queue, prefetch)) in [(&queues[0], "1"), (&queues[1], "1000")]
            .into_iter()
            .enumerate()
        {
            let started = Instant::now();
            assert!(
                subscribe_all(&example, queue, prefetch),
                "subscriber failed"
            );
            consumed[index].push(AMQP_MESSAGES as f64 / started.elapsed().as_secs_f64());
        }
        if python {
            subscribe_all(&example, &queues[2], "1000");
        }
    }
    for (slot, (name, _)) in publishers.iter().enumerate() {
        if !published[slot].is_empty() {
            table.rate_row(
                &format!("AMQP publisher, {name} (msg/s)"),
                &published[slot],
                None,
            );
        }
    }
    table.rate_row("AMQP subscriber, prefetch 1 (msg/s)", &consumed[0], None);
    table.rate_row("AMQP subscriber, prefetch 1000 (msg/s)", &consumed[1], None);
    let paired =
        |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(a, b)| a / b).collect() };
    if !published[2].is_empty() {
        // Information only, as every example's row.
        table.ratio_row(
            "AMQP pipelined / Python message_queue publisher, run by run",
            &paired(&published[0], &published[2]),
            None,
        );
    } else {
        table.note(
            "Python publisher skipped: python3 with pika is not installed (pip install pika)"
                .into(),
        );
    }
    table.ratio_row(
        "AMQP subscriber prefetch 1000 / prefetch 1, run by run",
        &paired(&consumed[1], &consumed[0]),
        None,
    );
}

/// Consumes [`AMQP_MESSAGES`] from `queue` with the example's subscriber.
pub fn subscribe_all(example: &str, queue: &str, prefetch: &str) -> bool {
    let count = AMQP_MESSAGES.to_string();
    Command::new(example)
        .args([
            "subscribe",
            "--queue",
            queue,
            "--count",
            &count,
            "--prefetch",
            prefetch,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
