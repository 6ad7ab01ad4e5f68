//! `benchmark`: each node alone, one short fixed prompt, time to first token,
//! tokens per second.

use std::time::{Duration, Instant};

use super::{App, CommandError, Handled, Outcome, Sink};
use crate::ollama::types::{ChatRequest, Message, Options};
use crate::ollama::Timeouts;
use crate::ui;

const PROMPT: &str = "In three sentences, explain what a computer network is.";

impl App {
    pub(super) async fn benchmark(&mut self, sink: &mut dyn Sink) -> Handled {
        let nodes = self.cluster.registry.nodes().to_vec();
        if nodes.is_empty() {
            return Err(CommandError::NotFound(
                "benchmark: no nodes registered".into(),
            ));
        }
        sink.err(&format!(
            "🔬 Benchmarking {} node(s), one at a time, model {} ...",
            nodes.len(),
            self.model()
        ));
        let t = Timeouts::new(
            Duration::from_secs(3),
            Duration::from_secs(120),
            self.cfg
                .effective()
                .agent_timeout
                .max(Duration::from_secs(30)),
        );
        let mut table = ui::table(&[
            "Node",
            "Host",
            "First token",
            "Total",
            "Tokens",
            "Tokens/s",
            "Result",
        ]);
        let mut any_ok = false;
        for n in &nodes {
            // The num_ctx queries use on this node, so the benchmark reloads nothing.
            crate::nodes::context::learn(&self.cluster.client, n, self.model()).await;
            let num_ctx = crate::nodes::context::pin_num_ctx(n, self.model());
            let req = ChatRequest {
                model: self.model().to_string(),
                messages: vec![Message::user(PROMPT)],
                stream: true,
                options: Some(
                    Options {
                        num_predict: Some(128),
                        num_ctx: Some(num_ctx),
                        ..Options::default()
                    }
                    .to_value(),
                ),
                ..Default::default()
            };
            let started = Instant::now();
            let mut first: Option<Duration> = None;
            let r = self
                .cluster
                .client
                .chat(n.url(), &req, t, |_| {
                    first.get_or_insert_with(|| started.elapsed());
                })
                .await;
            let total = started.elapsed();
            match r {
                Ok(c) => {
                    any_ok = true;
                    n.state().record_request(total, true, c.tokens_per_second());
                    table.add_row(vec![
                        n.name().to_string(),
                        n.host.clone(),
                        first
                            .map(|d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
                            .unwrap_or_else(|| "-".into()),
                        format!("{:.2} s", total.as_secs_f64()),
                        c.counts.eval_count.to_string(),
                        c.tokens_per_second()
                            .map(|x| format!("{x:.1}"))
                            .unwrap_or_else(|| "-".into()),
                        "ok".into(),
                    ]);
                }
                Err(e) => {
                    n.state().record_request(total, false, None);
                    table.add_row(vec![
                        n.name().to_string(),
                        n.host.clone(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        e.to_string(),
                    ]);
                }
            }
        }
        sink.out("BENCHMARK");
        sink.out(&table.to_string());
        Ok(Outcome::from(any_ok))
    }
}
