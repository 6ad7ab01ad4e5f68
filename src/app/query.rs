//! Queries: build the pool and scheduler for the current mode and strategy, run
//! the pipeline, show progress and notices as they come, print the answer.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{App, CommandError, Handled, Outcome, Sink};
use crate::config::choices::Mode;
use crate::config::nodes_file::NodeEntry;
use crate::dashboard::Hub;
use crate::nodes::health::probe_all;
use crate::nodes::Node;
use crate::ollama::host;
use crate::pipeline;
use crate::pipeline::call::Ctx;
use crate::pipeline::observer::Observer;
use crate::pipeline::plan::{Asked, QueryPlan};
use crate::pipeline::result::{NothingGenerated, QueryResult};
use crate::scheduler::{self, NoSlot, Policy, Pool};
use crate::ui;
use crate::ui::progress::TaskBars;

/// Why a query produced no answer at all.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("model sharding: {0}")]
    Sharding(crate::sharding::ShardingError),
    #[error("{0}")]
    Nothing(NothingGenerated),
    #[error("{}{dead}", failure.as_ref().map(|f| format!("{f}; ")).unwrap_or_default())]
    BackendDown {
        failure: Option<NothingGenerated>,
        dead: String,
    },
    /// Every node refused the connection: nothing listens there.
    #[error(
        "no node answers: {nodes} refused the connection — start Ollama there, `add URL` for a node that runs, or try the simulated cluster: `synapticllamas --simulate 3`"
    )]
    NothingAnswers { nodes: String },
}

/// The nodes named in one line: the first three (name and URL), then how
/// many more.
fn named(nodes: &[Arc<Node>]) -> String {
    let mut names: Vec<String> = nodes
        .iter()
        .take(3)
        .map(|n| format!("{} ({})", n.name(), n.url()))
        .collect();
    let more = nodes.len().saturating_sub(3);
    if more > 0 {
        names.push(format!("{more} more"));
    }
    match names.len() {
        0 => "the node".to_string(),
        1 => names.remove(0),
        n => format!("{} and {}", names[..n - 1].join(", "), names[n - 1]),
    }
}

/// One stderr line for an answer with gaps (the line counts as failed).
pub fn incomplete_line(r: &QueryResult) -> String {
    let parts: Vec<String> = r
        .gaps
        .iter()
        .map(|g| match (g.chunk, &g.focus) {
            (Some(n), _) => format!("part {n} missing"),
            _ => format!("{} missing", g.task),
        })
        .collect();
    format!(
        "❌ Query incomplete: {} ({} of the answer could not be generated; see above)",
        parts.join(", "),
        if r.gaps.len() == 1 {
            "one task"
        } else {
            "some tasks"
        }
    )
}

/// Notices go through a channel to the sink; progress goes to terminal bars.
struct AppObserver {
    tx: mpsc::UnboundedSender<String>,
    bars: TaskBars,
    hub: Arc<Hub>,
}

impl Observer for AppObserver {
    fn notice(&self, line: String) {
        self.hub.notice(line.clone());
        let _ = self.tx.send(line);
    }
    fn started(&self, task: &str, node: &str) {
        self.hub.task_started(task, node);
        self.bars.start(task, node);
    }
    fn progress(&self, task: &str, chars: usize) {
        self.bars.progress(task, chars);
    }
    fn streaming(&self, task: &str, tokens: u64, per_sec: Option<f64>) {
        self.bars.streaming(task, tokens, per_sec);
    }
    fn finished(&self, task: &str) {
        self.hub.task_finished(task);
        self.bars.finish(task);
    }
}

impl App {
    /// The nodes a query may use in the current mode.
    pub(super) fn pool_nodes(&mut self) -> Vec<Arc<Node>> {
        let all = self.cluster.registry.nodes().to_vec();
        let eff = self.cfg.effective();
        let distributed = eff.mode == Mode::Distributed && eff.route.task_distribution();
        if distributed && !all.is_empty() {
            return all;
        }
        if let Some(p) = scheduler::preferred(&all) {
            return vec![p];
        }
        vec![self.fallback_node()]
    }

