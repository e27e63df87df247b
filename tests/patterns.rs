//! The four messaging patterns under examples/, each run as separate
//! processes on ephemeral ports, checked by what they print.

mod common;

use common::{Proc, example, run_to_end};

/// Pair over TCP: both sides send whenever they like and each receives what
/// the other typed, in both directions, with no turn-taking.
#[test]
fn pair_over_tcp_sends_both_ways() {
    let pair = example("pair");
    let mut left = Proc::spawn(&pair, &["bind", "--bind", "127.0.0.1:0"]);
    let endpoint = left.endpoint_after("listening on");
    let mut right = Proc::spawn(&pair, &["connect", "--connect", &endpoint]);

    // Two messages in a row from one side: no lock-step.
    right.send_line("hello from the connecting side");
    right.send_line("and again, before any answer");
    left.send_line("hello from the binding side ☕");
    assert_eq!(
        left.stdout_line(),
        "received: hello from the connecting side"
    );
    assert_eq!(left.stdout_line(), "received: and again, before any answer");
    assert_eq!(
        right.stdout_line(),
        "received: hello from the binding side ☕"
    );

    right.close_stdin();
    assert!(right.wait().success(), "EOF ends the pair cleanly");
}

/// Pair over inproc://: two threads of one process signal each other.
#[test]
fn pair_between_threads_over_inproc() {
    let (status, stdout, _) = run_to_end(&example("pair"), &["threads", "--steps", "4"], "");
    assert!(status.success());
    let lines: Vec<&str> = stdout.lines().collect();
    for step in 1..=4 {
        assert!(
            lines.contains(&format!("main: worker says 'step {step} done'").as_str()),
            "{stdout}"
        );
    }
    assert!(
        lines.contains(&"worker: main thread says 'all steps seen, stop'"),
        "{stdout}"
    );
}

/// Request/reply: three clients against one server, each gets replies to its
/// own requests only, and REQ refuses a second send before the reply.
#[test]
fn reqrep_serves_several_clients_in_lock_step() {
    let reqrep = example("reqrep");
    let mut server = Proc::spawn(
        &reqrep,
        &["server", "--bind", "127.0.0.1:0", "--work-ms", "5"],
    );
    let endpoint = server.endpoint_after("listening on");
    let clients: Vec<Proc> = ["alice", "bob", "carol"]
        .iter()
        .map(|name| {
            Proc::spawn(
                &reqrep,
                &[
                    "client",
                    "--connect",
                    &endpoint,
                    "--name",
                    name,
                    "--count",
                    "4",
                ],
            )
        })
        .collect();
    for (mut client, name) in clients.into_iter().zip(["alice", "bob", "carol"]) {
        let refused = client.stdout_line();
        assert!(
            refused.starts_with(&format!(
                "{name}: a second send before the reply is refused"
            )),
            "{refused}"
        );
        for number in 1..=4 {
            let line = client.stdout_line();
            assert!(line.starts_with(&format!("{name}: got reply #")), "{line}");
            assert!(
                line.ends_with(&format!("to '{name} request {number}'")),
                "{line}"
            );
        }
        assert!(client.wait().success());
    }
    let served: Vec<String> = (0..12).map(|_| server.stdout_line()).collect();
    assert!(
        served
            .iter()
            .all(|line| line.starts_with("server: request #"))
    );
}

