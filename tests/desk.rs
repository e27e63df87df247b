//! The help desk (`--desk`) through a real RabbitMQ broker: the chat's own
//! two programs as operators and clients, and pika RPC programs in both
//! roles. Each test uses a desk of its own, so tests never see each other's
//! questions. The broker is the AMQP tests' (see `common::broker`); without
//! RabbitMQ, the tests say why they skipped.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::broker::{Broker, Cluster, OwnBroker, shared_broker, unique};
use common::{CLIENT, Proc, SERVER, Scratch, run_to_end};

/// The shared broker's URL, or `None` (and why) when the tests cannot run.
fn broker() -> Option<&'static str> {
    match shared_broker() {
        Broker::Ready(url) => Some(url),
        Broker::Missing(why) => {
            common::skip(why);
            None
        }
    }
}

/// Whether a test may start RabbitMQ nodes of its own (and the shared
/// broker is there), saying why not.
fn own_nodes() -> bool {
    if broker().is_none() {
        return false;
    }
    if !OwnBroker::installed() {
        common::skip("RabbitMQ is not installed to start nodes of this test's own");
        return false;
    }
    true
}

/// Whether pika is there for the Python programs, saying why not.
fn pika() -> bool {
    let probe = Command::new("python3").args(["-c", "import pika"]).output();
    let found = probe.is_ok_and(|output| output.status.success());
    if !found {
        common::skip("python3 with pika is not installed (pip install pika)");
    }
    found
}

/// The environment variable that names the brokers (it may hold a
/// password, which `--broker` may not).
const BROKER_VARIABLE: &str = "ZMQ_CHAT_BROKER";

/// An operator of `desk` answering with `args` (`--echo`, say), ready;
/// `urls` names the brokers (one, or several separated by spaces).
fn operator(urls: &str, desk: &str, args: &[&str]) -> Proc {
    let mut all = vec!["--desk", desk];
    all.extend(args);
    let mut operator = Proc::spawn_with_env(SERVER, &all, &[(BROKER_VARIABLE, urls)]);
    operator.stderr_line_containing("an operator of the desk");
    operator
}

/// A client of `desk` asking the lines of `input`, as a script, with a
/// state folder of its own (kept as long as the second value is).
fn client(url: &str, desk: &str, input: &str) -> (Proc, Scratch) {
    let state = Scratch::new("desk-state");
    let client = client_in(&state, url, desk, &[], input);
    (client, state)
}

/// A client of `desk` with `args`, its state in `state`, asking the lines
/// of `input` (then its stdin is closed, as a script's).
fn client_in(state: &Path, urls: &str, desk: &str, args: &[&str], input: &str) -> Proc {
    let mut all = vec!["--desk", desk];
    all.extend(args);
    let state = state.to_string_lossy();
    let env = [("XDG_STATE_HOME", state.as_ref()), (BROKER_VARIABLE, urls)];
    let mut client = Proc::spawn_with_env(CLIENT, &all, &env);
    for line in input.lines() {
        client.send_line(line);
    }
    client.close_stdin();
    client
}

/// A question goes to the operator, who sees it, and the answer comes back
/// to the client that asked, which ends as a script does when all its
/// questions are answered.
#[test]
fn a_question_is_answered_by_the_operator_through_the_broker() {
    let Some(url) = broker() else {
        return;
    };
    let desk = unique("desk-one");
    let mut operator = operator(url, &desk, &[]);
    let (mut asking, _state) = client(url, &desk, "is anyone there?\n");
    assert_eq!(operator.stdout_line(), "is anyone there?");
    operator.send_line("yes, the help desk");
    assert_eq!(asking.stdout_line(), "yes, the help desk");
    assert!(asking.wait().success());
}

