//! What the gateway counts: requests by route, model, node and status, time
//! spent in the queue, retries and hedges, replies broken after they began,
//! clients that went away. Shown at `/metrics` (Prometheus text), in
//! `/api/cluster` and on the dashboard.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::dashboard::prom::{esc, header};
use crate::dashboard::{GatewayRequest, GatewayView, WaitsView};

/// Upper bounds (seconds) of the queue-wait histogram; `+Inf` is implied.
pub(crate) const WAIT_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0,
];

/// Requests kept for the dashboard.
const RECENT: usize = 30;

/// The labels one request is counted under.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub route: String,
    /// The model asked for, once known to the cluster ("-" otherwise, so a
    /// client cannot grow the label set with made-up names).
    pub model: String,
    pub node: String,
    pub status: u16,
}

#[derive(Default)]
struct Wait {
    counts: [u64; WAIT_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<Key, u64>>,
    wait: Mutex<Wait>,
    recent: Mutex<VecDeque<(u64, Done)>>,
    pub in_flight: AtomicI64,
    pub retries: AtomicU64,
    pub hedges: AtomicU64,
    /// Replies that failed after their first byte (the client got an error line).
    pub broken_streams: AtomicU64,
    /// Clients that went away before their reply ended.
    pub disconnects: AtomicU64,
    /// Requests turned away because the queue was full.
    pub rejected: AtomicU64,
    /// Client connections open now.
    pub connections: AtomicI64,
    /// Connections that had to wait for one to close (`--max-connections`).
    pub connections_waited: AtomicU64,
    /// Connections closed by the header timeout: a request head too slow, or
    /// none at all (a new connection, or one idle after its last reply).
    pub header_timeouts: AtomicU64,
}

/// One finished request, for the counters, the log and the dashboard.
#[derive(Debug, Clone)]
pub(crate) struct Done {
    pub key: Key,
    pub seconds: f64,
    pub queue_ms: Option<u64>,
    pub host: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Metrics {
    pub(crate) fn record(&self, d: &Done) {
        {
            let mut r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
            match r.get_mut(&d.key) {
                Some(n) => *n += 1,
                None => {
                    r.insert(d.key.clone(), 1);
                }
            }
        }
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        r.push_back((now_ms(), d.clone()));
        while r.len() > RECENT {
            r.pop_front();
        }
    }

    pub(crate) fn observe_wait(&self, waited: Duration) {
        let s = waited.as_secs_f64();
        let i = WAIT_BUCKETS
            .iter()
            .position(|&le| s <= le)
            .unwrap_or(WAIT_BUCKETS.len());
        let mut w = self.wait.lock().unwrap_or_else(|e| e.into_inner());
        w.counts[i] += 1;
        w.sum += s;
        w.count += 1;
    }

    pub fn total(&self) -> u64 {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }

    /// The counters as the dashboard and `/api/cluster` show them.
    pub fn view(&self, queue_depth: usize) -> GatewayView {
        let by_route: BTreeMap<String, u64> = {
            let r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
            let mut m = BTreeMap::new();
            for (k, n) in r.iter() {
                *m.entry(format!("{} {}", k.route, k.status)).or_insert(0) += n;
            }
            m
        };
        let w = self.wait.lock().unwrap_or_else(|e| e.into_inner());
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(at, d)| GatewayRequest {
                at_ms: *at,
                route: d.key.route.clone(),
                model: d.key.model.clone(),
                node: d.key.node.clone(),
                host: d.host.clone(),
                status: d.key.status,
                ms: (d.seconds * 1000.0).round() as u64,
                queue_ms: d.queue_ms,
            })
            .collect();
        GatewayView {
            requests: self.total(),
            in_flight: self.in_flight.load(Ordering::Relaxed).max(0),
            queue_depth,
            waits: WaitsView {
                count: w.count,
                mean_ms: (w.count > 0).then(|| w.sum / w.count as f64 * 1000.0),
            },
            retries: self.retries.load(Ordering::Relaxed),
            hedges: self.hedges.load(Ordering::Relaxed),
            broken_streams: self.broken_streams.load(Ordering::Relaxed),
            disconnects: self.disconnects.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            by_route,
            recent,
            address: None,
        }
    }

    /// Prometheus text (version 0.0.4) for the gateway's own series.
    pub(crate) fn prometheus(&self, queue_depth: usize, out: &mut String) {
        self.requests_text(out);
        self.gauges_and_counters_text(queue_depth, out);
        self.wait_text(out);
    }

