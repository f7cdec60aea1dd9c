//! `pylon bench echo` and `pylon bench connections` over every transport, against a
//! `pylon serve` started by each test: `ws://` over HTTP/1.1 and HTTP/2 (prior knowledge),
//! and `wss://` over HTTP/1.1, HTTP/2 and HTTP/3.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Server, run_with_timeout};
use serde_json::Value;

/// Upper bound for one `pylon bench` run.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `pylon bench ARGS --json` and returns the parsed report.
fn bench_json(args: &[&str]) -> Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pylon"));
    command
        .arg("bench")
        .args(args)
        .args(["--json", "--threads", "2", "--timeout", "50"]);
    let (status, output) = run_with_timeout(&mut command, RUN_TIMEOUT);
    assert!(status.success(), "pylon bench {args:?} failed:\n{output}");
    let line = output
        .lines()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON report in the output of {args:?}:\n{output}"));
    serde_json::from_str(line).unwrap_or_else(|error| panic!("invalid JSON {line:?}: {error}"))
}

/// Runs 40 echoes over 3 WebSockets, 2 per shared connection, and checks the report.
fn check_echo(url: &str, http: &str, extra: &[&str], transport: &str) {
    let mut args = vec![
        "echo",
        "--url",
        url,
        "--http",
        http,
        "--connections",
        "3",
        "--size",
        "1000",
        "--messages",
        "40",
        "--pipeline",
        "2",
        "--streams-per-connection",
        "2",
    ];
    args.extend_from_slice(extra);
    let report = bench_json(&args);
    assert_eq!(report["transport"], transport, "{report}");
    assert_eq!(report["messages"], 40, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["timed_out"], false, "{report}");
    assert!(
        report["msgs_per_sec"].as_f64().unwrap() > 0.0,
        "no throughput: {report}"
    );
    let expected_streams = if http == "1.1" {
        Value::Null
    } else {
        Value::from(2)
    };
    assert_eq!(
        report["streams_per_connection"], expected_streams,
        "{report}"
    );
}

#[test]
fn echo_over_tls_transports() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--tls-self-signed"]);
    let url = format!("wss://localhost:{}/ws/echo", server.addr.port());
    check_echo(&url, "1.1", &["--insecure"], "h1+tls");
    check_echo(&url, "2", &["--insecure"], "h2+tls");
    check_echo(&url, "3", &["--insecure"], "h3");
}

#[test]
fn echo_over_plain_transports() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = server.url("/ws/echo");
    check_echo(&url, "1.1", &[], "h1");
    check_echo(&url, "2", &[], "h2");
}

#[test]
fn echo_trusts_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let mut cert = Command::new(env!("CARGO_BIN_EXE_pylon"));
    cert.args(["cert", "--out"]).arg(&certs);
    let (status, output) = run_with_timeout(&mut cert, RUN_TIMEOUT);
    assert!(status.success(), "pylon cert failed:\n{output}");
    let cert_path = certs.join("cert.pem");
    let key_path = certs.join("key.pem");
    let server = Server::start_with(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let url = format!("wss://localhost:{}/ws/echo", server.addr.port());
    let ca_file = cert_path.to_str().unwrap();
    check_echo(&url, "2", &["--ca-file", ca_file], "h2+tls");
    check_echo(&url, "3", &["--ca-file", ca_file], "h3");
}

#[test]
fn echo_without_trust_fails_with_hint() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--tls-self-signed"]);
    let url = format!("wss://localhost:{}/ws/echo", server.addr.port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_pylon"));
    command.args(["bench", "echo", "--url", &url, "--messages", "1"]);
    let (status, output) = run_with_timeout(&mut command, RUN_TIMEOUT);
    assert!(
        !status.success(),
        "an untrusted certificate was accepted:\n{output}"
    );
    assert!(output.contains("--insecure"), "no hint in:\n{output}");
}

#[test]
fn connections_share_http2_and_http3() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--tls-self-signed"]);
    let url = format!("wss://localhost:{}/ws/echo", server.addr.port());
    let pid = server.pid().to_string();
    for (http, transport) in [("1.1", "h1+tls"), ("2", "h2+tls"), ("3", "h3")] {
        let report = bench_json(&[
            "connections",
            "--url",
            &url,
            "--http",
            http,
            "--insecure",
            "--count",
            "12",
            "--streams-per-connection",
            "5",
            "--hold",
            "0.3",
            "--server-pid",
            &pid,
        ]);
        assert_eq!(report["transport"], transport, "{report}");
        assert_eq!(report["opened"], 12, "{report}");
        assert_eq!(report["failed"], 0, "{report}");
        assert_eq!(report["closed_early"], 0, "{report}");
        assert!(
            report["server_memory"]["rss_after_bytes"].as_u64().unwrap() > 0,
            "no server memory: {report}"
        );
    }
}

#[test]
fn source_ips_rejected_over_http2() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pylon"));
    command.args([
        "bench",
        "connections",
        "--url",
        "ws://127.0.0.1:9/ws/echo",
        "--http",
        "2",
        "--count",
        "1",
        "--source-ips",
        "127.0.0.1",
    ]);
    let (status, output) = run_with_timeout(&mut command, RUN_TIMEOUT);
    assert!(
        !status.success(),
        "--source-ips over HTTP/2 was accepted:\n{output}"
    );
    assert!(output.contains("--source-ips"), "{output}");
}
