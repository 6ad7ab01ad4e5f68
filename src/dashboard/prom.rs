//! `/metrics`: the hub in Prometheus' text exposition format (version 0.0.4).

use std::fmt::Write;

use super::hub::{status_word, Hub, LATENCY_BUCKETS};
use super::view::{BackendStatus, CoordinatorStatus};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value with `\`, `"` and newlines escaped.
pub(crate) fn esc(s: &str) -> String {
    s.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// A series' HELP and TYPE lines.
pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

pub(crate) fn render(hub: &Hub) -> String {
    let mut out = String::new();
    let nodes: Vec<_> = hub
        .nodes()
        .iter()
        .map(|n| {
            let st = n.state();
            let labels = format!("node=\"{}\",host=\"{}\"", esc(n.name()), esc(&n.host));
            (labels, st.requests, st.errors, status_word(&st) == "up")
        })
        .collect();

    let name = "synapticllamas_node_requests_total";
    header(&mut out, name, "counter", "Requests sent to the node.");
    for (l, req, _, _) in &nodes {
        let _ = writeln!(out, "{name}{{{l}}} {req}");
    }
    let name = "synapticllamas_node_errors_total";
    header(
        &mut out,
        name,
        "counter",
        "Requests to the node that failed.",
    );
    for (l, _, err, _) in &nodes {
        let _ = writeln!(out, "{name}{{{l}}} {err}");
    }
    let name = "synapticllamas_node_up";
    header(
        &mut out,
        name,
        "gauge",
        "1 if the node answered its last probe or request.",
    );
    for (l, _, _, up) in &nodes {
        let _ = writeln!(out, "{name}{{{l}}} {}", u8::from(*up));
    }

    let name = "synapticllamas_request_latency_seconds";
    header(
        &mut out,
        name,
        "histogram",
        "Latency of requests to a node.",
    );
    for (node, h) in hub.latency() {
        let l = format!("node=\"{}\",host=\"{}\"", esc(&node), esc(&h.host));
        let cum = h.cumulative();
        for (le, c) in LATENCY_BUCKETS.iter().zip(&cum) {
            let _ = writeln!(out, "{name}_bucket{{{l},le=\"{le}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum{{{l}}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{{l}}} {}", h.count);
    }

    if let Some(coordinator) = hub.coordinator() {
        let name = "synapticllamas_coordinator_up";
        header(
            &mut out,
            name,
            "gauge",
            "1 if the llama.cpp coordinator is healthy.",
        );
        let up = coordinator.status == CoordinatorStatus::Running;
        let _ = writeln!(out, "{name} {}", u8::from(up));
    }
    let backends = hub.backends();
    if !backends.is_empty() {
        let name = "synapticllamas_rpc_backend_up";
        header(&mut out, name, "gauge", "1 if the RPC backend is healthy.");
        for b in &backends {
            let _ = writeln!(
                out,
                "{name}{{address=\"{}\"}} {}",
                esc(&b.address),
                u8::from(b.status == BackendStatus::Up)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::BackendView;

    #[test]
    fn escapes_label_values() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn histogram_lines() {
        let hub = Hub::new();
        let node = crate::nodes::Node::new(
            crate::config::nodes_file::NodeEntry {
                url: "http://127.0.0.1:1".into(),
                name: "alpha".into(),
                priority: 0,
                host_id: Some("h1".into()),
                extra: Default::default(),
            },
            true,
        );
        node.state()
            .record_request(std::time::Duration::from_millis(5), false, None);
        hub.set_nodes(vec![std::sync::Arc::new(node)]);
        hub.observe_latency("alpha", "h1", 0.3);
        hub.observe_latency("alpha", "h1", 7.0);
        hub.set_backends(vec![BackendView {
            address: "127.0.0.1:50052".into(),
            status: BackendStatus::Up,
            checked_ms: None,
            requests: 0,
            success_rate: None,
            avg_latency_ms: None,
        }]);
        let t = render(&hub);
        let b = "synapticllamas_request_latency_seconds_bucket{node=\"alpha\",host=\"h1\"";
        assert!(t.contains(&format!("{b},le=\"0.25\"}} 0\n")), "{t}");
        assert!(t.contains(&format!("{b},le=\"0.5\"}} 1\n")), "{t}");
        assert!(t.contains(&format!("{b},le=\"10\"}} 2\n")), "{t}");
        assert!(t.contains(&format!("{b},le=\"+Inf\"}} 2\n")), "{t}");
        assert!(t.contains(
            "synapticllamas_request_latency_seconds_count{node=\"alpha\",host=\"h1\"} 2\n"
        ));
        assert!(t.contains("synapticllamas_rpc_backend_up{address=\"127.0.0.1:50052\"} 1\n"));
        assert!(!t.contains("coordinator_up"));
        assert!(t.contains("synapticllamas_node_errors_total{node=\"alpha\",host=\"h1\"} 1\n"));
        assert!(t.contains("synapticllamas_node_up{node=\"alpha\",host=\"h1\"} 0\n"));
    }
}
