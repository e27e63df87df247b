//! The help desk's rows (`-- --desk`, a broker on 127.0.0.1:5672): the
//! desk's round trip against pika and bare lapin RPC pairs (as RabbitMQ's
//! tutorial has them, and with the desk's guarantees), sealed end to end
//! against in clear, and its throughput with 1, 4 and 16 operators and 50
//! clients.
//!
//! Each round trip row runs QUESTIONS questions one after the other and is
//! timed from its client's start to its exit (connection set-up included,
//! alike for all), the three taking turns in an order that rotates from
//! run to run.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::processes::{run_with_input, wait_for_line};
use crate::roles::spawn_role;
use crate::table::{Table, Target};
use crate::{CLIENT, SERVER};

/// The broker the rows use.
const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Where the desk's programs take a broker URL with a password from.
const BROKER_VARIABLE: &str = "ZMQ_CHAT_BROKER";
/// Questions per round-trip run.
const QUESTIONS: usize = 2_000;
/// Clients and questions each for the throughput rows.
const CLIENTS: usize = 50;
const EACH: usize = 100;

/// The pika RPC server of RabbitMQ's tutorial, answering with the
/// question; prints "ready" once it consumes. With "durable" as its second
/// argument, with the desk's guarantees: a durable quorum queue, persistent
/// answers published with confirms, the question acknowledged after.
const PIKA_SERVER: &str = r#"
import sys, pika
queue, durable = sys.argv[1], sys.argv[2] == "durable"
connection = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2f"))
channel = connection.channel()
if durable:
    channel.queue_declare(queue=queue, durable=True, arguments={"x-queue-type": "quorum"})
    channel.confirm_delivery()
else:
    channel.queue_declare(queue=queue)
def on_request(channel, method, properties, body):
    channel.basic_publish(exchange="", routing_key=properties.reply_to,
        properties=pika.BasicProperties(correlation_id=properties.correlation_id,
            delivery_mode=2 if durable else 1), body=body)
    channel.basic_ack(delivery_tag=method.delivery_tag)
channel.basic_qos(prefetch_count=1)
channel.basic_consume(queue=queue, on_message_callback=on_request)
print("ready", flush=True)
channel.start_consuming()
"#;

/// The pika RPC client of RabbitMQ's tutorial, asking N questions in turn;
/// "durable" as with [`PIKA_SERVER`] (its answers to a durable queue of its
/// own, its questions persistent and confirmed).
const PIKA_CLIENT: &str = r#"
import sys, uuid, pika
queue, count, durable = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "durable"
connection = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2f"))
channel = connection.channel()
if durable:
    channel.queue_declare(queue=queue, durable=True, arguments={"x-queue-type": "quorum"})
    answers = queue + ".answers"
    channel.queue_declare(queue=answers, durable=True)
    channel.confirm_delivery()
else:
    answers = channel.queue_declare(queue="", exclusive=True).method.queue
got = {}
def on_answer(channel, method, properties, body):
    got[properties.correlation_id] = body
channel.basic_consume(queue=answers, on_message_callback=on_answer, auto_ack=True)
for n in range(count):
    correlation = str(uuid.uuid4())
    channel.basic_publish(exchange="", routing_key=queue, body="question %d" % n,
        properties=pika.BasicProperties(reply_to=answers, correlation_id=correlation,
            delivery_mode=2 if durable else 1))
    while correlation not in got:
        connection.process_data_events(time_limit=None)
if durable:
    channel.queue_delete(answers)
connection.close()
"#;

