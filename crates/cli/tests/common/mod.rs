//! Shared helpers of the binary's integration tests: start a real `pylon serve` process
//! on a free loopback port, talk to it, stop it.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A `pylon serve` child process, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts `pylon serve` on an OS-chosen loopback port with the given data directory and
    /// waits until it logs its address.
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra_args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pylon"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra_args)
            .env("PYLON_LOG", "info,pylon=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn()
            .expect("failed to start the pylon binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[pylon] {line}");
                let _ = tx.send(line);
            }
        });
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("pylon serve did not log its address within 30 s");
            if let Some(addr) = listening_address(&line) {
                server.addr = addr;
                return server;
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        terminate_child(&mut self.child, "pylon", timeout)
    }

    /// Resident memory of the server process in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc status of the server");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line in /proc status")
    }

    /// Returns whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait on pylon").is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM to `child` and waits up to `timeout` for it to exit. `name` labels the
/// process in failure messages.
pub fn terminate_child(child: &mut Child, name: &str, timeout: Duration) -> ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("failed to run kill");
    assert!(status.success(), "kill -TERM {name} failed");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait on child process") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not exit within {timeout:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn listening_address(line: &str) -> Option<SocketAddr> {
    if !line.contains("pylon node listening") {
        return None;
    }
    let start = line.find("address=")? + "address=".len();
    line[start..].split_whitespace().next()?.parse().ok()
}

/// Sends a raw HTTP/1.1 request and returns the whole response head and any body bytes read
/// before the server closed or `Connection: close` ended it.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let response = raw_exchange(addr, request.as_bytes()).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    (status_of(&text), text)
}

/// Writes `request` and reads one response: its head and a body of `Content-Length` bytes,
/// or everything until the server closes (at most 10 s).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect to pylon");
    stream.write_all(request).await.expect("write request");
    let mut out = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            if response_complete(&out) {
                return;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let read = tokio::time::timeout(Duration::from_secs(10), read).await;
    assert!(
        read.is_ok(),
        "no complete response within 10 s: {:?}",
        String::from_utf8_lossy(&out)
    );
    out
}

fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok());
    match length {
        Some(length) => buf.len() >= end + 4 + length,
        // 101 and other bodiless responses end with the head.
        None => !head.contains("transfer-encoding"),
    }
}

/// Returns the status code in the first line of an HTTP response.
pub fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// Root of the repository, where `tests/python` and `tests/browser` live.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Returns the Python interpreter of the test virtualenv that `scripts/setup-test-deps`
/// creates.
pub fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("PYLON_TEST_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = repo_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "missing {}: run scripts/setup-test-deps first (or set PYLON_TEST_PYTHON)",
        venv.display()
    );
    venv
}

/// Runs a command to completion within `timeout` and returns its exit status and output.
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> (ExitStatus, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("failed to run {command:?}: {error}"));
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait on child") {
            let output = child.wait_with_output().expect("collect output");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            return (status, text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collect output");
            panic!(
                "{command:?} did not finish within {timeout:?}; output:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fetches `/metrics` over HTTPS with Python's standard library, skipping verification
/// of the self-signed certificate.
pub fn fetch_metrics_tls(server: &Server) -> String {
    let script = format!(
        "import ssl, urllib.request\n\
         context = ssl._create_unverified_context()\n\
         print(urllib.request.urlopen('https://127.0.0.1:{}/metrics', context=context, timeout=10).read().decode())",
        server.addr.port()
    );
    let (status, output) = run_with_timeout(
        Command::new(python()).args(["-c", &script]),
        Duration::from_secs(30),
    );
    assert!(status.success(), "fetching /metrics failed:\n{output}");
    output
}