    /// OLLAMA_HOST (or Ollama's default address) as a node, the same one every time.
    pub(super) fn fallback_node(&mut self) -> Arc<Node> {
        let raw = self.cfg.env.ollama_host.as_deref().unwrap_or_default();
        let spec = host::parse(raw).unwrap_or_else(|e| {
            // Not silently: the user set something that cannot be used.
            (self.services.say())(format!(
                "⚠️  OLLAMA_HOST: {e}; using http://127.0.0.1:11434"
            ));
            host::default_spec()
        });
        let url = spec.base_url();
        if let Some(n) = self.cluster.fallback.as_ref().filter(|n| n.url() == url) {
            return n.clone();
        }
        let node = Arc::new(Node::new(
            NodeEntry {
                url,
                name: spec.default_name(),
                priority: 0,
                host_id: None,
                extra: Default::default(),
            },
            false,
        ));
        self.cluster.fallback = Some(node.clone());
        node
    }

    /// Requests a physical host takes at once: the largest `host_capacity` of its
    /// nodes, else the setting, else 1.
    pub(super) fn apply_capacities(&self) {
        let default = self.cfg.effective().host_capacity;
        let mut per_host: HashMap<String, u32> = HashMap::new();
        for n in self.cluster.registry.nodes() {
            if let Some(c) = n.entry.extra.get("host_capacity").and_then(|v| v.as_u64()) {
                let c = c.clamp(1, 1024) as u32;
                let e = per_host.entry(n.host.clone()).or_insert(c);
                *e = (*e).max(c);
            }
        }
        if let Some(n) = &self.cluster.sharding.node {
            per_host.insert(n.host.clone(), self.cluster.sched.capacity(&n.host));
        }
        self.cluster.sched.set_capacities(default, per_host);
    }

    /// Run one query; notices stream to the sink while it runs.
    pub(crate) async fn run_query(
        &mut self,
        query: &str,
        sink: &mut dyn Sink,
    ) -> Result<QueryResult, QueryError> {
        let agents = self.agents.current(sink).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let observer = Arc::new(AppObserver {
            tx,
            bars: TaskBars::new(),
            hub: self.services.hub.clone(),
        });
        self.cluster
            .sched
            .set_events(Some(Arc::new(super::dashboard::HubEvents(
                self.services.hub.clone(),
            ))));
        self.cluster.sched.set_notifier(self.services.say());
        let nodes = self.pool_nodes();
        let names = named(&nodes);
        // Nodes cooling down whose backoff has passed get a quick probe first.
        let due: Vec<Arc<Node>> = nodes
            .iter()
            .filter(|n| n.state().reprobe_due(tokio::time::Instant::now()))
            .cloned()
            .collect();
        for r in probe_all(&self.cluster.client, &due, false, &*self.cluster.sched).await {
            if r.came_back {
                sink.err(&format!(
                    "ℹ️  {} is answering again; back in the pool ({})",
                    r.node.name(),
                    r.node.state().health.word()
                ));
            }
        }
        self.apply_capacities();
        let QueryPlan {
            mut plan,
            policy,
            route,
            model,
            synthesis_model,
            num_predict,
            timeouts,
        } = QueryPlan::new(self.cfg.effective(), Asked::default());
        let pool = Pool::new(nodes, policy);
        let pool_nodes = pool.nodes().to_vec();
        let (needs_coordinator, routing) = self.routing();
        for line in routing {
            self.services
                .hub
                .routing(line.clone(), "model size rule".to_string());
            sink.err(&line);
        }
        let coordinator = if needs_coordinator {
            let node = self
                .ensure_coordinator(sink)
                .await
                .map_err(QueryError::Sharding)?;
            Some(Pool::new(vec![node], Policy::Pool))
        } else {
            None
        };
        let ctx = Ctx {
            client: self.cluster.client.clone(),
            sched: self.cluster.sched.clone(),
            pool,
            coordinator,
            route,
            num_predict,
            model,
            synthesis_model,
            timeouts,
            agents,
            observer: observer.clone(),
            replies: Default::default(),
        };
        plan.rag = self.rag_retriever(sink).await;
        let fut = pipeline::run_query(&ctx, query, &plan);
        tokio::pin!(fut);
        let result = loop {
            tokio::select! {
                r = &mut fut => break r,
                Some(line) = rx.recv() => {
                    if !observer.bars.println(&line) {
                        sink.err(&line);
                    }
                }
            }
        };
        while let Ok(line) = rx.try_recv() {
            sink.err(&line);
        }
        if needs_coordinator {
            let secs = result
                .as_ref()
                .map(|r| r.metrics.total_execution_time)
                .unwrap_or(0.0);
            let ok = result.as_ref().is_ok_and(|r| r.complete());
            if let Some(dead) = self.after_coordinator_query(ok, secs).await {
                return Err(QueryError::BackendDown {
                    failure: result.err(),
                    dead,
                });
            }
        }
        // Nothing answered at all (every node refused every connection, and
        // none has answered in this session): say so, and what to do, in one
        // line. Nodes that went away mid-session get the task's own failure.
        let never_answered = pool_nodes
            .iter()
            .all(|n| n.state().avg_latency_ms().is_none());
        result.map_err(|n| {
            let refused = n.first.attempts.iter().all(|a| a.error.is_refused());
            if n.first.stopped == NoSlot::NothingAnswers && refused && never_answered {
                QueryError::NothingAnswers { nodes: names }
            } else {
                QueryError::Nothing(n)
            }
        })
    }

