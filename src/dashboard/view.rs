//! What the hub shows, as types: the page (`page.js`), the JSON endpoints,
//! `/metrics`, the gateway's `/api/cluster` and the Redis tap all read these,
//! so a renamed field breaks them at compile time, not in a browser. Field
//! order is the JSON's key order (the page lists the coordinator's and the
//! metrics' keys in that order).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::hub::status_word;
use crate::nodes::Node;
use crate::report::Metrics;

/// The llama.cpp coordinator. A coordinator that is not started has only
/// `url` and `status`; a running one also its process fields (`null` when
/// unknown).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoordinatorView {
    pub url: String,
    pub status: CoordinatorStatus,
    #[serde(flatten)]
    pub process: Option<CoordinatorProcess>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CoordinatorStatus {
    #[serde(rename = "running")]
    Running,
    #[serde(rename = "not started")]
    NotStarted,
}

/// What a running coordinator is made of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoordinatorProcess {
    /// Set when this process started it.
    pub pid: Option<u32>,
    /// The GGUF file it serves.
    pub model: Option<String>,
    /// The RPC backends (`host:port`) it was started with.
    pub backends: Vec<String>,
    pub log: Option<String>,
}

impl CoordinatorView {
    /// A coordinator this process runs (one found already running has no
    /// pid here).
    pub fn ours(&self) -> bool {
        self.status == CoordinatorStatus::Running
            && self.process.as_ref().is_some_and(|p| p.pid.is_some())
    }
}

/// One RPC backend; the page reads `address`, `status`, `requests`,
/// `success_rate` (0–1) and `avg_latency_ms`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendView {
    /// `host:port`.
    pub address: String,
    pub status: BackendStatus,
    /// When `status` was last observed (Unix ms).
    pub checked_ms: Option<u64>,
    pub requests: u64,
    pub success_rate: Option<f64>,
    pub avg_latency_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendStatus {
    Up,
    Down,
    Unknown,
}

/// A routing decision and why it was made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoutingEntry {
    pub at_ms: u64,
    pub decision: String,
    pub reason: String,
}

/// A line worth showing (a node went down, came back…).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    pub at_ms: u64,
    pub line: String,
}

/// A task of the running query and the node it runs on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskView {
    pub task: String,
    pub node: String,
    pub started_at_ms: u64,
}

/// One node as the page, `/api/nodes` and the gateway's `/api/cluster` show
/// it; read from the node's live state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    pub name: String,
    pub url: String,
    pub host: String,
    pub simulated: bool,
    /// `status_word`: up, suspect, cooling, busy or unknown.
    pub status: &'static str,
    pub models: Vec<String>,
    pub loaded: Vec<LoadedView>,
    /// The share of the loaded models' bytes in VRAM (none loaded: `null`).
    pub vram_share: Option<f64>,
    pub requests: u64,
    pub errors: u64,
    pub in_flight: u32,
    pub avg_latency_ms: Option<f64>,
    pub recent_latency_ms: Option<f64>,
    pub tokens_per_sec: Option<f64>,
    pub last_error: Option<String>,
}

/// A model loaded on a node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadedView {
    pub name: String,
    pub size: u64,
    pub size_vram: u64,
    pub vram_share: f64,
}

impl NodeView {
    /// `n` as the page shows it, with `in_flight` requests on it now.
    pub fn of(n: &Node, in_flight: u32) -> NodeView {
        let st = n.state();
        let loaded: Vec<LoadedView> = st
            .loaded
            .iter()
            .map(|m| LoadedView {
                name: m.name.clone(),
                size: m.size,
                size_vram: m.size_vram,
                vram_share: share(m.size_vram, m.size),
            })
            .collect();
        let (vram, size) = st
            .loaded
            .iter()
            .fold((0, 0), |(v, s), m| (v + m.size_vram, s + m.size));
        NodeView {
            name: n.name().to_string(),
            url: n.url().to_string(),
            host: n.host.clone(),
            simulated: n.simulated,
            status: status_word(&st),
            models: st.models.clone(),
            loaded,
            vram_share: (size > 0).then(|| share(vram, size)),
            requests: st.requests,
            errors: st.errors,
            in_flight,
            avg_latency_ms: st.avg_latency_ms(),
            recent_latency_ms: st.recent_latency_ms,
            tokens_per_sec: st.tokens_per_sec,
            last_error: st.last_error().map(str::to_string),
        }
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The gateway's traffic: the dashboard's gateway section and `/api/cluster`.
/// The page lists every field but `by_route`, `recent` and `address`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayView {
    pub requests: u64,
    pub in_flight: i64,
    pub queue_depth: usize,
    pub waits: WaitsView,
    pub retries: u64,
    pub hedges: u64,
    pub broken_streams: u64,
    pub disconnects: u64,
    pub rejected: u64,
    /// `"<route> <status>"` → requests.
    pub by_route: BTreeMap<String, u64>,
    pub recent: Vec<GatewayRequest>,
    /// Where the gateway listens (the dashboard only; `/api/cluster` has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Time requests spent in the gateway's queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaitsView {
    pub count: u64,
    /// None waited yet: `null`.
    pub mean_ms: Option<f64>,
}

/// One request the gateway answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayRequest {
    pub at_ms: u64,
    pub route: String,
    pub model: String,
    pub node: String,
    pub host: Option<String>,
    pub status: u16,
    pub ms: u64,
    pub queue_ms: Option<u64>,
}

