//! The RabbitMQ broker the AMQP tests share: the one
//! `ZMQ_CHAT_TEST_AMQP_URL` names, else one listening on 127.0.0.1:5672,
//! else a private node started with `scripts/rabbitmq` on free ports (and
//! stopped when the test binary ends); and nodes of a test's own.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A broker's usual address: used when something listens there.
pub const USUAL_BROKER: &str = "127.0.0.1:5672";

/// The environment variable that names the broker to test against.
pub const BROKER_VARIABLE: &str = "ZMQ_CHAT_TEST_AMQP_URL";

/// The broker these tests share, found or started once per test binary.
pub enum Broker {
    Ready(String),
    Missing(String),
}

pub fn shared_broker() -> &'static Broker {
    static SHARED: OnceLock<Broker> = OnceLock::new();
    SHARED.get_or_init(|| {
        if let Ok(url) = std::env::var(BROKER_VARIABLE) {
            return Broker::Ready(url);
        }
        let usual: SocketAddr = USUAL_BROKER.parse().unwrap();
        if TcpStream::connect_timeout(&usual, Duration::from_secs(1)).is_ok() {
            return Broker::Ready(format!("amqp://guest:guest@{USUAL_BROKER}/%2f"));
        }
        if !OwnBroker::installed() {
            return Broker::Missing(format!(
                "no AMQP broker on {USUAL_BROKER}, none named by {BROKER_VARIABLE}, and RabbitMQ is not installed to start one (Debian: apt-get install rabbitmq-server)"
            ));
        }
        let broker = OwnBroker::start("tests");
        let url = broker.url();
        broker.stop_when_this_process_ends();
        Broker::Ready(url)
    })
}

/// A queue or exchange name no other test (or earlier run) uses.
pub fn unique(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("zmq-chat-test.{test}.{}.{nanos}", std::process::id())
}

/// A RabbitMQ node of the tests' own (its own ports and data), so that
/// restarting it cannot disturb the other tests; stopped and removed on drop.
pub struct OwnBroker {
    pub name: String,
    pub port: String,
    pub dist_port: String,
}

impl OwnBroker {
    pub fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/rabbitmq")
    }

    /// Whether Debian's rabbitmq-server is installed, as the script needs.
    pub fn installed() -> bool {
        std::path::Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server").exists()
    }

    pub fn run(&self, action: &str) {
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

    /// Starts a node named after `purpose` and this process.
    pub fn start(purpose: &str) -> OwnBroker {
        OwnBroker::start_configured(purpose, "", "")
    }

    /// Starts a node named after `purpose` with `config` as its
    /// rabbitmq.conf (`consumer_timeout = 3000`, say) and `advanced` as its
    /// advanced.config (Erlang terms), each if not empty.
    pub fn start_configured(purpose: &str, config: &str, advanced: &str) -> OwnBroker {
        let broker = OwnBroker {
            name: format!("zmqchat-{purpose}-{}", std::process::id()),
            port: free_ports(1).to_string(),
            dist_port: free_ports(1).to_string(),
        };
        // scripts/rabbitmq points RABBITMQ_CONFIG_FILE and
        // RABBITMQ_ADVANCED_CONFIG_FILE here.
        let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/rabbitmq")
            .join(&broker.name);
        for (file, text) in [("rabbitmq.conf", config), ("advanced.config", advanced)] {
            if !text.is_empty() {
                std::fs::create_dir_all(&folder).expect("the node's folder");
                std::fs::write(folder.join(file), text).expect("the node's configuration");
            }
        }
        watch_node(&broker.name, &broker.port, &broker.dist_port);
        broker.run("start");
        broker
    }

    /// Leaves the node to its watcher (see [`watch_node`]): a node shared
    /// by all the tests of this binary has no test to stop it.
    pub fn stop_when_this_process_ends(self) {
        std::mem::forget(self);
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }
}