    /// A query typed at the prompt: run it, print the answer and its summary.
    pub(super) async fn query(&mut self, text: &str, sink: &mut dyn Sink) -> Handled {
        if let (Some(o), "") = crate::pipeline::scope::split_override(text) {
            return Err(CommandError::Query(format!(
                "`{}` needs a question after it",
                o.word()
            )));
        }
        let r = self
            .run_query(text, sink)
            .await
            .map_err(|e| CommandError::Query(format!("Query failed: {e}")))?;
        self.services.hub.set_metrics(r.metrics.clone());
        print_result(&r, sink);
        let complete = r.complete();
        if !complete {
            sink.fail(&incomplete_line(&r));
        }
        self.last_result = Some(r);
        Ok(Outcome::from(complete))
    }

    pub(super) fn metrics(&self, json: bool, sink: &mut dyn Sink) -> Handled {
        let Some(r) = &self.last_result else {
            return Err(CommandError::NotFound(
                "No results yet. Run a query first.".into(),
            ));
        };
        if json {
            sink.out(
                &serde_json::to_string_pretty(&r.metrics)
                    .expect("metrics (numbers and strings) always serialize"),
            );
            return Ok(Outcome::OK);
        }
        let m = &r.metrics;
        let mut t = ui::table(&["Metric", "Value"]);
        t.add_row(vec![
            "Total execution time".into(),
            format!("{:.2}s", m.total_execution_time),
        ]);
        t.add_row(vec!["Mode".into(), m.mode.clone()]);
        t.add_row(vec!["Pipeline".into(), m.pipeline.clone()]);
        t.add_row(vec!["Content type".into(), m.content_type.clone()]);
        if let Some(l) = &m.longform {
            let decided = if l.longform {
                format!("yes, {} parts", l.parts)
            } else {
                "no, one part".to_string()
            };
            t.add_row(vec![
                "Long-form".into(),
                format!("{decided} ({}): {}", l.rule, l.reason),
            ]);
        }
        t.add_row(vec!["Strategy".into(), m.strategy.clone()]);
        let chunks = if m.chunks_planned > 0 && m.chunks_generated != m.chunks_planned {
            format!("{} of {}", m.chunks_generated, m.chunks_planned)
        } else {
            m.chunks_generated.to_string()
        };
        t.add_row(vec!["Chunks".into(), chunks]);
        t.add_row(vec!["Agent calls".into(), m.agent_count.to_string()]);
        let c = &m.replies;
        t.add_row(vec![
            "Agent replies".into(),
            format!(
                "{} of {} valid on the first try ({} repaired, {} kept as text); {} asked with a schema",
                c.valid_first_try, c.total, c.repaired, c.as_text, c.with_schema
            ),
        ]);
        t.add_row(vec![
            "Physical hosts (used / in pool)".into(),
            format!("{} / {}", m.hosts_used, m.physical_hosts),
        ]);
        if let Some(s) = &m.synthesis {
            t.add_row(vec!["Synthesis".into(), s.clone()]);
        }
        t.add_row(vec![
            "Retries / hedges".into(),
            format!("{} / {}", m.retries, m.hedges),
        ]);
        if m.failed_tasks > 0 {
            t.add_row(vec!["Failed tasks".into(), m.failed_tasks.to_string()]);
        }
        if let Some(p) = m.quality_passed {
            t.add_row(vec!["Quality passed".into(), p.to_string()]);
        }
        sink.out("PERFORMANCE METRICS");
        sink.out(&t.to_string());
        sink.out(&attribution_table(r).to_string());
        Ok(Outcome::OK)
    }
}

