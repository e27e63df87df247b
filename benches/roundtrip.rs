//! The chat measured against its floor, side by side in one run.
//!
//! `cargo bench` (add `-- --quick` for a short run, `-- --round-trip` for
//! the round-trip rows alone, `-- --pipeline` for the
//! push/pull rows alone, `-- --concurrency` for
//! the concurrency rows alone, as when comparing two builds of the server
//! under load; `-- --desk` for the help desk's rows, `-- --desk-sealing`
//! for the desk sealed and in clear alone). Every measurement runs
//! as real processes on 127.0.0.1:
//!
//! 1. chat round trip: `chat-client` in script mode against `chat-server --echo`,
//!    and against `chat-server` answering each message with a line of its
//!    stdin (the operator's path, as `yes ok | chat-server` or a person
//!    answers: the message is shown, then a reply line is read and sent);
//! 2. baselines: a bare `zmq` REQ/REP ping-pong and a bare `std::net` TCP
//!    ping-pong (TCP_NODELAY, length-prefixed), same sizes and counts; and,
//!    to tell the chat's own cost from its design's, a bare `zmq` DEALER
//!    sending exactly what chat-client sends (`[id, "", text]`, with its
//!    heartbeats and receive timeout) to a bare REP echo, and the same
//!    DEALER to a bare ROUTER echo that handles frames as chat-server does;
//! 3. start-up of each binary to ready / to its first reply;
//! 4. peak RSS of both binaries, and the server's RSS before and after
//!    100,000 messages;
//! 5. concurrency: N = 1, 10, 50 and 200 chat-client processes making
//!    1,000 round trips each at once, against `chat-server --echo` and
//!    against the bare ROUTER echo: total messages per second, and the
//!    round trips of a probe that asks once a millisecond meanwhile;
//! 6. the push/pull example's throughput against a bare PUSH/PULL pipeline
//!    of the same three stages (a constant task, passed on unread), and
//!    against a relay whose worker and sink look into every message.
//!
//! The baseline peers are this same executable started with a `--role-…`
//! argument, so nothing but the code under test differs between rows.
//! Runs are interleaved: in a round-trip run the chat and its baselines stay
//! up side by side and take turns at blocks of 500 round trips, in an order
//! that reverses from block to block; pipeline runs rotate which goes
//! first. So drift and warm caches hit all alike. On a shared machine single
//! runs still spread by ±10% and more, so the verdict on each target is the
//! median of the paired, run-by-run ratios, with a distribution-free 95%
//! confidence interval for that median.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "roundtrip/desk.rs"]
mod desk;

const SERVER: &str = env!("CARGO_BIN_EXE_chat-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_chat-client");
const WARM_UP: usize = 200;

struct Settings {
    messages: usize,
    runs: usize,
    pipeline_messages: usize,
    /// Pipeline runs are short and spread widely: more of them.
    pipeline_runs: usize,
    memory_messages: usize,
    startups: usize,
    /// Runs of each concurrency level (each runs both servers).
    concurrency_runs: usize,
    /// Runs of the AMQP publishers and subscribers.
    amqp_runs: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(role) = args.iter().find(|arg| arg.starts_with("--role-")) {
        let value = |index: usize| {
            args.iter()
                .skip_while(|a| *a != role)
                .nth(index)
                .cloned()
                .unwrap_or_default()
        };
        return run_role(role, &value(1), &value(2));
    }
    let settings = if args.iter().any(|arg| arg == "--quick") {
        Settings {
            messages: 2_000,
            runs: 5,
            pipeline_messages: 50_000,
            pipeline_runs: 5,
            memory_messages: 10_000,
            startups: 5,
            concurrency_runs: 2,
            amqp_runs: 3,
        }
    } else {
        Settings {
            messages: 10_000,
            runs: 15,
            pipeline_messages: 500_000,
            pipeline_runs: 30,
            memory_messages: 100_000,
            startups: 20,
            concurrency_runs: 7,
            amqp_runs: 10,
        }
    };
    let mut table = Table::default();
    if args.iter().any(|arg| arg == "--desk-sealing") {
        desk::sealing_rows(&mut table, settings.amqp_runs);
        table.print(&settings);
        return;
    }
    if args.iter().any(|arg| arg == "--desk") {
        desk::desk_rows(&mut table, settings.amqp_runs);
        table.print(&settings);
        return;
    }
    if args.iter().any(|arg| arg == "--amqp") {
        amqp_rows(&mut table, settings.amqp_runs);
        table.print(&settings);
        return;
    }
    if args.iter().any(|arg| arg == "--pipeline") {
        pipeline_rows(&mut table, &settings);
        table.print(&settings);
        return;
    }
    if args.iter().any(|arg| arg == "--round-trip") {
        round_trip_rows(&mut table, &settings);
        table.print(&settings);
        return;
    }
    if args.iter().any(|arg| arg == "--concurrency") {
        for clients in CONCURRENCY {
            concurrency_rows(&mut table, clients, concurrency_runs(clients, &settings));
        }
        table.print(&settings);
        return;
    }
    round_trip_rows(&mut table, &settings);