/// Everything at once: what `/api/snapshot` and the event stream send.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub version: u64,
    pub nodes: Vec<NodeView>,
    pub coordinator: Option<CoordinatorView>,
    pub backends: Vec<BackendView>,
    /// The last query's metrics (`null` before the first).
    #[serde(serialize_with = "shared")]
    pub metrics: Option<Arc<Metrics>>,
    pub tasks: Vec<TaskView>,
    pub routing: Vec<RoutingEntry>,
    pub notices: Vec<Notice>,
    /// The gateway's traffic (`null`: no gateway runs).
    pub gateway: Option<GatewayView>,
}

/// What an `Arc` holds (serde's `rc` feature is off: it would rebuild every
/// crate that uses serde for this one field).
fn shared<S: serde::Serializer, T: Serialize>(v: &Option<Arc<T>>, s: S) -> Result<S::Ok, S::Error> {
    v.as_deref().serialize(s)
}

#[cfg(test)]
mod tests {
    //! The exact JSON each type produces: these are the keys and the nesting
    //! `page.js`, the endpoints' users and the gateway read.
    use super::*;
    use serde_json::{json, Value};

    fn text<T: Serialize>(v: &T) -> String {
        serde_json::to_string(v).unwrap()
    }

    fn running() -> CoordinatorView {
        CoordinatorView {
            url: "http://127.0.0.1:18080".into(),
            status: CoordinatorStatus::Running,
            process: Some(CoordinatorProcess {
                pid: Some(41),
                model: None,
                backends: vec!["10.77.0.5:50052".into()],
                log: Some("/tmp/c.log".into()),
            }),
        }
    }

    #[test]
    fn coordinator() {
        assert_eq!(
            text(&running()),
            r#"{"url":"http://127.0.0.1:18080","status":"running","pid":41,"model":null,"backends":["10.77.0.5:50052"],"log":"/tmp/c.log"}"#
        );
        let idle = CoordinatorView {
            url: "http://127.0.0.1:18080".into(),
            status: CoordinatorStatus::NotStarted,
            process: None,
        };
        assert_eq!(
            text(&idle),
            r#"{"url":"http://127.0.0.1:18080","status":"not started"}"#
        );
        assert!(running().ours());
        assert!(!idle.ours());
        let mut found = running();
        found.process.as_mut().unwrap().pid = None;
        assert!(!found.ours(), "one found running is not ours");
    }

