//! The round-trip rows: the chat (answering by echo and from stdin)
//! against the bare ZeroMQ and TCP floors, block by block; its start-up
//! times and memory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::processes::{Reaper, proc_status_kib, start_echo_server};
use crate::roles::spawn_role;
use crate::stats::{median, paired_ratios};
use crate::table::{Table, Target};
use crate::{CLIENT, SERVER, Settings, WARM_UP};

/// The round-trip rows at 32 B and 1 KiB: the chat (echo and stdin-answered)
/// against its baselines, and the ratios whose targets guard it.
pub fn round_trip_rows(table: &mut Table, settings: &Settings) {
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

pub struct ChatMemory {
    client_peak_kib: u64,
    server_peak_kib: u64,
    server_rss_before_kib: u64,
    server_rss_after_kib: u64,
}

/// Round trips are timed in blocks of this many: the chat and its
/// baselines take turns block by block, so they share the machine's state
/// down to a tenth of a second or so.
pub const BLOCK: usize = 500;

/// A client process, with an echo server of its own, that makes round trips
/// a block at a time when asked and stays up between blocks.
pub struct Pinger {
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
    pub fn chat(size: usize) -> Pinger {
        let (server, endpoint) = start_echo_server();
        Pinger::chat_with(server, &endpoint, None, size)
    }

    /// `chat-client` in script mode against `chat-server` in script mode:
    /// each message is shown on the server's stdout (read and dropped
    /// here) and answered with the next line of its stdin, of the same size.
    pub fn operator(size: usize) -> Pinger {
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
    pub fn chat_with(
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

    /// This executable as a bare client (the chat's `envelope` or plain
    /// REQ) against a bare echo server (`server_role`).
    pub fn bare(envelope: bool, server_role: &str, size: usize) -> Pinger {
        let (server, endpoint) = spawn_role(&[server_role]);
        let size_text = size.to_string();
        let mut args = vec!["zmq-client", &endpoint, &size_text];
        if envelope {
            args.push("--envelope");
        }
        let mut client = Command::new(std::env::current_exe().unwrap())
            .args(args)
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
    pub fn block(&mut self) -> Duration {
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
pub fn interleaved_round_trips(size: usize, messages: usize) -> [Duration; 5] {
    let mut pingers = [
        Pinger::chat(size),
        Pinger::bare(true, "zmq-echo", size),
        Pinger::bare(true, "zmq-router-echo", size),
        Pinger::bare(false, "zmq-echo", size),
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
pub fn chat_memory(messages: usize) -> ChatMemory {
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

pub fn tcp_round_trip(size: usize, messages: usize) -> Duration {
    let (child, address) = spawn_role(&["tcp-echo"]);
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

pub fn server_startup() -> Duration {
    let started = Instant::now();
    let (server, _) = start_echo_server();
    let elapsed = started.elapsed();
    drop(Reaper(vec![server]));
    elapsed
}

/// `chat-client` in script mode with stdin and stdout piped to us.
pub fn spawn_piped_client(endpoint: &str) -> Child {
    Command::new(CLIENT)
        .args(["--connect", endpoint])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

pub fn client_startup() -> Duration {
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

/// The start-up rows and the memory notes.
pub fn start_up_and_memory_rows(table: &mut Table, settings: &Settings) {
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
}