    for clients in CONCURRENCY {
        concurrency_rows(&mut table, clients, concurrency_runs(clients, &settings));
    }

    let server_ready: Vec<Duration> = (0..settings.startups).map(|_| server_startup()).collect();
    table.time_row("chat-server start to ready line", &server_ready, None);
    let client_first: Vec<Duration> = (0..settings.startups).map(|_| client_startup()).collect();
    table.time_row("chat-client start to first reply", &client_first, None);

    let memory = chat_memory(settings.memory_messages);
    table.note(format!(
        "chat-client peak RSS: {} KiB",
        memory.client_peak_kib
    ));
    table.note(format!(
        "chat-server peak RSS: {} KiB",
        memory.server_peak_kib
    ));
    table.note(format!(
        "chat-server RSS before / after {} messages: {} KiB / {} KiB",
        settings.memory_messages, memory.server_rss_before_kib, memory.server_rss_after_kib
    ));

    pipeline_rows(&mut table, &settings);
    amqp_rows(&mut table, settings.amqp_runs);
    table.print(&settings);
}

// ---------------------------------------------------------------- roles

/// What a child started with `--role-NAME A B` does.
fn run_role(role: &str, first: &str, second: &str) {
    let context = zmq::Context::new();
    match role {
        "--role-zmq-echo" => {
            let socket = context.socket(zmq::REP).unwrap();
            socket.bind("tcp://127.0.0.1:*").unwrap();
            println!("{}", socket.get_last_endpoint().unwrap().unwrap());
            loop {
                let message = socket.recv_msg(0).unwrap();
                socket.send(message, 0).unwrap();
            }
        }
        "--role-zmq-router-echo" => {
            // What chat-server's socket does for the usual message, with no
            // chat code: a ROUTER (which, unlike REP, shows the envelope
            // with the chat's message id) receiving a request frame by frame
            // into kept messages and sending the frames straight back.
            let socket = context.socket(zmq::ROUTER).unwrap();
            socket.set_router_mandatory(true).unwrap();
            socket.set_rcvtimeo(100).unwrap();
            socket.bind("tcp://127.0.0.1:*").unwrap();
            println!("{}", socket.get_last_endpoint().unwrap().unwrap());
            let mut frames: [zmq::Message; 4] = std::array::from_fn(|_| zmq::Message::new());
            loop {
                let mut count = 0;
                loop {
                    match socket.recv(&mut frames[count], 0) {
                        Ok(()) => count += 1,
                        Err(zmq::Error::EAGAIN) => continue,
                        Err(error) => panic!("{error}"),
                    }
                    if !frames[count - 1].get_more() {
                        break;
                    }
                }
                for (index, frame) in frames[..count].iter_mut().enumerate() {
                    let frame = std::mem::replace(frame, zmq::Message::new());
                    let more = if index + 1 < count { zmq::SNDMORE } else { 0 };
                    socket.send(frame, more).unwrap();
                }
            }
        }
        "--role-zmq-client" | "--role-zmq-envelope-client" => {
            // The bare client runs in its own process, like chat-client, and
            // makes round trips in blocks: each stdin line asks for a number
            // of them, and "done" says they are made. The envelope variant
            // sends what chat-client puts on the wire, with its socket
            // options, and nothing else: a DEALER sending [id, "", text]
            // with ZMTP heartbeats and a receive timeout.
            let envelope = role == "--role-zmq-envelope-client";
            let (endpoint, size): (&str, usize) = (first, second.parse().unwrap());
            let socket = context
                .socket(if envelope { zmq::DEALER } else { zmq::REQ })
                .unwrap();
            if envelope {
                socket.set_heartbeat_ivl(1000).unwrap();
                socket.set_heartbeat_timeout(3000).unwrap();
                socket.set_rcvtimeo(100).unwrap();
            }
            socket.connect(endpoint).unwrap();
            let payload = vec![b'x'; size];
            let id = b"zc1:0123456789abcdef:10200";
            let mut reply = zmq::Message::new();
            println!("ready");
            for request in std::io::stdin().lines() {
                let count: usize = request.unwrap().trim().parse().unwrap();
                for _ in 0..count {
                    if envelope {
                        socket.send(&id[..], zmq::SNDMORE).unwrap();
                        socket.send(&b""[..], zmq::SNDMORE).unwrap();
                        socket.send(&payload[..], 0).unwrap();
                        for _ in 0..3 {
                            while let Err(zmq::Error::EAGAIN) = socket.recv(&mut reply, 0) {}
                        }
                    } else {
                        socket.send(&payload[..], 0).unwrap();
                        socket.recv(&mut reply, 0).unwrap();
                    }
                    assert_eq!(reply.len(), size);
                }
                println!("done");
            }
        }
        "--role-tcp-echo" => {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            println!("{}", listener.local_addr().unwrap());
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_nodelay(true).unwrap();
            let mut buffer = Vec::new();
            loop {
                let mut length = [0u8; 4];
                if stream.read_exact(&mut length).is_err() {
                    return;
                }
                buffer.resize(u32::from_le_bytes(length) as usize + 4, 0);
                buffer[..4].copy_from_slice(&length);
                stream.read_exact(&mut buffer[4..]).unwrap();
                stream.write_all(&buffer).unwrap();
            }
        }
        // The bare relay's sink and worker pass messages on without a look;
        // the reading relay's look into every message (the least any
        // pipeline that uses its messages must do) and its worker sends
        // a copy of each task.
        "--role-bare-sink" | "--role-reading-sink" => {
            let socket = context.socket(zmq::PULL).unwrap();
            socket.bind("tcp://127.0.0.1:*").unwrap();
            println!("{}", socket.get_last_endpoint().unwrap().unwrap());
            let total: usize = first.parse().unwrap();
            let reading = role == "--role-reading-sink";
            let mut message = zmq::Message::new();
            let mut first_bytes = 0u64;
            for _ in 0..total {
                socket.recv(&mut message, 0).unwrap();
                if reading {
                    first_bytes += u64::from(black_box(&message[..])[0]);
                }
            }
            black_box(first_bytes);
        }
        "--role-bare-worker" => {
            let (tasks, sink) = relay_sockets(&context, first, second);
            loop {
                let task = tasks.recv_msg(0).unwrap();
                sink.send(task, 0).unwrap();
            }
        }
        "--role-reading-worker" => {
            let (tasks, sink) = relay_sockets(&context, first, second);
            let mut task = zmq::Message::new();
            loop {
                tasks.recv(&mut task, 0).unwrap();
                sink.send(black_box(&task[..]), 0).unwrap();
            }
        }
        "--role-bare-ventilator" => {
            let socket = context.socket(zmq::PUSH).unwrap();
            socket.set_linger(-1).unwrap();
            socket.bind(first).unwrap();
            let total: usize = second.parse().unwrap();
            // Time is measured from the "sending" line, so this wait for the
            // worker to connect is not counted (the example waits too).
            std::thread::sleep(Duration::from_millis(300));
            eprintln!("bare ventilator: sending");
            // The same task every time, as long as the example's (ids of
            // six digits): a bare stream does no work per message.
            for _ in 0..total {
                socket.send(&b"normal 123456 0"[..], 0).unwrap();
            }
        }
        lapin if lapin.starts_with("--role-lapin-") => desk::run_role(lapin, first, second),
        other => panic!("unknown role {other}"),
    }
}

