//! Two hosts on one machine: network namespaces joined by a veth pair, the
//! server in one, the client in the other, talking over 10.200.0.0/24 (an
//! address range that exists only inside the namespaces this test creates).
//! Taking the link down and up checks recovery across a real network path.
//!
//! Needs root and iproute2 (`ip`); otherwise it says why it skipped.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{CLIENT, Proc, SERVER};

/// The namespaces and link of one test run, removed on drop even when the
/// test fails (deleting a namespace also deletes its end of the veth pair).
struct TwoHosts {
    server_ns: String,
    client_ns: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl TwoHosts {
    fn create() -> Result<TwoHosts, String> {
        let id = std::process::id();
        let hosts = TwoHosts {
            server_ns: format!("zc-srv-{id}"),
            client_ns: format!("zc-cli-{id}"),
        };
        let (server_link, client_link) = (format!("zcs{id}"), format!("zcc{id}"));
        ip(&["netns", "add", &hosts.server_ns])?;
        ip(&["netns", "add", &hosts.client_ns])?;
        ip(&[
            "link",
            "add",
            &server_link,
            "type",
            "veth",
            "peer",
            "name",
            &client_link,
        ])?;
        ip(&["link", "set", &server_link, "netns", &hosts.server_ns])?;
        ip(&["link", "set", &client_link, "netns", &hosts.client_ns])?;
        for (ns, link, address) in [
            (&hosts.server_ns, &server_link, "10.200.0.1/24"),
            (&hosts.client_ns, &client_link, "10.200.0.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", address, "dev", link])?;
            ip(&["-n", ns, "link", "set", link, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(hosts)
    }

    /// Takes the server's end of the wire down or brings it up ("down"/"up").
    fn set_server_link(&self, state: &str) -> Result<(), String> {
        ip(&[
            "-n",
            &self.server_ns,
            "link",
            "set",
            &self.server_link(),
            state,
        ])
    }

    fn server_link(&self) -> String {
        format!("zcs{}", std::process::id())
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.server_ns]);
        let _ = ip(&["netns", "del", &self.client_ns]);
    }
}

fn in_namespace(ns: &str, program: &str, args: &[&str]) -> Proc {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    Proc::spawn("ip", &full)
}

/// Chat from one namespace to the other, then cut the link: the client
/// notices, and when the link is back the pending message is answered once.
#[test]
fn chat_between_two_network_namespaces_survives_a_link_outage() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !is_root {
        common::skip(
            "creating network namespaces needs root (run the tests as root, as .ci/run does in CI)",
        );
        return;
    }
    let hosts = match TwoHosts::create() {
        Ok(hosts) => hosts,
        Err(why) => {
            common::skip(&format!(
                "cannot create network namespaces here ({why}); needs root and iproute2 (apt-get install iproute2)"
            ));
            return;
        }
    };
    let mut server = in_namespace(&hosts.server_ns, SERVER, &["--bind", "10.200.0.1:8877"]);
    server.stderr_line_containing("listening on tcp://10.200.0.1:8877");
    let mut client = in_namespace(
        &hosts.client_ns,
        CLIENT,
        &[
            "--connect",
            "10.200.0.1:8877",
            "--liveness",
            "0.5",
            "--give-up",
            "30",
        ],
    );

    client.send_line("hello across the wire");
    assert_eq!(server.stdout_line(), "hello across the wire");
    server.send_line("hello back");
    assert_eq!(client.stdout_line(), "hello back");

    client.send_line("during the outage");
    assert_eq!(server.stdout_line(), "during the outage");
    hosts.set_server_link("down").unwrap();
    client.stderr_line_containing("lost the connection");
    // A deliberate outage length: the link stays down for half a second.
    std::thread::sleep(Duration::from_millis(500));
    hosts.set_server_link("up").unwrap();
    client.stderr_line_containing("re-sent the unanswered message");
    server.send_line("the link is back");
    assert_eq!(client.stdout_line(), "the link is back");

    client.send_line("still chatting");
    assert_eq!(
        server.stdout_line(),
        "still chatting",
        "the outage message was shown once"
    );
}
