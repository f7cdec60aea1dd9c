//! Echo benchmark runs against an in-process `pylon_ws` echo server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Behavior, refused_url, spawn_server, within};
use pylon_bench::Progress;
use pylon_bench::echo::{self, EchoConfig, Stop};
use serde_json::Value;

/// Runs `config` and returns its report parsed back from JSON, as `--json` prints it.
async fn run_json(config: &EchoConfig) -> Value {
    let report = within("echo run", echo::run(config, Arc::new(Progress::new())))
        .await
        .expect("echo run failed");
    serde_json::from_str(&report.to_json()).expect("report is valid JSON")
}

fn latency(report: &Value, field: &str) -> f64 {
    report["latency_us"][field]
        .as_f64()
        .unwrap_or_else(|| panic!("latency_us.{field} missing in {report}"))
}

/// Checks that the latency percentiles are ordered and below one second.
fn assert_plausible_latency(report: &Value) {
    let p50 = latency(report, "p50");
    let p90 = latency(report, "p90");
    let p99 = latency(report, "p99");
    let p999 = latency(report, "p999");
    let max = latency(report, "max");
    let mean = latency(report, "mean");
    assert!(p50 > 0.0, "p50 is not positive: {report}");
    assert!(p50 <= p90, "p50 > p90: {report}");
    assert!(p90 <= p99, "p90 > p99: {report}");
    assert!(p99 <= p999, "p99 > p99.9: {report}");
    assert!(p999 <= max, "p99.9 > max: {report}");
    assert!(mean > 0.0, "mean is not positive: {report}");
    assert!(mean <= max, "mean > max: {report}");
    assert!(max < 1_000_000.0, "max latency above 1 s: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_counts_exact_messages() {
    let server = spawn_server(Behavior::Echo).await;
    let config = EchoConfig::new(server.url(), 4, 64, Stop::Messages(402));
    let report = run_json(&config).await;

    assert_eq!(report["url"], server.url());
    assert_eq!(report["connections"], 4);
    assert_eq!(report["size"], 64);
    assert_eq!(report["mode"], "closed");
    assert_eq!(report["messages"], 402);
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["timed_out"], false);
    assert!(report["duration_secs"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["msgs_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    let expected_mb = report["messages"].as_f64().unwrap() * 64.0 * 2.0
        / report["duration_secs"].as_f64().unwrap()
        / 1e6;
    let mb = report["mb_per_sec"].as_f64().unwrap();
    assert!(
        (mb - expected_mb).abs() <= expected_mb * 0.01 + 0.001,
        "mb_per_sec {mb} differs from {expected_mb}: {report}"
    );
    assert_plausible_latency(&report);
    assert!(report["connect_us"]["p50"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_pipeline_text_duration() {
    let server = spawn_server(Behavior::Echo).await;
    let mut config = EchoConfig::new(
        server.url(),
        3,
        300,
        Stop::Duration(Duration::from_millis(500)),
    );
    config.pipeline = 8;
    config.text = true;
    let report = run_json(&config).await;

    assert_eq!(report["text"], true);
    assert_eq!(report["pipeline"], 8);
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["messages"].as_u64().unwrap() > 24, "{report}");
    let duration = report["duration_secs"].as_f64().unwrap();
    assert!(
        (0.45..2.0).contains(&duration),
        "duration {duration} far from 0.5 s: {report}"
    );
    assert_plausible_latency(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_pipeline_does_not_deadlock() {
    let server = spawn_server(Behavior::Echo).await;
    // 64 messages of 256 KiB in flight are 16 MiB each way, far above the socket buffers.
    let mut config = EchoConfig::new(server.url(), 1, 256 * 1024, Stop::Messages(256));
    config.pipeline = 64;
    let report = run_json(&config).await;

    assert_eq!(report["messages"], 256, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_keeps_target_rate() {
    let server = spawn_server(Behavior::Echo).await;
    let mut config = EchoConfig::new(server.url(), 4, 32, Stop::Duration(Duration::from_secs(1)));
    config.rate = Some(400.0);
    let report = run_json(&config).await;

    assert_eq!(report["mode"], "open");
    assert_eq!(report["target_rate"], 400.0);
    assert_eq!(report["errors"], 0, "{report}");
    let messages = report["messages"].as_u64().unwrap();
    assert!(
        (360..=440).contains(&messages),
        "{messages} messages at 400/s for 1 s: {report}"
    );
    assert_plausible_latency(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_counts_exact_messages() {
    let server = spawn_server(Behavior::Echo).await;
    let mut config = EchoConfig::new(server.url(), 3, 16, Stop::Messages(200));
    config.rate = Some(1_000.0);
    let report = run_json(&config).await;

    assert_eq!(report["messages"], 200, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    let duration = report["duration_secs"].as_f64().unwrap();
    assert!(
        (0.15..2.0).contains(&duration),
        "200 messages at 1000/s took {duration} s: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_is_not_measured() {
    let server = spawn_server(Behavior::Echo).await;
    let mut config = EchoConfig::new(
        server.url(),
        2,
        16,
        Stop::Duration(Duration::from_millis(300)),
    );
    config.warmup = Duration::from_millis(300);
    let report = run_json(&config).await;

    assert_eq!(report["warmup_secs"], 0.3);
    assert_eq!(report["errors"], 0, "{report}");
    let duration = report["duration_secs"].as_f64().unwrap();
    assert!(
        (0.25..0.6).contains(&duration),
        "measured duration {duration} should exclude the warmup: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_echoes_count_as_errors() {
    let server = spawn_server(Behavior::Corrupt).await;
    let config = EchoConfig::new(server.url(), 2, 40, Stop::Messages(20));
    let report = run_json(&config).await;

    assert_eq!(report["messages"], 0, "{report}");
    assert_eq!(report["error_counts"]["mismatched"], 20, "{report}");
    assert_eq!(report["errors"], 20, "{report}");
    let first = report["first_error"].as_str().unwrap();
    assert!(first.contains("differs"), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_server_counts_lost_connections() {
    let server = spawn_server(Behavior::CloseAtOnce).await;
    let config = EchoConfig::new(
        server.url(),
        2,
        16,
        Stop::Duration(Duration::from_millis(300)),
    );
    let report = run_json(&config).await;

    assert_eq!(report["error_counts"]["connections_lost"], 2, "{report}");
    assert_eq!(report["messages"], 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_explained() {
    let url = refused_url().await;
    let config = EchoConfig::new(url.clone(), 2, 16, Stop::Messages(10));
    let err = within("echo run", echo::run(&config, Arc::new(Progress::new())))
        .await
        .expect_err("a refused connection must fail the run");
    let text = format!("{err:#}");
    assert!(text.contains(&url), "{text}");
    assert!(text.contains("refused"), "{text}");
    assert!(text.contains("is a server listening"), "{text}");
}

#[tokio::test]
async fn invalid_settings_are_rejected() {
    let url = "ws://127.0.0.1:9/ws/echo";
    let mut zero_connections = EchoConfig::new(url, 0, 16, Stop::Messages(10));
    let mut zero_rate = EchoConfig::new(url, 1, 16, Stop::Messages(10));
    zero_rate.rate = Some(0.0);
    let zero_messages = EchoConfig::new(url, 1, 16, Stop::Messages(0));
    let mut zero_pipeline = EchoConfig::new(url, 1, 16, Stop::Messages(10));
    zero_pipeline.pipeline = 0;
    zero_connections.pipeline = 1;
    for (config, expected) in [
        (zero_connections, "connection count 0"),
        (zero_rate, "rate 0"),
        (zero_messages, "message count 0"),
        (zero_pipeline, "pipeline depth 0"),
    ] {
        let err = echo::run(&config, Arc::new(Progress::new()))
            .await
            .expect_err("invalid settings must be rejected");
        assert!(err.to_string().contains(expected), "{err}");
    }
}