/// Hands a node to `scripts/rabbitmq watch`, which stops it (and removes
/// its data) once this test process has ended, however it ends: a test
/// killed or aborted runs no `Drop`, and must leave no broker behind.
pub fn watch_node(name: &str, port: &str, dist_port: &str) {
    let pid = std::process::id().to_string();
    // In a session of its own (setsid --fork returns at once), so that it
    // outlives this process and is nobody's child to wait for.
    let status = Command::new("setsid")
        .args(["--fork", "bash"])
        .arg(OwnBroker::script())
        .args(["watch", &pid, name, port, dist_port])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run setsid bash scripts/rabbitmq watch");
    assert!(status.success(), "scripts/rabbitmq watch did not start");
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

/// `count` consecutive TCP ports on 127.0.0.1 that were free a moment ago,
/// for RabbitMQ, which must be told its ports before it starts and cannot
/// report ones the system picked. They are taken below the system's
/// ephemeral range (where no connection's own port is ever put, as one
/// could be between this check and the broker's start) and apart for each
/// call of this process, so that brokers started at once do not collide.
pub fn free_ports(count: u16) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000;
    let span = ephemeral_start.saturating_sub(low + 1000).max(1000);
    let seed = (std::process::id() % u32::from(span)) as u16;
    for _ in 0..200 {
        let offset = NEXT.fetch_add(count.max(8), Ordering::Relaxed);
        let base = low + (seed.wrapping_add(offset)) % span;
        let all_free =
            (0..count).all(|step| std::net::TcpListener::bind(("127.0.0.1", base + step)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {count} consecutive free ports on 127.0.0.1");
}

/// A port nothing listens on (a broker that is not there).
pub fn free_port() -> u16 {
    free_ports(1)
}

/// A three-node RabbitMQ cluster of this test's own (scripts/rabbitmq
/// cluster start), stopped and removed on drop.
pub struct Cluster {
    prefix: String,
    port: u16,
    dist_port: u16,
}

impl Cluster {
    pub fn start() -> Cluster {
        let cluster = Cluster {
            prefix: format!("zmqchat-failover-{}-", std::process::id()),
            port: free_ports(3),
            dist_port: free_ports(3),
        };
        for n in 1..=3 {
            let [name, port, dist] = cluster.node(n);
            watch_node(&name, &port, &dist);
        }
        cluster.script(&["cluster", "start"]);
        cluster
    }

    fn script(&self, args: &[&str]) -> String {
        let (port, dist) = (self.port.to_string(), self.dist_port.to_string());
        let mut all = args.to_vec();
        if args[0] == "cluster" {
            all.extend([self.prefix.as_str(), &port, &dist]);
        }
        let output = Command::new("bash")
            .arg(OwnBroker::script())
            .args(&all)
            .output()
            .expect("run scripts/rabbitmq");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "scripts/rabbitmq {args:?}: {stderr}"
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Node `n` (1 to 3): its name and ports, as scripts/rabbitmq takes them.
    fn node(&self, n: u16) -> [String; 3] {
        [
            format!("{}{n}", self.prefix),
            (self.port + n - 1).to_string(),
            (self.dist_port + n - 1).to_string(),
        ]
    }

    /// The URL of each node, node `first` first, then the next ones.
    pub fn urls(&self, first: u16) -> Vec<String> {
        (0..3)
            .map(|step| {
                let offset = (first - 1 + step) % 3;
                format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port + offset)
            })
            .collect()
    }

    /// `--url` for each node, node `first` first, then the next ones.
    pub fn url_args(&self, first: u16) -> Vec<String> {
        self.urls(first)
            .into_iter()
            .flat_map(|url| ["--url".to_string(), url])
            .collect()
    }

    /// Stops node `n` at once, as a crash would.
    pub fn kill(&self, n: u16) {
        let [name, port, dist] = self.node(n);
        let said = self.script(&["kill", &name, &port, &dist]);
        eprintln!("{}", said.trim());
    }

    /// Starts node `n` again (it is still a member of the cluster).
    pub fn restart(&self, n: u16) {
        let [name, port, dist] = self.node(n);
        self.script(&["start", &name, &port, &dist]);
    }

    /// Waits until every node is a member of quorum queue `queue` online
    /// again (after a restart, a node catches up on the queue's log before
    /// it counts toward a majority): a quorum queue survives one node lost
    /// at a time.
    pub fn wait_all_online(&self, queue: &str) {
        super::wait_until_within(Duration::from_secs(120), "every node online", || {
            let listing = self.rabbitmqctl(&["list_queues", "name", "online"]);
            listing.lines().any(|line| {
                line.split_once('\t')
                    .is_some_and(|(name, online)| name == queue && online.matches('@').count() == 3)
            })
        });
    }

    /// What `rabbitmqctl ARGS --quiet --no-table-headers` prints, asked of
    /// the first node that answers.
    fn rabbitmqctl(&self, args: &[&str]) -> String {
        for n in 1..=3 {
            let output = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
                .args(["-n", &format!("{}{n}@localhost", self.prefix)])
                .args(args)
                .args(["--quiet", "--no-table-headers"])
                .output()
                .expect("run rabbitmqctl");
            if output.status.success() {
                return String::from_utf8_lossy(&output.stdout).into_owned();
            }
        }
        String::new()
    }

    /// The node (1 to 3) that leads quorum queue `queue`.
    pub fn leader(&self, queue: &str) -> u16 {
        let output = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
            .args(["-n", &format!("{}2@localhost", self.prefix)])
            .args([
                "list_queues",
                "name",
                "leader",
                "--quiet",
                "--no-table-headers",
            ])
            .output()
            .expect("run rabbitmqctl");
        let listing = String::from_utf8_lossy(&output.stdout);
        let leader = listing
            .lines()
            .find_map(|line| {
                let (name, leader) = line.split_once('\t')?;
                (name == queue).then_some(leader.trim().strip_suffix("@localhost")?)
            })
            .unwrap_or_else(|| panic!("no leader for {queue} in {listing:?}"));
        leader
            .strip_prefix(&self.prefix)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("leader {leader} is not a node of this cluster"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(OwnBroker::script())
            .args(["cluster", "stop", &self.prefix])
            .args([self.port.to_string(), self.dist_port.to_string()])
            .output();
        for n in 1..=3 {
            let data = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/rabbitmq")
                .join(format!("{}{n}", self.prefix));
            let _ = std::fs::remove_dir_all(data);
        }
    }
}
