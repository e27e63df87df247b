//! Publish/subscribe through a real RabbitMQ broker with the `amqp` example
//! (`cargo test --features amqp`; `.ci/run` installs and starts the broker).
//!
//! Each test uses its own queue or exchange, so tests never see each other's
//! messages. Without the feature, or without a broker on 127.0.0.1:5672
//! (`bash scripts/rabbitmq start`), the tests say why they skipped.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Proc, run_to_end};

/// The broker the tests use: the default of the example.
const BROKER: &str = "127.0.0.1:5672";

/// The example's path, or `None` (and why) when the tests cannot run here.
fn amqp_example() -> Option<String> {
    if !cfg!(feature = "amqp") {
        eprintln!("skipped: built without the amqp feature (cargo test --features amqp)");
        return None;
    }
    let address: SocketAddr = BROKER.parse().unwrap();
    if TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_err() {
        eprintln!(
            "skipped: no AMQP broker on {BROKER} (start one with: bash scripts/rabbitmq start)"
        );
        return None;
    }
    Some(common::example("amqp"))
}

/// A queue or exchange name no other test (or earlier run) uses.
fn unique(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("zmq-chat-test.{test}.{}.{nanos}", std::process::id())
}

/// Starts a subscriber with `args` and waits until it is consuming.
fn subscriber(example: &str, args: &[&str]) -> Proc {
    let mut args = args.to_vec();
    args.insert(0, "subscribe");
    let mut subscriber = Proc::spawn(example, &args);
    subscriber.stderr_line_containing("subscribed to queue");
    subscriber
}

/// Publishes `input` (one JSON value per line) with `args`; asserts success.
fn publish(example: &str, args: &[&str], input: &str) {
    let mut args = args.to_vec();
    args.insert(0, "publish");
    let (status, _, stderr) = run_to_end(example, &args, input);
    assert!(status.success(), "publish failed: {stderr}");
    assert!(stderr.contains("each confirmed by the broker"), "{stderr}");
}

