//! Helpers shared by the integration tests: spawn the real binaries, feed
//! their stdin, and read what they print, with a deadline on every wait.

#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

pub mod broker;

#[path = "../../src/fixture/shared.rs"]
mod shared;
// Each test file uses a different subset (as for dead_code above).
#[allow(unused_imports)]
pub use shared::{DEADLINE, Scratch, peer_socket};

pub const SERVER: &str = env!("CARGO_BIN_EXE_chat-server");
pub const CLIENT: &str = env!("CARGO_BIN_EXE_chat-client");

/// A running binary whose output is collected line by line.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    seen_stderr: Vec<String>,
}

fn line_reader(stream: impl Read + Send + 'static) -> Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

impl Proc {
    /// Starts `program` with `args`, stdin, stdout and stderr all piped.
    pub fn spawn(program: &str, args: &[&str]) -> Proc {
        Proc::spawn_with_env(program, args, &[])
    }

    /// Like [`Proc::spawn`], with extra environment variables.
    pub fn spawn_with_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut command = Command::new(program);
        command.args(args).envs(env.iter().copied());
        Proc::from_command(command)
    }

    /// Starts a prepared `command` with stdin, stdout and stderr piped.
    pub fn from_command(mut command: Command) -> Proc {
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let stdout = line_reader(child.stdout.take().unwrap());
        let stderr = line_reader(child.stderr.take().unwrap());
        let name = program.rsplit('/').next().unwrap_or(&program).to_string();
        Proc {
            name,
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            seen_stderr: Vec::new(),
        }
    }

    /// Starts `chat-server` with `args` and waits for its ready line;
    /// returns it with the endpoint it reported.
    pub fn server(args: &[&str]) -> (Proc, String) {
        let mut command = Command::new(SERVER);
        command.args(args);
        Proc::server_from(command)
    }

    /// Like [`Proc::server`], from a prepared command.
    pub fn server_from(command: Command) -> (Proc, String) {
        let mut server = Proc::from_command(command);
        let ready = server.stderr_line_containing("listening on ");
        let endpoint = ready.rsplit(' ').next().unwrap().to_string();
        (server, endpoint)
    }

    /// Starts `chat-server --json` with `args` and waits for its ready
    /// event (on stdout, as every event with `--json`); returns it with
    /// the endpoint it reported.
    pub fn json_server(args: &[&str]) -> (Proc, String) {
        let mut all = vec!["--json"];
        all.extend(args);
        let mut server = Proc::spawn(SERVER, &all);
        loop {
            let line = server.stdout_line();
            let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON event");
            if let Some(endpoint) = event["text"]
                .as_str()
                .and_then(|text| text.strip_prefix("listening on "))
            {
                return (server, endpoint.to_string());
            }
        }
    }

    /// Writes one line to the program's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .expect("write to stdin");
    }

    /// Writes `bytes` to the program's stdin as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin
            .write_all(bytes)
            .and_then(|_| stdin.flush())
            .expect("write to stdin");
    }

    /// Closes stdin: the program sees end of input.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// The next stdout line, or a panic naming what was expected.
    pub fn stdout_line(&mut self) -> String {
        self.stdout_line_within(DEADLINE)
    }

    /// The next stdout line, waited for up to `limit` (for what takes
    /// longer than a deadline, as a broker's failover).
    pub fn stdout_line_within(&mut self, limit: Duration) -> String {
        match self.stdout.recv_timeout(limit) {
            Ok(line) => line,
            Err(_) => {
                let stderr = self.drain_stderr();
                panic!(
                    "{}: no stdout line within {limit:?}; stderr so far: {stderr:?}",
                    self.name
                )
            }
        }
    }

    /// Waits for a stderr line containing `needle`; returns it.
    pub fn stderr_line_containing(&mut self, needle: &str) -> String {
        self.stderr_line_containing_within(needle, DEADLINE)
    }

    /// [`Proc::stderr_line_containing`] with a deadline of `limit`, for a
    /// wait that is long by nature (a thousand connections being made on a
    /// loaded machine, say).
    pub fn stderr_line_containing_within(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        if let Some(line) = self.seen_stderr.iter().find(|line| line.contains(needle)) {
            return line.clone();
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.seen_stderr.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "{}: no stderr line containing {needle:?}; stderr was {:?}",
            self.name, self.seen_stderr
        );
    }

    /// Waits for a stderr line containing `needle` as long as the program
    /// makes progress: each new stderr line must come within `silence`
    /// (a long job that reports as it goes, such as publishing thousands of
    /// messages through a failover, is not a hang; a silent one is).
    /// Returns the line and the longest silence seen.
    pub fn stderr_line_containing_while_progressing(
        &mut self,
        needle: &str,
        silence: Duration,
    ) -> (String, Duration) {
        let mut longest = Duration::ZERO;
        if let Some(line) = self.seen_stderr.iter().find(|line| line.contains(needle)) {
            return (line.clone(), longest);
        }
        let mut last = Instant::now();
        while let Ok(line) = self.stderr.recv_timeout(silence) {
            longest = longest.max(last.elapsed());
            last = Instant::now();
            self.seen_stderr.push(line.clone());
            if line.contains(needle) {
                return (line, longest);
            }
        }
        panic!(
            "{}: no stderr line containing {needle:?}, and nothing new within {silence:?}; stderr was {:?}",
            self.name, self.seen_stderr
        );
    }

    /// Every stderr line printed so far.
    pub fn drain_stderr(&mut self) -> Vec<String> {
        while let Ok(line) = self.stderr.try_recv() {
            self.seen_stderr.push(line);
        }
        self.seen_stderr.clone()
    }

    /// Every remaining stdout line up to end of output (after the process exited).
    pub fn remaining_stdout(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.stdout.recv_timeout(DEADLINE) {
            lines.push(line);
        }
        lines
    }

    /// Waits for the process to exit, within the deadline.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let stderr = self.drain_stderr();
                panic!(
                    "{} did not exit within {DEADLINE:?}; stderr: {stderr:?}",
                    self.name
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts the process is still running.
    pub fn assert_running(&mut self) {
        if self.child.try_wait().unwrap().is_some() {
            let stderr = self.drain_stderr();
            panic!("{} exited early; stderr: {stderr:?}", self.name);
        }
    }

    /// The process id, for sending signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a binary to completion with `input` on stdin; returns its exit
/// status, stdout and stderr.
pub fn run_to_end(program: &str, args: &[&str], input: &str) -> (ExitStatus, String, String) {
    let mut proc = Proc::spawn(program, args);
    if let Some(mut stdin) = proc.stdin.take() {
        // A program that fails before reading its input (a bad flag, a
        // missing key file) may already be gone: that is its answer, not a
        // test failure.
        match stdin.write_all(input.as_bytes()) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(error) => panic!("write stdin: {error}"),
        }
    }
    let status = proc.wait();
    let stdout = proc.remaining_stdout().join("\n");
    let mut stderr = proc.drain_stderr();
    while let Ok(line) = proc.stderr.recv_timeout(Duration::from_millis(200)) {
        stderr.push(line);
    }
    (status, stdout, stderr.join("\n"))
}