/// Two operators and twenty clients: every question is answered exactly
/// once, to the client that asked, and both operators take a share.
#[test]
fn two_operators_answer_twenty_clients_each_question_once() {
    let Some(url) = broker() else {
        return;
    };
    let desk = unique("desk-shared");
    let mut operators = [
        operator(url, &desk, &["--echo"]),
        operator(url, &desk, &["--echo"]),
    ];
    let mut clients: Vec<(Proc, Scratch)> = (0..20)
        .map(|n| client(url, &desk, &format!("question {n}\n")))
        .collect();
    for (n, (client, _)) in clients.iter_mut().enumerate() {
        assert_eq!(client.stdout_line(), format!("question {n}"));
        assert!(client.wait().success(), "client {n}");
    }
    let mut seen = Vec::new();
    let mut shares = Vec::new();
    for operator in &mut operators {
        operator.signal("INT");
        operator.wait();
        let lines = operator.remaining_stdout();
        shares.push(lines.len());
        seen.extend(lines);
    }
    seen.sort();
    let mut asked: Vec<String> = (0..20).map(|n| format!("question {n}")).collect();
    asked.sort();
    assert_eq!(seen, asked, "each question shown to one operator, once");
    assert!(
        shares.iter().all(|&share| share > 0),
        "the load is shared: {shares:?}"
    );
}

/// A question asked while no operator is online waits in the broker and
/// is answered by one who starts later.
#[test]
fn a_question_waits_for_an_operator_who_starts_later() {
    let Some(url) = broker() else {
        return;
    };
    let desk = unique("desk-later");
    let (mut asking, _state) = client(url, &desk, "anyone later?\n");
    asking.stderr_line_containing(
        "no operator is online at the desk; your question waits, 0 ahead of it",
    );
    let _operator = operator(url, &desk, &["--echo"]);
    assert_eq!(asking.stdout_line(), "anyone later?");
    assert!(asking.wait().success());
}

/// RabbitMQ's RPC tutorial's client, in pika, asks the desk, and the chat's
/// operator answers it; `chat-client --desk` asks a pika RPC server
/// consuming the desk's queue. Neither side needs more than the desk's name.
#[test]
fn pika_rpc_programs_ask_and_answer_the_desk() {
    let Some(url) = broker() else {
        return;
    };
    if !pika() {
        return;
    }
    let desk = unique("desk-pika");
    let _operator = operator(url, &desk, &["--echo"]);
    let rpc_client = format!(
        r#"
import uuid, pika
connection = pika.BlockingConnection(pika.URLParameters("{url}"))
channel = connection.channel()
answers = channel.queue_declare(queue="", exclusive=True).method.queue
correlation = str(uuid.uuid4())
got = []
def on_answer(channel, method, properties, body):
    if properties.correlation_id == correlation:
        got.append(body.decode())
channel.basic_consume(queue=answers, on_message_callback=on_answer, auto_ack=True)
channel.basic_publish(exchange="", routing_key="{desk}", body="from pika",
    properties=pika.BasicProperties(reply_to=answers, correlation_id=correlation))
while not got:
    connection.process_data_events(time_limit=10)
print(got[0])
connection.close()
"#
    );
    let (status, stdout, stderr) = run_to_end("python3", &["-c", &rpc_client], "");
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "from pika");

    let other = unique("desk-pika-server");
    let rpc_server = format!(
        r#"
import pika
connection = pika.BlockingConnection(pika.URLParameters("{url}"))
channel = connection.channel()
channel.queue_declare(queue="{other}", durable=True, arguments={{"x-queue-type": "quorum"}})
def on_request(channel, method, properties, body):
    channel.basic_publish(exchange="", routing_key=properties.reply_to,
        properties=pika.BasicProperties(correlation_id=properties.correlation_id),
        body="pika says: " + body.decode())
    channel.basic_ack(delivery_tag=method.delivery_tag)
    channel.stop_consuming()
channel.basic_qos(prefetch_count=1)
channel.basic_consume(queue="{other}", on_message_callback=on_request)
print("ready", flush=True)
channel.start_consuming()
connection.close()
"#
    );
    let mut server = Proc::spawn("python3", &["-c", &rpc_server]);
    assert_eq!(server.stdout_line(), "ready");
    let (mut asking, _state) = client(url, &other, "hello pika\n");
    assert_eq!(asking.stdout_line(), "pika says: hello pika");
    assert!(asking.wait().success());
    assert!(server.wait().success());
}