/// The desk's rows, or a note saying why they were skipped.
pub fn desk_rows(table: &mut Table, runs: usize) {
    let python = Command::new("python3")
        .args(["-c", "import pika"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !python {
        table.note(
            "desk rows skipped: python3 with pika is not installed (pip install pika)".into(),
        );
        return;
    }
    let questions: String = (0..QUESTIONS).map(|n| format!("question {n}\n")).collect();
    let keys = Keys::new();
    let mut rates: [Vec<f64>; 6] = Default::default();
    for run in 0..runs {
        for turn in 0..6 {
            let which = (run + turn) % 6;
            let desk = format!("zmq-chat-bench.desk.{}.{run}.{which}", std::process::id());
            rates[which].push(match which {
                0 => desk_round_trips(&desk, &questions, None),
                1 => pika_round_trips(&desk, "plain"),
                2 => lapin_round_trips(&desk, false),
                3 => pika_round_trips(&desk, "durable"),
                4 => lapin_round_trips(&desk, true),
                _ => desk_round_trips(&desk, &questions, Some(&keys)),
            });
        }
    }
    let names = [
        "desk round trip (chat-client --desk, chat-server --desk --echo)",
        "pika RPC client and server (RabbitMQ's tutorial)",
        "bare lapin RPC client and echo",
        "pika RPC pair with the desk's guarantees (quorum queue, persistent, confirms)",
        "bare lapin RPC pair with the desk's guarantees",
        "desk round trip sealed end to end (--key, --server-key)",
    ];
    for (name, rates) in names.iter().zip(&rates) {
        table.rate_row(
            &format!("{name}, {QUESTIONS} in turn (round trips/s)"),
            rates,
            None,
        );
    }
    let paired =
        |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(a, b)| a / b).collect() };
    table.ratio_row(
        "desk / pika RPC pair, run by run",
        &paired(&rates[0], &rates[1]),
        Some(Target::AtLeast(1.0)),
    );
    table.ratio_row(
        "desk / bare lapin RPC echo, run by run",
        &paired(&rates[0], &rates[2]),
        Some(Target::AtLeast(0.8)),
    );
    table.ratio_row(
        "desk / pika RPC pair with the desk's guarantees, run by run",
        &paired(&rates[0], &rates[3]),
        None,
    );
    table.ratio_row(
        "desk / bare lapin RPC pair with the desk's guarantees, run by run",
        &paired(&rates[0], &rates[4]),
        None,
    );
    // Sealing may cost a tenth of the round trip at most.
    table.ratio_row(
        "desk sealed / desk in clear, run by run",
        &paired(&rates[5], &rates[0]),
        Some(Target::AtLeast(0.9)),
    );
    for operators in [1, 4, 16] {
        let rates: Vec<f64> = (0..runs)
            .map(|run| {
                let desk = format!(
                    "zmq-chat-bench.load.{}.{operators}.{run}",
                    std::process::id()
                );
                desk_throughput(&desk, operators)
            })
            .collect();
        table.rate_row(
            &format!("desk, {operators} operator(s) (--echo), {CLIENTS} clients of {EACH} questions (questions/s)"),
            &rates,
            None,
        );
    }
}

/// The desk's round trips sealed and in clear only, taking turns: what
/// sealing costs, measured with less noise than among the other rows.
pub fn sealing_rows(table: &mut Table, runs: usize) {
    let questions: String = (0..QUESTIONS).map(|n| format!("question {n}\n")).collect();
    let keys = Keys::new();
    let (mut clear, mut sealed) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let desk =
            |which: &str| format!("zmq-chat-bench.seal.{}.{run}.{which}", std::process::id());
        if run % 2 == 0 {
            clear.push(desk_round_trips(&desk("clear"), &questions, None));
        }
        sealed.push(desk_round_trips(&desk("sealed"), &questions, Some(&keys)));
        if run % 2 == 1 {
            clear.push(desk_round_trips(&desk("clear"), &questions, None));
        }
    }
    table.rate_row(
        &format!("desk in clear, {QUESTIONS} in turn (round trips/s)"),
        &clear,
        None,
    );
    table.rate_row(
        &format!("desk sealed end to end, {QUESTIONS} in turn (round trips/s)"),
        &sealed,
        None,
    );
    let ratios: Vec<f64> = sealed.iter().zip(&clear).map(|(s, c)| s / c).collect();
    table.ratio_row(
        "desk sealed / desk in clear, run by run",
        &ratios,
        Some(Target::AtLeast(0.9)),
    );
}

/// The keys of a sealed desk's round trips: the desk's and a client's
/// files, and the desk's public key; kept in a folder of their own.
struct Keys {
    _folder: tempfile::TempDir,
    desk: String,
    client: String,
    desk_public: String,
}

