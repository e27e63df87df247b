//! Publish/subscribe: a publisher sends topic-prefixed messages, each
//! subscriber receives only the topics it subscribed to.
//!
//! Every message is one frame, `TOPIC SEQ/COUNT TEXT`; a subscription is a
//! prefix. A subscriber filters on `weather` and sees `weather 1/10 …`, never
//! `sports …`.
//!
//! **Slow joiners.** A SUB socket's subscription travels to the publisher
//! asynchronously, so messages published before it arrives are lost to that
//! subscriber. Here a subscriber says it is ready by subscribing, last, to its
//! own `!ready NAME` topic; the publisher uses an XPUB socket, which *receives*
//! subscriptions, and with `--subscribers N` waits until N ready-subscriptions
//! have arrived. Subscriptions on one connection arrive in order, so by then
//! every topic of those subscribers is registered: they get every message.
//!
//! **Slow subscribers.** PUB never blocks: when a subscriber's queue holds
//! `--hwm` messages (the high-water mark), newer messages for it are dropped.
//! A subscriber counts the gaps in the sequence numbers and reports them.
//!
//! **Proxy.** `proxy` binds an XSUB socket for publishers and an XPUB socket
//! for subscribers and forwards both ways with `zmq::proxy`: publishers and
//! subscribers only know the proxy's addresses, never each other's.
//!
//! **Ending.** A subscriber ends when every topic's END mark has come, or
//! after `--idle-ms` without a message once some came (an END can itself be
//! dropped at the high-water mark; the publisher sends each a few times, a
//! little apart, to give a slow subscriber's queue room), or after `--wait`
//! seconds if nothing came at all; it then reports what it got, per topic,
//! and so it does on Ctrl-C.
//!
//! ```sh
//! cargo run --example pubsub -- subscriber --topics weather        # terminal 1
//! cargo run --example pubsub -- subscriber --topics weather,sports # terminal 2
//! cargo run --example pubsub -- publisher --subscribers 2          # terminal 3
//!
//! cargo run --example pubsub -- proxy                              # via a proxy
//! cargo run --example pubsub -- subscriber --connect 127.0.0.1:5560
//! cargo run --example pubsub -- publisher --connect 127.0.0.1:5559 --subscribers 1
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use zmq_chat::address::{Endpoint, Role};
use zmq_chat::cli;
use zmq_chat::display::escape_for_terminal;
use zmq_chat::exit::Exit;
use zmq_chat::shutdown::Shutdown;
use zmq_chat::terminal::print_line;

const PROGRAM: &str = "pubsub";
const READY_PREFIX: &str = "!ready ";
const END_MARK: &str = "END";

/// How many times the publisher sends each END mark, and how far apart: a
/// slow subscriber's full queue drops one; a later one finds room.
const END_REPEATS: u32 = 3;
const END_INTERVAL: Duration = Duration::from_millis(200);

const EXIT_CODES: &str = "\
Exit status:
  0    done: the publisher published; the subscriber's topics ended (END,
       or silence) and it reported what it got; the proxy was stopped
  1    a runtime error (address in use, say)
  2    a usage error (unknown flag, malformed address)
  130  the subscriber was interrupted (Ctrl-C), after its report";

#[derive(Parser)]
#[command(about = "PUB/SUB with topics, a ready handshake and a proxy", after_help = EXIT_CODES)]
struct Args {
    #[command(subcommand)]
    role: PubSubRole,
}