/// An operator killed (SIGKILL) with a question: the broker gives it to
/// another operator, who is told it may have been answered already, and
/// the client shows one answer.
#[test]
fn a_question_whose_operator_dies_goes_to_another() {
    let Some(url) = broker() else {
        return;
    };
    let desk = unique("desk-killed");
    let mut first = operator(url, &desk, &[]);
    let (mut asking, _state) = client(url, &desk, "will you answer?\n");
    assert_eq!(first.stdout_line(), "will you answer?");
    first.signal("KILL");
    first.wait();
    let mut second = operator(url, &desk, &[]);
    second.stderr_line_containing("may have been answered already");
    assert_eq!(second.stdout_line(), "will you answer?");
    second.send_line("the second operator answers");
    assert_eq!(asking.stdout_line(), "the second operator answers");
    assert!(asking.wait().success());
    assert_eq!(
        asking.remaining_stdout(),
        Vec::<String>::new(),
        "one answer"
    );
}

/// An operator who quits (end of input) with a question leaves it to the
/// next operator; the client is not told the chat ended.
#[test]
fn a_question_whose_operator_quits_goes_to_another() {
    let Some(url) = broker() else {
        return;
    };
    let desk = unique("desk-quit");
    let mut first = operator(url, &desk, &[]);
    let (mut asking, _state) = client(url, &desk, "still there?\n");
    assert_eq!(first.stdout_line(), "still there?");
    first.close_stdin();
    assert!(first.wait().success());
    let _second = operator(url, &desk, &["--echo"]);
    assert_eq!(asking.stdout_line(), "still there?");
    assert!(asking.wait().success());
}

/// A client that asks and quits before an operator answers finds the
/// answer when it comes back (same user, same machine), with when it was
/// written; the question is not asked again.
#[test]
fn an_answer_waits_for_a_client_that_went_away() {
    let Some(url) = broker() else {
        return;
    };
    let desk = unique("desk-away");
    let state = Scratch::new("desk-away");
    let mut away = client_in(&state, url, &desk, &[], "are you there later?\n");
    away.stderr_line_containing("no operator is online at the desk");
    away.signal("INT");
    away.wait();
    let mut operator = operator(url, &desk, &[]);
    assert_eq!(operator.stdout_line(), "are you there later?");
    operator.send_line("yes, later");
    operator.close_stdin();
    assert!(operator.wait().success());
    let mut back = client_in(&state, url, &desk, &[], "");
    let told = back.stderr_line_containing("an answer came while you were away");
    assert!(
        told.contains("to your question \u{201c}are you there later?\u{201d}")
            && told.ends_with(": yes, later")
            && told.contains(", written "),
        "{told}"
    );
    assert!(back.wait().success());
}

/// A question no operator takes within `--expire` is reported as expired
/// (exit code 1, the question printed) and is gone from the broker: an
/// operator who starts later never sees it.
#[test]
fn a_question_past_its_expiry_is_reported_and_gone() {
    let Some(url) = broker() else {
        return;
    };
    let desk = unique("desk-expiry");
    let state = Scratch::new("desk-expiry");
    let mut late = client_in(&state, url, &desk, &["--expire", "1"], "too late?\n");
    late.stderr_line_containing("expired unanswered");
    assert_eq!(late.wait().code(), Some(1));
    let mut operator = operator(url, &desk, &["--echo"]);
    let (mut fresh, _state) = client(url, &desk, "fresh\n");
    assert_eq!(fresh.stdout_line(), "fresh");
    assert!(fresh.wait().success());
    assert_eq!(
        operator.stdout_line(),
        "fresh",
        "the expired question is gone"
    );
}

/// The broker restarted while a question waits in it: nothing is lost.
/// The client, waiting, and the operator who starts after connect to the
/// broker again by themselves, the client saying so once.
#[test]
fn a_broker_restart_loses_no_question_and_no_answer() {
    if !own_nodes() {
        return;
    }
    let node = OwnBroker::start("desk-restart");
    let url = node.url();
    let desk = unique("desk-restart");
    let (mut asking, _state) = client(&url, &desk, "still there after a restart?\n");
    asking.stderr_line_containing("no operator is online at the desk");
    node.run("restart");
    // A restart takes seconds, more on a loaded machine; the client tries
    // for two minutes.
    asking.stderr_line_containing_within(
        "connected to the broker again",
        std::time::Duration::from_secs(150),
    );
    let lost = asking.stderr_line_containing("lost the broker");
    assert!(lost.contains("trying to connect again"), "{lost}");
    let mut operator = operator(&url, &desk, &[]);
    assert_eq!(operator.stdout_line(), "still there after a restart?");
    operator.send_line("yes, it survived");
    assert_eq!(asking.stdout_line(), "yes, it survived");
    assert!(asking.wait().success());
}