/// Reads `stream` until a line containing `needle` (10 s at most), then
/// goes on draining it on a thread of its own, so the child never blocks
/// on a full pipe.
fn wait_for_line(stream: impl Read + Send + 'static, needle: &str) {
    let (found, seen) = std::sync::mpsc::channel();
    let wanted = needle.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if line.contains(&wanted) {
                let _ = found.send(());
            }
        }
    });
    seen.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("no line containing {needle:?} within 10 s"));
}

fn spawn_role(role: &str, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg(role)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    if !role.ends_with("-worker") && role != "--role-bare-ventilator" {
        // Echo servers and the relay sinks print their endpoint first.
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
    }
    (child, line.trim().to_string())
}

/// A relay worker's sockets: tasks pulled from `tasks_at`, pushed to `sink_at`.
fn relay_sockets(
    context: &zmq::Context,
    tasks_at: &str,
    sink_at: &str,
) -> (zmq::Socket, zmq::Socket) {
    let tasks = context.socket(zmq::PULL).unwrap();
    tasks.connect(tasks_at).unwrap();
    let sink = context.socket(zmq::PUSH).unwrap();
    sink.connect(sink_at).unwrap();
    (tasks, sink)
}

struct Reaper(Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------- round trips

/// The round-trip rows at 32 B and 1 KiB: the chat (echo and stdin-answered)
/// against its baselines, and the ratios whose targets guard it.
fn round_trip_rows(table: &mut Table, settings: &Settings) {
    for size in [32, 1024] {
        let mut chat = Vec::new();
        let mut zmq_rr = Vec::new();
        let mut envelope = Vec::new();
        let mut sockets = Vec::new();
        let mut tcp = Vec::new();
        let mut operator = Vec::new();
        for _ in 0..settings.runs {
            let [chat_rt, envelope_rt, sockets_rt, zmq_rt, operator_rt] =
                interleaved_round_trips(size, settings.messages);
            chat.push(chat_rt);
            operator.push(operator_rt);
            envelope.push(envelope_rt);
            sockets.push(sockets_rt);
            zmq_rr.push(zmq_rt);
            tcp.push(tcp_round_trip(size, settings.messages));
        }
        let zmq_median = median(&zmq_rr);
        table.time_row(
            &format!("chat round trip, {size} B"),
            &chat,
            Some((zmq_median, "zmq REQ/REP")),
        );
        table.time_row(
            &format!("chat round trip, the server answering from stdin, {size} B"),
            &operator,
            Some((zmq_median, "zmq REQ/REP")),
        );
        table.time_row(&format!("zmq REQ/REP round trip, {size} B"), &zmq_rr, None);
        table.time_row(
            &format!("zmq DEALER, chat's envelope and heartbeats, {size} B"),
            &envelope,
            Some((zmq_median, "zmq REQ/REP")),
        );
        table.time_row(
            &format!("zmq DEALER to ROUTER echo, the chat's sockets and envelope, {size} B"),
            &sockets,
            Some((zmq_median, "zmq REQ/REP")),
        );
        table.time_row(
            &format!("TCP round trip, {size} B"),
            &tcp,
            Some((zmq_median, "zmq REQ/REP")),
        );
        table.ratio_row(
            &format!("chat / zmq REQ/REP, run by run, {size} B"),
            &paired_ratios(&chat, &zmq_rr),
            None,
        );
        // What the chat's design costs in libzmq itself (its wire format,
        // then also the ROUTER that reads the message id), and what the
        // chat's own code adds on top of it.
        table.ratio_row(
            &format!("envelope / zmq REQ/REP, run by run, {size} B"),
            &paired_ratios(&envelope, &zmq_rr),
            None,
        );
        table.ratio_row(
            &format!("DEALER-ROUTER / zmq REQ/REP, run by run, {size} B"),
            &paired_ratios(&sockets, &zmq_rr),
            None,
        );
        // What reading the reply from stdin adds to the echo: a poll of
        // stdin and a read per message (a guard: no target).
        table.ratio_row(
            &format!("stdin-answered / echo chat, run by run, {size} B"),
            &paired_ratios(&operator, &chat),
            None,
        );
        // The target: the chat's own code costs at most 5% over its design.
        table.ratio_row(
            &format!("chat / DEALER-ROUTER, run by run, {size} B"),
            &paired_ratios(&chat, &sockets),
            Some(Target::AtMost(1.05)),
        );
    }
}

struct ChatMemory {
    client_peak_kib: u64,
    server_peak_kib: u64,
    server_rss_before_kib: u64,
    server_rss_after_kib: u64,
}

/// Starts `program` with `args` and returns it with the endpoint it reports
/// as the last word of its first stderr line ("… listening on ENDPOINT").
fn start_listener(program: &str, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    stderr.read_line(&mut ready).unwrap();
    let endpoint = ready.trim().rsplit(' ').next().unwrap().to_string();
    // The rest is read and dropped: a closed pipe would make a later
    // notice fail (and an example's eprintln! panic).
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, endpoint)
}

