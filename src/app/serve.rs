//! `serve`: the gateway fed from the app's state — beside the prompt (the
//! shell's queries and the HTTP clients share one queue) or headless
//! (`synapticllamas serve`: logs to stderr, drains on SIGTERM/SIGINT).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::dashboard::HubEvents;
use super::{App, Captured, CommandError, Handled, Outcome, Sink};
use crate::command::ServeArgs;
use crate::config::env::Env;
use crate::gateway::{self, Config, Gateway, Parts, QuerySetup, View};
use crate::nodes::health::probe_all;
use crate::nodes::locality;
use crate::nodes::Node;
use crate::sharding::route::{decide, Target};

/// How long `serve stop` and leaving the shell let requests in flight finish.
const SHELL_DRAIN: Duration = Duration::from_secs(10);

/// Everything `serve` can be told (the shell command sets a few; the
/// `serve` subcommand all).
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub bind: Option<IpAddr>,
    pub port: Option<u16>,
    /// From `--api-key` (the environment's `SYNAPTICLLAMAS_API_KEY` is added).
    pub api_keys: Vec<String>,
    pub no_auth: bool,
    pub max_queue: Option<usize>,
    pub max_body_mb: Option<usize>,
    pub request_timeout_secs: Option<u64>,
    pub drain_secs: Option<u64>,
    pub header_timeout_secs: Option<u64>,
    pub max_connections: Option<usize>,
    /// No line per request on stderr (headless only).
    pub quiet: bool,
}

impl From<ServeArgs> for ServeOptions {
    fn from(a: ServeArgs) -> Self {
        ServeOptions {
            bind: a.bind,
            port: a.port,
            api_keys: a.api_key.into_iter().collect(),
            no_auth: a.no_auth,
            ..Default::default()
        }
    }
}

/// A `serve` option out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServeConfigError {
    #[error("serve: --max-queue must be at least 1")]
    MaxQueue,
    #[error("serve: --max-body-mb must be from 1 to 4096, got {0}")]
    MaxBody(usize),
}

impl ServeOptions {
    /// The gateway's configuration, with `env`'s `SYNAPTICLLAMAS_API_KEY`
    /// keys; a bad address or value is one line.
    pub fn config(&self, env: &Env) -> Result<Config, ServeConfigError> {
        let bind = self.bind.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let d = Config::default();
        let max_queue = self.max_queue.unwrap_or(d.max_queue);
        if max_queue == 0 {
            return Err(ServeConfigError::MaxQueue);
        }
        let max_body_mb = self.max_body_mb.unwrap_or(gateway::DEFAULT_MAX_BODY_MB);
        if max_body_mb == 0 || max_body_mb > 4096 {
            return Err(ServeConfigError::MaxBody(max_body_mb));
        }
        Ok(Config {
            bind,
            port: self.port.unwrap_or(gateway::DEFAULT_PORT),
            keys: gateway::auth::keys(&self.api_keys, env.api_key.as_deref()),
            no_auth: self.no_auth,
            max_queue,
            max_body: max_body_mb * 1024 * 1024,
            request_timeout: self
                .request_timeout_secs
                .map(Duration::from_secs)
                .unwrap_or(d.request_timeout),
            header_timeout: self
                .header_timeout_secs
                .map(Duration::from_secs)
                .unwrap_or(d.header_timeout),
            max_connections: self.max_connections.unwrap_or(d.max_connections),
        })
    }
}

/// A sink whose results go where its diagnostics go (headless: all on stderr).
struct AllToErr<'a>(&'a mut dyn Sink);

impl Sink for AllToErr<'_> {
    fn line(&mut self, kind: super::Line, text: &str) {
        let kind = match kind {
            super::Line::Result => super::Line::Notice,
            other => other,
        };
        self.0.line(kind, text)
    }
}

/// A node at the gateway's own address (it must never be sent requests).
fn is_self(node: &Node, own: SocketAddr) -> bool {
    locality::same_server(node.url(), &format!("http://{own}"))
}