/// The urgent lane (`--urgent`, or `/urgent TEXT` at the prompt) is served
/// first: with a normal and an urgent question waiting, the operator who
/// starts is shown the urgent one first, though it was asked second.
#[test]
fn the_urgent_lane_is_served_first() {
    let Some(url) = broker() else {
        return;
    };
    let desk = unique("desk-urgent");
    let (mut normal, _state) = client(url, &desk, "when you have a minute\n");
    normal.stderr_line_containing("your question waits, 0 ahead of it");
    let state = Scratch::new("desk-urgent");
    let mut urgent = client_in(&state, url, &desk, &["--urgent"], "the lift is stuck\n");
    urgent.stderr_line_containing("your question waits, 0 ahead of it");
    let mut operator = operator(url, &desk, &[]);
    assert_eq!(operator.stdout_line(), "the lift is stuck");
    operator.send_line("coming");
    assert_eq!(urgent.stdout_line(), "coming");
    assert_eq!(operator.stdout_line(), "when you have a minute");
    operator.send_line("now then");
    assert_eq!(normal.stdout_line(), "now then");
    assert!(urgent.wait().success() && normal.wait().success());
}

/// An operator who holds a question past the broker's `consumer_timeout`
/// (a node of the test's own with it set to 3 s) loses the channel, and
/// the question goes back to the queue: the operator is told, takes it
/// again without showing it twice, and the client gets one answer.
#[test]
fn a_question_held_past_the_consumer_timeout_is_neither_lost_nor_doubled() {
    if !own_nodes() {
        return;
    }
    // RabbitMQ checks the timeout on its channels' tick, once a minute
    // unless told otherwise (its own tests tick every 256 ms).
    let node = OwnBroker::start_configured(
        "desk-timeout",
        "consumer_timeout = 3000\n",
        "[{rabbit, [{channel_tick_interval, 500}]}].\n",
    );
    let url = node.url();
    let desk = unique("desk-timeout");
    let mut operator = operator(&url, &desk, &[]);
    let (mut asking, _state) = client(&url, &desk, "take your time\n");
    assert_eq!(operator.stdout_line(), "take your time");
    operator.stderr_line_containing("the broker took back the question you are answering");
    operator.send_line("sorry for the wait");
    assert_eq!(asking.stdout_line(), "sorry for the wait");
    assert!(asking.wait().success());
    operator.close_stdin();
    assert!(operator.wait().success());
    assert_eq!(
        operator.remaining_stdout(),
        Vec::<String>::new(),
        "shown once"
    );
}

/// Operators are told how many questions wait and how many operators are
/// online, when it changes (looked at every 5 s at most).
#[test]
fn operators_see_who_else_is_online() {
    let Some(url) = broker() else {
        return;
    };
    let desk = unique("desk-presence");
    let mut first = operator(url, &desk, &["--echo"]);
    first
        .stderr_line_containing("at the desk: 0 question(s) wait (0 urgent); 1 operator(s) online");
    let _second = operator(url, &desk, &["--echo"]);
    first
        .stderr_line_containing("at the desk: 0 question(s) wait (0 urgent); 2 operator(s) online");
}

