//! RPC backends registered in Redis the way SOLLOL does it:
//! `sollol:rpc:node:<ip>:<port>` holding a JSON description of the worker
//! (any port, not only 50052), and the `rpc_backends` list inside
//! `sollol:router:metadata`.

use std::time::Duration;

use redis::AsyncCommands;
use serde_json::{json, Value};

use super::link::{CallError, Link};

pub(crate) const NODE_PREFIX: &str = "sollol:rpc:node:";
pub(crate) const ROUTER_METADATA: &str = "sollol:router:metadata";
/// The original's registration lifetime (seconds).
pub(crate) const DEFAULT_TTL_SECS: u64 = 3600;
/// Limit for reading the registrations.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// `sollol:rpc:node:<host>:<port>`.
pub(crate) fn node_key(host: &str, port: u16) -> String {
    format!("{NODE_PREFIX}{host}:{port}")
}

/// Where a registration was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    NodeKey,
    RouterMetadata,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Registered {
    pub host: String,
    pub port: u16,
    pub found: Found,
    /// The registration's JSON (GPU and memory facts), when it is one.
    pub info: Option<Value>,
}

/// `sollol:rpc:node:10.0.0.5:50052` → ("10.0.0.5", 50052); IPv6 hosts keep their colons.
pub(crate) fn parse_node_key(key: &str) -> Option<(String, u16)> {
    let rest = key.strip_prefix(NODE_PREFIX)?;
    let (host, port) = rest.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().ok()?;
    (!host.is_empty() && port != 0).then(|| (host.to_string(), port))
}

/// The `rpc_backends` of a router metadata JSON: `{host, port}` objects or
/// `"host:port"` strings; anything else is skipped.
pub(crate) fn metadata_backends(text: &str) -> Vec<(String, u16)> {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    let Some(list) = v.get("rpc_backends").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|b| match b {
            Value::Object(o) => {
                let host = o.get("host")?.as_str()?.to_string();
                let port = match o.get("port") {
                    None => crate::config::settings::default_rpc_port(),
                    Some(Value::Number(n)) => u16::try_from(n.as_u64()?).ok()?,
                    Some(Value::String(s)) => s.parse().ok()?,
                    Some(_) => return None,
                };
                Some((host, port))
            }
            Value::String(s) => {
                let b = crate::sharding::backends::parse(s).ok()?;
                Some((b.host, b.port))
            }
            _ => None,
        })
        .filter(|(h, p)| !h.is_empty() && *p != 0)
        .collect()
}

/// Every backend registered in Redis, node keys first, without duplicates.
pub(crate) async fn registered_backends(link: &Link) -> Result<Vec<Registered>, CallError> {
    let (keys, metadata) = link
        .call(OP_TIMEOUT, |mut c| async move {
            let mut keys: Vec<String> = Vec::new();
            {
                let opts = redis::ScanOptions::default()
                    .with_pattern(format!("{NODE_PREFIX}*"))
                    .with_count(200);
                let mut it = c.scan_options::<String>(opts).await?;
                while let Some(k) = futures_util::StreamExt::next(&mut it).await {
                    keys.push(k?);
                }
            }
            keys.sort();
            keys.dedup();
            let values: Vec<Option<String>> = if keys.is_empty() {
                Vec::new()
            } else {
                c.mget(&keys).await?
            };
            // A key of another type is no registration of ours: ignore it.
            let metadata: Option<String> = c.get(ROUTER_METADATA).await.unwrap_or(None);
            Ok((keys.into_iter().zip(values).collect::<Vec<_>>(), metadata))
        })
        .await?;
    let mut out: Vec<Registered> = Vec::new();
    for (key, value) in keys {
        let Some((host, port)) = parse_node_key(&key) else {
            continue;
        };
        out.push(Registered {
            host,
            port,
            found: Found::NodeKey,
            info: value.and_then(|v| serde_json::from_str(&v).ok()),
        });
    }
    for (host, port) in metadata
        .as_deref()
        .map(metadata_backends)
        .unwrap_or_default()
    {
        if !out.iter().any(|r| r.host == host && r.port == port) {
            out.push(Registered {
                host,
                port,
                found: Found::RouterMetadata,
                info: None,
            });
        }
    }
    Ok(out)
}

