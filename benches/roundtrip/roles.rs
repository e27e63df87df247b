//! The baseline peers: this same executable, started by the benchmark
//! with a role as its subcommand (`roundtrip zmq-echo`, …), so that each
//! floor runs in a process of its own, as the chat's programs do.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A baseline peer's role and its arguments.
#[derive(clap::Subcommand)]
pub enum Role {
    /// A REP socket echoing each message; prints its endpoint
    ZmqEcho,
    /// A ROUTER echoing each request's frames, as chat-server's socket
    /// does for the usual message with no chat code; prints its endpoint
    ZmqRouterEcho,
    /// A REQ client (a DEALER sending the chat's envelope with its
    /// heartbeats, with --envelope) making round trips of SIZE bytes to
    /// ENDPOINT, as many as each stdin line asks, saying "done" after each
    ZmqClient {
        endpoint: String,
        size: usize,
        #[arg(long)]
        envelope: bool,
    },
    /// A TCP echo of length-prefixed messages; prints its address
    TcpEcho,
    /// A PULL sink of TOTAL messages (looking into each, with --reading);
    /// prints its endpoint
    Sink {
        total: usize,
        #[arg(long)]
        reading: bool,
    },
    /// A relay worker: PULLs from TASKS and PUSHes each on to SINK (a copy
    /// of what it looked into, with --reading)
    Worker {
        tasks: String,
        sink: String,
        #[arg(long)]
        reading: bool,
    },
    /// A PUSH ventilator of TOTAL tasks bound at BIND
    Ventilator { bind: String, total: usize },
    /// A bare lapin RPC echo on QUEUE (with the desk's guarantees, with
    /// --durable); prints its queue when ready
    LapinEcho {
        queue: String,
        #[arg(long)]
        durable: bool,
    },
    /// A bare lapin RPC client asking COUNT questions in turn on QUEUE
    LapinClient {
        queue: String,
        count: usize,
        #[arg(long)]
        durable: bool,
    },
}

impl Role {
    /// Does what the role does, until it is done or killed.
    pub fn run(self) {
        let context = zmq::Context::new();
        match self {
            Role::ZmqEcho => {
                let socket = context.socket(zmq::REP).unwrap();
                socket.bind("tcp://127.0.0.1:*").unwrap();
                println!("{}", socket.get_last_endpoint().unwrap().unwrap());
                loop {
                    let message = socket.recv_msg(0).unwrap();
                    socket.send(message, 0).unwrap();
                }
            }
            Role::ZmqRouterEcho => {
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
            Role::ZmqClient {
                endpoint,
                size,
                envelope,
            } => {
                // The bare client runs in its own process, like chat-client, and
                // makes round trips in blocks: each stdin line asks for a number
                // of them, and "done" says they are made. The envelope variant
                // sends what chat-client puts on the wire, with its socket
                // options, and nothing else: a DEALER sending [id, "", text]
                // with ZMTP heartbeats and a receive timeout.
                let socket = context
                    .socket(if envelope { zmq::DEALER } else { zmq::REQ })
                    .unwrap();
                if envelope {
                    socket.set_heartbeat_ivl(1000).unwrap();
                    socket.set_heartbeat_timeout(3000).unwrap();
                    socket.set_rcvtimeo(100).unwrap();
                }
                socket.connect(&endpoint).unwrap();
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
            Role::TcpEcho => {
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
            Role::Sink { total, reading } => {
                let socket = context.socket(zmq::PULL).unwrap();
                socket.bind("tcp://127.0.0.1:*").unwrap();
                println!("{}", socket.get_last_endpoint().unwrap().unwrap());
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
            Role::Worker {
                tasks,
                sink,
                reading: false,
            } => {
                let (tasks, sink) = relay_sockets(&context, &tasks, &sink);
                loop {
                    let task = tasks.recv_msg(0).unwrap();
                    sink.send(task, 0).unwrap();
                }
            }
            Role::Worker {
                tasks,
                sink,
                reading: true,
            } => {
                let (tasks, sink) = relay_sockets(&context, &tasks, &sink);
                let mut task = zmq::Message::new();
                loop {
                    tasks.recv(&mut task, 0).unwrap();
                    sink.send(black_box(&task[..]), 0).unwrap();
                }
            }
            Role::Ventilator { bind, total } => {
                let socket = context.socket(zmq::PUSH).unwrap();
                socket.set_linger(-1).unwrap();
                socket.bind(&bind).unwrap();
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
            Role::LapinEcho { queue, durable } => crate::desk::run_role(&queue, None, durable),
            Role::LapinClient {
                queue,
                count,
                durable,
            } => crate::desk::run_role(&queue, Some(count), durable),
        }
    }
}

/// Starts this executable as the role `args` name (the role, then its
/// arguments); with the endpoint it prints first, if it prints one.
pub fn spawn_role(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    // Echo servers and sinks print their endpoint first.
    if !matches!(args.first(), Some(&("worker" | "ventilator"))) {
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