/// Whoever may publish on the broker can fill a client's queue of answers
/// with answers to questions it never asked. The client takes them a few
/// at a time (16 unacknowledged at most), drops them unseen, and its
/// memory does not follow the flood (40 MiB here, all in its queue when it
/// reads); the real answer, behind the flood, is shown once.
#[test]
fn a_flood_of_forged_answers_is_dropped_within_the_clients_bound() {
    let Some(url) = broker() else {
        return;
    };
    if !pika() {
        return;
    }
    let desk = unique("desk-flood");
    let state = Scratch::new("desk-flood");
    let env = [("XDG_STATE_HOME", state.to_str().expect("a UTF-8 path"))];
    let env = [env[0], (BROKER_VARIABLE, url)];
    let mut asking = Proc::spawn_with_env(CLIENT, &["--desk", &desk], &env);
    asking.send_line("is the flood over?");
    asking.stderr_line_containing("your question waits");
    let before = asking.rss_kib();
    let id = std::fs::read_to_string(state.join(format!("zmq-chat/desk-{desk}.id")))
        .expect("the client's identity");
    let answers = format!("{desk}.answers.{}", id.trim());
    let flood = format!(
        r#"
import pika
connection = pika.BlockingConnection(pika.URLParameters("{url}"))
channel = connection.channel()
channel.confirm_delivery()
body = b"x" * 4096
for n in range(10000):
    channel.basic_publish(exchange="", routing_key="{answers}", body=body,
        properties=pika.BasicProperties(correlation_id="forged %d" % n))
connection.close()
"#
    );
    // Stopped, the client reads nothing: the flood is all in its queue
    // when it goes on, as for a client that was away.
    asking.signal("STOP");
    let (status, _, stderr) = run_to_end("python3", &["-c", &flood], "");
    asking.signal("CONT");
    assert!(status.success(), "{stderr}");
    let mut operator = operator(url, &desk, &[]);
    assert_eq!(operator.stdout_line(), "is the flood over?");
    operator.send_line("it is");
    assert_eq!(asking.stdout_line(), "it is");
    let grown = asking.peak_rss_kib().saturating_sub(before);
    asking.close_stdin();
    assert!(asking.wait().success());
    assert_eq!(
        asking.remaining_stdout(),
        Vec::<String>::new(),
        "no forged answer shown"
    );
    assert!(
        grown < 16 * 1024,
        "the client grew by {grown} KiB with the flood"
    );
}

/// A broker's password is never taken from the command line, where `ps`
/// shows it to every user: the programs say where to put it instead, and
/// never repeat it.
#[test]
fn a_broker_password_on_the_command_line_is_refused() {
    for program in [CLIENT, SERVER] {
        let args = [
            "--desk",
            "any",
            "--broker",
            "amqp://ann:s3cret@127.0.0.1:1/%2f",
        ];
        let (status, _, stderr) = run_to_end(program, &args, "");
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("which ps shows") && stderr.contains("ZMQ_CHAT_BROKER"),
            "{stderr}"
        );
        assert!(!stderr.contains("s3cret"), "{stderr}");
    }
}

/// A desk on a three-node cluster (a client and two echoing operators,
/// each given every node's URL, each first on a node of its own) under a
/// steady load: the client's node is killed and restarted, then the node
/// that leads the desk's queue. Both programs connect again by themselves
/// and say so; every question is answered, to the client once and in
/// order; what the operators were shown twice (a question taken back from
/// a lost connection) is counted.
#[test]
fn a_desk_on_a_cluster_loses_nothing_when_its_nodes_die() {
    if !own_nodes() {
        return;
    }
    const QUESTIONS: usize = 300;
    let cluster = Cluster::start();
    let on = |first: u16| cluster.urls(first).join(" ");
    let desk = unique("desk-cluster");
    let mut operators = [
        operator(&on(2), &desk, &["--echo"]),
        operator(&on(3), &desk, &["--echo"]),
    ];
    let state = Scratch::new("desk-cluster");
    let urls = on(1);
    let env = [
        ("XDG_STATE_HOME", state.to_str().expect("a UTF-8 path")),
        (BROKER_VARIABLE, urls.as_str()),
    ];
    let mut asking = Proc::spawn_with_env(CLIENT, &["--desk", &desk], &env);
    let mut leader = 0;
    for n in 0..QUESTIONS {
        asking.send_line(&format!("question {n}"));
        // Each while a question is on its way.
        match n {
            50 => cluster.kill(1),
            100 => {
                cluster.restart(1);
                cluster.wait_all_online(&desk);
            }
            150 => {
                leader = cluster.leader(&desk);
                cluster.kill(leader);
            }
            200 => cluster.restart(leader),
            _ => {}
        }
        // A failover may take longer than a deadline: the queue elects a
        // leader before confirming again (see tests/amqp.rs).
        let answer = asking.stdout_line_within(Duration::from_secs(60));
        assert_eq!(answer, format!("question {n}"));
    }
    asking.close_stdin();
    // The operator first on the leader's node (2 or 3) lost it too.
    if leader > 1 {
        let operator = &mut operators[usize::from(leader) - 2];
        operator.stderr_line_containing("connected to the broker again");
    }
    asking.stderr_line_containing("lost the broker");
    asking.stderr_line_containing("connected to the broker again");
    let reconnections = asking
        .drain_stderr()
        .iter()
        .filter(|line| line.contains("connected to the broker again"))
        .count();
    assert!(asking.wait().success(), "the client ends as a script does");
    assert_eq!(
        asking.remaining_stdout(),
        Vec::<String>::new(),
        "no answer twice"
    );
    let mut shown = Vec::new();
    for operator in &mut operators {
        operator.signal("INT");
        operator.wait();
        shown.extend(operator.remaining_stdout());
    }
    let total = shown.len();
    shown.sort();
    shown.dedup();
    assert_eq!(shown.len(), QUESTIONS, "every question reached an operator");
    eprintln!(
        "cluster: {QUESTIONS} questions asked and answered once each to the client, which connected again {reconnections} time(s); operators shown {total} ({} twice, taken back from a lost connection); leader was node {leader}",
        total - QUESTIONS
    );
}