/// N messages published to a queue come out of the subscriber exactly, in
/// order, one compact JSON line each; `--count` ends it with exit code 0.
#[test]
fn round_trip_prints_exactly_the_published_messages_in_order() {
    let Some(example) = amqp_example() else {
        return;
    };
    let queue = unique("round-trip");
    let mut sub = subscriber(&example, &["--queue", &queue, "--count", "50"]);
    let input: String = (1..=50)
        .map(|n| {
            format!("{{ \"n\": {n},  \"text\": \"héllo {n}\", \"tags\": [ \"a\", \"b\" ] }}\n")
        })
        .collect();
    publish(&example, &["--queue", &queue], &input);
    for n in 1..=50 {
        assert_eq!(
            sub.stdout_line(),
            format!(r#"{{"n":{n},"text":"héllo {n}","tags":["a","b"]}}"#)
        );
    }
    assert!(sub.wait().success());
    assert!(
        sub.remaining_stdout().is_empty(),
        "nothing more than the 50"
    );
}

/// Plain text given with --text travels as a JSON string, quotes escaped.
#[test]
fn text_is_published_as_a_json_string() {
    let Some(example) = amqp_example() else {
        return;
    };
    let queue = unique("text");
    let mut sub = subscriber(&example, &["--queue", &queue, "--count", "2"]);
    publish(
        &example,
        &["--queue", &queue, "--text", "hello", "--text", "say \"hi\""],
        "",
    );
    assert_eq!(sub.stdout_line(), r#""hello""#);
    assert_eq!(sub.stdout_line(), r#""say \"hi\"""#);
}

/// Time independence: messages published while no subscriber runs wait in
/// the durable queue for one started later.
#[test]
fn a_subscriber_started_later_gets_everything_published_before() {
    let Some(example) = amqp_example() else {
        return;
    };
    let queue = unique("later");
    publish(
        &example,
        &["--queue", &queue],
        "{\"early\": 1}\n{\"early\": 2}\n{\"early\": 3}\n",
    );
    let mut sub = subscriber(&example, &["--queue", &queue, "--count", "3"]);
    for n in 1..=3 {
        assert_eq!(sub.stdout_line(), format!(r#"{{"early":{n}}}"#));
    }
    assert!(sub.wait().success());
}

/// A subscriber killed while handling a message (printed, not yet
/// acknowledged) loses nothing: the broker gives the message to the next one.
#[test]
fn a_subscriber_killed_before_acknowledging_loses_nothing() {
    let Some(example) = amqp_example() else {
        return;
    };
    let queue = unique("killed");
    publish(&example, &["--queue", &queue], "{\"order\": 42}\n");
    let mut slow = subscriber(&example, &["--queue", &queue, "--exec", "sleep 5"]);
    assert_eq!(slow.stdout_line(), r#"{"order":42}"#);
    slow.signal("KILL");
    slow.wait();
    let mut next = subscriber(&example, &["--queue", &queue, "--count", "1"]);
    assert_eq!(next.stdout_line(), r#"{"order":42}"#);
    assert!(next.wait().success());
}

/// A message whose handler fails is not acknowledged: it goes back to the
/// queue, the subscriber stops saying why (exit 1), and the next one gets it.
#[test]
fn a_failed_handler_returns_the_message_to_the_queue() {
    let Some(example) = amqp_example() else {
        return;
    };
    let queue = unique("handler");
    publish(&example, &["--queue", &queue], "{\"job\": \"resize\"}\n");
    let mut failing = subscriber(&example, &["--queue", &queue, "--exec", "exit 3"]);
    assert_eq!(failing.stdout_line(), r#"{"job":"resize"}"#);
    failing.stderr_line_containing("the --exec handler failed");
    assert_eq!(failing.wait().code(), Some(1));
    let mut next = subscriber(
        &example,
        &[
            "--queue",
            &queue,
            "--count",
            "1",
            "--exec",
            "cat >/dev/null",
        ],
    );
    assert_eq!(next.stdout_line(), r#"{"job":"resize"}"#);
    assert!(next.wait().success());
}

/// Fan-out: two subscribers bound to one fanout exchange each receive every
/// message.
#[test]
fn fanout_gives_every_subscriber_every_message() {
    let Some(example) = amqp_example() else {
        return;
    };
    let exchange = unique("fanout");
    let mut first = subscriber(&example, &["--exchange", &exchange, "--count", "4"]);
    let mut second = subscriber(&example, &["--exchange", &exchange, "--count", "4"]);
    publish(&example, &["--exchange", &exchange], "[1]\n[2]\n[3]\n[4]\n");
    for sub in [&mut first, &mut second] {
        let lines: Vec<String> = (0..4).map(|_| sub.stdout_line()).collect();
        assert_eq!(lines, ["[1]", "[2]", "[3]", "[4]"]);
        assert!(sub.wait().success());
    }
}

/// The error paths: no broker, wrong password, a message that is not JSON
/// (nothing at all is published then), a malformed URL.
#[test]
fn errors_say_what_went_wrong() {
    let Some(example) = amqp_example() else {
        return;
    };
    let nobody = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let (status, _, stderr) = run_to_end(&example, &["publish", "--url", &nobody, "{}"], "");
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("connection refused") && stderr.contains("Is RabbitMQ running?"),
        "{stderr}"
    );
    assert!(
        stderr.contains("guest:***@"),
        "the password is hidden: {stderr}"
    );

    let (status, _, stderr) = run_to_end(&example, &["subscribe", "--url", &nobody], "");
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("connection refused"), "{stderr}");

    let wrong = "amqp://guest:not-the-password@127.0.0.1:5672/%2f";
    let (status, _, stderr) = run_to_end(&example, &["publish", "--url", wrong, "{}"], "");
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("refused the login"), "{stderr}");
    assert!(!stderr.contains("not-the-password"), "{stderr}");

    let queue = unique("bad-json");
    let (status, _, stderr) = run_to_end(
        &example,
        &["publish", "--queue", &queue, "{\"ok\": 1}", "{not json"],
        "",
    );
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("message 2 is not JSON"), "{stderr}");
    assert!(stderr.contains("nothing was published"), "{stderr}");
    publish(&example, &["--queue", &queue], "{\"after\": true}\n");
    let mut sub = subscriber(&example, &["--queue", &queue, "--count", "1"]);
    assert_eq!(
        sub.stdout_line(),
        r#"{"after":true}"#,
        "the valid first message was not sent either"
    );

    let (status, _, stderr) =
        run_to_end(&example, &["publish", "--url", "http://example", "{}"], "");
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("is not an AMQP URL"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

/// A body that is not JSON (from some other publisher) is reported, returned
/// to the queue and stops the subscriber; with --skip-invalid it is printed
/// in full on stderr and acknowledged, and the next message is handled.
#[test]
fn a_body_that_is_not_json_is_reported_and_not_silently_dropped() {
    let Some(example) = amqp_example() else {
        return;
    };
    let queue = unique("not-json");
    raw_publish(&queue, b"plain text \x1b[31mred");
    publish(&example, &["--queue", &queue], "{\"valid\": 1}\n");

    let (status, stdout, stderr) = run_to_end(&example, &["subscribe", "--queue", &queue], "");
    assert_eq!(status.code(), Some(1));
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("received a body that is not JSON"),
        "{stderr}"
    );
    assert!(
        stderr.contains("plain text \\x1b[31mred"),
        "shown escaped: {stderr}"
    );
    assert!(stderr.contains("returned to the queue"), "{stderr}");

    let mut sub = subscriber(
        &example,
        &["--queue", &queue, "--count", "2", "--skip-invalid"],
    );
    sub.stderr_line_containing("skipped a body that is not JSON");
    assert_eq!(sub.stdout_line(), r#"{"valid":1}"#);
}

/// Publishes raw bytes with no content type, as a careless producer would.
#[cfg(feature = "amqp")]
fn raw_publish(queue: &str, body: &[u8]) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = format!("amqp://guest:guest@{BROKER}/%2f");
        let connection = Connection::connect(&url, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(queue.into(), durable, FieldTable::default())
            .await
            .unwrap();
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
        connection.close(200, "done".into()).await.unwrap();
    });
}

#[cfg(not(feature = "amqp"))]
fn raw_publish(_queue: &str, _body: &[u8]) {
    unreachable!("amqp_example() skips these tests without the feature")
}

/// A RabbitMQ node of this test's own (its own ports and data), so that
/// restarting it cannot disturb the other tests; stopped and removed on drop.
struct OwnBroker {
    name: String,
    port: String,
    dist_port: String,
}

impl OwnBroker {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/rabbitmq")
    }

    fn run(&self, action: &str) {
        let output = Command::new("bash")
            .arg(OwnBroker::script())
            .args([action, &self.name, &self.port, &self.dist_port])
            .output()
            .expect("run scripts/rabbitmq");
        assert!(
            output.status.success(),
            "scripts/rabbitmq {action} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn start() -> OwnBroker {
        let broker = OwnBroker {
            name: format!("zmqchat-restart-{}", std::process::id()),
            port: free_port().to_string(),
            dist_port: free_port().to_string(),
        };
        broker.run("start");
        broker
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(OwnBroker::script())
            .args(["stop", &self.name, &self.port, &self.dist_port])
            .output();
        let data = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/rabbitmq")
            .join(&self.name);
        let _ = std::fs::remove_dir_all(data);
    }
}

/// Persistent messages in a durable queue survive a restart of the broker
/// (a node of the test's own, restarted with scripts/rabbitmq).
#[test]
fn persistent_messages_survive_a_broker_restart() {
    let Some(example) = amqp_example() else {
        return;
    };
    let broker = OwnBroker::start();
    let url = broker.url();
    let queue = unique("restart");
    publish(
        &example,
        &["--url", &url, "--queue", &queue],
        "{\"kept\": 1}\n{\"kept\": 2}\n{\"kept\": 3}\n",
    );
    broker.run("restart");
    let mut sub = subscriber(
        &example,
        &["--url", &url, "--queue", &queue, "--count", "3"],
    );
    for n in 1..=3 {
        assert_eq!(sub.stdout_line(), format!(r#"{{"kept":{n}}}"#));
    }
    assert!(sub.wait().success());
}

/// The Python side of the broker road: a pika publisher written as the
/// `message_queue` library publishes (durable queue, persistent JSON) feeds
/// the Rust subscriber, and a pika consumer reads what the Rust publisher
/// sent with the same content type and delivery mode. Needs pika
/// (`pip install pika`; `.ci/run` installs it).
#[test]
fn python_pika_programs_share_the_queue_both_ways() {
    let Some(example) = amqp_example() else {
        return;
    };
    let probe = Command::new("python3").args(["-c", "import pika"]).output();
    if !probe.is_ok_and(|output| output.status.success()) {
        eprintln!("skipped: python3 with pika is not installed (pip install pika)");
        return;
    }
    let queue = unique("python");
    let publisher = format!(
        r#"
import json, pika
connection = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@{BROKER}/%2f"))
channel = connection.channel()
channel.queue_declare(queue="{queue}", durable=True)
channel.confirm_delivery()
for n in range(3):
    channel.basic_publish(exchange="", routing_key="{queue}",
        body=json.dumps({{"from": "python", "n": n}}),
        properties=pika.BasicProperties(content_type="application/json", delivery_mode=2))
connection.close()
"#
    );
    let (status, _, stderr) = run_to_end("python3", &["-c", &publisher], "");
    assert!(status.success(), "{stderr}");
    let mut sub = subscriber(&example, &["--queue", &queue, "--count", "3"]);
    for n in 0..3 {
        assert_eq!(sub.stdout_line(), format!(r#"{{"from":"python","n":{n}}}"#));
    }

    publish(&example, &["--queue", &queue], "{\"from\": \"rust\"}\n");
    let consumer = format!(
        r#"
import json, pika
connection = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@{BROKER}/%2f"))
channel = connection.channel()
channel.queue_declare(queue="{queue}", durable=True)
method, properties, body = channel.basic_get(queue="{queue}")
channel.basic_ack(method.delivery_tag)
print(properties.content_type, properties.delivery_mode, json.loads(body))
connection.close()
"#
    );
    let (status, stdout, stderr) = run_to_end("python3", &["-c", &consumer], "");
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "application/json 2 {'from': 'rust'}");
}

/// A TCP port that was free a moment ago. Only for RabbitMQ, which must be
/// told its ports before it starts and cannot report ones the OS picked; a
/// program that takes the port meanwhile makes the broker fail to start,
/// which the test reports (it does not hang).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port on 127.0.0.1")
}