fn start_echo_server() -> (Child, String) {
    start_listener(SERVER, &["--bind", "127.0.0.1:0", "--echo"])
}

/// Round trips are timed in blocks of this many: the chat and its
/// baselines take turns block by block, so they share the machine's state
/// down to a tenth of a second or so.
const BLOCK: usize = 500;

/// A client process, with an echo server of its own, that makes round trips
/// a block at a time when asked and stays up between blocks.
struct Pinger {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// For chat-client: one block of input lines. None for the bare clients,
    /// which are asked for a block with one line.
    block_input: Option<Vec<u8>>,
    /// For the operator's path: the server's stdin, and one block of reply
    /// lines for it.
    operator: Option<(ChildStdin, Vec<u8>)>,
    size: usize,
    line: String,
    _processes: Reaper,
}

impl Pinger {
    /// `chat-client` in script mode against `chat-server --echo`, stdin and
    /// stdout piped as a script would have them.
    fn chat(size: usize) -> Pinger {
        let (server, endpoint) = start_echo_server();
        Pinger::chat_with(server, &endpoint, None, size)
    }

    /// `chat-client` in script mode against `chat-server` in script mode:
    /// each message is shown on the server's stdout (read and dropped
    /// here) and answered with the next line of its stdin, of the same size.
    fn operator(size: usize) -> Pinger {
        let mut server = Command::new(SERVER)
            .args(["--bind", "127.0.0.1:0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(server.stderr.take().unwrap());
        let mut ready = String::new();
        stderr.read_line(&mut ready).unwrap();
        let endpoint = ready.trim().rsplit(' ').next().unwrap().to_string();
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let mut shown = server.stdout.take().unwrap();
        std::thread::spawn(move || std::io::copy(&mut shown, &mut std::io::sink()));
        let replies = format!("{}\n", "y".repeat(size)).repeat(BLOCK).into_bytes();
        let operator = (server.stdin.take().unwrap(), replies);
        Pinger::chat_with(server, &endpoint, Some(operator), size)
    }

    /// `chat-client` against `server` at `endpoint`.
    fn chat_with(
        server: Child,
        endpoint: &str,
        operator: Option<(ChildStdin, Vec<u8>)>,
        size: usize,
    ) -> Pinger {
        let mut client = spawn_piped_client(endpoint);
        let stdin = client.stdin.take().unwrap();
        let stdout = BufReader::new(client.stdout.take().unwrap());
        let input = format!("{}\n", "x".repeat(size)).repeat(BLOCK);
        Pinger {
            stdin,
            stdout,
            block_input: Some(input.into_bytes()),
            operator,
            size,
            line: String::new(),
            _processes: Reaper(vec![server, client]),
        }
    }

    /// This executable as a bare client (`role`) against a bare echo
    /// server (`server_role`).
    fn bare(role: &str, server_role: &str, size: usize) -> Pinger {
        let (server, endpoint) = spawn_role(server_role, &[]);
        let mut client = Command::new(std::env::current_exe().unwrap())
            .args([role, &endpoint, &size.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = client.stdin.take().unwrap();
        let mut stdout = BufReader::new(client.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        Pinger {
            stdin,
            stdout,
            block_input: None,
            operator: None,
            size,
            line,
            _processes: Reaper(vec![server, client]),
        }
    }

    /// Makes BLOCK round trips and returns the time they took, from the
    /// request to the last reply as this process sees them.
    fn block(&mut self) -> Duration {
        let started = Instant::now();
        match &self.block_input {
            Some(input) => {
                let (stdin, stdout, line) = (&mut self.stdin, &mut self.stdout, &mut self.line);
                let operator = self.operator.as_mut();
                std::thread::scope(|scope| {
                    // From a thread: a block of 1 KiB lines is more than a
                    // pipe holds, and the replies must be read meanwhile.
                    scope.spawn(move || stdin.write_all(input).unwrap());
                    // The operator's replies wait in the server's stdin as
                    // a script's do: read one per message as it is shown.
                    if let Some((server_stdin, replies)) = operator {
                        scope.spawn(move || server_stdin.write_all(replies).unwrap());
                    }
                    for _ in 0..BLOCK {
                        line.clear();
                        stdout.read_line(line).unwrap();
                        assert_eq!(line.len(), self.size + 1, "every reply arrived whole");
                    }
                });
            }
            None => {
                writeln!(self.stdin, "{BLOCK}").unwrap();
                self.line.clear();
                self.stdout.read_line(&mut self.line).unwrap();
                assert_eq!(self.line.trim(), "done");
            }
        }
        started.elapsed()
    }
}

/// One round of the round-trip measurement: the chat, its two bare
/// baselines of the chat's design (the envelope against a REP echo, and
/// against a ROUTER echo) and bare REQ/REP, each its own pair of processes,
/// all up for the whole round, take turns at blocks of BLOCK round trips,
/// in an order that reverses from block to block, until each has made
/// `messages` after a warm-up block; and the chat once more, its server
/// answering from stdin (the operator's path). Returns each one's time per
/// round trip, in that order.
fn interleaved_round_trips(size: usize, messages: usize) -> [Duration; 5] {
    let envelope = "--role-zmq-envelope-client";
    let mut pingers = [
        Pinger::chat(size),
        Pinger::bare(envelope, "--role-zmq-echo", size),
        Pinger::bare(envelope, "--role-zmq-router-echo", size),
        Pinger::bare("--role-zmq-client", "--role-zmq-echo", size),
        Pinger::operator(size),
    ];
    for pinger in &mut pingers {
        pinger.block();
    }
    let blocks = messages.div_ceil(BLOCK);
    let mut totals = [Duration::ZERO; 5];
    for block in 0..blocks {
        let order = if block % 2 == 0 {
            [0, 1, 2, 3, 4]
        } else {
            [4, 3, 2, 1, 0]
        };
        for index in order {
            totals[index] += pingers[index].block();
        }
    }
    totals.map(|total| total / (blocks * BLOCK) as u32)
}

/// Peak RSS of both binaries over `messages` round trips, and the server's
/// RSS before and after them. Stdin stays open so /proc can still be read.
fn chat_memory(messages: usize) -> ChatMemory {
    let (server, endpoint) = start_echo_server();
    let server_pid = server.id();
    let mut reaper = Reaper(vec![server]);
    let mut client = spawn_piped_client(&endpoint);
    let client_pid = client.id();
    let mut stdin = client.stdin.take().unwrap();
    let mut replies = BufReader::new(client.stdout.take().unwrap());
    reaper.0.push(client);
    let total = WARM_UP + messages;
    let writer = std::thread::spawn(move || {
        for _ in 0..total {
            stdin
                .write_all(b"memory probe 32 bytes long......\n")
                .unwrap();
        }
        stdin // kept open until the probe below is read
    });
    let mut reply = String::new();
    let mut server_rss_before_kib = 0;
    for index in 0..total {
        if index == WARM_UP {
            server_rss_before_kib = proc_status_kib(server_pid, "VmRSS");
        }
        reply.clear();
        replies.read_line(&mut reply).unwrap();
    }
    let stdin = writer.join().unwrap();
    let memory = ChatMemory {
        client_peak_kib: proc_status_kib(client_pid, "VmHWM"),
        server_peak_kib: proc_status_kib(server_pid, "VmHWM"),
        server_rss_before_kib,
        server_rss_after_kib: proc_status_kib(server_pid, "VmRSS"),
    };
    drop(stdin);
    memory
}

fn tcp_round_trip(size: usize, messages: usize) -> Duration {
    let (child, address) = spawn_role("--role-tcp-echo", &[]);
    let _reaper = Reaper(vec![child]);
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut frame = (size as u32).to_le_bytes().to_vec();
    frame.extend(std::iter::repeat_n(b'x', size));
    let mut reply = vec![0u8; frame.len()];
    let mut started = Instant::now();
    for index in 0..WARM_UP + messages {
        if index == WARM_UP {
            started = Instant::now();
        }
        stream.write_all(&frame).unwrap();
        stream.read_exact(&mut reply).unwrap();
    }
    started.elapsed() / messages as u32
}

// ---------------------------------------------------------------- start-up

fn server_startup() -> Duration {
    let started = Instant::now();
    let (server, _) = start_echo_server();
    let elapsed = started.elapsed();
    drop(Reaper(vec![server]));
    elapsed
}

/// `chat-client` in script mode with stdin and stdout piped to us.
fn spawn_piped_client(endpoint: &str) -> Child {
    Command::new(CLIENT)
        .args(["--connect", endpoint])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn client_startup() -> Duration {
    let (server, endpoint) = start_echo_server();
    let mut reaper = Reaper(vec![server]);
    let started = Instant::now();
    let mut client = spawn_piped_client(&endpoint);
    client.stdin.as_mut().unwrap().write_all(b"ping\n").unwrap();
    let mut reply = String::new();
    BufReader::new(client.stdout.as_mut().unwrap())
        .read_line(&mut reply)
        .unwrap();
    let elapsed = started.elapsed();
    reaper.0.push(client);
    elapsed
}

// ---------------------------------------------------------------- concurrency

/// How many chat-clients load the server at once, row by row.
const CONCURRENCY: [usize; 4] = [1, 10, 50, 200];
/// Round trips each loading client makes.
const CONCURRENT_ROUND_TRIPS: usize = 1_000;
/// The message size under load.
const CONCURRENT_SIZE: usize = 32;

/// What one load measured: messages per second over all clients, and each
/// of the probe's round trips meanwhile.
struct Load {
    rate: f64,
    probe: Vec<Duration>,
}

/// `clients` chat-clients make their round trips all at once against the
/// server at `endpoint`, while a probe in this process (a DEALER sending
/// the chat's envelope) makes one round trip a millisecond.
fn load(endpoint: &str, clients: usize) -> Load {
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
fn concurrency_runs(clients: usize, settings: &Settings) -> usize {
    if clients >= 200 {
        settings.concurrency_runs
    } else {
        settings.concurrency_runs * 3
    }
}

/// A chat-client's request, `[id, "", text]`, once a millisecond until
/// `stop`; the time of each round trip.
fn probe_round_trips(endpoint: &str, stop: &std::sync::atomic::AtomicBool) -> Vec<Duration> {
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
fn concurrency_rows(table: &mut Table, clients: usize, runs: usize) {
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
                let (server, endpoint) = spawn_role("--role-zmq-router-echo", &[]);
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

/// The `fraction` quantile of `values` (sorted in place).
fn percentile(values: &mut [Duration], fraction: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    values[((values.len() - 1) as f64 * fraction).round() as usize]
}

// ---------------------------------------------------------------- pipelines

/// The three pipelines, run by run, and their ratios.
fn pipeline_rows(table: &mut Table, settings: &Settings) {
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

fn free_endpoint() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// Messages per second from the ventilator's "sending" line to the sink's exit.
fn time_pipeline(mut ventilator: Child, sink: &mut Child, messages: usize) -> f64 {
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

fn pipeline_example(messages: usize) -> f64 {
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
enum Relay {
    Bare,
    Reading,
}

fn pipeline_relay(relay: Relay, messages: usize) -> f64 {
    let (sink_role, worker_role) = match relay {
        Relay::Bare => ("--role-bare-sink", "--role-bare-worker"),
        Relay::Reading => ("--role-reading-sink", "--role-reading-worker"),
    };
    let count = messages.to_string();
    let (mut sink, sink_at) = spawn_role(sink_role, &[&count]);
    let tasks = format!("tcp://{}", free_endpoint());
    let (worker, _) = spawn_role(worker_role, &[&tasks, &sink_at]);
    let _reaper = Reaper(vec![worker]);
    let (ventilator, _) = spawn_role("--role-bare-ventilator", &[&tasks, &count]);
    let rate = time_pipeline(ventilator, &mut sink, messages);
    let _ = sink.wait();
    rate
}

/// An example's release build, if it exists.
fn built_example(name: &str) -> Option<String> {
    let bench = std::env::current_exe().ok()?;
    let path = bench.parent()?.parent()?.join("examples").join(name);
    path.exists().then(|| path.to_string_lossy().into_owned())
}

fn example_path(name: &str) -> String {
    let bench = std::env::current_exe().unwrap();
    let profile = bench.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile.join("examples").join(name);
    assert!(
        path.exists(),
        "{} missing: run `cargo build --release --examples`",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------- AMQP

/// Messages per AMQP run: issue 18's 10,000 persistent messages.
const AMQP_MESSAGES: usize = 10_000;

/// A publisher as the Python `message_queue` library publishes: pika, a
/// durable queue, persistent JSON, each message confirmed before the next.
const PYTHON_PUBLISHER: &str = r#"
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

/// The AMQP example's publisher (pipelined confirms, one by one, without
/// confirms) and the Python one, and its subscriber at prefetch 1 and 1000,
/// each moving 10,000 persistent messages through the broker on
/// 127.0.0.1:5672, timed from the process's start to its exit. Skipped,
/// with a note, without a broker or the example.
fn amqp_rows(table: &mut Table, runs: usize) {
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
    let publishers: [(&str, Option<&str>); 4] = [
        ("pipelined confirms (--in-flight 1024)", Some("1024")),
        ("confirmed one by one (--in-flight 1)", Some("1")),
        ("without confirms (--in-flight 0)", Some("0")),
        ("Python, as message_queue publishes", None),
    ];
    let mut published: [Vec<f64>; 4] = Default::default();
    let mut consumed: [Vec<f64>; 2] = Default::default();
    for run in 0..runs {
        let queues: Vec<String> = (0..4)
            .map(|slot| format!("zmq-chat-bench.{}.{run}.{slot}", std::process::id()))
            .collect();
        for turn in 0..4 {
            let slot = (run + turn) % 4;
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
        // Each subscriber drains a queue just filled; the other two are
        // drained untimed.
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
        for queue in &queues[2..] {
            subscribe_all(&example, queue, "1000");
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
    if !published[3].is_empty() {
        // Information only, as every example's row.
        table.ratio_row(
            "AMQP pipelined / Python message_queue publisher, run by run",
            &paired(&published[0], &published[3]),
            None,
        );
    } else {
        table.note(
            "Python publisher skipped: python3 with pika is not installed (pip install pika)"
                .into(),
        );
    }
    table.ratio_row(
        "AMQP pipelined / unconfirmed publisher, run by run",
        &paired(&published[0], &published[2]),
        None,
    );
    table.ratio_row(
        "AMQP subscriber prefetch 1000 / prefetch 1, run by run",
        &paired(&consumed[1], &consumed[0]),
        None,
    );
}

/// Runs `command` with `input` on stdin to its end; whether it succeeded.
fn run_with_input(command: &mut Command, input: &str) -> bool {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the publisher");
    let mut stdin = child.stdin.take().unwrap();
    let written = stdin.write_all(input.as_bytes());
    drop(stdin);
    written.is_ok() && child.wait().is_ok_and(|status| status.success())
}

/// Consumes [`AMQP_MESSAGES`] from `queue` with the example's subscriber.
fn subscribe_all(example: &str, queue: &str, prefetch: &str) -> bool {
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

// ---------------------------------------------------------------- reporting

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Each run's time in `a` divided by the same run's time in `b`.
fn paired_ratios(a: &[Duration], b: &[Duration]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
        .collect()
}

fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn median_rate(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// A target on a ratio.
#[derive(Clone, Copy)]
enum Target {
    AtMost(f64),
    AtLeast(f64),
}

impl Target {
    fn met_by(self, ratio: f64) -> bool {
        match self {
            Target::AtMost(limit) => ratio <= limit,
            Target::AtLeast(limit) => ratio >= limit,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::AtMost(limit) => write!(f, "≤ {limit:.2}x"),
            Target::AtLeast(limit) => write!(f, "≥ {limit:.2}x"),
        }
    }
}

/// A distribution-free confidence interval (at least 95%, or the whole range
/// when there are too few values) for the median of `sorted`: the k-th
/// smallest and k-th largest values, with k the largest for which
/// P(Binomial(n, 1/2) < k) ≤ 2.5%.
fn median_interval(sorted: &[f64]) -> (f64, f64) {
    let n = sorted.len();
    let mut below = 0.0; // P(X < k), X ~ Binomial(n, 1/2)
    let mut k = 0;
    for candidate in 0..n / 2 {
        // P(X = candidate) = C(n, candidate) / 2^n
        let probability = (0..candidate).fold(1.0, |p, i| p * (n - i) as f64 / (i + 1) as f64)
            / 2f64.powi(n as i32);
        if below + probability > 0.025 {
            break;
        }
        below += probability;
        k = candidate + 1;
    }
    let k = k.max(1);
    (sorted[k - 1], sorted[n - k])
}

#[derive(Default)]
struct Table {
    rows: Vec<String>,
    notes: Vec<String>,
}

fn micros(duration: Duration) -> String {
    format!("{:.1} µs", duration.as_secs_f64() * 1e6)
}

impl Table {
    fn time_row(&mut self, name: &str, values: &[Duration], baseline: Option<(Duration, &str)>) {
        let mut sorted = values.to_vec();
        sorted.sort();
        let median = median(values);
        let ratio = baseline.map_or(String::new(), |(base, label)| {
            format!("{:.3}x {label}", median.as_secs_f64() / base.as_secs_f64())
        });
        let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
        let n = values.len();
        self.rows.push(format!(
            "| {name} | {} | {} | {} | {n} | {ratio} |",
            micros(median),
            micros(min),
            micros(max)
        ));
    }

    fn rate_row(&mut self, name: &str, values: &[f64], baseline: Option<f64>) {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = median_rate(values);
        let ratio = baseline.map_or(String::new(), |base| format!("{:.3}x bare", median / base));
        let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
        let n = values.len();
        self.rows.push(format!(
            "| {name} | {median:.0} | {min:.0} | {max:.0} | {n} | {ratio} |"
        ));
    }

    /// Ratios of measurements taken back to back in the same round: slow
    /// drift of the machine cancels out of each, so their median is the
    /// verdict on `target` (if any), given with its 95% confidence interval.
    fn ratio_row(&mut self, name: &str, ratios: &[f64], target: Option<Target>) {
        let mut sorted = ratios.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
        let n = ratios.len();
        let (low, high) = median_interval(&sorted);
        let verdict = match target {
            Some(target) if target.met_by(median) => format!("; target {target}: met"),
            Some(target) => format!("; target {target}: NOT met"),
            None => String::new(),
        };
        self.rows.push(format!(
            "| {name} | {median:.3}x | {min:.3}x | {max:.3}x | {n} | paired; 95% CI of median {low:.3}x–{high:.3}x{verdict} |"
        ));
    }

    fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    fn print(&self, settings: &Settings) {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
                })
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!("machine: {cores} cores, {cpu}");
        println!(
            "settings: {} round trips per run in blocks of {BLOCK} after a warm-up block, {} runs of {} pipeline messages, {} start-ups",
            settings.messages,
            settings.pipeline_runs,
            settings.pipeline_messages,
            settings.startups
        );
        println!();
        println!("| measurement | median | min | max | runs | ratio |");
        println!("|---|---|---|---|---|---|");
        for row in &self.rows {
            println!("{row}");
        }
        println!();
        for note in &self.notes {
            println!("- {note}");
        }
    }
}