/// A certificate authority, and a broker certificate it signed for
/// 127.0.0.1 (and no host name), made in `folder` with openssl:
/// `ca.pem`, `broker.pem`, `broker.key`. `false` (and why) without openssl.
fn make_certificates(folder: &Path) -> bool {
    let openssl = |args: &str| {
        let output = Command::new("openssl")
            .args(args.split(' '))
            .current_dir(folder)
            .output();
        if let Ok(output) = &output {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "openssl {args}: {stderr}");
        }
        output.is_ok()
    };
    let extensions =
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n";
    std::fs::write(folder.join("broker.ext"), extensions).expect("write broker.ext");
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    if !openssl(&format!(
        "req -x509 {key} -keyout ca.key -out ca.pem -days 2 -subj /CN=zmq-chat-test-CA"
    )) {
        common::skip(
            "openssl is not installed to make the test's certificates (apt-get install openssl)",
        );
        return false;
    }
    openssl(&format!(
        "req {key} -keyout broker.key -out broker.csr -subj /CN=127.0.0.1"
    ));
    openssl(
        "x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out broker.pem -days 2 -extfile broker.ext",
    );
    true
}

/// The desk over TLS (`amqps://`) to a node of the test's own, whose
/// certificate an authority of the test's own signed for 127.0.0.1: with
/// `--ca` naming that authority a question is asked and answered; without
/// it, or with a host name the certificate is not for, the program
/// refuses the broker and says why.
#[test]
fn the_desk_talks_to_its_broker_over_tls_and_checks_its_certificate() {
    if !own_nodes() {
        return;
    }
    let certificates = Scratch::new("desk-tls");
    if !make_certificates(&certificates) {
        return;
    }
    let file = |name: &str| certificates.join(name).to_string_lossy().into_owned();
    let tls_port = common::broker::free_port();
    let config = format!(
        "listeners.ssl.default = 127.0.0.1:{tls_port}\n\
         ssl_options.cacertfile = {}\n\
         ssl_options.certfile = {}\n\
         ssl_options.keyfile = {}\n\
         ssl_options.verify = verify_none\n\
         ssl_options.fail_if_no_peer_cert = false\n",
        file("ca.pem"),
        file("broker.pem"),
        file("broker.key")
    );
    let _node = OwnBroker::start_configured("desk-tls", &config, "");
    let url = format!("amqps://guest:guest@127.0.0.1:{tls_port}/%2f");
    let ca = file("ca.pem");
    let desk = unique("desk-tls");
    let mut operator = operator(&url, &desk, &["--ca", &ca]);
    let (mut asking, _state) = {
        let state = Scratch::new("desk-state");
        let client = client_in(&state, &url, &desk, &["--ca", &ca], "over tls?\n");
        (client, state)
    };
    assert_eq!(operator.stdout_line(), "over tls?");
    operator.send_line("sealed by TLS");
    assert_eq!(asking.stdout_line(), "sealed by TLS");
    assert!(asking.wait().success());

    let refused = |urls: &str, args: &[&str], why: &str| {
        let state = Scratch::new("desk-state");
        let mut client = client_in(&state, urls, &desk, args, "");
        let said = client.stderr_line_containing("cannot connect to the broker");
        assert!(said.contains(why), "{said}");
        assert_eq!(client.wait().code(), Some(1), "{said}");
    };
    refused(&url, &[], "signed by an authority you do not trust");
    let by_name = format!("amqps://guest:guest@localhost:{tls_port}/%2f");
    refused(&by_name, &["--ca", &ca], "not for that host name");
}

