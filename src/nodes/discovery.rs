//! Ollama discovery: which subnets to scan, the `/api/tags` verifier, merging
//! what was found into the registry, and the summary a user reads.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::Ipv4Net;

use super::registry::{AddOutcome, Registry};
use super::scan::{self, ScanOptions};
use crate::config::nodes_file::NodeEntry;
use crate::ollama::{host, Client, Timeouts};

pub(crate) const OLLAMA_PORT: u16 = 11434;

/// Why there is nothing to scan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum SubnetError {
    /// No CIDR given and no route to learn the local subnet from: the caller
    /// says how its user names one.
    #[error("cannot tell this machine's subnet (no route)")]
    NoRoute,
    #[error("{0}")]
    Bad(String),
}

/// The subnets to scan: the given CIDR, else `from_env` (the
/// `SYNAPTICLLAMAS_SUBNETS` list), else the local /24.
pub(crate) fn subnets(
    cidr: Option<&str>,
    from_env: Option<&str>,
) -> Result<Vec<Ipv4Net>, SubnetError> {
    if let Some(c) = cidr {
        return scan::parse_cidr(c)
            .map(|n| vec![n])
            .map_err(|e| SubnetError::Bad(e.to_string()));
    }
    if let Some(list) = from_env.filter(|l| !l.trim().is_empty()) {
        return scan::parse_cidr_list(list)
            .map_err(|e| SubnetError::Bad(format!("SYNAPTICLLAMAS_SUBNETS: {e}")));
    }
    scan::local_subnet()
        .map(|n| vec![n])
        .ok_or(SubnetError::NoRoute)
}

/// Every address to probe in `nets`, each once, in order.
pub fn addresses(nets: &[Ipv4Net]) -> Result<Vec<Ipv4Addr>, scan::TooLarge> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for n in nets {
        for a in scan::hosts(n)? {
            if seen.insert(a) {
                out.push(a);
            }
        }
    }
    Ok(out)
}

/// A server found by the scan, with the models its `/api/tags` listed.
#[derive(Debug, Clone)]
pub struct Found {
    pub url: String,
    pub models: Vec<String>,
}

/// Scan `addrs` on the Ollama port; an open port counts only if `/api/tags`
/// answers with Ollama's JSON within `verify`.
pub(crate) async fn scan_ollama(
    client: &Client,
    addrs: Vec<Ipv4Addr>,
    connect: Duration,
    verify: Duration,
    on_progress: impl Fn() + Send + Sync,
) -> (scan::ScanReport<Vec<String>>, Vec<Found>) {
    let opts = ScanOptions {
        port: OLLAMA_PORT,
        connect_timeout: connect,
        concurrency: scan::concurrency_limit(),
    };
    let t = Timeouts::new(connect, verify, verify);
    let report = scan::scan(
        addrs,
        &opts,
        |addr: SocketAddr| {
            let client = client.clone();
            async move {
                let url = format!("http://{addr}");
                client
                    .tags(&url, t)
                    .await
                    .ok()
                    .map(|m| m.into_iter().map(|m| m.name).collect::<Vec<_>>())
            }
        },
        on_progress,
    )
    .await;
    let found = report
        .found
        .iter()
        .map(|(addr, models)| Found {
            url: format!("http://{addr}"),
            models: models.clone(),
        })
        .collect();
    (report, found)
}

/// What merging found servers into the registry did.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Merge {
    pub found: usize,
    pub new: Vec<String>,
    /// Found servers that were already registered (possibly under another address of this machine).
    pub known: usize,
}

/// Add found servers; ones already there keep their name and priority.
pub(crate) fn merge(registry: &mut Registry, found: &[Found]) -> Merge {
    let mut m = Merge {
        found: found.len(),
        ..Default::default()
    };
    for f in found {
        let Ok(spec) = host::parse(&f.url) else {
            continue;
        };
        let entry = NodeEntry {
            url: spec.base_url(),
            name: spec.default_name(),
            priority: 0,
            host_id: None,
            extra: Default::default(),
        };
        if registry.find_same_server(&entry.url).is_some() {
            m.known += 1;
        } else if registry.add(entry, false) == AddOutcome::Added {
            m.new.push(spec.base_url());
        }
        if let Some(node) = registry.find_same_server(&f.url) {
            let mut st = node.state();
            st.record_success();
            st.models = f.models.clone();
        }
    }
    m
}

/// Whether queries will run in parallel with `hosts` physical hosts, and why.
pub(crate) fn parallel_decision(hosts: usize, nodes: usize) -> String {
    match (hosts, nodes) {
        (0, _) => "queries cannot run: no nodes".into(),
        (1, 1) => "queries run sequentially (one node)".into(),
        (1, n) => format!("queries run sequentially: all {n} nodes are on one machine (parallel requests there run slower)"),
        (h, _) => format!("queries run in parallel across {h} physical hosts, one request per host at a time"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_words() {
        assert!(parallel_decision(1, 2).contains("sequentially"));
        assert!(parallel_decision(3, 3).contains("parallel across 3"));
        assert!(parallel_decision(0, 0).contains("no nodes"));
    }

    #[test]
    fn addresses_are_unique_and_hosts_only() {
        let nets = vec![
            scan::parse_cidr("10.77.0.0/30").unwrap(),
            scan::parse_cidr("10.77.0.1").unwrap(),
        ];
        let a = addresses(&nets).unwrap();
        assert_eq!(
            a,
            vec![Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 0, 2)]
        );
        assert!(subnets(Some("10.77.0.0/33"), None).is_err());
        assert_eq!(
            subnets(None, Some("127.0.0.1/32")).unwrap(),
            vec!["127.0.0.1/32".parse::<Ipv4Net>().unwrap()]
        );
        assert!(subnets(None, Some("nonsense"))
            .unwrap_err()
            .to_string()
            .starts_with("SYNAPTICLLAMAS_SUBNETS: "));
    }

    #[test]
    fn merge_keeps_names_and_collapses_loopback() {
        let mut r = Registry::in_memory();
        r.add(
            NodeEntry {
                url: "http://127.0.0.1:11434".into(),
                name: "mine".into(),
                priority: 3,
                host_id: None,
                extra: Default::default(),
            },
            false,
        );
        let found = vec![
            Found {
                url: "http://127.0.0.1:11434".into(),
                models: vec!["m".into()],
            },
            Found {
                url: "http://localhost:11434".into(),
                models: vec![],
            },
            Found {
                url: "http://203.0.113.9:11434".into(),
                models: vec![],
            },
        ];
        let m = merge(&mut r, &found);
        assert_eq!(m.new, vec!["http://203.0.113.9:11434".to_string()]);
        assert_eq!(m.known, 2);
        assert_eq!(r.nodes()[0].name(), "mine");
        assert_eq!(r.nodes()[0].entry.priority, 3);
        assert_eq!(r.nodes()[1].name(), "ollama-203-0-113-9");
    }
}