/// A fresh `ipc://` address in the temporary folder, where nothing listens
/// until a test binds it: for a client that must start before its server.
pub fn ipc_address(name: &str) -> String {
    format!("ipc://{}", shared::ipc_path(name).display())
}

/// Waits until `done` holds, checking every 10 ms, and fails the test
/// naming `what` if it has not within the deadline.
pub fn wait_until(what: &str, done: impl FnMut() -> bool) {
    wait_until_within(DEADLINE, what, done);
}

/// Like [`wait_until`], with a deadline of `limit` (for events that take
/// seconds by design, such as a heartbeat timeout).
pub fn wait_until_within(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The path of a compiled example, built first if need be (once per test
/// binary): `cargo test --test NAME` builds no example by itself.
pub fn example(name: &str) -> String {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static BUILT: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let test_binary = std::env::current_exe().expect("current_exe");
    let profile_dir = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = profile_dir.join("examples").join(name);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if built
        .get_or_insert_with(HashSet::new)
        .insert(name.to_string())
    {
        // The same profile and features as this test binary, so that
        // nothing else is rebuilt; a no-op when it is up to date.
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--quiet", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.ends_with("release") {
            cargo.arg("--release");
        }
        if cfg!(feature = "amqp") {
            cargo.args(["--features", "amqp"]);
        }
        let output = cargo.output().expect("run cargo build --example");
        assert!(
            output.status.success(),
            "cargo build --example {name} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert!(
        path.exists(),
        "{} is missing after building it",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

impl Proc {
    /// Waits for a stderr line containing `needle` and returns its last word
    /// (where the programs print the endpoint they bound).
    pub fn endpoint_after(&mut self, needle: &str) -> String {
        let line = self.stderr_line_containing(needle);
        line.rsplit(' ').next().unwrap_or_default().to_string()
    }
}

impl Proc {
    /// Sends a signal by name (`KILL`, `STOP`, `CONT`, …) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// How many sockets (listening, connected, internal) the process has
    /// open, from /proc: it drops by one when the process closes a connection.
    pub fn open_sockets(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc fd")
            .filter_map(Result::ok)
            .filter_map(|entry| std::fs::read_link(entry.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count()
    }

    /// The CPU time the process has used so far, from the kernel's
    /// scheduler statistics (nanoseconds on a CPU, all its threads).
    pub fn cpu_time(&self) -> Duration {
        let mut total = 0;
        let tasks =
            std::fs::read_dir(format!("/proc/{}/task", self.pid())).expect("read /proc tasks");
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            total += stat
                .split_whitespace()
                .next()
                .and_then(|nanos| nanos.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Duration::from_nanos(total)
    }

    /// The process's resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The most resident memory the process has had, in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// A field of /proc's status of the process, in KiB.
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc status"))
    }
}

/// Runs `chat-server --keygen` to write a new key file at `path`; returns
/// the file's path as text and the public key it printed.
pub fn keygen(path: &std::path::Path) -> (String, String) {
    let path = path.to_str().expect("a UTF-8 temporary path").to_string();
    let (status, stdout, stderr) = run_to_end(SERVER, &["--keygen", &path], "");
    assert!(status.success(), "keygen failed: {stderr}");
    (path, stdout.trim().to_string())
}

/// Says why a test cannot run and lets it pass locally; under `CI=true` a
/// missing prerequisite is a failure, never a silent pass. The line names
/// the test (the test harness names each test's thread after it) and what
/// it needs: `skipped: TEST: REASON`, which the README's grep lists.
pub fn skip(reason: &str) {
    let line = skip_line(reason);
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("cannot run under CI=true: {line}");
    }
    eprintln!("{line}");
}

/// What [`skip`] prints for the test running on this thread.
pub fn skip_line(reason: &str) -> String {
    let test = thread::current().name().unwrap_or("a test").to_string();
    format!("skipped: {test}: {reason}")
}