    /// The requests counter, one series per label set.
    fn requests_text(&self, out: &mut String) {
        let name = "synapticllamas_gateway_requests_total";
        header(out, name, "counter", "Requests the gateway answered.");
        for (k, n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "{name}{{route=\"{}\",model=\"{}\",node=\"{}\",status=\"{}\"}} {n}",
                esc(&k.route),
                esc(&k.model),
                esc(&k.node),
                k.status
            );
        }
    }

    /// The queue depth and requests in flight (gauges), then the retry,
    /// hedge, broken-stream, disconnect and rejection counters.
    fn gauges_and_counters_text(&self, queue_depth: usize, out: &mut String) {
        let gauges = [
            (
                "synapticllamas_gateway_queue_depth",
                "Requests waiting for a free host.",
                queue_depth as i64,
            ),
            (
                "synapticllamas_gateway_in_flight",
                "Requests the gateway is working on.",
                self.in_flight.load(Ordering::Relaxed).max(0),
            ),
            (
                "synapticllamas_gateway_connections_open",
                "Client connections open now.",
                self.connections.load(Ordering::Relaxed).max(0),
            ),
        ];
        for (name, help, v) in gauges {
            header(out, name, "gauge", help);
            let _ = writeln!(out, "{name} {v}");
        }
        let counters = [
            (
                "synapticllamas_gateway_retries_total",
                "Attempts retried on another host before the reply began.",
                &self.retries,
            ),
            (
                "synapticllamas_gateway_hedges_total",
                "Copies of slow requests started on an idle host.",
                &self.hedges,
            ),
            (
                "synapticllamas_gateway_broken_streams_total",
                "Replies that failed after they began (the client got an error line).",
                &self.broken_streams,
            ),
            (
                "synapticllamas_gateway_disconnects_total",
                "Clients that went away before their reply ended.",
                &self.disconnects,
            ),
            (
                "synapticllamas_gateway_rejected_total",
                "Requests turned away because the queue was full.",
                &self.rejected,
            ),
            (
                "synapticllamas_gateway_connections_waited_total",
                "Connections that waited for another to close (--max-connections).",
                &self.connections_waited,
            ),
            (
                "synapticllamas_gateway_header_timeouts_total",
                "Connections closed because no request head came within --header-timeout (slow or idle).",
                &self.header_timeouts,
            ),
        ];
        for (name, help, c) in counters {
            header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", c.load(Ordering::Relaxed));
        }
    }

    /// The queue-wait histogram (cumulative buckets, sum and count).
    fn wait_text(&self, out: &mut String) {
        let name = "synapticllamas_gateway_queue_wait_seconds";
        header(
            out,
            name,
            "histogram",
            "Time requests waited in the queue for a host slot.",
        );
        let w = self.wait.lock().unwrap_or_else(|e| e.into_inner());
        let mut acc = 0;
        for (le, c) in WAIT_BUCKETS.iter().zip(w.counts.iter()) {
            acc += c;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {acc}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", w.count);
        let _ = writeln!(out, "{name}_sum {}", w.sum);
        let _ = writeln!(out, "{name}_count {}", w.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_labels_and_renders_prometheus_text() {
        let m = Metrics::default();
        let d = Done {
            key: Key {
                route: "/api/chat".into(),
                model: "llama3.2".into(),
                node: "a".into(),
                status: 200,
            },
            seconds: 0.01,
            queue_ms: Some(3),
            host: Some("A".into()),
        };
        m.record(&d);
        m.record(&d);
        m.observe_wait(Duration::from_millis(3));
        m.observe_wait(Duration::from_secs(2));
        let mut out = String::new();
        m.prometheus(4, &mut out);
        assert!(out.contains(
            "synapticllamas_gateway_requests_total{route=\"/api/chat\",model=\"llama3.2\",node=\"a\",status=\"200\"} 2"
        ), "{out}");
        assert!(out.contains("synapticllamas_gateway_queue_depth 4"));
        assert!(out.contains("synapticllamas_gateway_queue_wait_seconds_bucket{le=\"0.005\"} 1"));
        assert!(out.contains("synapticllamas_gateway_queue_wait_seconds_bucket{le=\"+Inf\"} 2"));
        assert_eq!(m.view(0).recent.len(), 2);
    }
}
