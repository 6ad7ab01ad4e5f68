//! Node commands: nodes, add, remove, health, save, load.

use std::path::Path;
use std::sync::Arc;

use super::probing::probe_bounded;
use super::{App, CommandError, Handled, Outcome, Sink};
use crate::blocking;
use crate::config::atomic::write_atomic;
use crate::config::nodes_file::{self, NodeEntry};
use crate::config::FileError;
use crate::nodes::health::probe;
use crate::nodes::registry::{AddOutcome, Node, RemoveError};
use crate::ollama::host::HostSpec;
use crate::ui;

fn fmt_ms(v: Option<f64>) -> String {
    v.map(|ms| format!("{ms:.0} ms"))
        .unwrap_or_else(|| "-".into())
}

fn fmt_gb(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

impl App {
    pub(super) async fn nodes(&mut self, sink: &mut dyn Sink) -> Handled {
        let nodes: Vec<Arc<Node>> = self.cluster.registry.nodes().to_vec();
        self.probe_for_view(&nodes, true, sink).await;
        self.print_coordinator_section(sink).await;
        let label = if self.cluster.registry.simulated {
            " — simulated"
        } else {
            ""
        };
        sink.out(&format!("🔀 OLLAMA NODES (task distribution{label})"));
        if nodes.is_empty() {
            sink.out("⚠️  No Ollama nodes registered (use `add URL` or `discover CIDR`)");
        } else {
            let mut t = ui::table(&[
                "Name",
                "URL",
                "Host",
                "Status",
                "Models",
                "Loaded (VRAM)",
                "Reqs",
                "Errs",
                "Latency",
            ]);
            // On a narrow terminal the counts keep their headers whole; the
            // text columns wrap.
            ui::keep_whole(&mut t, &[6, 7, 8]);
            for n in &nodes {
                let st = n.state();
                let status = st.describe();
                let models = if st.models.is_empty() {
                    "-".to_string()
                } else {
                    st.models.join(", ")
                };
                let loaded = if st.loaded.is_empty() {
                    "-".to_string()
                } else {
                    st.loaded
                        .iter()
                        .map(|m| {
                            let pct = if m.size > 0 {
                                m.size_vram as f64 * 100.0 / m.size as f64
                            } else {
                                0.0
                            };
                            format!("{} ({}, {pct:.0}% GPU)", m.name, fmt_gb(m.size))
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let name = if n.simulated {
                    format!("{} (simulated)", n.name())
                } else {
                    n.name().to_string()
                };
                t.add_row(vec![
                    name,
                    n.url().to_string(),
                    n.host.clone(),
                    status,
                    models,
                    loaded,
                    st.requests.to_string(),
                    st.errors.to_string(),
                    fmt_ms(st.avg_latency_ms()),
                ]);
            }
            sink.out(&t.to_string());
            let hosts = self.cluster.registry.hosts().len();
            sink.out(&format!(
                "{} node{} on {hosts} physical host{}",
                nodes.len(),
                if nodes.len() == 1 { "" } else { "s" },
                if hosts == 1 { "" } else { "s" }
            ));
        }
        self.print_rpc_section(sink).await;
        sink.out("");
        sink.out(&format!("🗄️  Redis: {}", self.services.redis.describe()));
        Ok(Outcome::OK)
    }

    pub(super) async fn add(
        &mut self,
        spec: &HostSpec,
        force: bool,
        sink: &mut dyn Sink,
    ) -> Handled {
        let url = spec.base_url();
        if let Some(existing) = self.cluster.registry.find(&url) {
            return Err(CommandError::refused(format!(
                "Node already registered: {} ({})",
                existing.name(),
                existing.url()
            )));
        }
        let entry = NodeEntry {
            url: url.clone(),
            name: spec.default_name(),
            priority: 0,
            host_id: None,
            extra: Default::default(),
        };
        let node = Arc::new(Node::new(entry, false));
        let result = probe(
            &self.cluster.client,
            node.clone(),
            false,
            &*self.cluster.sched,
        )
        .await;
        if !result.ok {
            if !force {
                return Err(CommandError::Network {
                    message: format!(
                        "Failed to add node: {url} is not reachable ({})",
                        result.detail
                    ),
                    hint: Some("Use `add URL --force` to add it anyway.".into()),
                });
            }
            sink.warn(&format!(
                "⚠️  {url} is not reachable ({}); added anyway (--force)",
                result.detail
            ));
        }
        let name = node.name().to_string();
        let host = node.host.clone();
        if let AddOutcome::Duplicate(u) = self.cluster.registry.add_node(node) {
            return Err(CommandError::refused(format!(
                "Node already registered: {u}"
            )));
        }
        let saved = self.save_nodes(sink).await;
        super::confirm(sink, saved, &format!("Added node: {name} ({url})"));
        let neighbours: Vec<String> = self
            .cluster
            .registry
            .nodes()
            .iter()
            .filter(|n| n.host == host && n.url() != url)
            .map(|n| n.name().to_string())
            .collect();
        if !neighbours.is_empty() {
            sink.err(&format!(
                "ℹ️  {name} is on the same physical host as {}: they share its requests (one at a time unless host_capacity is raised)",
                neighbours.join(", ")
            ));
        }
        Ok(Outcome::from(saved))
    }

    pub(super) async fn remove(&mut self, key: &str, sink: &mut dyn Sink) -> Handled {
        match self.cluster.registry.remove(key) {
            Ok(n) => {
                let saved = self.save_nodes(sink).await;
                super::confirm(
                    sink,
                    saved,
                    &format!("Removed node: {} ({})", n.name(), n.url()),
                );
                Ok(Outcome::from(saved))
            }
            Err(RemoveError::NotFound) => Err(CommandError::NotFound(format!(
                "Node not found: {}",
                key.escape_debug()
            ))),
            Err(RemoveError::Ambiguous(which)) => Err(CommandError::refused(format!(
                "`{}` names {} nodes: {}; remove one by its URL",
                key.escape_debug(),
                which.len(),
                which.join(", ")
            ))),
        }
    }

    pub(super) async fn health(&mut self, sink: &mut dyn Sink) -> Handled {
        let nodes = self.cluster.registry.nodes().to_vec();
        if nodes.is_empty() {
            sink.out("⚠️  No nodes registered");
            return Ok(Outcome::OK);
        }
        sink.err("🏥 Running health checks...");
        let results =
            probe_bounded(&self.cluster.client, &nodes, false, &*self.cluster.sched).await;
        let healthy = results.iter().filter(|r| r.ok).count();
        for r in &results {
            let mark = match (r.ok, r.busy) {
                (true, false) => "✅",
                (true, true) => "⏳",
                (false, _) => "❌",
            };
            let mut line = format!("{mark} {} ({}): {}", r.node.name(), r.node.url(), r.detail);
            let st = r.node.state();
            if !r.ok {
                line.push_str(&format!(" — {} (kept in the registry)", st.describe()));
            }
            sink.out(&line);
        }
        sink.out(&format!("✅ {healthy}/{} nodes healthy", results.len()));
        Ok(Outcome::OK)
    }

    pub(super) async fn save_to(&mut self, target: &Path, sink: &mut dyn Sink) -> Handled {
        let mut file = self.cluster.registry.to_file();
        if self.cluster.registry.simulated {
            file.entries = self
                .cluster
                .registry
                .nodes()
                .iter()
                .map(|n| n.entry.clone())
                .collect();
        }
        let (to, text) = (target.to_path_buf(), nodes_file::to_json(&file));
        blocking::try_run(move || write_atomic(&to, text.as_bytes()))
            .await
            .map_err(|e| CommandError::File(format!("save: {e:#}")))?;
        sink.out(&format!(
            "✅ Saved {} node(s) to {}",
            file.entries.len(),
            target.display()
        ));
        Ok(Outcome::OK)
    }

    /// `load FILE`: merge FILE's nodes into the registry (as the original did),
    /// say what was added, updated and kept, and save.
    pub(super) async fn load_from(&mut self, target: &Path, sink: &mut dyn Sink) -> Handled {
        let from = target.to_path_buf();
        let loaded = blocking::run(move || nodes_file::load(&from)).await;
        match loaded.unwrap_or_else(|e| Err(FileError::new(target, e.to_string()))) {
            Ok(None) => Err(CommandError::File(format!(
                "load: {}: no such file",
                target.display()
            ))),
            Err(e) => Err(CommandError::File(format!("load: {e}"))),
            Ok(Some((file, warnings))) => {
                for w in warnings {
                    sink.warn(&format!("⚠️  {w}"));
                }
                let n = file.entries.len();
                let r = self.cluster.registry.merge_file(file);
                let saved = self.save_nodes(sink).await;
                let mut what = vec![format!("{} added", r.added.len())];
                if !r.updated.is_empty() {
                    what.push(format!(
                        "{} updated from the file ({})",
                        r.updated.len(),
                        r.updated.join(", ")
                    ));
                }
                if r.unchanged > 0 {
                    what.push(format!("{} already registered", r.unchanged));
                }
                what.push(format!(
                    "{} registered node(s) not in the file kept",
                    r.kept
                ));
                super::confirm(
                    sink,
                    saved,
                    &format!(
                        "Loaded {n} node(s) from {}: {} (merged; registry: {} node(s))",
                        target.display(),
                        what.join(", "),
                        self.cluster.registry.len()
                    ),
                );
                Ok(Outcome::from(saved))
            }
        }
    }
}
