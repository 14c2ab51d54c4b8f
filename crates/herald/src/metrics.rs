//! The node's Prometheus metrics, owned by one [`Metrics`] value that is
//! passed around as state (never global, so two nodes in one process keep
//! separate counts).
//!
//! Every labelled series is created at start with the known label values,
//! so dashboards see zeros instead of gaps. Hot-path updates use handles
//! resolved once (no label lookup, no lock): streams count deliveries once
//! per batch, not once per event.

use herald_broker::{BrokerMetrics, CloseReason, RegistryMetrics};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// `route` label values that code outside the actix router writes.
pub mod route {
    /// The stream route, on either connection kind.
    pub const EVENTS: &str = "/v1/events";
    /// One topic's stats, whatever the topic.
    pub const TOPIC: &str = "/v1/topics/{topic}";
    /// Any request that matched no route (or was refused before routing).
    pub const OTHER: &str = "other";
}

/// Routes with their own `route` label; anything else is [`route::OTHER`].
pub const ROUTES: [&str; 10] = [
    route::EVENTS,
    "/v1/publish",
    "/v1/publish/batch",
    route::TOPIC,
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.yaml",
    "/",
    route::OTHER,
];

/// Status codes each route is seeded with; others appear when first used.
const SEEDED_STATUSES: [&str; 6] = ["200", "202", "400", "404", "413", "503"];

/// All of herald's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    prometheus: Registry,
    /// Open SSE streams.
    pub connections: IntGauge,
    /// Events accepted by this node's ingest API.
    pub events_published: IntCounter,
    /// Event frames written to streams.
    pub events_delivered: IntCounter,
    /// Streams closed by herald, per reason.
    pub disconnects: IntCounterVec,
    /// Stream starts that replayed history.
    pub resumes_replayed: IntCounter,
    /// Stream starts that sent `herald.resync`.
    pub resumes_resync: IntCounter,
    /// Ingest request to stored.
    pub publish_duration: Histogram,
    /// Stored to frame written.
    pub delivery_lag: Histogram,
    /// Broker health: reachability, reconnections, failovers, primaries.
    pub broker: BrokerMetrics,
    /// HTTP requests per route and status.
    pub http_requests: IntCounterVec,
    /// The topic registry's own metrics (topics, slow-consumer drops),
    /// handed to it when it is built.
    pub topic_registry: RegistryMetrics,
    /// Calls to the application's subscribe hook.
    pub auth_hook: AuthHookMetrics,
}

/// Calls to the application's subscribe hook.
#[derive(Debug, Clone)]
pub struct AuthHookMetrics {
    /// `2xx` answers.
    pub allow: IntCounter,
    /// `401` and `403` answers.
    pub deny: IntCounter,
    /// Anything else, timeouts and failed connections.
    pub error: IntCounter,
    /// Round trip of every call, timeouts included.
    pub duration: Histogram,
}

impl Metrics {
    /// Creates and registers every metric.
    ///
    /// # Panics
    ///
    /// Only on a programming error in the metric definitions (a duplicate or
    /// invalid name), which the tests catch.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            registry
                .register(c)
                .expect("metric names are unique and valid");
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            reg(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            reg(Box::new(g.clone()));
            g
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            reg(Box::new(c.clone()));
            c
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric");
            reg(Box::new(h.clone()));
            h
        };

