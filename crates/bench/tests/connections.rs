//! Connection capacity runs against an in-process `pylon_ws` server.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use common::{Behavior, refused_url, spawn_server, within};
use pylon_bench::Progress;
use pylon_bench::connections::{self, ConnectionsConfig};
use serde_json::Value;

/// Runs `config` and returns its report parsed back from JSON, as `--json` prints it.
async fn run_json(config: &ConnectionsConfig) -> Value {
    let report = within(
        "connections run",
        connections::run(config, Arc::new(Progress::new())),
    )
    .await
    .expect("connections run failed");
    serde_json::from_str(&report.to_json()).expect("report is valid JSON")
}

/// Creates a short run: 0.3 s hold, pings every 0.1 s, 0.1 s settle.
fn quick_config(url: String, count: usize) -> ConnectionsConfig {
    let mut config = ConnectionsConfig::new(url, count);
    config.hold = Duration::from_millis(300);
    config.ping_interval = Some(Duration::from_millis(100));
    config.settle = Duration::from_millis(100);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_open_hold_and_measure_memory() {
    let server = spawn_server(Behavior::Echo).await;
    let mut config = quick_config(server.url(), 50);
    config.connect_concurrency = 8;
    // The server runs in this process, so its memory is this process's memory.
    config.server_pid = Some(std::process::id());
    let report = run_json(&config).await;

    assert_eq!(report["requested"], 50);
    assert_eq!(report["opened"], 50, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["closed_early"], 0, "{report}");
    assert_eq!(report["timed_out"], false);
    let hold = report["hold_secs"].as_f64().unwrap();
    assert!((0.29..1.0).contains(&hold), "hold {hold}: {report}");
    let connect_p50 = report["connect_us"]["p50"].as_f64().unwrap();
    let connect_max = report["connect_us"]["max"].as_f64().unwrap();
    assert!(connect_p50 > 0.0, "{report}");
    assert!(connect_max < 5_000_000.0, "{report}");
    let memory = &report["server_memory"];
    assert!(memory["rss_before_bytes"].as_u64().unwrap() > 0, "{report}");
    assert!(memory["rss_after_bytes"].as_u64().unwrap() > 0, "{report}");
    assert!(memory["bytes_per_connection"].is_number(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_connections_stay_open_with_the_measured_ones() {
    let server = spawn_server(Behavior::Echo).await;
    let mut config = quick_config(server.url(), 30);
    config.warmup_connections = 20;
    config.connect_concurrency = 8;
    config.server_pid = Some(std::process::id());
    let report = run_json(&config).await;

    assert_eq!(report["warmup_connections"], 20, "{report}");
    assert_eq!(report["opened"], 30, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["closed_early"], 0, "{report}");
    assert_eq!(server.total_websockets(), 50);
    // The warm-up connections were still open while the measured ones opened, so the
    // measured ones could not reuse their memory.
    assert_eq!(server.max_open_websockets(), 50);
    let memory = &report["server_memory"];
    assert!(
        memory["anon_before_bytes"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(memory["anon_after_bytes"].as_u64().unwrap() > 0, "{report}");
    assert!(memory["anon_bytes_per_connection"].is_number(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ips_are_used_in_turn() {
    let server = spawn_server(Behavior::Echo).await;
    let first = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let second = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut config = quick_config(server.url(), 10);
    config.source_ips = vec![first, second];
    let report = run_json(&config).await;

    assert_eq!(report["opened"], 10, "{report}");
    assert_eq!(report["closed_early"], 0, "{report}");
    assert_eq!(report["source_ips"][0], "127.0.0.1");
    assert_eq!(report["source_ips"][1], "127.0.0.2");
    let peers = server.peer_ips();
    assert!(peers.contains(&first), "{peers:?}");
    assert!(peers.contains(&second), "{peers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connects_are_counted() {
    let url = refused_url().await;
    for source_ips in [vec![], vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]] {
        let mut config = quick_config(url.clone(), 5);
        config.source_ips = source_ips;
        let report = run_json(&config).await;

        assert_eq!(report["opened"], 0, "{report}");
        assert_eq!(report["failed"], 5, "{report}");
        assert_eq!(report["failures"]["connection refused"], 5, "{report}");
        let first = report["first_failure"].as_str().unwrap();
        assert!(first.contains(&url), "{first}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_close_counts_as_closed_early() {
    let server = spawn_server(Behavior::CloseAtOnce).await;
    let report = run_json(&quick_config(server.url(), 4)).await;

    assert_eq!(report["opened"], 4, "{report}");
    assert_eq!(report["closed_early"], 4, "{report}");
    let first = report["first_close"].as_str().unwrap();
    assert!(first.contains("server closed"), "{first}");
}

#[tokio::test]
async fn count_above_open_file_limit_is_rejected() {
    let config = ConnectionsConfig::new("ws://127.0.0.1:9/ws/echo", 100_000_000);
    let err = connections::run(&config, Arc::new(Progress::new()))
        .await
        .expect_err("a count above the open-file limit must be rejected");
    let text = err.to_string();
    assert!(text.contains("ulimit -n"), "{text}");
    assert!(text.contains("--source-ips"), "{text}");
}