impl App {
    /// The nodes requests may go to: every registered node (the gateway
    /// serves the whole cluster, whatever the shell's mode), or OLLAMA_HOST's.
    pub(super) fn gateway_nodes(&mut self) -> Vec<Arc<Node>> {
        if self.cluster.registry.is_empty() {
            vec![self.fallback_node()]
        } else {
            self.cluster.registry.nodes().to_vec()
        }
    }

    /// The gateway's view of the cluster now.
    async fn gateway_view(&mut self, own: SocketAddr) -> View {
        self.apply_capacities();
        let nodes: Vec<Arc<Node>> = self
            .gateway_nodes()
            .into_iter()
            .filter(|n| !is_self(n, own))
            .collect();
        let query_nodes: Vec<Arc<Node>> = self
            .pool_nodes()
            .into_iter()
            .filter(|n| !is_self(n, own))
            .collect();
        let eff = self.cfg.effective().clone();
        let mut models = vec![eff.model.clone()];
        models.extend(eff.synthesis_model.clone());
        let coordinator_models = models
            .into_iter()
            .filter(|m| decide(eff.route, m).0 == Target::Coordinator)
            .collect();
        let coordinator = self
            .cluster
            .sharding
            .coordinator
            .as_ref()
            .and(self.cluster.sharding.node.clone());
        let mut quiet = Captured::default();
        let agents = self.agents.current(&mut quiet).await;
        View {
            nodes,
            coordinator,
            coordinator_models,
            query: QuerySetup {
                nodes: query_nodes,
                agents,
                effective: Arc::new(eff),
                rag: self.rag.clone(),
            },
        }
    }

    /// Tell a running gateway what the last command changed.
    pub(super) async fn publish_gateway(&mut self) {
        let Some(own) = self.services.gateway.as_ref().map(Gateway::addr) else {
            return;
        };
        let view = self.gateway_view(own).await;
        if let Some(g) = &self.services.gateway {
            g.set_view(view);
        }
    }

