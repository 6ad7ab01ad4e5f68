//! `mode distributed`, `discover [CIDR]` and `--discover`: scan, merge, save, summarise.

use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use super::{App, CommandError, Handled, Outcome, Sink};
use crate::nodes::discovery::{self, Found};
use crate::ollama::{host, Timeouts};
use crate::ui;

impl App {
    fn discovery_timeouts(&self, connect_ms: Option<u64>) -> (Duration, Duration) {
        let eff = self.cfg.effective();
        let c = connect_ms.map_or(eff.discovery_connect, Duration::from_millis);
        (c, eff.discovery_verify)
    }

    /// The full scan behind `mode distributed`: OLLAMA_HOST first, then the subnets.
    pub(super) async fn discover_for_mode(&mut self, sink: &mut dyn Sink) -> Handled {
        self.discover(None, None, true, sink).await
    }

    /// `discover [CIDR] [--timeout MS]`.
    pub(super) async fn discover_cmd(
        &mut self,
        cidr: Option<Ipv4Net>,
        timeout_ms: Option<u64>,
        sink: &mut dyn Sink,
    ) -> Handled {
        self.discover(cidr, timeout_ms, true, sink).await
    }

    pub(super) async fn discover(
        &mut self,
        cidr: Option<Ipv4Net>,
        connect_ms: Option<u64>,
        with_ollama_host: bool,
        sink: &mut dyn Sink,
    ) -> Handled {
        if self.cluster.registry.simulated {
            sink.err(
                "ℹ️  Simulated cluster: discovery is skipped (the simulated nodes live in memory).",
            );
            return Ok(Outcome::OK);
        }
        let nets = cidr
            .map_or_else(
                || discovery::subnets(None, self.cfg.env.subnets.as_deref()),
                |n| Ok(vec![n]),
            )
            .map_err(|e| match e {
                discovery::SubnetError::NoRoute => CommandError::network(format!(
                    "discover: {e}; give a CIDR, e.g. `discover 10.0.0.0/24`"
                )),
                e => CommandError::network(format!("discover: {e}")),
            })?;
        let addrs = discovery::addresses(&nets)
            .map_err(|e| CommandError::network(format!("discover: {e}")))?;
        let (connect, verify) = self.discovery_timeouts(connect_ms);
        let started = Instant::now();
        let mut found: Vec<Found> = Vec::new();
        if with_ollama_host {
            if let Some(f) = self.probe_ollama_host(verify).await {
                found.push(f);
            }
        }
        let names: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
        sink.err(&format!(
            "📡 Scanning {} for Ollama nodes: {} address{} on port {} ...",
            names.join(", "),
            addrs.len(),
            if addrs.len() == 1 { "" } else { "es" },
            discovery::OLLAMA_PORT
        ));
        let bar = ui::progress::bar(addrs.len() as u64, "scanning");
        let probed = addrs.len();
        let (_report, scanned) =
            discovery::scan_ollama(&self.cluster.client, addrs, connect, verify, || bar.inc(1))
                .await;
        bar.finish_and_clear();
        found.extend(scanned);
        let merge = discovery::merge(&mut self.cluster.registry, &found);
        let mut ok = true;
        if !merge.new.is_empty() {
            for url in &merge.new {
                sink.out(&format!("   ✅ Found: {url}"));
            }
            ok = self.save_nodes(sink).await;
        }
        let hosts = self.cluster.registry.hosts().len();
        let nodes = self.cluster.registry.len();
        sink.out(&format!(
            "🔍 Discovery: probed {probed} address{} in {:.2}s, found {} Ollama node{} ({} new); registry: {nodes} node{} on {hosts} physical host{} — {}",
            if probed == 1 { "" } else { "es" },
            started.elapsed().as_secs_f64(),
            merge.found,
            if merge.found == 1 { "" } else { "s" },
            merge.new.len(),
            if nodes == 1 { "" } else { "s" },
            if hosts == 1 { "" } else { "s" },
            discovery::parallel_decision(hosts, nodes),
        ));
        Ok(Outcome::from(ok))
    }

    /// `OLLAMA_HOST`, if set and answering.
    async fn probe_ollama_host(&self, verify: Duration) -> Option<Found> {
        let raw = self
            .cfg
            .env
            .ollama_host
            .as_deref()
            .filter(|s| !s.trim().is_empty())?;
        let url = host::parse(raw).ok()?.base_url();
        let t = Timeouts::new(verify, verify, verify);
        let models = self.cluster.client.tags(&url, t).await.ok()?;
        Some(Found {
            url,
            models: models.into_iter().map(|m| m.name).collect(),
        })
    }
}
