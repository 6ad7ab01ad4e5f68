//! `help` and `status`.

use super::settings_cmds::{longform_label, strategy_label};
use super::{App, Handled, Outcome, Sink};
use crate::command::COMMANDS;
use crate::ui;

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

impl App {
    /// The current value shown beside a command in `help`: the value in
    /// force (a command-line flag beats the saved setting).
    fn current_value(&self, name: &str) -> Option<String> {
        let e = self.cfg.effective();
        let s = self.cfg.settings();
        Some(match name {
            "mode" => e.mode.word().to_string(),
            "distributed" => format!(
                "task {}, model sharding {}",
                on_off(e.route.task_distribution()),
                on_off(e.route.model_sharding())
            ),
            "nodes" => format!(
                "{} node(s), {} host(s)",
                self.cluster.registry.len(),
                self.cluster.registry.hosts().len()
            ),
            "rpc" => format!("{} backend(s)", s.rpc_backends.len()),
            "collab" => on_off(e.collaborative).into(),
            "refine" => e.refinement_rounds.to_string(),
            "synthesis" => e.synthesis_model.clone().unwrap_or_else(|| "none".into()),
            "timeout" => format!("{}s", s.agent_timeout),
            "ast" => on_off(e.ast_voting).into(),
            "quality" => format!("{:.2}", e.quality_threshold),
            "qretries" => e.max_quality_retries.to_string(),
            "longform" => e.longform.word().into(),
            "strategy" => e.strategy.word().into(),
            "model" => e.model.clone(),
            "rag" => format!("{}, {}", on_off(e.rag_enabled), e.rag_model),
            "redis" if s.redis_logging_enabled => {
                format!("on, {}", self.services.redis.link.state().word())
            }
            "redis" => "off".into(),
            "verbose" => on_off(s.dashboard_verbose).into(),
            _ => return None,
        })
    }

    pub(super) fn help(&self, sink: &mut dyn Sink) {
        sink.out("Commands (current value in brackets); any other line is a query:");
        // One column for every usage, as wide as the widest.
        let width = COMMANDS
            .iter()
            .map(|s| s.usage.chars().count())
            .max()
            .unwrap_or(0);
        for spec in COMMANDS {
            let value = self
                .current_value(spec.name)
                .map(|v| format!(" [{v}]"))
                .unwrap_or_default();
            sink.out(&format!("  {:<width$}  {}{}", spec.usage, spec.help, value));
        }
        sink.out("");
        sink.out("Strategies: auto/multi/parallel use the host-aware work queue (at most one request per");
        sink.out("physical host at a time unless host_capacity is raised); single pins the preferred node;");
        sink.out("gpu prefers nodes whose /api/ps shows the model in VRAM.");
        sink.out("");
        sink.out(
            "Queries: `!long QUESTION` writes the answer in parts (in any mode), `!short QUESTION`",
        );
        sink.out("in one part, whatever `longform` says.");
    }

    pub(super) async fn status(&mut self, sink: &mut dyn Sink) -> Handled {
        let nodes = self.cluster.registry.nodes().to_vec();
        // Cooling nodes are left to their own re-probe schedule.
        let awake: Vec<_> = nodes
            .iter()
            .filter(|n| !n.state().cooling())
            .cloned()
            .collect();
        let healthy = match self.probe_for_view(&awake, false, sink).await {
            Some(results) => results.iter().filter(|r| r.ok).count(),
            // A large registry: what the background probes found so far.
            None => nodes.iter().filter(|n| n.state().health.is_up()).count(),
        };
        let health = health_summary(&nodes);
        let rag_line = self.rag_status(sink).await;
        let (rag_place, rag_model) = self.rag_where().await;
        let e = self.cfg.effective();
        let s = self.cfg.settings();
        let mut t = ui::table(&["Property", "Value"]);
        let mut row = |k: &str, v: String| {
            t.add_row(vec![k.to_string(), v]);
        };
        row("Mode", e.mode.word().into());
        row("Model", e.model.clone());
        row(
            "Synthesis Model",
            e.synthesis_model
                .clone()
                .unwrap_or_else(|| "None (same as model)".into()),
        );
        row("Strategy", strategy_label(e.strategy).into());
        row("Long-form Answers", longform_label(e.longform).into());
        row("Collaboration", on_off(e.collaborative).into());
        row("Refinement Rounds", e.refinement_rounds.to_string());
        row("Agent Timeout", format!("{}s", s.agent_timeout));
        row("AST Quality Voting", on_off(e.ast_voting).into());
        row("Quality Threshold", format!("{:.2}", e.quality_threshold));
        row("Quality Retries", e.max_quality_retries.to_string());
        row(
            "Task Distribution",
            on_off(e.route.task_distribution()).into(),
        );
        row("Model Sharding", on_off(e.route.model_sharding()).into());
        row("RPC Backends", s.rpc_backends.len().to_string());
        row("FlockParser RAG", rag_line);
        row("RAG Knowledge Base", rag_place);
        row("RAG Model", rag_model);
        row("Redis", self.services.redis.describe());
        row("Verbose", on_off(s.dashboard_verbose).into());
        let sim = if self.cluster.registry.simulated {
            " (simulated)"
        } else {
            ""
        };
        row("Ollama Nodes", format!("{}{sim}", nodes.len()));
        row("Healthy Nodes", healthy.to_string());
        row("Node Health", health);
        row(
            "Physical Hosts",
            self.cluster.registry.hosts().len().to_string(),
        );
        row("Settings File", self.cfg.store.path.display().to_string());
        row(
            "Node File",
            match self.cluster.registry.store() {
                Some(st) => st.path.display().to_string(),
                None => "none (simulated nodes live in memory)".into(),
            },
        );
        sink.out("SYSTEM STATUS");
        sink.out(&t.to_string());
        Ok(Outcome::OK)
    }
}

/// "2 healthy, 1 cooling" — the health view in a phrase.
fn health_summary(nodes: &[std::sync::Arc<crate::nodes::Node>]) -> String {
    let order = ["healthy", "busy", "suspect", "cooling", "unknown"];
    let words: Vec<String> = order
        .iter()
        .filter_map(|w| {
            let n = nodes
                .iter()
                .filter(|x| x.state().health.word() == *w)
                .count();
            (n > 0).then(|| format!("{n} {w}"))
        })
        .collect();
    if words.is_empty() {
        "-".into()
    } else {
        words.join(", ")
    }
}