/// What a pika program sees of the next message of a queue, without
/// consuming it (it goes back): whether a text is in its bytes, its first
/// four bytes, its correlation id and reply queue, and its body in hex.
#[derive(Debug)]
struct Peeked {
    holds_text: bool,
    magic: String,
    correlation_id: String,
    reply_to: String,
    body_hex: String,
}

/// Peeks at the next message of `queue` (waiting for one for a deadline),
/// looking for `text` in its bytes.
fn peek(url: &str, queue: &str, text: &str) -> Peeked {
    let program = format!(
        r#"
import pika, time
connection = pika.BlockingConnection(pika.URLParameters("{url}"))
channel = connection.channel()
for _ in range(100):
    method, properties, body = channel.basic_get(queue="{queue}", auto_ack=False)
    if method is not None:
        break
    time.sleep(0.1)
print({text:?}.encode() in body, body[:4].decode(), properties.correlation_id, properties.reply_to, body.hex())
channel.basic_nack(delivery_tag=method.delivery_tag, requeue=True)
connection.close()
"#
    );
    let (status, stdout, stderr) = run_to_end("python3", &["-c", &program], "");
    assert!(status.success(), "{stderr}");
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    let [holds, magic, correlation_id, reply_to, body_hex] = fields[..] else {
        panic!("peek printed {stdout:?}");
    };
    Peeked {
        holds_text: holds == "True",
        magic: magic.into(),
        correlation_id: correlation_id.into(),
        reply_to: reply_to.into(),
        body_hex: body_hex.into(),
    }
}

/// Publishes `body_hex` (hex) to `queue` with `correlation_id` and
/// `reply_to`, as anyone with rights on the broker could.
fn publish(url: &str, queue: &str, correlation_id: &str, reply_to: &str, body_hex: &str) {
    let program = format!(
        r#"
import pika
connection = pika.BlockingConnection(pika.URLParameters("{url}"))
channel = connection.channel()
channel.basic_publish(exchange="", routing_key="{queue}", body=bytes.fromhex("{body_hex}"),
    properties=pika.BasicProperties(correlation_id="{correlation_id}", reply_to="{reply_to}"))
connection.close()
"#
    );
    let (status, _, stderr) = run_to_end("python3", &["-c", &program], "");
    assert!(status.success(), "{stderr}");
}

/// A sealed desk (`chat-server --desk --key`, `chat-client --desk --key
/// --server-key`): the question waiting in the broker and the answer
/// waiting for its client hold no plaintext, nor the client's name (a
/// pika program looks at the bytes); forged answers (in clear, or sealed
/// with another key) are dropped and the real one shown; the sealed
/// question published again (a replay) is dropped; a question in clear is
/// refused, saying what to do.
#[test]
fn a_sealed_desk_keeps_the_chat_from_the_broker() {
    let Some(url) = broker() else {
        return;
    };
    if !pika() {
        return;
    }
    let keys = Scratch::new("desk-sealed");
    let key = |name: &str| {
        let path = keys.join(name);
        let (_, public) = common::keygen(&path);
        (path.to_string_lossy().into_owned(), public)
    };
    let ((desk_key, desk_public), (client_key, _)) = (key("desk.key"), key("client.key"));
    let desk = unique("desk-sealed");
    let state = Scratch::new("desk-sealed-state");
    let env = [
        ("XDG_STATE_HOME", state.to_str().expect("a UTF-8 path")),
        (BROKER_VARIABLE, url),
    ];
    let mut args = vec!["--desk", &desk, "--name", "ann-the-asker"];
    args.extend(["--key", &client_key, "--server-key", &desk_public]);
    let mut asking = Proc::spawn_with_env(CLIENT, &args, &env);
    asking.send_line("the secret plan");
    asking.stderr_line_containing("your question waits");
    let question = peek(url, &desk, "secret plan");
    assert!(!question.holds_text, "{question:?}");
    assert_eq!(question.magic, "zcq1");
    assert!(!peek(url, &desk, "ann-the-asker").holds_text);

    // Forged answers to it, before any operator: dropped, and said so.
    let answers = question.reply_to.clone();
    let id = question.correlation_id.clone();
    publish(url, &answers, &id, "", &hex(b"a forged answer"));
    asking.stderr_line_containing("an answer in clear was dropped");
    publish(
        url,
        &answers,
        &id,
        "",
        &hex(b"zca1 sealed with no key at all"),
    );
    asking.stderr_line_containing("an answer was dropped: it does not open");

    let mut operator = operator(url, &desk, &["--key", &desk_key]);
    let shown = operator.stdout_line();
    assert!(shown.ends_with("the secret plan"), "{shown}");
    // The client goes away: the answer waits in its queue, to be looked at.
    asking.signal("KILL");
    asking.wait();
    operator.send_line("the hidden answer");
    let answer = peek(url, &answers, "hidden answer");
    assert!(!answer.holds_text, "{answer:?}");
    assert_eq!(answer.magic, "zca1");
    let mut back = Proc::spawn_with_env(CLIENT, &args, &env);
    let told = back.stderr_line_containing("an answer came while you were away");
    assert!(told.ends_with("the hidden answer"), "{told}");
    back.close_stdin();
    assert!(back.wait().success());

    // The sealed question again, as a replay: dropped by the operator.
    publish(url, &desk, &id, &answers, &question.body_hex);
    operator.stderr_line_containing("came again");

    // A question in clear is refused, with what to do.
    let (mut plain, _plain_state) = client(url, &desk, "in clear?\n");
    plain.stderr_line_containing("this desk takes sealed questions only");
    assert_eq!(plain.wait().code(), Some(1));
}