/// What a worker registers: SOLLOL's shape (CPU memory, GPUs as `cuda:N`).
pub(crate) fn registration_value(cpu_ram_mb: u64, gpu_vram_mb: &[u64]) -> Value {
    let devices: Vec<String> = (0..gpu_vram_mb.len())
        .map(|i| format!("cuda:{i}"))
        .collect();
    let mut device_config = vec!["cpu".to_string()];
    device_config.extend(devices.iter().cloned());
    let mut memory = vec![cpu_ram_mb.to_string()];
    memory.extend(gpu_vram_mb.iter().map(|m| m.to_string()));
    json!({
        "has_gpu": !gpu_vram_mb.is_empty(),
        "gpu_devices": devices,
        "gpu_vram_mb": gpu_vram_mb,
        "gpu_names": [],
        "cpu_ram_mb": cpu_ram_mb,
        "device_config": device_config.join(","),
        "memory_config": memory.join(","),
        "total_parallel_workers": 1 + gpu_vram_mb.len(),
        "registered_by": "synapticllamas rpc-register",
    })
}

/// Memory available for layers on this machine (MB), from /proc/meminfo;
/// SOLLOL's CPU-only fallback (8000) where that cannot be read.
pub(crate) fn available_ram_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(8000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_keys() {
        assert_eq!(
            parse_node_key("sollol:rpc:node:10.77.0.5:50052"),
            Some(("10.77.0.5".into(), 50052))
        );
        assert_eq!(
            parse_node_key("sollol:rpc:node:127.0.0.1:6001"),
            Some(("127.0.0.1".into(), 6001))
        );
        assert_eq!(
            parse_node_key("sollol:rpc:node:fe80::1:50052"),
            Some(("fe80::1".into(), 50052))
        );
        assert_eq!(parse_node_key("sollol:rpc:node:box"), None);
        assert_eq!(parse_node_key("sollol:rpc:node::50052"), None);
        assert_eq!(parse_node_key("sollol:rpc:node:h:0"), None);
        assert_eq!(parse_node_key("sollol:rpc:stats:h:1"), None);
        assert_eq!(node_key("10.0.0.1", 7), "sollol:rpc:node:10.0.0.1:7");
    }

    #[test]
    fn router_metadata_shapes() {
        let t = r#"{"nodes":[],"rpc_backends":[{"host":"10.77.0.5","port":50052},
                   {"host":"10.77.0.6","port":"6000"},{"host":"10.77.0.7"},"10.77.0.8:7",
                   {"port":1},{"host":"x","port":70000},3]}"#;
        assert_eq!(
            metadata_backends(t),
            vec![
                ("10.77.0.5".into(), 50052),
                ("10.77.0.6".into(), 6000),
                ("10.77.0.7".into(), 50052),
                ("10.77.0.8".into(), 7)
            ]
        );
        assert!(metadata_backends(r#"{"source":"pool","metrics":{}}"#).is_empty());
        assert!(metadata_backends("not json").is_empty());
    }

    #[test]
    fn registration_shape() {
        let v = registration_value(12000, &[]);
        assert_eq!(v["has_gpu"], false);
        assert_eq!(v["device_config"], "cpu");
        assert_eq!(v["memory_config"], "12000");
        assert_eq!(v["total_parallel_workers"], 1);
        let v = registration_value(12000, &[19200]);
        assert_eq!(v["has_gpu"], true);
        assert_eq!(v["gpu_devices"], json!(["cuda:0"]));
        assert_eq!(v["device_config"], "cpu,cuda:0");
        assert_eq!(v["memory_config"], "12000,19200");
        assert_eq!(v["total_parallel_workers"], 2);
    }
}
