//! Physical-host identity: which registry entries share one machine.
//! A node's host is its `host_id` if set, else its resolved IP, with every
//! loopback address and this machine's own addresses folded into one identity.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs, UdpSocket};
use std::sync::OnceLock;

use crate::config::nodes_file::NodeEntry;
use crate::ollama::host;

pub(crate) const THIS_MACHINE: &str = "this machine";

/// The addresses of this machine's interfaces (read once).
pub(crate) fn local_addrs() -> &'static BTreeSet<IpAddr> {
    static ADDRS: OnceLock<BTreeSet<IpAddr>> = OnceLock::new();
    ADDRS.get_or_init(|| {
        let mut set = interface_addrs();
        if let Some(ip) = primary_ip() {
            set.insert(ip);
        }
        set
    })
}

/// The source address the kernel would use to reach 10.255.255.255: learned by
/// connecting a UDP socket, which sends no packet.
pub(crate) fn primary_ip() -> Option<IpAddr> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((Ipv4Addr::new(10, 255, 255, 255), 9)).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

fn interface_addrs() -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    // SAFETY: getifaddrs fills a linked list we walk read-only and then free.
    unsafe {
        let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match (*addr).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        out.insert(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        out.insert(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    out
}

pub(crate) fn is_local(ip: &IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || local_addrs().contains(ip)
}

/// Resolve a URL's host to an IP (IP literals directly; names through the resolver).
pub fn resolve(url: &str) -> Option<IpAddr> {
    let spec = host::parse(url).ok()?.connectable();
    if let Some(ip) = spec.ip() {
        return Some(ip);
    }
    if spec.host.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    (spec.host.as_str(), spec.port)
        .to_socket_addrs()
        .ok()?
        .next()
        .map(|a| a.ip())
}

/// The physical-host identity of a registry entry.
pub(crate) fn host_identity(entry: &NodeEntry) -> String {
    if let Some(id) = entry.host_id.as_deref().filter(|s| !s.is_empty()) {
        return id.to_string();
    }
    match resolve(&entry.url) {
        Some(ip) if is_local(&ip) => THIS_MACHINE.to_string(),
        Some(ip) => ip.to_string(),
        None => host::parse(&entry.url)
            .map(|h| h.host)
            .unwrap_or_else(|_| entry.url.clone()),
    }
}

/// Whether two URLs name the same server: same scheme, port and path, and hosts
/// that are the same address or both this machine.
pub(crate) fn same_server(a: &str, b: &str) -> bool {
    let (Ok(x), Ok(y)) = (host::parse(a), host::parse(b)) else {
        return false;
    };
    let (x, y) = (x.connectable(), y.connectable());
    if x.scheme != y.scheme || x.port != y.port || x.path != y.path {
        return false;
    }
    if x.host == y.host {
        return true;
    }
    match (resolve(a), resolve(b)) {
        (Some(p), Some(q)) => p == q || (is_local(&p) && is_local(&q)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn entry(url: &str, host_id: Option<&str>) -> NodeEntry {
        NodeEntry {
            url: url.into(),
            name: "n".into(),
            priority: 0,
            host_id: host_id.map(String::from),
            extra: Map::new(),
        }
    }

    #[test]
    fn loopback_folds_into_this_machine() {
        assert_eq!(
            host_identity(&entry("http://127.0.0.1:11434", None)),
            THIS_MACHINE
        );
        assert_eq!(
            host_identity(&entry("http://127.0.0.2:11435", None)),
            THIS_MACHINE
        );
        assert_eq!(
            host_identity(&entry("http://localhost:11434", None)),
            THIS_MACHINE
        );
        assert_eq!(
            host_identity(&entry("http://[::1]:11434", None)),
            THIS_MACHINE
        );
    }

    #[test]
    fn host_id_wins_and_ips_stay_apart() {
        assert_eq!(
            host_identity(&entry("http://127.0.0.1:1", Some("rack-a"))),
            "rack-a"
        );
        assert_eq!(
            host_identity(&entry("http://203.0.113.7:11434", None)),
            "203.0.113.7"
        );
    }

    #[test]
    fn same_server_rules() {
        assert!(same_server(
            "http://127.0.0.1:11434",
            "http://localhost:11434"
        ));
        assert!(same_server("127.0.0.1", "http://127.0.0.1:11434"));
        assert!(!same_server(
            "http://127.0.0.1:11434",
            "http://127.0.0.1:11435"
        ));
        assert!(!same_server(
            "http://203.0.113.7:11434",
            "http://203.0.113.8:11434"
        ));
        if let Some(ip) = primary_ip() {
            assert!(same_server(
                &format!("http://{ip}:11434"),
                "http://127.0.0.1:11434"
            ));
        }
    }
}
