//! The benchmark's child processes: starting them, reading their ready
//! lines, reaping them, and what /proc says of them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::SERVER;

/// Reads `stream` until a line containing `needle` (10 s at most), then
/// goes on draining it on a thread of its own, so the child never blocks
/// on a full pipe.
pub fn wait_for_line(stream: impl Read + Send + 'static, needle: &str) {
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

pub struct Reaper(pub Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `program` with `args` and returns it with the endpoint it reports
/// as the last word of its first stderr line ("… listening on ENDPOINT").
pub fn start_listener(program: &str, args: &[&str]) -> (Child, String) {
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

pub fn start_echo_server() -> (Child, String) {
    start_listener(SERVER, &["--bind", "127.0.0.1:0", "--echo"])
}

pub fn free_endpoint() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// An example's release build, if it exists.
pub fn built_example(name: &str) -> Option<String> {
    let bench = std::env::current_exe().ok()?;
    let path = bench.parent()?.parent()?.join("examples").join(name);
    path.exists().then(|| path.to_string_lossy().into_owned())
}

pub fn example_path(name: &str) -> String {
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

/// Runs `command` with `input` on stdin to its end; whether it succeeded.
pub fn run_with_input(command: &mut Command, input: &str) -> bool {
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

pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