#[derive(Subcommand)]
enum PubSubRole {
    /// Publish COUNT messages on each topic, then an END mark per topic
    Publisher {
        /// Listen for subscribers here (the default, 127.0.0.1:5556)
        #[arg(long, value_name = "ADDR", conflicts_with = "connect")]
        bind: Option<String>,
        /// Instead of listening, connect to a proxy's publisher side
        #[arg(long, value_name = "ADDR")]
        connect: Option<String>,
        /// Comma-separated topics to publish on
        #[arg(long, default_value = "weather,sports")]
        topics: String,
        /// Messages per topic
        #[arg(long, default_value_t = 10)]
        count: u64,
        /// Wait until this many subscribers said they are ready
        #[arg(long, default_value_t = 0)]
        subscribers: usize,
    },
    /// Print every message on the chosen topics until each topic's END
    Subscriber {
        /// The publisher (or a proxy's subscriber side)
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5556")]
        connect: String,
        /// Comma-separated topic prefixes to subscribe to
        #[arg(long, default_value = "weather")]
        topics: String,
        /// Name announced in the ready handshake (default: sub-PID)
        #[arg(long)]
        name: Option<String>,
        /// Be slow: pause this long after each message
        #[arg(long, value_name = "MS", default_value_t = 0)]
        delay_ms: u64,
        /// Receive high-water mark: messages queued before newer ones drop
        #[arg(long, default_value_t = 1000)]
        hwm: i32,
        /// Stop when nothing arrives for this long after the first message
        /// (an END mark can itself be dropped when this subscriber is slow)
        #[arg(long, value_name = "MS", default_value_t = 3000)]
        idle_ms: u64,
        /// Stop if no message at all arrives within this long
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        wait: u64,
    },
    /// Forward between publishers and subscribers that only know the proxy
    Proxy {
        /// Where publishers connect (XSUB)
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5559")]
        bind_publishers: String,
        /// Where subscribers connect (XPUB)
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5560")]
        bind_subscribers: String,
    },
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(error) => cli::report(PROGRAM, error.as_ref()),
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let context = zmq::Context::new();
    let shutdown = Shutdown::install()?;
    match args.role {
        PubSubRole::Publisher {
            bind,
            connect,
            topics,
            count,
            subscribers,
        } => {
            // XPUB: a PUB socket that also receives the subscriptions.
            let socket = context.socket(zmq::XPUB)?;
            socket.set_rcvtimeo(100)?;
            match connect {
                Some(address) => {
                    let endpoint = cli::endpoint_from_flag(&address, Role::Connect)?;
                    eprintln!("{PROGRAM}: publisher connecting to proxy {endpoint}");
                    socket.connect(&endpoint.to_string())?;
                }
                None => {
                    let address = bind.as_deref().unwrap_or("127.0.0.1:5556");
                    let endpoint = cli::endpoint_from_flag(address, Role::Bind)?;
                    let bound = bind_socket(&socket, &endpoint)?;
                    eprintln!("{PROGRAM}: publisher listening on {bound}");
                }
            }
            let topics = split_topics(&topics);
            if !wait_for_ready_subscribers(&socket, subscribers, &shutdown)? {
                return Ok(ExitCode::from(Exit::Interrupted));
            }
            publish(&socket, &topics, count)?;
            Ok(ExitCode::SUCCESS)
        }
        PubSubRole::Subscriber {
            connect,
            topics,
            name,
            delay_ms,
            hwm,
            idle_ms,
            wait,
        } => {
            let endpoint = cli::endpoint_from_flag(&connect, Role::Connect)?;
            let name = name.unwrap_or_else(|| format!("sub-{}", std::process::id()));
            let options = SubscriberOptions {
                delay: Duration::from_millis(delay_ms),
                hwm,
                idle: Duration::from_millis(idle_ms),
                wait: Duration::from_secs(wait),
            };
            subscribe(
                &context,
                &endpoint,
                &split_topics(&topics),
                &name,
                options,
                &shutdown,
            )
        }
        PubSubRole::Proxy {
            bind_publishers,
            bind_subscribers,
        } => {
            let frontend = cli::endpoint_from_flag(&bind_publishers, Role::Bind)?;
            let backend = cli::endpoint_from_flag(&bind_subscribers, Role::Bind)?;
            let publishers = context.socket(zmq::XSUB)?;
            let publishers_at = bind_socket(&publishers, &frontend)?;
            let subscribers = context.socket(zmq::XPUB)?;
            let subscribers_at = bind_socket(&subscribers, &backend)?;
            eprintln!("{PROGRAM}: proxy: publishers connect to {publishers_at}");
            eprintln!("{PROGRAM}: proxy: subscribers connect to {subscribers_at}");
            // zmq::proxy runs until the context ends or a signal interrupts it.
            match zmq::proxy(&publishers, &subscribers) {
                Ok(()) | Err(zmq::Error::EINTR) | Err(zmq::Error::ETERM) => Ok(ExitCode::SUCCESS),
                Err(error) => Err(error.into()),
            }
        }
    }
}

/// Binds `socket` to `endpoint`; the endpoint bound (with port 0, the
/// port the system chose).
fn bind_socket(socket: &zmq::Socket, endpoint: &Endpoint) -> anyhow::Result<String> {
    let endpoint = endpoint.to_string();
    socket
        .bind(&endpoint)
        .with_context(|| format!("cannot bind {endpoint}"))?;
    Ok(socket.get_last_endpoint()?.unwrap_or(endpoint))
}

/// The next message on `socket`, waited for in steps of its receive
/// timeout while `waiting()` holds and Ctrl-C has not come; `None` then.
fn next_message(
    socket: &zmq::Socket,
    shutdown: &Shutdown,
    waiting: impl Fn() -> bool,
) -> anyhow::Result<Option<Vec<u8>>> {
    loop {
        match socket.recv_bytes(0) {
            Ok(message) => return Ok(Some(message)),
            Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => {}
            Err(error) => return Err(error.into()),
        }
        if shutdown.requested() || !waiting() {
            return Ok(None);
        }
    }
}