fn attribution_table(r: &QueryResult) -> comfy_table::Table {
    let mut t = ui::table(&["Task", "Node", "Host", "Seconds", "Tokens/s"]);
    for a in &r.attribution {
        let task = if a.retries > 0 {
            format!(
                "{} (after {} retr{})",
                a.task,
                a.retries,
                if a.retries == 1 { "y" } else { "ies" }
            )
        } else {
            a.task.clone()
        };
        t.add_row(vec![
            task,
            a.node.clone(),
            a.host.clone(),
            format!("{:.2}", a.seconds),
            a.tokens_per_sec
                .map(|x| format!("{x:.1}"))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    t
}

/// "Completed", and when parts of the answer are missing, which.
fn completed_line(r: &QueryResult) -> String {
    let m = &r.metrics;
    let secs = m.total_execution_time;
    if r.complete() {
        return format!("✓  Completed in {secs:.2}s");
    }
    let parts = r.gaps.iter().filter(|g| g.chunk.is_some()).count();
    let tasks: Vec<&str> = r
        .gaps
        .iter()
        .filter(|g| g.chunk.is_none())
        .map(|g| g.task.as_str())
        .collect();
    let mut missing = Vec::new();
    if parts > 0 {
        missing.push(format!(
            "with {parts} of {} parts missing",
            m.chunks_planned
        ));
    }
    if !tasks.is_empty() {
        missing.push(format!("without the {}", tasks.join(" and the ")));
    }
    format!("⚠️  Completed in {secs:.2}s {}", missing.join(" and "))
}

/// Long-form parts: how many, or how many were written of how many planned.
fn parts_written(m: &crate::report::Metrics) -> String {
    if m.chunks_generated == m.chunks_planned {
        format!("{} parts", m.chunks_planned)
    } else {
        format!(
            "{} of {} parts written",
            m.chunks_generated, m.chunks_planned
        )
    }
}

pub(crate) fn print_result(r: &QueryResult, sink: &mut dyn Sink) {
    let rule = "═".repeat(70);
    sink.out(&ui::paint_out(&rule, "31"));
    sink.out(&ui::paint_out(" FINAL ANSWER", "1"));
    sink.out(&ui::paint_out(&rule, "31"));
    sink.out(r.final_output.trim_end());
    sink.out(&"─".repeat(70));
    let m = &r.metrics;
    sink.out(&completed_line(r));
    let shape = if m.chunks_planned > 0 {
        format!("{} ({}, {})", m.pipeline, m.content_type, parts_written(m))
    } else {
        m.pipeline.clone()
    };
    sink.out(&format!(
        "📊 Mode: {} · pipeline: {shape} · strategy: {} · hosts used: {} of {}",
        m.mode, m.strategy, m.hosts_used, m.physical_hosts
    ));
    if m.retries + m.hedges + m.failed_tasks > 0 {
        sink.out(&format!(
            "🩹 Faults: {} retried, {} hedged, {} task(s) could not be done",
            m.retries, m.hedges, m.failed_tasks
        ));
    }
    if !m.phase_timings.is_empty() {
        let p: Vec<String> = m
            .phase_timings
            .iter()
            .map(|(n, s)| format!("{n} {s:.2}s"))
            .collect();
        sink.out(&format!("⏱️  Phase timings: {}", p.join(", ")));
    }
    if !m.quality_scores.is_empty() {
        sink.out(&format!(
            "🗳️  Quality voting: {}",
            match m.quality_passed {
                Some(true) => "passed",
                Some(false) => "not passed (answer kept)",
                None => "-",
            }
        ));
        for v in &m.quality_scores {
            sink.out(&format!(
                "   {}: {:.2}/1.0 - {}",
                v.voter, v.score, v.reasoning
            ));
            for i in &v.issues {
                sink.out(&format!("     ⚠ {i}"));
            }
        }
    }
    sink.out("🖥️  Node attribution:");
    sink.out(&attribution_table(r).to_string());
    sink.out("Type 'metrics' for detailed performance data");
}
