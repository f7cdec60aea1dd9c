//! `pylon client`: lines from stdin go out as messages, replies come back on stdout, over
//! ws:// and wss://, and bad arguments or endpoints fail with a clear message.

mod common;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Server, fetch_metrics_tls, run_with_timeout};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `pylon client` with `args`, writes `input` to its stdin and closes it, and returns
/// its output. Fails the test if it runs longer than 30 seconds.
fn run_client(args: &[&str], input: &str) -> Output {
    run_client_with_bytes(args, input.as_bytes())
}

/// Runs `pylon client` like [`run_client`], with stdin bytes that need not be UTF-8.
fn run_client_with_bytes(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pylon"))
        .arg("client")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let deadline = Instant::now() + RUN_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pylon client did not exit within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn stdin_lines_are_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = server.url("/ws/echo");
    let output = run_client(&[&url], "hello\nsecond line\n");
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output), "hello\nsecond line\n");
    let stderr = stderr_of(&output);
    assert!(stderr.contains("connected to"), "{stderr}");
    assert!(
        stderr.contains("compression permessage-deflate"),
        "{stderr}"
    );
    assert!(stderr.contains("close code 1000"), "{stderr}");
}

#[test]
fn binary_lines_print_as_hex() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = server.url("/ws/echo");
    let output = run_client(&[&url, "--binary", "--no-compression"], "AB\n");
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output), "[binary, 2 bytes] 4142\n");
    assert!(!stderr_of(&output).contains("compression"));
}

#[test]
fn stdin_bytes_that_are_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = server.url("/ws/echo");

    let output = run_client_with_bytes(&[&url, "--binary"], b"A\xff\n");
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output), "[binary, 2 bytes] 41ff\n");

    // In text mode the line is skipped and the session goes on to a normal close.
    let output = run_client_with_bytes(&[&url], b"first\n\xff\xfe\nafter\n");
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output), "first\nafter\n");
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("skipped stdin line 2: it is not valid UTF-8"),
        "{stderr}"
    );
    assert!(stderr.contains("close code 1000"), "{stderr}");
}

#[test]
fn execute_sends_without_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = server.url("/ws/echo");
    let output = run_client(&[&url, "-x", "one", "-x", "two", "--wait", "0.5"], "");
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output), "one\ntwo\n");
}

#[test]
fn chat_join_with_origin_header() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = server.url("/ws/chat");
    let join = r#"{"type":"join","room":"lobby","nick":"cli"}"#;
    let output = run_client(
        &[
            &url,
            "-H",
            "Origin: http://127.0.0.1",
            "-x",
            join,
            "--wait",
            "1",
        ],
        "",
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    let stdout = stdout_of(&output);
    assert!(stdout.contains("\"joined\""), "{stdout}");
}

#[test]
fn wss_with_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let cert_dir = dir.path().join("tls");
    let (status, output) = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_pylon"))
            .args(["cert", "--out"])
            .arg(&cert_dir),
        RUN_TIMEOUT,
    );
    assert!(status.success(), "{output}");
    let cert = cert_dir.join("cert.pem");
    let key = cert_dir.join("key.pem");
    let server = Server::start_with(
        dir.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let url = format!("wss://localhost:{}/ws/echo", server.addr.port());

    let output = run_client(&[&url, "--ca-file", cert.to_str().unwrap()], "secure\n");
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output), "secure\n");

    let untrusted = run_client(&[&url], "secure\n");
    assert!(!untrusted.status.success());
    let stderr = stderr_of(&untrusted);
    assert!(stderr.contains("failed to connect to wss://"), "{stderr}");
    assert!(stderr.contains("pass --ca-file PEM"), "{stderr}");
    let untrusted_h3 = run_client(&[&url, "--http", "3"], "secure\n");
    assert!(!untrusted_h3.status.success());
    let stderr = stderr_of(&untrusted_h3);
    assert!(stderr.contains("pass --ca-file PEM"), "{stderr}");

    let insecure = run_client(&[&url, "--insecure"], "anyway\n");
    assert!(insecure.status.success(), "{}", stderr_of(&insecure));
    assert_eq!(stdout_of(&insecure), "anyway\n");
}

#[test]
fn http2_prior_knowledge() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = server.url("/ws/echo");
    let output = run_client(&[&url, "--http", "2"], "over h2c\n");
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output), "over h2c\n");
    assert!(stderr_of(&output).contains("over HTTP/2"));
}

#[test]
fn http2_and_http3_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--tls-self-signed"]);
    let url = format!("wss://localhost:{}/ws/echo", server.addr.port());
    for version in ["2", "3"] {
        let output = run_client(&[&url, "--insecure", "--http", version], "secure\n");
        assert!(
            output.status.success(),
            "HTTP/{version}: {}",
            stderr_of(&output)
        );
        assert_eq!(stdout_of(&output), "secure\n", "HTTP/{version}");
        let stderr = stderr_of(&output);
        assert!(stderr.contains(&format!("over HTTP/{version}")), "{stderr}");
    }
    let metrics = fetch_metrics_tls(&server);
    assert!(metrics.contains("transport=\"h2_tls\"} 1"), "{metrics}");
    assert!(metrics.contains("transport=\"h3\"} 1"), "{metrics}");
}

#[test]
fn bad_arguments_fail_clearly() {
    let output = run_client(&["http://127.0.0.1:1/ws/echo"], "");
    assert!(!output.status.success());
    let stderr = stderr_of(&output);
    assert!(stderr.contains("failed to connect to http://"), "{stderr}");

    let output = run_client(&["ws://127.0.0.1:1/ws/echo", "-H", "no colon"], "");
    assert!(!output.status.success());
    assert!(stderr_of(&output).contains("expected \"Name: value\""));

    let output = run_client(&["ws://127.0.0.1:1/ws/echo"], "");
    assert!(!output.status.success());
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("failed to connect to ws://127.0.0.1:1"),
        "{stderr}"
    );
}

#[test]
fn http3_client_exit_lets_node_drain() {
    let dir = tempfile::tempdir().unwrap();
    let mut server =
        Server::start_with(dir.path(), &["--tls-self-signed", "--drain-timeout", "30"]);
    let url = format!("wss://localhost:{}/ws/echo", server.addr.port());
    let mut client = Command::new(env!("CARGO_BIN_EXE_pylon"))
        .args(["client", &url, "--insecure", "--http", "3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"ready\n").unwrap();
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(client.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "ready\n");

    // The node closes the WebSocket with 1001 and then waits for the client to end the
    // stream, up to the 5 s close timeout. A client that exits without telling the
    // server over QUIC would hold the node for those 5 s.
    let started = Instant::now();
    let status = server.terminate(RUN_TIMEOUT);
    let drained_in = started.elapsed();
    assert!(status.success(), "pylon serve exited with {status}");
    assert!(
        drained_in < Duration::from_secs(4),
        "the node took {drained_in:?} to drain one HTTP/3 WebSocket"
    );
    drop(stdin);
    let output = client.wait_with_output().unwrap();
    let stderr = stderr_of(&output);
    assert!(stderr.contains("close code 1001"), "{stderr}");
}