fn split_topics(topics: &str) -> Vec<String> {
    topics
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// Reads subscription messages (`\x01TOPIC`) from the XPUB socket until
/// `wanted` distinct `!ready NAME` topics were seen. False if interrupted.
fn wait_for_ready_subscribers(
    socket: &zmq::Socket,
    wanted: usize,
    shutdown: &Shutdown,
) -> anyhow::Result<bool> {
    let mut ready = std::collections::BTreeSet::new();
    while ready.len() < wanted {
        let Some(subscription) = next_message(socket, shutdown, || true)? else {
            return Ok(false);
        };
        let Some((&1, topic)) = subscription.split_first() else {
            continue;
        };
        if let Some(name) = String::from_utf8_lossy(topic).strip_prefix(READY_PREFIX)
            && ready.insert(name.to_string())
        {
            eprintln!(
                "{PROGRAM}: subscriber {name} is ready ({}/{wanted})",
                ready.len()
            );
        }
    }
    Ok(true)
}

/// Publishes `TOPIC SEQ/COUNT TEXT` frames, then each topic's END mark
/// (a few times: see [`END_REPEATS`]).
fn publish(socket: &zmq::Socket, topics: &[String], count: u64) -> anyhow::Result<()> {
    for sequence in 1..=count {
        for topic in topics {
            socket.send(
                format!("{topic} {sequence}/{count} update {sequence} on {topic}").as_bytes(),
                0,
            )?;
        }
    }
    for repeat in 0..END_REPEATS {
        if repeat > 0 {
            thread::sleep(END_INTERVAL);
        }
        for topic in topics {
            socket.send(format!("{topic} {END_MARK}").as_bytes(), 0)?;
        }
    }
    eprintln!(
        "{PROGRAM}: published {count} messages on each of {}",
        topics.join(", ")
    );
    Ok(())
}

struct SubscriberOptions {
    delay: Duration,
    hwm: i32,
    idle: Duration,
    wait: Duration,
}

/// What one topic delivered: the sequence numbers seen, to find gaps.
#[derive(Default)]
struct TopicTally {
    received: u64,
    first: Option<u64>,
    last: u64,
    count: u64,
    ended: bool,
}

fn subscribe(
    context: &zmq::Context,
    endpoint: &Endpoint,
    topics: &[String],
    name: &str,
    options: SubscriberOptions,
    shutdown: &Shutdown,
) -> anyhow::Result<ExitCode> {
    let socket = context.socket(zmq::SUB)?;
    // Wake up every 100 ms to notice silence and Ctrl-C.
    socket.set_rcvtimeo(100)?;
    socket.set_rcvhwm(options.hwm)?;
    socket.connect(&endpoint.to_string())?;
    for topic in topics {
        socket.set_subscribe(topic.as_bytes())?;
    }
    // Last, so that when the publisher sees it, every topic above is in place.
    socket.set_subscribe(format!("{READY_PREFIX}{name}").as_bytes())?;
    eprintln!(
        "{PROGRAM}: subscriber {name} subscribed to {}",
        topics.join(", ")
    );

    let mut tallies: BTreeMap<String, TopicTally> = topics
        .iter()
        .map(|topic| (topic.clone(), TopicTally::default()))
        .collect();
    let started = Instant::now();
    let mut last_message: Option<Instant> = None;
    let mut ended_by = "every topic's END mark";
    while !tallies.values().all(|tally| tally.ended) {
        let not_idle = || match last_message {
            Some(at) => at.elapsed() < options.idle,
            None => started.elapsed() < options.wait,
        };
        let Some(message) = next_message(&socket, shutdown, not_idle)? else {
            ended_by = match (shutdown.requested(), last_message) {
                (true, _) => "Ctrl-C",
                (false, Some(_)) => "silence (--idle-ms) before every END mark came",
                (false, None) => "no message at all within --wait",
            };
            break;
        };
        last_message = Some(Instant::now());
        let text = String::from_utf8_lossy(&message).into_owned();
        let mut words = text.splitn(3, ' ');
        let (topic, sequence) = (
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
        );
        let Some(tally) = tallies.iter_mut().find_map(|(subscribed, tally)| {
            topic.starts_with(subscribed.as_str()).then_some(tally)
        }) else {
            continue;
        };
        if sequence == END_MARK {
            tally.ended = true;
            continue;
        }
        print_line(format_args!("{}", escape_for_terminal(&text)));
        let (sequence, count) = sequence.split_once('/').unwrap_or((sequence, "0"));
        if let (Ok(sequence), Ok(count)) = (sequence.parse::<u64>(), count.parse::<u64>()) {
            tally.received += 1;
            tally.first.get_or_insert(sequence);
            tally.last = sequence;
            tally.count = count;
        }
        thread::sleep(options.delay);
    }
    eprintln!("{PROGRAM}: {name}: ended by {ended_by}");
    for (topic, tally) in &tallies {
        let first = tally.first.unwrap_or(0);
        // From the first message seen to the last published (each says
        // how many there are), or to the last seen if none said.
        let expected = match tally.received {
            0 => 0,
            _ => tally.count.max(tally.last).saturating_sub(first) + 1,
        };
        let missing = expected.saturating_sub(tally.received);
        eprintln!(
            "{PROGRAM}: {name}: {topic}: received {} (seq {first}..{}), {missing} missing{}",
            tally.received,
            tally.last,
            if missing > 0 {
                " (dropped at the high-water mark: this subscriber was too slow)"
            } else if tally.received == 0 {
                " (nothing on this topic: is it published?)"
            } else {
                ""
            }
        );
    }
    Ok(if shutdown.requested() {
        ExitCode::from(Exit::Interrupted)
    } else {
        ExitCode::SUCCESS
    })
}