/// `bytes` in hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Trust on first use of a sealed desk's key: a script must say it accepts
/// the key the desk's operators left; once an answer opens with it, it is
/// remembered as `desk:NAME@HOST` and used from then on without asking.
#[test]
fn a_desk_key_is_learned_on_first_use_and_remembered() {
    let Some(url) = broker() else {
        return;
    };
    let keys = Scratch::new("desk-tofu");
    let desk_key = keys.join("desk.key");
    let (_, desk_public) = common::keygen(&desk_key);
    let client_key = keys.join("client.key");
    common::keygen(&client_key);
    let (config, state) = (keys.join("config"), keys.join("state"));
    let known = config.join("zmq-chat").join("known_servers");
    let desk = unique("desk-tofu");
    let mut operator = operator(url, &desk, &["--key", desk_key.to_str().unwrap(), "--echo"]);
    let env = [
        ("XDG_CONFIG_HOME", config.to_str().unwrap()),
        ("XDG_STATE_HOME", state.to_str().unwrap()),
        (BROKER_VARIABLE, url),
    ];
    let ask = |first_use: &[&str], question: &str| {
        let mut args = vec!["--desk", &desk, "--key", client_key.to_str().unwrap()];
        args.extend(first_use);
        let mut asking = Proc::spawn_with_env(CLIENT, &args, &env);
        asking.send_line(question);
        asking.close_stdin();
        asking
    };

    let mut unasked = ask(&["--secure"], "not yet");
    unasked.stderr_line_containing(&format!("leaves the key {desk_public}"));
    unasked.stderr_line_containing("pass --accept-new-key");
    assert_eq!(unasked.wait().code(), Some(1));
    assert!(!known.exists(), "nothing remembered without consent");

    let mut first = ask(&["--secure", "--accept-new-key"], "first use");
    first.stderr_line_containing(&format!("leaves the key {desk_public}"));
    assert_eq!(first.stdout_line(), "first use");
    assert_eq!(first.wait().code(), Some(0));
    let entry = format!("desk:{desk}@127.0.0.1 {desk_public}");
    let written = std::fs::read_to_string(&known).unwrap();
    assert!(written.starts_with(&entry), "{written}");

    let mut again = ask(&[], "remembered");
    let said = again.stderr_line_containing("sealed with the key remembered for");
    assert!(said.contains(&format!("desk:{desk}@127.0.0.1")), "{said}");
    assert_eq!(again.stdout_line(), "remembered");
    assert_eq!(again.wait().code(), Some(0));
    assert_eq!(operator.stdout_line(), "first use");
    assert_eq!(operator.stdout_line(), "remembered");
}