    #[test]
    fn backend() {
        let b = BackendView {
            address: "127.0.0.1:50052".into(),
            status: BackendStatus::Up,
            checked_ms: Some(7),
            requests: 4,
            success_rate: Some(0.75),
            avg_latency_ms: None,
        };
        assert_eq!(
            text(&b),
            r#"{"address":"127.0.0.1:50052","status":"up","checked_ms":7,"requests":4,"success_rate":0.75,"avg_latency_ms":null}"#
        );
        assert_eq!(text(&BackendStatus::Down), r#""down""#);
        assert_eq!(text(&BackendStatus::Unknown), r#""unknown""#);
    }

    #[test]
    fn routing_notice_and_task() {
        let r = RoutingEntry {
            at_ms: 1,
            decision: "d".into(),
            reason: "r".into(),
        };
        assert_eq!(text(&r), r#"{"at_ms":1,"decision":"d","reason":"r"}"#);
        let n = Notice {
            at_ms: 2,
            line: "l".into(),
        };
        assert_eq!(text(&n), r#"{"at_ms":2,"line":"l"}"#);
        let t = TaskView {
            task: "Critic".into(),
            node: "beta".into(),
            started_at_ms: 3,
        };
        assert_eq!(
            text(&t),
            r#"{"task":"Critic","node":"beta","started_at_ms":3}"#
        );
    }

    #[test]
    fn node() {
        let n = NodeView {
            name: "alpha".into(),
            url: "http://127.0.0.1:1".into(),
            host: "box-a".into(),
            simulated: true,
            status: "up",
            models: vec!["m".into()],
            loaded: vec![LoadedView {
                name: "m".into(),
                size: 400,
                size_vram: 100,
                vram_share: 0.25,
            }],
            vram_share: Some(0.25),
            requests: 2,
            errors: 1,
            in_flight: 0,
            avg_latency_ms: Some(200.0),
            recent_latency_ms: None,
            tokens_per_sec: Some(42.0),
            last_error: None,
        };
        assert_eq!(
            text(&n),
            r#"{"name":"alpha","url":"http://127.0.0.1:1","host":"box-a","simulated":true,"status":"up","models":["m"],"loaded":[{"name":"m","size":400,"size_vram":100,"vram_share":0.25}],"vram_share":0.25,"requests":2,"errors":1,"in_flight":0,"avg_latency_ms":200.0,"recent_latency_ms":null,"tokens_per_sec":42.0,"last_error":null}"#
        );
    }

    fn gateway() -> GatewayView {
        GatewayView {
            requests: 2,
            in_flight: 0,
            queue_depth: 1,
            waits: WaitsView {
                count: 2,
                mean_ms: Some(0.5),
            },
            retries: 0,
            hedges: 0,
            broken_streams: 0,
            disconnects: 0,
            rejected: 0,
            by_route: [("/api/chat 200".to_string(), 2)].into(),
            recent: vec![GatewayRequest {
                at_ms: 5,
                route: "/api/chat".into(),
                model: "m".into(),
                node: "alpha".into(),
                host: None,
                status: 200,
                ms: 12,
                queue_ms: Some(0),
            }],
            address: None,
        }
    }

    #[test]
    fn gateway_traffic() {
        assert_eq!(
            text(&gateway()),
            r#"{"requests":2,"in_flight":0,"queue_depth":1,"waits":{"count":2,"mean_ms":0.5},"retries":0,"hedges":0,"broken_streams":0,"disconnects":0,"rejected":0,"by_route":{"/api/chat 200":2},"recent":[{"at_ms":5,"route":"/api/chat","model":"m","node":"alpha","host":null,"status":200,"ms":12,"queue_ms":0}]}"#
        );
        let shown = GatewayView {
            address: Some("http://127.0.0.1:11434".into()),
            ..gateway()
        };
        assert!(text(&shown).ends_with(r#"}],"address":"http://127.0.0.1:11434"}"#));
    }

    #[test]
    fn snapshot_keys_and_metrics_as_the_query_result_has_them() {
        let metrics = Metrics {
            total_execution_time: 2.5,
            hosts_used: 2,
            ..Default::default()
        };
        let s = Snapshot {
            version: 9,
            nodes: vec![],
            coordinator: None,
            backends: vec![],
            metrics: Some(Arc::new(metrics.clone())),
            tasks: vec![],
            routing: vec![],
            notices: vec![],
            gateway: None,
        };
        let v = serde_json::to_value(&s).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "version",
                "nodes",
                "coordinator",
                "backends",
                "metrics",
                "tasks",
                "routing",
                "notices",
                "gateway"
            ]
        );
        assert_eq!(v["coordinator"], Value::Null);
        assert_eq!(v["gateway"], Value::Null);
        assert_eq!(v["metrics"], serde_json::to_value(&metrics).unwrap());
        assert_eq!(v["metrics"]["total_execution_time"], json!(2.5));
        let empty = Snapshot {
            metrics: None,
            gateway: Some(gateway()),
            ..s
        };
        let v = serde_json::to_value(&empty).unwrap();
        assert_eq!(v["metrics"], Value::Null);
        assert_eq!(v["gateway"]["waits"]["mean_ms"], json!(0.5));
    }
}