impl Keys {
    /// New keys, made by `chat-server --keygen`.
    fn new() -> Keys {
        let folder = tempfile::tempdir().expect("a folder for the keys");
        let make = |name: &str| {
            let path = folder.path().join(name).to_string_lossy().into_owned();
            let output = Command::new(SERVER)
                .args(["--keygen", &path])
                .output()
                .expect("chat-server --keygen");
            assert!(output.status.success(), "chat-server --keygen failed");
            let public = String::from_utf8_lossy(&output.stdout).trim().to_string();
            (path, public)
        };
        let ((desk, desk_public), (client, _)) = (make("desk.key"), make("client.key"));
        Keys {
            _folder: folder,
            desk,
            client,
            desk_public,
        }
    }
}

/// An echoing operator of `desk`, once it is ready.
fn operator(desk: &str) -> Child {
    sealed_operator(desk, None)
}

/// An echoing operator of `desk`, sealed with `keys` if given.
fn sealed_operator(desk: &str, keys: Option<&Keys>) -> Child {
    let mut args = vec!["--desk", desk, "--echo"];
    if let Some(keys) = keys {
        args.extend(["--key", keys.desk.as_str()]);
    }
    let mut operator = Command::new(SERVER)
        .args(args)
        .env(BROKER_VARIABLE, URL)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chat-server --desk");
    wait_for_line(
        operator.stderr.take().expect("stderr"),
        "an operator of the desk",
    );
    operator
}

/// Stops and reaps `children`.
fn stop(children: Vec<Child>) {
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The desk's round trips a second: one client asking `questions` in turn;
/// sealed end to end with `keys` if given.
fn desk_round_trips(desk: &str, questions: &str, keys: Option<&Keys>) -> f64 {
    let operator = sealed_operator(desk, keys);
    let mut client = Command::new(CLIENT);
    client.args(["--desk", desk]).env(BROKER_VARIABLE, URL);
    if let Some(keys) = keys {
        client.args(["--key", &keys.client, "--server-key", &keys.desk_public]);
    }
    timed(&mut client, questions, vec![operator])
}

/// Round trips a second of `client` asking [`QUESTIONS`] in turn (the
/// lines of `input`, if it reads them), timed from its start to its exit;
/// then `servers` are stopped.
fn timed(client: &mut Command, input: &str, servers: Vec<Child>) -> f64 {
    let started = Instant::now();
    assert!(run_with_input(client, input), "{client:?} failed");
    let rate = QUESTIONS as f64 / started.elapsed().as_secs_f64();
    stop(servers);
    rate
}

/// The pika RPC pair's round trips a second; `kind` "durable" or "plain".
fn pika_round_trips(queue: &str, kind: &str) -> f64 {
    let mut server = Command::new("python3")
        .args(["-c", PIKA_SERVER, queue, kind])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the pika RPC server");
    wait_for_line(server.stdout.take().expect("stdout"), "ready");
    let mut client = Command::new("python3");
    client.args(["-c", PIKA_CLIENT, queue, &QUESTIONS.to_string(), kind]);
    timed(&mut client, "", vec![server])
}

/// The bare lapin RPC pair's round trips a second (this executable's
/// roles `lapin-echo` and `lapin-client`; with the desk's guarantees if
/// `durable`).
fn lapin_round_trips(queue: &str, durable: bool) -> f64 {
    let durable = durable.then_some("--durable");
    let echo: Vec<&str> = ["lapin-echo", queue].into_iter().chain(durable).collect();
    let (echo, _) = spawn_role(&echo);
    let mut client = Command::new(std::env::current_exe().expect("the bench"));
    client.args(["lapin-client", queue, &QUESTIONS.to_string()]);
    client.args(durable);
    timed(&mut client, "", vec![echo])
}

/// Questions a second through `operators` echoing operators, with
/// [`CLIENTS`] clients asking [`EACH`] questions each, all at once.
fn desk_throughput(desk: &str, operators: usize) -> f64 {
    let operators: Vec<Child> = (0..operators).map(|_| operator(desk)).collect();
    let questions: String = (0..EACH).map(|n| format!("question {n}\n")).collect();
    let started = Instant::now();
    let clients: Vec<std::thread::JoinHandle<bool>> = (0..CLIENTS)
        .map(|_| {
            let (desk, questions) = (desk.to_string(), questions.clone());
            std::thread::spawn(move || {
                let mut client = Command::new(CLIENT);
                client.args(["--desk", &desk]).env(BROKER_VARIABLE, URL);
                run_with_input(&mut client, &questions)
            })
        })
        .collect();
    for client in clients {
        assert!(
            client.join().expect("a client thread"),
            "a desk client failed"
        );
    }
    let rate = (CLIENTS * EACH) as f64 / started.elapsed().as_secs_f64();
    stop(operators);
    rate
}

/// The lapin roles: an RPC echo on `queue` (prints its queue when ready),
/// or, with a `count`, a client asking that many questions in turn; if
/// `durable`, with the desk's guarantees (a durable quorum queue,
/// persistent messages published with confirms, the question
/// acknowledged after its answer's confirm, the client's answers in a
/// durable queue of its own and acknowledged).
pub fn run_role(queue: &str, count: Option<usize>, durable: bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let connection = Connection::connect(URL, ConnectionProperties::default())
            .await
            .expect("connect to the broker");
        let channel = connection.create_channel().await.expect("a channel");
        if durable {
            channel
                .confirm_select(Default::default())
                .await
                .expect("confirms");
        }
        declare_questions(&channel, queue, durable).await;
        match count {
            None => lapin_echo(&channel, queue, durable).await,
            Some(count) => lapin_client(&channel, queue, count, durable).await,
        }
    });
}

