//! Node metrics, exported in the Prometheus text format at `/metrics`.

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// WebSocket endpoints of a node, as they appear in the `endpoint` label.
pub(crate) const ENDPOINTS: [&str; 2] = ["chat", "echo"];

/// Transports of WebSocket connections, as they appear in the `transport` label: HTTP/1.1
/// upgrades and HTTP/2 extended CONNECT streams, each over plain TCP or TLS, and HTTP/3
/// extended CONNECT streams over QUIC.
pub(crate) const TRANSPORTS: [&str; 5] = ["h1", "h1_tls", "h2", "h2_tls", "h3"];

/// Message and byte counters of one endpoint, taken from the labelled families.
#[derive(Clone)]
struct EndpointCounters {
    messages_received: IntCounter,
    bytes_received: IntCounter,
    messages_sent: IntCounter,
    bytes_sent: IntCounter,
}

/// Counters and gauges of one node. Cloning shares the same series.
#[derive(Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    /// Open WebSocket connections, by endpoint (`chat`, `echo`) and transport.
    pub(crate) connections_open: IntGaugeVec,
    /// WebSocket connections accepted since start, by endpoint and transport.
    pub(crate) connections_total: IntCounterVec,
    /// Data messages received from clients, by endpoint.
    pub(crate) messages_received: IntCounterVec,
    /// Data messages sent or queued to clients, by endpoint.
    pub(crate) messages_sent: IntCounterVec,
    /// Payload bytes of the data messages received, by endpoint.
    pub(crate) bytes_received: IntCounterVec,
    /// Payload bytes of the data messages sent or queued, by endpoint.
    pub(crate) bytes_sent: IntCounterVec,
    /// Rejected WebSocket handshakes, by reason.
    pub(crate) handshake_failures: IntCounterVec,
    /// Connections closed with 1013 because their outbound queue was full.
    pub(crate) slow_consumer_closes: IntCounter,
    /// HTTP requests, by route and status code.
    pub(crate) http_requests: IntCounterVec,
    /// The series of each entry of [`ENDPOINTS`], in the same order.
    per_endpoint: Vec<EndpointCounters>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let registry = Registry::new();
        let endpoint = &["endpoint"];
        let endpoint_transport = &["endpoint", "transport"];
        let mut metrics = Self {
            connections_open: IntGaugeVec::new(
                Opts::new("pylon_ws_connections_open", "Open WebSocket connections."),
                endpoint_transport,
            )
            .expect("valid metric"),
            connections_total: IntCounterVec::new(
                Opts::new(
                    "pylon_ws_connections_total",
                    "WebSocket connections accepted since start.",
                ),
                endpoint_transport,
            )
            .expect("valid metric"),
            messages_received: IntCounterVec::new(
                Opts::new(
                    "pylon_ws_messages_received_total",
                    "Text and binary messages received.",
                ),
                endpoint,
            )
            .expect("valid metric"),
            messages_sent: IntCounterVec::new(
                Opts::new(
                    "pylon_ws_messages_sent_total",
                    "Text and binary messages sent or queued.",
                ),
                endpoint,
            )
            .expect("valid metric"),
            bytes_received: IntCounterVec::new(
                Opts::new(
                    "pylon_ws_received_bytes_total",
                    "Payload bytes of received messages.",
                ),
                endpoint,
            )
            .expect("valid metric"),
            bytes_sent: IntCounterVec::new(
                Opts::new(
                    "pylon_ws_sent_bytes_total",
                    "Payload bytes of sent or queued messages.",
                ),
                endpoint,
            )
            .expect("valid metric"),
            handshake_failures: IntCounterVec::new(
                Opts::new(
                    "pylon_ws_handshake_failures_total",
                    "Rejected WebSocket handshakes.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            slow_consumer_closes: IntCounter::new(
                "pylon_ws_slow_consumer_closes_total",
                "Connections closed because their outbound queue was full.",
            )
            .expect("valid metric"),
            http_requests: IntCounterVec::new(
                Opts::new("pylon_http_requests_total", "HTTP requests served."),
                &["route", "status"],
            )
            .expect("valid metric"),
            registry,
            per_endpoint: Vec::new(),
        };
        metrics.register_all();
        // Series of known endpoints exist from the start, so a dashboard or an alert sees 0
        // instead of no data before the first connection.
        for endpoint in ENDPOINTS {
            for transport in TRANSPORTS {
                metrics
                    .connections_open
                    .with_label_values(&[endpoint, transport]);
                metrics
                    .connections_total
                    .with_label_values(&[endpoint, transport]);
            }
            let counters = EndpointCounters {
                messages_received: metrics.messages_received.with_label_values(&[endpoint]),
                bytes_received: metrics.bytes_received.with_label_values(&[endpoint]),
                messages_sent: metrics.messages_sent.with_label_values(&[endpoint]),
                bytes_sent: metrics.bytes_sent.with_label_values(&[endpoint]),
            };
            metrics.per_endpoint.push(counters);
        }
        metrics
    }

    fn register_all(&self) {
        let collectors: [Box<dyn prometheus::core::Collector>; 9] = [
            Box::new(self.connections_open.clone()),
            Box::new(self.connections_total.clone()),
            Box::new(self.messages_received.clone()),
            Box::new(self.messages_sent.clone()),
            Box::new(self.bytes_received.clone()),
            Box::new(self.bytes_sent.clone()),
            Box::new(self.handshake_failures.clone()),
            Box::new(self.slow_consumer_closes.clone()),
            Box::new(self.http_requests.clone()),
        ];
        for collector in collectors {
            self.registry
                .register(collector)
                .expect("metric names are unique");
        }
    }

    /// Counts one received data message of `len` payload bytes.
    pub(crate) fn received(&self, endpoint: &str, len: usize) {
        match self.endpoint_counters(endpoint) {
            Some(counters) => {
                counters.messages_received.inc();
                counters.bytes_received.inc_by(len as u64);
            }
            None => {
                self.messages_received.with_label_values(&[endpoint]).inc();
                self.bytes_received
                    .with_label_values(&[endpoint])
                    .inc_by(len as u64);
            }
        }
    }

    /// Counts one sent data message of `len` payload bytes.
    pub(crate) fn sent(&self, endpoint: &str, len: usize) {
        match self.endpoint_counters(endpoint) {
            Some(counters) => {
                counters.messages_sent.inc();
                counters.bytes_sent.inc_by(len as u64);
            }
            None => {
                self.messages_sent.with_label_values(&[endpoint]).inc();
                self.bytes_sent
                    .with_label_values(&[endpoint])
                    .inc_by(len as u64);
            }
        }
    }

    /// Returns the counters of a known endpoint, looked up once when the metrics were
    /// created. A label lookup hashes the label values and takes a lock, which cost about
    /// 700 instructions per echoed message (callgrind, `bench/echo-instructions`).
    fn endpoint_counters(&self, endpoint: &str) -> Option<&EndpointCounters> {
        let index = ENDPOINTS.iter().position(|known| *known == endpoint)?;
        self.per_endpoint.get(index)
    }

    /// Renders every series in the Prometheus text exposition format, version 0.0.4.
    pub(crate) fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(%error, "failed to encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_endpoints_before_any_traffic() {
        let text = Metrics::new().render();
        for endpoint in ENDPOINTS {
            for transport in TRANSPORTS {
                let line = format!(
                    "pylon_ws_connections_open{{endpoint=\"{endpoint}\",transport=\"{transport}\"}} 0"
                );
                assert!(text.contains(&line), "missing `{line}` in:\n{text}");
            }
        }
    }

    #[test]
    fn cached_and_labelled_series_are_the_same() {
        let metrics = Metrics::new();
        metrics.received("echo", 3);
        metrics.sent("chat", 4);
        metrics.received("other", 5);
        let received = &metrics.messages_received;
        assert_eq!(received.with_label_values(&["echo"]).get(), 1);
        assert_eq!(received.with_label_values(&["other"]).get(), 1);
        assert_eq!(metrics.bytes_sent.with_label_values(&["chat"]).get(), 4);
        assert_eq!(metrics.messages_sent.with_label_values(&["echo"]).get(), 0);
    }

    #[test]
    fn render_lists_counted_series() {
        let metrics = Metrics::new();
        metrics.received("echo", 5);
        metrics
            .handshake_failures
            .with_label_values(&["bad_version"])
            .inc();
        let text = metrics.render();
        assert!(text.contains("pylon_ws_messages_received_total{endpoint=\"echo\"} 1"));
        assert!(text.contains("pylon_ws_received_bytes_total{endpoint=\"echo\"} 5"));
        assert!(text.contains("pylon_ws_handshake_failures_total{reason=\"bad_version\"} 1"));
    }
}
