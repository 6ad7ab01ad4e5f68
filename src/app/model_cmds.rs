//! `pull MODEL [NODE…]` and `rm MODEL [NODE…] [--yes]`: the cluster's models
//! managed as one (the work is `crate::models`'s, which the gateway's
//! `/api/pull` and `/api/delete` use too). A pull shows one bar per node on a
//! terminal and, piped, one line per node as it ends; both end with a table
//! of every node (result, time) on stdout, and fail when a node failed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{App, CommandError, Handled, Outcome, Sink};
use crate::models::{fanout, targets, Board, NodeResult, PullEvent};
use crate::names::ModelName;
use crate::nodes::Node;
use crate::ui;
use crate::ui::progress::ByteBars;

/// How a command picks its nodes from all of them when none are named.
type Pick = fn(&[Arc<Node>], &str) -> Vec<Arc<Node>>;

/// One row of a summary: the node, what happened, how long it took.
struct Row {
    node: String,
    result: String,
    time: Option<Duration>,
}

fn row(r: &NodeResult, done: &str) -> Row {
    Row {
        node: r.node.name().to_string(),
        result: match r.outcome.problem() {
            None => done.to_string(),
            Some(p) => format!("failed: {p}"),
        },
        time: Some(r.elapsed),
    }
}

fn table(rows: &[Row], sink: &mut dyn Sink) {
    let mut t = ui::table(&["Node", "Result", "Time"]);
    for r in rows {
        let time = r
            .time
            .map_or_else(|| "-".to_string(), |d| format!("{:.1}s", d.as_secs_f64()));
        t.add_row(vec![r.node.clone(), r.result.clone(), time]);
    }
    sink.out(&t.to_string());
}

/// The line said when a node's operation ends: `done` (e.g. "pulled
/// tinyllama") when it worked, else `what` (e.g. "pull of tinyllama") failed.
fn ended(r: &NodeResult, done: &str, what: &str) -> String {
    let secs = r.elapsed.as_secs_f64();
    match r.outcome.problem() {
        None => format!("✅ {}: {done} in {secs:.1}s", r.node.name()),
        Some(p) => format!("❌ {}: {what} failed after {secs:.1}s — {p}", r.node.name()),
    }
}

/// The outcome of an operation: every node's row said, a failure line when
/// some node failed.
fn summary(rows: &[Row], results: &[NodeResult], what: &str, sink: &mut dyn Sink) -> Outcome {
    table(rows, sink);
    let bad = results.iter().filter(|r| !r.outcome.ok()).count();
    if bad == 0 {
        return Outcome::OK;
    }
    sink.fail(&format!(
        "❌ {what} failed on {bad} of {} node(s): {}",
        results.len(),
        fanout::failures(results)
    ));
    Outcome::FAILED
}

impl App {
    /// The nodes a model command may name or use.
    fn store_nodes(&mut self) -> Vec<Arc<Node>> {
        self.gateway_nodes()
    }

    /// The nodes `names` names, or (none named) those `pick` picks from
    /// every node's list read fresh; and the other nodes.
    async fn model_targets(
        &mut self,
        names: &[String],
        pick: Pick,
        model: &str,
    ) -> Result<(Vec<Arc<Node>>, Vec<Arc<Node>>), CommandError> {
        let all = self.store_nodes();
        let chosen = if names.is_empty() {
            targets::refresh(&self.cluster.client, &all, false, &*self.cluster.sched).await;
            pick(&all, model)
        } else {
            targets::named(&all, names).map_err(CommandError::NotFound)?
        };
        let others = all
            .into_iter()
            .filter(|n| !chosen.iter().any(|c| Arc::ptr_eq(c, n)))
            .collect();
        Ok((chosen, others))
    }

    /// `pull MODEL [NODE…]`.
    pub(super) async fn pull_cmd(
        &mut self,
        model: &ModelName,
        names: &[String],
        sink: &mut dyn Sink,
    ) -> Handled {
        let model = model.as_str();
        let (nodes, others) = self.model_targets(names, targets::lacking, model).await?;
        let mut rows: Vec<Row> = Vec::new();
        if names.is_empty() {
            rows.extend(others.iter().map(|n| Row {
                node: n.name().to_string(),
                result: "already there".into(),
                time: None,
            }));
        }
        if nodes.is_empty() {
            sink.err(&format!("✅ every node has {model} already"));
            table(&rows, sink);
            return Ok(Outcome::OK);
        }
        let hosts = nodes
            .iter()
            .map(|n| n.host.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let names: Vec<&str> = nodes.iter().map(|n| n.name()).collect();
        sink.err(&format!(
            "⬇️  pulling {model} onto {} node(s) on {hosts} host(s), one pull per host at a time: {}",
            nodes.len(),
            names.join(", ")
        ));
        let bars = ByteBars::new();
        let board = Mutex::new(Board::new());
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let events = |e: PullEvent<'_>| match e {
            PullEvent::Started(n) => bars.start(n.url(), n.name()),
            PullEvent::Line(n, line) => {
                let (total, done) = {
                    let mut b = board.lock().unwrap_or_else(|p| p.into_inner());
                    b.add(n.url(), line);
                    b.node(n.url())
                };
                bars.set(n.url(), total, done, &line.status);
            }
            PullEvent::Finished(r) => {
                let said = ended(r, &format!("pulled {model}"), &format!("pull of {model}"));
                if bars.shown() {
                    bars.finish(r.node.url(), &said);
                } else {
                    let _ = tx.send(said);
                }
            }
        };
        let run = fanout::pull(&self.cluster.client, &nodes, model, false, &events);
        tokio::pin!(run);
        let results = loop {
            tokio::select! {
                r = &mut run => break r,
                Some(line) = rx.recv() => sink.err(&line),
            }
        };
        while let Ok(line) = rx.try_recv() {
            sink.err(&line);
        }
        rows.extend(results.iter().map(|r| row(r, "pulled")));
        Ok(summary(&rows, &results, &format!("pull {model}"), sink))
    }

    /// `rm MODEL [NODE…] [--yes]`: asks first on a terminal; piped, only with `--yes`.
    pub(super) async fn rm_cmd(
        &mut self,
        model: &ModelName,
        names: &[String],
        yes: bool,
        sink: &mut dyn Sink,
    ) -> Handled {
        let model = model.as_str();
        if !yes && !sink.can_confirm() {
            return Err(CommandError::refused(format!(
                "rm {model}: nothing deleted — there is no terminal to confirm on; say `rm {model} --yes` to delete it from a script"
            )));
        }
        let (nodes, _) = self.model_targets(names, targets::having, model).await?;
        if nodes.is_empty() {
            return Err(CommandError::NotFound(format!("rm: no node has {model}")));
        }
        let list: Vec<&str> = nodes.iter().map(|n| n.name()).collect();
        if !yes
            && !sink.confirm(&format!(
                "Delete {model} from {} ({} node(s))?",
                list.join(", "),
                nodes.len()
            ))
        {
            sink.err("Nothing deleted.");
            return Ok(Outcome::OK);
        }
        let results = fanout::delete(&self.cluster.client, &nodes, model).await;
        for r in &results {
            sink.err(&ended(
                r,
                &format!("deleted {model}"),
                &format!("rm {model}"),
            ));
        }
        let rows: Vec<Row> = results.iter().map(|r| row(r, "deleted")).collect();
        Ok(summary(&rows, &results, &format!("rm {model}"), sink))
    }
}