/// Declares the questions' queue: a classic one, or with `durable` a
/// durable quorum queue as the desk's.
async fn declare_questions(channel: &Channel, queue: &str, durable: bool) {
    let mut arguments = FieldTable::default();
    if durable {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    let options = QueueDeclareOptions {
        durable,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, arguments)
        .await
        .expect("declare the questions' queue");
}

/// Answers each question on `queue` with its text until the broker goes.
async fn lapin_echo(channel: &Channel, queue: &str, durable: bool) {
    channel
        .basic_qos(1, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut questions = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    println!("{queue}");
    while let Some(Ok(question)) = questions.next().await {
        let mut properties = BasicProperties::default().with_delivery_mode(persistence(durable));
        if let Some(id) = question.properties.correlation_id() {
            properties = properties.with_correlation_id(id.clone());
        }
        let reply_to = question.properties.reply_to().clone().unwrap_or_default();
        let confirm = channel
            .basic_publish(
                "".into(),
                reply_to,
                BasicPublishOptions::default(),
                &question.data,
                properties,
            )
            .await
            .expect("answer");
        if durable {
            confirm.await.expect("the answer's confirm");
        }
        question.ack(BasicAckOptions::default()).await.expect("ack");
    }
}

/// Asks `count` questions on `queue` in turn, each awaited.
async fn lapin_client(channel: &Channel, queue: &str, count: usize, durable: bool) {
    let options = match durable {
        true => QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        false => QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        },
    };
    let name = match durable {
        true => format!("{queue}.answers"),
        false => String::new(),
    };
    let answers = channel
        .queue_declare(name.as_str().into(), options, FieldTable::default())
        .await
        .expect("declare the answers queue");
    let mut replies = channel
        .basic_consume(
            answers.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: !durable,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    for n in 0..count {
        let id = n.to_string();
        let properties = BasicProperties::default()
            .with_reply_to(answers.name().clone())
            .with_correlation_id(id.as_str().into())
            .with_delivery_mode(persistence(durable));
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                id.as_bytes(),
                properties,
            )
            .await
            .expect("ask");
        if durable {
            confirm.await.expect("the question's confirm");
        }
        loop {
            let reply = tokio::time::timeout(Duration::from_secs(10), replies.next())
                .await
                .expect("an answer within 10 s")
                .expect("the stream")
                .expect("a delivery");
            if durable {
                reply.ack(BasicAckOptions::default()).await.expect("ack");
            }
            if reply
                .properties
                .correlation_id()
                .as_ref()
                .map(|id| id.as_str())
                == Some(id.as_str())
            {
                break;
            }
        }
    }
    if durable {
        channel
            .queue_delete(answers.name().clone(), Default::default())
            .await
            .expect("delete the answers queue");
    }
}

/// AMQP's delivery mode: 2 (on disk) with the desk's guarantees, else 1.
fn persistence(durable: bool) -> u8 {
    if durable { 2 } else { 1 }
}
