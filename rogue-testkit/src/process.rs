//! The `rogue` binary run as a user would run it, with its output collected.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// The `rogue` binary of this build (see build.rs).
pub const ROGUE: &str = env!("ROGUE_BINARY");

pub struct Running {
    child: Child,
    stderr_lines: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    stdout: Option<JoinHandle<String>>,
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Running {
    pub fn spawn(mut command: Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        let mut stdout = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            stdout.read_to_string(&mut text).unwrap();
            text
        });
        let stderr = child.stderr.take().unwrap();
        let (sender, stderr_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, stderr_lines, stderr_seen: Vec::new(), stdout: Some(stdout) }
    }

    /// Waits until `count` stderr lines contain `text`.
    pub fn wait_for_stderr(&mut self, text: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.stderr_seen.iter().filter(|l| l.contains(text)).count() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => self.stderr_seen.push(line),
                Err(_) => panic!(
                    "rogue did not print {text:?} {count} times; stderr so far:\n{}",
                    self.stderr_seen.join("\n")
                ),
            }
        }
    }

    /// Waits for a stderr line containing `text`, and returns it.
    pub fn stderr_line(&mut self, text: &str) -> String {
        self.wait_for_stderr(text, 1);
        self.stderr_seen.iter().find(|l| l.contains(text)).cloned().expect("waited for")
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGINT (Ctrl-C) and waits for the process to finish.
    pub fn interrupt(self) -> Finished {
        self.signal(libc::SIGINT);
        self.finish()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we own.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for the process to finish, two minutes at most: a rogue that
    /// does not end fails its test (killed) rather than holding up the suite.
    pub fn finish(self) -> Finished {
        self.finish_within(Duration::from_secs(120))
    }

    /// Waits at most `limit` for the process to finish; past it, kills it
    /// and panics with what it printed.
    pub fn finish_within(mut self, limit: Duration) -> Finished {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.stderr_seen.extend(self.stderr_lines.try_iter());
                panic!("rogue did not end within {limit:?}; killed. Its stderr:\n{}", self.stderr_seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.stdout.take().unwrap().join().unwrap();
        self.stderr_seen.extend(self.stderr_lines.iter());
        Finished { status, stdout, stderr: self.stderr_seen.join("\n") }
    }
}

/// Runs `command` to its end, its stdin empty, as `output()` does but ten
/// minutes at most: a command that never ends fails its test (killed, its
/// output shown) rather than holding up the suite until CI gives up.
pub fn run(mut command: Command) -> Finished {
    const LIMIT: Duration = Duration::from_secs(600);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).unwrap();
            String::from_utf8(bytes).unwrap()
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not end within {LIMIT:?}; killed. Its stderr:\n{}", stderr.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// A test that fails before it stops its program must not leave it running
/// (an agent would keep its XDP program attached).
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command run to its end with `output()`, its output as text.
impl From<std::process::Output> for Finished {
    fn from(output: std::process::Output) -> Finished {
        Finished {
            status: output.status,
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }
}

impl Finished {
    /// A `# name value` line of the summary rogue prints on stderr.
    pub fn summary(&self, name: &str) -> String {
        let prefix = format!("# {name} ");
        self.stderr
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .next_back()
            .unwrap_or_else(|| panic!("no {name:?} in rogue's summary:\n{}", self.stderr))
            .trim()
            .to_string()
    }

    pub fn summary_number(&self, name: &str) -> u64 {
        let text = self.summary(name);
        text.split_whitespace().next().unwrap().parse().unwrap_or_else(|_| panic!("{name}: {text:?}"))
    }

    /// stdout as JSON lines.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"))).collect()
    }
}

/// GET /metrics from rogue's endpoint on 127.0.0.1:`port`, checked to be
/// OpenMetrics: each sample line as name{labels} -> value.
pub fn scrape_metrics(port: u16) -> BTreeMap<String, f64> {
    let mut stream = crate::connect_local(port, Duration::from_secs(30)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    assert!(body.trim_end().ends_with("# EOF"), "an OpenMetrics exposition ends with # EOF");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse().unwrap_or_else(|_| panic!("{l}")))
        })
        .collect()
}