/// Publish/subscribe with the ready handshake: each subscriber sees exactly
/// its topics, every message from 1 to COUNT, none of the other topics.
#[test]
fn pubsub_filters_by_topic_and_loses_nothing_after_ready() {
    let pubsub = example("pubsub");
    let mut publisher = Proc::spawn(
        &pubsub,
        &[
            "publisher",
            "--bind",
            "127.0.0.1:0",
            "--topics",
            "weather,sports,news",
            "--count",
            "200",
            "--subscribers",
            "2",
        ],
    );
    let endpoint = publisher.endpoint_after("listening on");
    let mut weather = Proc::spawn(
        &pubsub,
        &[
            "subscriber",
            "--connect",
            &endpoint,
            "--topics",
            "weather",
            "--name",
            "w",
        ],
    );
    let mut both = Proc::spawn(
        &pubsub,
        &[
            "subscriber",
            "--connect",
            &endpoint,
            "--topics",
            "sports,news",
            "--name",
            "sn",
        ],
    );
    publisher.stderr_line_containing("(2/2)");

    let weather_lines = weather.remaining_stdout();
    assert_eq!(
        weather_lines.len(),
        200,
        "every weather message after ready"
    );
    for (index, line) in weather_lines.iter().enumerate() {
        assert!(
            line.starts_with(&format!("weather {}/200 ", index + 1)),
            "{line}"
        );
    }
    weather.stderr_line_containing("weather: received 200 (seq 1..200), 0 missing");

    let both_lines = both.remaining_stdout();
    assert_eq!(both_lines.len(), 400);
    assert!(
        both_lines
            .iter()
            .all(|line| line.starts_with("sports ") || line.starts_with("news "))
    );
    both.stderr_line_containing("news: received 200 (seq 1..200), 0 missing");
    both.stderr_line_containing("sports: received 200 (seq 1..200), 0 missing");
    assert!(weather.wait().success() && both.wait().success());
}

/// Through the XSUB/XPUB proxy: the publisher and the subscriber only know
/// the proxy's two addresses, never each other's, and everything arrives.
#[test]
fn pubsub_through_a_proxy() {
    let pubsub = example("pubsub");
    let mut proxy = Proc::spawn(
        &pubsub,
        &[
            "proxy",
            "--bind-publishers",
            "127.0.0.1:0",
            "--bind-subscribers",
            "127.0.0.1:0",
        ],
    );
    let for_publishers = proxy.endpoint_after("publishers connect to");
    let for_subscribers = proxy.endpoint_after("subscribers connect to");

    let mut subscriber = Proc::spawn(
        &pubsub,
        &[
            "subscriber",
            "--connect",
            &for_subscribers,
            "--topics",
            "weather",
            "--name",
            "far",
        ],
    );
    let mut publisher = Proc::spawn(
        &pubsub,
        &[
            "publisher",
            "--connect",
            &for_publishers,
            "--topics",
            "weather,sports",
            "--count",
            "50",
            "--subscribers",
            "1",
        ],
    );
    publisher.stderr_line_containing("subscriber far is ready (1/1)");
    let lines = subscriber.remaining_stdout();
    assert_eq!(lines.len(), 50, "{lines:?}");
    assert!(lines.iter().all(|line| line.starts_with("weather ")));
    subscriber.stderr_line_containing("weather: received 50 (seq 1..50), 0 missing");
    proxy.assert_running();
}

/// A running pipeline sink and the addresses its workers and ventilator use.
struct Pipeline {
    program: String,
    sink: Proc,
    sink_at: String,
    tasks_at: String,
    urgent_at: String,
}

impl Pipeline {
    /// Starts the sink (`--quiet` prints only the summary) on a free port.
    fn start(quiet_sink: bool) -> Pipeline {
        let program = example("pipeline");
        let mut args = vec!["sink", "--bind", "127.0.0.1:0"];
        if quiet_sink {
            args.push("--quiet");
        }
        let mut sink = Proc::spawn(&program, &args);
        let sink_at = sink.endpoint_after("sink listening on");
        // Workers start before the ventilator binds: ipc:// addresses, which
        // no other program can take in the meantime.
        let tasks_at = common::ipc_address("tasks");
        let urgent_at = common::ipc_address("urgent");
        Pipeline {
            program,
            sink,
            sink_at,
            tasks_at,
            urgent_at,
        }
    }