        let dropped = counter_vec(
            "herald_events_dropped_total",
            "Events not written to a stream, per reason.",
            &["reason"],
        );
        let disconnects = counter_vec(
            "herald_disconnects_total",
            "Streams closed by herald, per reason.",
            &["reason"],
        );
        for reason in CloseReason::ALL {
            disconnects.with_label_values(&[reason.as_str()]);
        }
        disconnects.with_label_values(&["capacity"]);
        let resumes = counter_vec(
            "herald_resumes_total",
            "Streams started from a client cursor, per result.",
            &["result"],
        );
        let http_requests = counter_vec(
            "herald_http_requests_total",
            "HTTP requests, per route and status.",
            &["route", "status"],
        );
        for route in ROUTES {
            for status in SEEDED_STATUSES {
                http_requests.with_label_values(&[route, status]);
            }
        }
        let latency_buckets = vec![
            0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5, 5.0,
        ];
        #[cfg(target_os = "linux")]
        reg(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));

        let connections = gauge("herald_connections", "Open SSE streams on this node.");
        let events_published = counter(
            "herald_events_published_total",
            "Events accepted by this node's ingest API.",
        );
        let events_delivered = counter(
            "herald_events_delivered_total",
            "Event frames written to streams (one per subscriber).",
        );
        let publish_duration = histogram(
            "herald_publish_duration_seconds",
            "Ingest request received to event stored.",
            latency_buckets.clone(),
        );
        let delivery_lag = histogram(
            "herald_delivery_lag_seconds",
            "Event stored to frame handed to the connection, per written batch.",
            latency_buckets,
        );
        let primaries = IntGaugeVec::new(
            Opts::new(
                "herald_broker_primaries",
                "Redis primaries this node needs (one per Cluster shard), per state.",
            ),
            &["state"],
        )
        .expect("valid metric");
        reg(Box::new(primaries.clone()));
        let broker = BrokerMetrics {
            up: gauge(
                "herald_broker_up",
                "1 when every Redis primary this node needs is reachable.",
            ),
            reconnects: counter("herald_broker_reconnects_total", "Broker reconnections."),
            failovers: counter(
                "herald_broker_failovers_total",
                "Redis primary changes noticed (Sentinel or Cluster failover, a replica promoted).",
            ),
            primaries_up: primaries.with_label_values(&["up"]),
            primaries_down: primaries.with_label_values(&["down"]),
        };
        let topics = gauge("herald_topics", "Topics with local subscribers.");
        let hook_requests = counter_vec(
            "herald_auth_hook_requests_total",
            "Subscribe-hook calls, per result (allow, deny, error).",
            &["result"],
        );
        let auth_hook = AuthHookMetrics {
            allow: hook_requests.with_label_values(&["allow"]),
            deny: hook_requests.with_label_values(&["deny"]),
            error: hook_requests.with_label_values(&["error"]),
            duration: histogram(
                "herald_auth_hook_duration_seconds",
                "Subscribe-hook round trip, timeouts included.",
                vec![
                    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
        };
        Self {
            connections,
            events_published,
            events_delivered,
            resumes_replayed: resumes.with_label_values(&["replayed"]),
            resumes_resync: resumes.with_label_values(&["resync"]),
            disconnects,
            publish_duration,
            delivery_lag,
            broker,
            http_requests,
            topic_registry: RegistryMetrics {
                topics,
                dropped_slow_consumer: dropped.with_label_values(&["slow_consumer"]),
            },
            auth_hook,
            prometheus: registry,
        }
    }

    /// Counts a stream closed by herald.
    pub fn disconnected(&self, reason: &str) {
        self.disconnects.with_label_values(&[reason]).inc();
    }

    /// Counts one answered HTTP request.
    pub fn count_request(&self, route: &str, status: &str) {
        self.http_requests.with_label_values(&[route, status]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.prometheus.gather(), &mut out)
            .expect("writing to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_metric_is_present_from_start() {
        let text = Metrics::new().render();
        for name in [
            "herald_connections ",
            "herald_topics ",
            "herald_events_published_total ",
            "herald_events_delivered_total ",
            "herald_events_dropped_total{reason=\"slow_consumer\"} 0",
            "herald_disconnects_total{reason=\"capacity\"} 0",
            "herald_disconnects_total{reason=\"drain\"} 0",
            "herald_disconnects_total{reason=\"token_expired\"} 0",
            "herald_resumes_total{result=\"resync\"} 0",
            "herald_publish_duration_seconds_bucket",
            "herald_delivery_lag_seconds_bucket",
            "herald_broker_up ",
            "herald_broker_reconnects_total ",
            "herald_broker_failovers_total 0",
            "herald_broker_primaries{state=\"up\"} 0",
            "herald_broker_primaries{state=\"down\"} 0",
            "herald_http_requests_total{route=\"/v1/publish\",status=\"202\"} 0",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
    }
}