    /// Probe the nodes, bring up the coordinator if the routing path needs
    /// it, and start the gateway. `log` gets one line per request.
    pub(crate) async fn start_gateway(
        &mut self,
        config: Config,
        log: Box<dyn Fn(&str) + Send + Sync>,
        sink: &mut dyn Sink,
    ) -> Result<(), CommandError> {
        if let Some(g) = &self.services.gateway {
            sink.out(&format!("🦙 The gateway already runs at {}", g.url()));
            return Ok(());
        }
        if let Some(warning) = config
            .check()
            .map_err(|e| CommandError::refused(e.to_string()))?
        {
            sink.warn(&warning);
        }
        let own = SocketAddr::new(config.bind, config.port);
        let nodes = self.gateway_nodes();
        for n in nodes.iter().filter(|n| is_self(n, own)) {
            sink.warn(&format!(
                "⚠️  {} ({}) is the gateway's own address: no request will be sent to it",
                n.name(),
                n.url()
            ));
        }
        let nodes: Vec<Arc<Node>> = nodes.into_iter().filter(|n| !is_self(n, own)).collect();
        let results = probe_all(&self.cluster.client, &nodes, true, &*self.cluster.sched).await;
        let up: Vec<&Arc<Node>> = results.iter().filter(|r| r.ok).map(|r| &r.node).collect();
        for r in results.iter().filter(|r| !r.ok) {
            sink.warn(&format!(
                "⚠️  {} is not answering: {}",
                r.node.name(),
                r.detail
            ));
        }
        let hosts = up
            .iter()
            .map(|n| n.host.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len();
        let mut models: Vec<String> = up.iter().flat_map(|n| n.state().models.clone()).collect();
        models.sort();
        models.dedup();
        sink.err(&format!(
            "🔎 {} of {} node(s) answer, on {hosts} physical host(s); models: {}",
            up.len(),
            nodes.len(),
            if models.is_empty() {
                "none".to_string()
            } else {
                models.join(", ")
            }
        ));
        let (needs_coordinator, lines) = self.routing();
        for l in lines {
            sink.err(&l);
        }
        if needs_coordinator {
            if let Err(e) = self.ensure_coordinator(sink).await {
                sink.warn(&format!(
                    "⚠️  coordinator: {e}; requests for the models it serves get 503 until one runs"
                ));
            }
        }
        self.cluster
            .sched
            .set_events(Some(Arc::new(HubEvents(self.services.hub.clone()))));
        self.cluster.sched.set_notifier(self.services.say());
        let view = self.gateway_view(own).await;
        let parts = Parts {
            sched: self.cluster.sched.clone(),
            client: self.cluster.client.clone(),
            hub: self.services.hub.clone(),
            view,
            log,
        };
        let g = gateway::start(parts, config)
            .await
            .map_err(|e| CommandError::network(format!("serve: {e}")))?;
        let url = g.url();
        self.services.gateway = Some(g);
        // The real address (port 0 picks one).
        self.publish_gateway().await;
        self.sync_hub();
        sink.out(&format!(
            "🦙 Gateway listening on {url} — Ollama API at /api, OpenAI and Anthropic APIs at /v1, \
             dashboard at {url}/dashboard/"
        ));
        Ok(())
    }

    /// Stop the gateway (if it runs), letting requests finish for `drain`.
    pub(crate) async fn stop_gateway(
        &mut self,
        drain: Option<Duration>,
    ) -> Option<gateway::Drained> {
        let g = self.services.gateway.take()?;
        Some(g.stop(drain.unwrap_or(SHELL_DRAIN)).await)
    }

    /// `serve …` / `serve stop` in the shell.
    pub(super) async fn serve_cmd(&mut self, args: ServeArgs, sink: &mut dyn Sink) -> Handled {
        if args.stop {
            let d = self
                .stop_gateway(None)
                .await
                .ok_or_else(|| CommandError::NotFound("serve: not running".into()))?;
            let cut = if d.cut > 0 {
                format!(" ({} reply(ies) cut short)", d.cut)
            } else {
                String::new()
            };
            sink.out(&format!("✅ Gateway stopped{cut}"));
            return Ok(Outcome::OK);
        }
        let config = ServeOptions::from(args)
            .config(self.cfg.env)
            .map_err(|e| CommandError::refused(e.to_string()))?;
        // Beside the prompt, requests are not logged line by line (the
        // dashboard shows them).
        self.start_gateway(config, Box::new(|_| {}), sink).await?;
        Ok(Outcome::OK)
    }

    /// `synapticllamas serve`: run until SIGTERM or SIGINT, then drain; the exit status.
    pub async fn serve_headless(&mut self, opts: ServeOptions, sink: &mut dyn Sink) -> i32 {
        let sink = &mut AllToErr(sink);
        let config = match opts.config(self.cfg.env) {
            Ok(c) => c,
            Err(e) => {
                sink.fail(&format!("❌ {e}"));
                return 2;
            }
        };
        if let Err(e) = config.check() {
            sink.fail(&format!("❌ {e}"));
            return 2;
        }
        let log: Box<dyn Fn(&str) + Send + Sync> = if opts.quiet {
            Box::new(|_| {})
        } else {
            // Never a panic when stderr is closed or full (eprintln! would).
            Box::new(crate::ui::err_line)
        };
        // Listening for signals before the gateway says it listens: a signal
        // that comes right after is a drain, never the default (an abrupt end).
        let mut signals = crate::signals::Signals::terminate_or_interrupt();
        if let Err(e) = self.start_gateway(config, log, sink).await {
            super::render_error(&e, sink);
            return 1;
        }
        let signal = signals.next().await;
        let drain =
            Duration::from_secs(opts.drain_secs.unwrap_or(gateway::DEFAULT_DRAIN.as_secs()));
        let running = self.services.gateway.as_ref().map_or(0, Gateway::in_flight);
        sink.err(&format!(
            "🛑 {signal}: no new connections; {running} request(s) in flight get up to {}s to \
             finish (signal again to stop at once)",
            drain.as_secs()
        ));
        let stopped = match self.services.gateway.take() {
            Some(g) => Some(
                g.stop_unless(drain, async {
                    signals.next().await;
                })
                .await,
            ),
            None => None,
        };
        if let Some(d) = stopped {
            if d.cut > 0 {
                sink.warn(&format!(
                    "⚠️  {} request(s) were still running when the drain ended (at most {}s) and ended with an error line",
                    d.cut,
                    drain.as_secs()
                ));
            }
        }
        sink.err("👋 Gateway stopped");
        0
    }
}
