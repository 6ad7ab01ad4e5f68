//! llama.cpp `rpc-server` backends: addresses, reachability, per-backend stats,
//! and the warning llama.cpp itself gives about exposing them.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::settings::{default_rpc_port, RpcBackendEntry};

/// Why a backend address does not parse (each names the input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendAddrError {
    #[error("`{0}`: unclosed `[`")]
    Unclosed(String),
    #[error("`{0}` is not a port number (1-65535)")]
    Port(String),
    #[error("`{0}` is not HOST[:PORT]")]
    NotHostPort(String),
}

/// `HOST[:PORT]` (port 50052 by default; `[v6]:port` accepted).
pub fn parse(s: &str) -> Result<RpcBackendEntry, BackendAddrError> {
    let s = s.trim();
    let port_of = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| BackendAddrError::Port(p.to_string()))
    };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| BackendAddrError::Unclosed(s.to_string()))?;
        match after.strip_prefix(':') {
            Some(p) => (h, port_of(p)?),
            None if after.is_empty() => (h, default_rpc_port()),
            None => return Err(BackendAddrError::NotHostPort(s.to_string())),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, port_of(p)?),
            _ => (s, default_rpc_port()),
        }
    };
    let ok = !host.is_empty()
        && (host.parse::<IpAddr>().is_ok()
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
    if !ok || port == 0 {
        return Err(BackendAddrError::NotHostPort(s.to_string()));
    }
    Ok(RpcBackendEntry {
        host: host.to_string(),
        port,
        extra: Default::default(),
    })
}

pub fn addr(b: &RpcBackendEntry) -> String {
    if b.host.contains(':') {
        format!("[{}]:{}", b.host, b.port)
    } else {
        format!("{}:{}", b.host, b.port)
    }
}

/// llama.cpp's rpc-server has no authentication: warn about anything that is
/// neither loopback nor a private address.
pub(crate) fn exposure_warning(b: &RpcBackendEntry) -> Option<String> {
    let private = match b.host.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        Ok(IpAddr::V6(v6)) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
        Err(_) => b.host == "localhost" || b.host.ends_with(".local") || b.host.ends_with(".lan"),
    };
    (!private).then(|| {
        format!(
            "⚠️  {} is outside loopback and private ranges: llama.cpp's rpc-server has no authentication or encryption; \
             expose it only on a trusted network",
            addr(b)
        )
    })
}

/// TCP connect within `timeout` (rpc-server speaks no HTTP).
pub async fn reachable(b: &RpcBackendEntry, timeout: Duration) -> bool {
    tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((b.host.as_str(), b.port)),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

/// Requests that went through the coordinator while a backend was part of it.
#[derive(Debug, Clone, Default)]
pub struct BackendStats {
    pub up: Option<bool>,
    pub checked: Option<Instant>,
    pub requests: u64,
    pub ok: u64,
    latency_ms_sum: f64,
}

impl BackendStats {
    pub(crate) fn record(&mut self, ok: bool, latency: Duration) {
        self.requests += 1;
        if ok {
            self.ok += 1;
            self.latency_ms_sum += latency.as_secs_f64() * 1000.0;
        }
    }

    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.ok as f64 / self.requests as f64)
    }

    pub fn avg_latency_ms(&self) -> Option<f64> {
        (self.ok > 0).then(|| self.latency_ms_sum / self.ok as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        assert_eq!(addr(&parse("10.77.0.5").unwrap()), "10.77.0.5:50052");
        assert_eq!(addr(&parse("box:50053").unwrap()), "box:50053");
        assert_eq!(addr(&parse("[::1]:7").unwrap()), "[::1]:7");
        assert!(parse("a b").is_err());
        assert!(parse("h:x").is_err());
        assert!(parse("").is_err());
        assert!(parse("h:0").is_err());
    }

    #[test]
    fn exposure() {
        assert!(exposure_warning(&parse("127.0.0.1").unwrap()).is_none());
        assert!(exposure_warning(&parse("10.77.0.5").unwrap()).is_none());
        assert!(exposure_warning(&parse("192.168.1.4").unwrap()).is_none());
        assert!(exposure_warning(&parse("203.0.113.9").unwrap())
            .unwrap()
            .contains("no authentication"));
    }
}