    fn worker(&self, name: &str, quiet: bool) -> Proc {
        let mut args = vec![
            "worker",
            "--connect",
            &self.tasks_at,
            "--connect-urgent",
            &self.urgent_at,
        ];
        args.extend(["--connect-sink", &self.sink_at, "--name", name]);
        if quiet {
            args.push("--quiet");
        }
        Proc::spawn(&self.program, &args)
    }

    /// Starts a ventilator with `batch` flags (`--tasks`, `--urgent`, …).
    fn ventilator(&self, batch: &[&str]) -> Proc {
        let mut args = vec![
            "ventilator",
            "--bind",
            &self.tasks_at,
            "--bind-urgent",
            &self.urgent_at,
        ];
        args.extend(["--connect-sink", &self.sink_at]);
        args.extend_from_slice(batch);
        Proc::spawn(&self.program, &args)
    }
}

/// Push/pull: two workers share 200 tasks; the sink gets every result
/// exactly once (count and checksum) and both workers did some of the work.
#[test]
fn pipeline_spreads_work_and_collects_every_result_once() {
    let mut pipeline = Pipeline::start(true);
    let _a = pipeline.worker("a", true);
    let _b = pipeline.worker("b", true);
    let mut ventilator = pipeline.ventilator(&[
        "--tasks",
        "200",
        "--urgent",
        "10",
        "--work-ms",
        "1",
        "--workers",
        "2",
    ]);
    assert!(ventilator.wait().success());

    let summary = pipeline.sink.remaining_stdout();
    assert_eq!(
        summary[0],
        "sink: 210 results (200 normal, 10 urgent), 0 duplicates, 0 missing, checksum 22155 = expected 22155"
    );
    let per_worker = &summary[1];
    let counts: Vec<u64> = per_worker
        .trim_start_matches("sink: per worker: ")
        .split(' ')
        .map(|entry| entry.split('=').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 2, "both workers took tasks: {per_worker}");
    assert!(
        counts.iter().all(|&count| count >= 50),
        "work is spread: {per_worker}"
    );
    assert_eq!(summary[2], "sink: every task's result arrived exactly once");
    assert!(pipeline.sink.wait().success());
}

/// A worker that joins after the batch started: still every result exactly once.
#[test]
fn pipeline_exactly_once_with_a_late_worker() {
    let mut pipeline = Pipeline::start(true);
    let _early = pipeline.worker("early", true);
    let mut ventilator = pipeline.ventilator(&["--tasks", "100", "--work-ms", "5"]);
    ventilator.stderr_line_containing("sent 100 normal");
    let _late = pipeline.worker("late", true);

    let summary = pipeline.sink.remaining_stdout();
    assert_eq!(
        summary[0],
        "sink: 100 results (100 normal), 0 duplicates, 0 missing, checksum 5050 = expected 5050"
    );
    assert_eq!(summary[2], "sink: every task's result arrived exactly once");
}

