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

use clap::{Parser, Subcommand};
use zmq_chat::address::{Endpoint, Role};
use zmq_chat::cli;
use zmq_chat::display::escape_for_terminal;
use zmq_chat::shutdown::Shutdown;
use zmq_chat::transport::{self, Received};

const PROGRAM: &str = "pubsub";
const READY_PREFIX: &str = "!ready ";
const END_MARK: &str = "END";

#[derive(Parser)]
#[command(about = "PUB/SUB with topics, a ready handshake and a proxy", after_help = cli::EXIT_CODES_HELP)]
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
    },
    /// Forward between publishers and subscribers that only know the proxy
    Proxy {
        /// Where publishers connect (XSUB)
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5559")]
        frontend: String,
        /// Where subscribers connect (XPUB)
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5560")]
        backend: String,
    },
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => cli::report(PROGRAM, error.as_ref()),
    }
}

fn run(args: Args) -> anyhow::Result<()> {
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
            let socket = match connect {
                Some(address) => {
                    let endpoint = cli::endpoint_from_flag(&address, Role::Connect)?;
                    eprintln!("{PROGRAM}: publisher connecting to proxy {endpoint}");
                    transport::connect(&context, zmq::XPUB, &endpoint)?
                }
                None => {
                    let address = bind.as_deref().unwrap_or("127.0.0.1:5556");
                    let endpoint = cli::endpoint_from_flag(address, Role::Bind)?;
                    let (socket, bound) = transport::bind(&context, zmq::XPUB, &endpoint)?;
                    eprintln!("{PROGRAM}: publisher listening on {bound}");
                    socket
                }
            };
            let topics = split_topics(&topics);
            if !wait_for_ready_subscribers(&socket, subscribers, &shutdown)? {
                return Ok(());
            }
            publish(&socket, &topics, count)
        }
        PubSubRole::Subscriber {
            connect,
            topics,
            name,
            delay_ms,
            hwm,
            idle_ms,
        } => {
            let endpoint = cli::endpoint_from_flag(&connect, Role::Connect)?;
            let name = name.unwrap_or_else(|| format!("sub-{}", std::process::id()));
            let options = SubscriberOptions {
                delay: Duration::from_millis(delay_ms),
                hwm,
                idle: Duration::from_millis(idle_ms),
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
        PubSubRole::Proxy { frontend, backend } => {
            let frontend = cli::endpoint_from_flag(&frontend, Role::Bind)?;
            let backend = cli::endpoint_from_flag(&backend, Role::Bind)?;
            let (publishers, publishers_at) = transport::bind(&context, zmq::XSUB, &frontend)?;
            let (subscribers, subscribers_at) = transport::bind(&context, zmq::XPUB, &backend)?;
            eprintln!("{PROGRAM}: proxy: publishers connect to {publishers_at}");
            eprintln!("{PROGRAM}: proxy: subscribers connect to {subscribers_at}");
            // zmq::proxy runs until the context ends or a signal interrupts it.
            match zmq::proxy(&publishers, &subscribers) {
                Ok(()) | Err(zmq::Error::EINTR) | Err(zmq::Error::ETERM) => Ok(()),
                Err(error) => Err(error.into()),
            }
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
        let Received::Message(frames) = transport::receive(socket, shutdown, || true)? else {
            return Ok(false);
        };
        let Some(subscription) = frames.first() else {
            continue;
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

fn publish(socket: &zmq::Socket, topics: &[String], count: u64) -> anyhow::Result<()> {
    for sequence in 1..=count {
        for topic in topics {
            socket.send(
                format!("{topic} {sequence} update {sequence} on {topic}").as_bytes(),
                0,
            )?;
        }
    }
    for topic in topics {
        socket.send(format!("{topic} {END_MARK}").as_bytes(), 0)?;
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
) -> anyhow::Result<()> {
    let socket = context.socket(zmq::SUB)?;
    socket.set_ipv6(endpoint.needs_ipv6())?;
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

    let mut tallies: BTreeMap<String, TopicTally> = BTreeMap::new();
    let mut last_message: Option<Instant> = None;
    while !topics
        .iter()
        .all(|t| tallies.get(t).is_some_and(|tally| tally.ended))
    {
        let not_idle = || last_message.is_none_or(|at| at.elapsed() < options.idle);
        let Received::Message(frames) = transport::receive(&socket, shutdown, not_idle)? else {
            break;
        };
        last_message = Some(Instant::now());
        let text = String::from_utf8_lossy(&frames.concat()).into_owned();
        let mut words = text.splitn(3, ' ');
        let (topic, sequence) = (
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
        );
        let Some(subscribed) = topics.iter().find(|t| topic.starts_with(t.as_str())) else {
            continue;
        };
        let tally = tallies.entry(subscribed.clone()).or_default();
        if sequence == END_MARK {
            tally.ended = true;
            continue;
        }
        println!("{}", escape_for_terminal(&text));
        let (sequence, count) = sequence.split_once('/').unwrap_or((sequence, "0"));
        if let (Ok(sequence), Ok(count)) = (sequence.parse::<u64>(), count.parse::<u64>()) {
            tally.received += 1;
            tally.first.get_or_insert(sequence);
            tally.last = sequence;
            tally.count = count;
        }
        thread::sleep(options.delay);
    }
    for (topic, tally) in &tallies {
        let first = tally.first.unwrap_or(0);
        let expected = if tally.received == 0 {
            0
        } else {
            tally.last - first + 1
        };
        let missing = expected.saturating_sub(tally.received);
        eprintln!(
            "{PROGRAM}: {name}: {topic}: received {} (seq {first}..{}), {missing} missing{}",
            tally.received,
            tally.last,
            if missing > 0 {
                " (dropped at the high-water mark: this subscriber was too slow)"
            } else {
                ""
            }
        );
    }
    Ok(())
}