/// Priority: with a backlog of normal tasks queued at one worker, the urgent
/// tasks sent after them are all done before the remaining normal ones.
#[test]
fn urgent_tasks_overtake_the_normal_backlog() {
    let mut pipeline = Pipeline::start(false);
    let _worker = pipeline.worker("solo", false);
    let mut ventilator =
        pipeline.ventilator(&["--tasks", "60", "--urgent", "5", "--work-ms", "10"]);
    assert!(ventilator.wait().success());

    let lines = pipeline.sink.remaining_stdout();
    let order: Vec<&str> = lines
        .iter()
        .filter(|line| line.starts_with("result "))
        .map(|line| line.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(order.len(), 65, "{lines:?}");
    let first_urgent = order
        .iter()
        .position(|kind| *kind == "urgent")
        .expect("urgent results");
    assert!(
        order[first_urgent..first_urgent + 5]
            .iter()
            .all(|kind| *kind == "urgent"),
        "urgent done together: {order:?}"
    );
    let normal_after = order[first_urgent + 5..].len();
    assert!(
        normal_after >= 40,
        "urgent overtook a backlog of {normal_after} normal tasks (expected at least 40): {order:?}"
    );
}

/// The sink keeps an exact account whatever arrives: malformed results are
/// dropped with a warning, a duplicate is counted and fails the batch, a
/// result of another batch is counted apart, and a worker's name may hold
/// spaces.
#[test]
fn pipeline_sink_drops_malformed_results_and_counts_duplicates() {
    let mut pipeline = Pipeline::start(false);
    let context = zmq::Context::new();
    let results = common::peer_socket(&context, zmq::PUSH);
    results.connect(&pipeline.sink_at).unwrap();
    for message in [
        "batch b1 3 6",
        "normal b1 1 a",
        "odd b1 2 a",
        "normal b1 x a",
        "normal b1 2",
        "normal b1 99999999999999999999 a",
        "hello",
        "normal b1 1 a",
        "urgent b1 2 worker two",
        "normal b0 3 a",
        "normal b1 3 a",
    ] {
        results.send(message, 0).unwrap();
    }

    let lines = pipeline.sink.remaining_stdout();
    assert_eq!(
        lines[..3],
        [
            "result normal 1 from a",
            "result urgent 2 from worker two",
            "result normal 3 from a"
        ],
        "{lines:?}"
    );
    assert_eq!(
        lines[3],
        "sink: 3 results (2 normal, 1 urgent), 1 duplicates, 0 missing, checksum 6 = expected 6"
    );
    assert_eq!(
        lines[4],
        "sink: ignored 1 results of another batch (left over from an earlier run?)"
    );
    assert_eq!(lines[5], "sink: per worker: a=2 worker two=1");
    assert_eq!(lines[6], "sink: RESULTS INCOMPLETE");
    assert_eq!(pipeline.sink.wait().code(), Some(1));
    for _ in 0..5 {
        pipeline
            .sink
            .stderr_line_containing("sink: ignoring malformed message");
    }
}

/// A worker skips a task it cannot read, says so, and goes on with the next.
#[test]
fn pipeline_worker_skips_a_malformed_task() {
    let context = zmq::Context::new();
    let tasks = common::peer_socket(&context, zmq::PUSH);
    tasks.bind("tcp://127.0.0.1:0").unwrap();
    let tasks_at = tasks.get_last_endpoint().unwrap().unwrap();
    let results = common::peer_socket(&context, zmq::PULL);
    results.bind("tcp://127.0.0.1:0").unwrap();
    let results_at = results.get_last_endpoint().unwrap().unwrap();
    let urgent_at = common::ipc_address("urgent-unused");
    let mut worker = Proc::spawn(
        &example("pipeline"),
        &[
            "worker",
            "--connect",
            &tasks_at,
            "--connect-urgent",
            &urgent_at,
            "--connect-sink",
            &results_at,
            "--name",
            "w",
        ],
    );
    worker.stderr_line_containing("worker w ready");
    for task in ["bogus", "normal b1 5", "normal b1 6 soon", "normal b1 7 0"] {
        tasks.send(task, 0).unwrap();
    }

    let result = results
        .recv_string(0)
        .expect("a result within the deadline");
    assert_eq!(result.unwrap(), "normal b1 7 w");
    assert_eq!(worker.stdout_line(), "worker w: did normal task 7");
    for _ in 0..3 {
        worker.stderr_line_containing("worker w: ignoring malformed task");
    }
}

/// Examples reuse the chat's address parsing: a bad address is a one-line
/// usage error with exit code 2.
#[test]
fn examples_reject_bad_addresses_like_the_chat() {
    for (name, args) in [
        ("pair", vec!["connect", "--connect", "127.0.0.1:99999"]),
        ("reqrep", vec!["server", "--bind", "udp://x"]),
        ("pubsub", vec!["subscriber", "--connect", "*:5556"]),
        ("pipeline", vec!["sink", "--bind", "bad host:1"]),
    ] {
        let (status, _, stderr) = run_to_end(&example(name), &args, "");
        assert_eq!(status.code(), Some(2), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.starts_with(&format!("{name}: ")), "{stderr}");
    }
}

/// Issue 17, point 1: a subscriber always ends and reports what it got:
/// the README's `--topics sports,news` against the default publisher
/// (weather, sports) ends by silence once sports has ended, and says news
/// had nothing; one whose publisher never comes ends by --wait; one
/// interrupted by Ctrl-C reports too, exit 130.
#[test]
fn a_subscriber_always_ends_and_reports() {
    let pubsub = example("pubsub");
    let mut publisher = Proc::spawn(
        &pubsub,
        &["publisher", "--bind", "127.0.0.1:0", "--subscribers", "1"],
    );
    let endpoint = publisher.endpoint_after("listening on");
    let mut readme = Proc::spawn(
        &pubsub,
        &[
            "subscriber",
            "--connect",
            &endpoint,
            "--topics",
            "sports,news",
            "--idle-ms",
            "500",
        ],
    );
    readme.stderr_line_containing("sports: received 10 (seq 1..10), 0 missing");
    readme.stderr_line_containing("news: received 0");
    readme.stderr_line_containing("ended by silence");
    assert_eq!(readme.wait().code(), Some(0));
    assert!(publisher.wait().success());

    let nobody = common::ipc_address("no-publisher");
    let mut waiting = Proc::spawn(
        &pubsub,
        &["subscriber", "--connect", &nobody, "--wait", "1"],
    );
    waiting.stderr_line_containing("ended by no message at all within --wait");
    waiting.stderr_line_containing("weather: received 0");
    assert_eq!(waiting.wait().code(), Some(0));

    let mut interrupted = Proc::spawn(&pubsub, &["subscriber", "--connect", &nobody]);
    interrupted.stderr_line_containing("subscribed to weather");
    interrupted.signal("INT");
    interrupted.stderr_line_containing("ended by Ctrl-C");
    interrupted.stderr_line_containing("weather: received 0");
    assert_eq!(interrupted.wait().code(), Some(130));
}

/// Issue 17, point 1: a subscriber too slow for the publisher loses
/// messages at its high-water mark (maybe the END marks too), and still
/// ends, reporting how many were missing.
#[test]
fn a_slow_subscriber_ends_and_counts_what_it_lost() {
    let pubsub = example("pubsub");
    let mut publisher = Proc::spawn(
        &pubsub,
        &[
            "publisher",
            "--bind",
            "127.0.0.1:0",
            "--topics",
            "weather",
            "--count",
            "3000",
            "--subscribers",
            "1",
        ],
    );
    let endpoint = publisher.endpoint_after("listening on");
    let mut slow = Proc::spawn(
        &pubsub,
        &[
            "subscriber",
            "--connect",
            &endpoint,
            "--delay-ms",
            "1",
            "--hwm",
            "10",
            "--idle-ms",
            "500",
        ],
    );
    let report = slow.stderr_line_containing("weather: received");
    assert!(
        report.contains("dropped at the high-water mark"),
        "{report}"
    );
    assert_eq!(slow.wait().code(), Some(0));
    assert!(publisher.wait().success());
}

/// Issue 17, point 3: a ventilator with no sink (and no worker) says what
/// it waits for, and gives up after --wait with exit code 1.
#[test]
fn a_ventilator_without_a_sink_says_so_and_gives_up() {
    let pipeline = Pipeline::start(true);
    let unused_sink = common::ipc_address("no-sink");
    let mut ventilator = Proc::spawn(
        &pipeline.program,
        &[
            "ventilator",
            "--bind",
            &pipeline.tasks_at,
            "--bind-urgent",
            &pipeline.urgent_at,
            "--connect-sink",
            &unused_sink,
            "--wait",
            "1",
        ],
    );
    ventilator.stderr_line_containing(&format!("and for the sink at {unused_sink}"));
    let gave_up = ventilator.stderr_line_containing("gave up after 1 s");
    assert!(gave_up.contains("no sink"), "{gave_up}");
    assert_eq!(ventilator.wait().code(), Some(1));
}

/// Issue 17, point 4: pair says when its peer connects and leaves, and
/// Ctrl-C ends it with exit code 0 and no error.
#[test]
fn pair_tells_when_the_peer_comes_and_goes_and_ctrl_c_exits_0() {
    let pair = example("pair");
    let mut left = Proc::spawn(&pair, &["bind", "--bind", "127.0.0.1:0"]);
    let endpoint = left.endpoint_after("listening on");
    let mut right = Proc::spawn(&pair, &["connect", "--connect", &endpoint]);
    left.stderr_line_containing("the peer is connected");
    right.stderr_line_containing("the peer is connected");
    right.signal("INT");
    assert_eq!(right.wait().code(), Some(0));
    assert!(
        !right
            .drain_stderr()
            .iter()
            .any(|line| line.contains("Interrupted")),
        "no error on Ctrl-C"
    );
    left.stderr_line_containing("the peer left");
    left.send_line("kept until the peer is back");
    let mut back = Proc::spawn(&pair, &["connect", "--connect", &endpoint]);
    assert_eq!(back.stdout_line(), "received: kept until the peer is back");
    left.signal("INT");
    assert_eq!(left.wait().code(), Some(0));
}

/// Issue 17, point 6: each example's --help lists its own exit codes, not
/// the chat-client's.
#[test]
fn each_example_lists_its_own_exit_codes() {
    for name in ["pair", "reqrep", "pubsub", "pipeline"] {
        let (status, help, _) = run_to_end(&example(name), &["--help"], "");
        assert!(status.success(), "{name}");
        assert!(help.contains("Exit status:"), "{name}: {help}");
        assert!(!help.contains("chat-client"), "{name}: {help}");
    }
}

/// Issue 17, point 8: scripts/rabbitmq refuses in one line to start a node
/// on ports something already listens on, and leaves no Erlang crash dump
/// in the repository.
#[test]
fn the_rabbitmq_script_names_a_taken_port_in_one_line() {
    if !std::path::Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server").exists() {
        common::skip("RabbitMQ is not installed (Debian: sudo apt-get install rabbitmq-server)");
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let root = env!("CARGO_MANIFEST_DIR");
    let output = std::process::Command::new("bash")
        .args([
            &format!("{root}/scripts/rabbitmq"),
            "start",
            "zmqchat-taken",
            &port,
            "0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("already listens on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(!std::path::Path::new(&format!("{root}/erl_crash.dump")).exists());
}

/// Issue 26, point 9: a closed stdout (`… | head -1`) ends an example
/// quietly, exit code 0, as `yes | head` ends: no panic, no backtrace.
#[test]
fn an_example_whose_stdout_is_closed_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let reqrep = example("reqrep");
    let mut server = Proc::spawn(&reqrep, &["server", "--bind", "127.0.0.1:0"]);
    let endpoint = server.endpoint_after("listening on");
    let mut client = Command::new(&reqrep)
        .args(["client", "--connect", &endpoint, "--count", "10000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(client.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("client:"), "{first:?}");
    // The reader is gone: the client's next line finds the pipe closed.
    let output = client.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    server.signal("INT");
}

/// Issue 26, point 10: the reqrep client says what it waits for, and with
/// no server gives up after --give-up seconds, exit code 3.
#[test]
fn a_reqrep_client_with_no_server_says_so_and_gives_up() {
    let reqrep = example("reqrep");
    let nobody = common::ipc_address("reqrep-nobody");
    let (status, _, stderr) = run_to_end(
        &reqrep,
        &["client", "--connect", &nobody, "--give-up", "1"],
        "",
    );
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("asking the server at {nobody}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("no server answered request 1 within 1 s"),
        "{stderr}"
    );
}
