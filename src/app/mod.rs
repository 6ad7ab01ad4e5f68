//! The application state and the dispatcher: a `Command` in, text out through a
//! `Sink`. No terminal I/O here, so tests can drive it directly.

pub mod agents;
mod bench;
mod coordinator;
mod dashboard;
mod discover;
mod error;
pub use error::{render_error, CommandError};
mod info;
mod model_cmds;
mod node_cmds;
mod query;
pub use query::{incomplete_line, QueryError};
mod rag;
mod redis_cmds;
pub mod redis_tap;
mod serve;
pub use serve::ServeOptions;
mod parts;
mod probing;
use parts::waiting_for;
pub use parts::{Cluster, Config, Services, SettingsMut};
mod settings_cmds;
mod sharding;

use std::path::PathBuf;
use std::sync::Arc;

use crate::command::{self, Command};
use crate::config::choices::{Longform, Mode, Route, Strategy};
use crate::config::effective::Flags;
use crate::config::env::Env;
use crate::config::settings::{Key, Settings, SettingsStore};
use crate::nodes::Registry;
use crate::ollama::Client;
use crate::scheduler::Scheduler;

/// What a line of output is: a result (stdout) or, on stderr, a notice, a
/// warning or a failure. A sink decides how each kind looks (colour on a
/// terminal); nothing guesses the kind from the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    Result,
    Notice,
    Warning,
    Failure,
}

/// Where command output goes: results to `out`, diagnostics to `err`, `warn`
/// and `fail`.
pub trait Sink {
    fn line(&mut self, kind: Line, text: &str);
    /// A result.
    fn out(&mut self, text: &str) {
        self.line(Line::Result, text)
    }
    /// A notice or progress line (not a problem).
    fn err(&mut self, text: &str) {
        self.line(Line::Notice, text)
    }
    /// Something the user should know about; the command goes on.
    fn warn(&mut self, text: &str) {
        self.line(Line::Warning, text)
    }
    /// Something failed.
    fn fail(&mut self, text: &str) {
        self.line(Line::Failure, text)
    }
    /// Whether a person can answer a yes/no question here (a terminal).
    fn can_confirm(&self) -> bool {
        false
    }
    /// Ask a person `question`; true only for a yes.
    fn confirm(&mut self, _question: &str) -> bool {
        false
    }
}

/// A sink that keeps everything (tests, `-i`).
#[derive(Debug, Default, Clone)]
pub(crate) struct Captured {
    pub out: String,
    pub err: String,
}

impl Sink for Captured {
    fn line(&mut self, kind: Line, text: &str) {
        let to = match kind {
            Line::Result => &mut self.out,
            Line::Notice | Line::Warning | Line::Failure => &mut self.err,
        };
        to.push_str(text);
        to.push('\n');
    }
}

/// What a setting command changed, printed once its save is known: each
/// change as `✅ TEXT` when saved, else `⚠️  TEXT` (the first one saying
/// `— this session only, not saved`); detail lines as they are.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// (is a change, text).
    lines: Vec<(bool, String)>,
}

impl Changes {
    /// A change the command made.
    pub fn done(&mut self, text: impl Into<String>) {
        self.lines.push((true, text.into()));
    }

    /// A line about the change (printed as is).
    pub(crate) fn detail(&mut self, text: impl Into<String>) {
        self.lines.push((false, text.into()));
    }

    pub fn report(self, sink: &mut dyn Sink, saved: bool) {
        let mut marked = false;
        for (change, text) in self.lines {
            if !change {
                sink.out(&text);
            } else if saved {
                sink.out(&format!("✅ {text}"));
            } else {
                let note = if marked {
                    ""
                } else {
                    " — this session only, not saved"
                };
                marked = true;
                // A result still (stdout), as the confirmation it replaces.
                sink.out(&format!("⚠️  {text}{note}"));
            }
        }
    }
}

/// One confirmation line: `✅ TEXT` when saved, else `⚠️  TEXT — this session only, not saved`.
pub(crate) fn confirm(sink: &mut dyn Sink, saved: bool, text: &str) {
    if saved {
        sink.out(&format!("✅ {text}"));
    } else {
        sink.out(&format!("⚠️  {text} — this session only, not saved"));
    }
}

/// True when saved; else the error is said (the command goes on: what it
/// changed holds for this session).
fn saved_or_said<T>(saved: anyhow::Result<T>, sink: &mut dyn Sink) -> bool {
    match saved {
        Ok(_) => true,
        Err(e) => {
            render_error(&CommandError::File(format!("{e:#}")), sink);
            false
        }
    }
}

/// A replaceable callback for lines that arrive outside any command.
pub(crate) type Notifier = Arc<std::sync::RwLock<Arc<dyn Fn(String) + Send + Sync>>>;

/// What running one line did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub ok: bool,
    pub exit: bool,
}

impl Outcome {
    pub const OK: Outcome = Outcome {
        ok: true,
        exit: false,
    };
    pub const FAILED: Outcome = Outcome {
        ok: false,
        exit: false,
    };
    pub(crate) const EXIT: Outcome = Outcome {
        ok: true,
        exit: true,
    };

    pub fn from(ok: bool) -> Outcome {
        Outcome { ok, exit: false }
    }
}

/// What a command handler returns: how it went, or why it failed (printed by
/// [`render_error`] in `dispatch`, the one place failures are rendered). An
/// `Ok` outcome that is not `ok` has said its problem already (a change made
/// but not saved, an answer with gaps).
pub(crate) type Handled = Result<Outcome, CommandError>;

/// The application: its three parts, plus what queries use between commands.
pub struct App {
    /// Settings, where they are saved, command-line flags, environment, the
    /// values in force, the home directory.
    pub cfg: Config,
    /// Nodes, the client and queue that drive them, the sharding coordinator.
    pub cluster: Cluster,
    /// Dashboard, gateway, monitors, Redis, background notices.
    pub services: Services,
    /// The agents queries use (loaded at start-up, re-read when their directory changes).
    pub agents: agents::AgentCache,
    /// The loaded RAG knowledge base.
    pub rag: crate::rag::Cache,
    /// The last query's result, for `metrics`.
    pub last_result: Option<crate::pipeline::result::QueryResult>,
    /// A person at a terminal (turns the background monitor on by default).
    pub interactive: bool,
}

impl App {
    pub fn new(
        settings: Settings,
        settings_store: SettingsStore,
        registry: Registry,
        home: PathBuf,
    ) -> App {
        let client = Client::default();
        let services = Services::new();
        let sched = Scheduler::new(client.clone());
        sched.share_through(services.redis.leases.clone(), services.redis.health.clone());
        services.hub.set_load(Arc::downgrade(&sched) as _);
        App {
            cfg: Config::new(
                settings,
                settings_store,
                Flags::default(),
                Env::process(),
                home,
            ),
            cluster: Cluster::new(registry, client, sched),
            services,
            agents: agents::AgentCache::default(),
            rag: Default::default(),
            last_result: None,
            interactive: false,
        }
    }

    /// The model in use: the command-line value, else the saved one.
    pub fn model(&self) -> &str {
        self.cfg.model()
    }

    pub fn mode(&self) -> Mode {
        self.cfg.mode()
    }

    pub fn strategy(&self) -> Strategy {
        self.cfg.strategy()
    }

    /// The `longform` setting (auto when unset).
    pub fn longform(&self) -> Longform {
        self.cfg.longform()
    }

    /// The routing path (`distributed task|model|both|off`).
    pub fn route(&self) -> Route {
        self.cfg.route()
    }

    /// Save the settings this session changed (and `touched`, keys the user set
    /// even to the value they had); a failure is reported and makes the command
    /// fail. Waiting for another writer can be given up with Ctrl-C.
    pub(crate) async fn save_settings(&mut self, touched: &[Key], sink: &mut dyn Sink) -> bool {
        let saved = self.cfg.save(touched, |p| waiting_for(sink, p)).await;
        saved_or_said(saved, sink)
    }

    /// Save the node file (if this registry has one).
    async fn save_nodes(&mut self, sink: &mut dyn Sink) -> bool {
        let saved = self.cluster.registry.save(|p| waiting_for(sink, p)).await;
        saved_or_said(saved, sink)
    }

    /// Parse and run one line (not blank, not a comment).
    pub(crate) async fn run_line(&mut self, line: &str, sink: &mut dyn Sink) -> Outcome {
        match command::parse(line) {
            Ok(cmd) => self.dispatch(cmd, sink).await,
            Err(usage) => {
                render_error(&usage.into(), sink);
                Outcome::FAILED
            }
        }
    }

    /// Run one command; its failure, if any, is rendered here.
    pub(crate) async fn dispatch(&mut self, cmd: Command, sink: &mut dyn Sink) -> Outcome {
        self.services.redis_tap.set_model(self.model());
        let outcome = match self.dispatch_inner(cmd, sink).await {
            Ok(o) => o,
            Err(e) => {
                render_error(&e, sink);
                Outcome::FAILED
            }
        };
        self.sync_hub();
        self.publish_gateway().await;
        outcome
    }

    async fn dispatch_inner(&mut self, cmd: Command, sink: &mut dyn Sink) -> Handled {
        use Command as C;
        match cmd {
            C::Exit => {
                sink.err("👋 Exiting SynapticLlamas. Goodbye!");
                Ok(Outcome::EXIT)
            }
            C::Help => {
                self.help(sink);
                Ok(Outcome::OK)
            }
            C::Status => self.status(sink).await,
            C::Nodes => self.nodes(sink).await,
            C::Add { node, force } => self.add(&node, force, sink).await,
            C::Remove(key) => self.remove(&key, sink).await,
            C::Health => self.health(sink).await,
            C::Save(path) => self.save_to(&path, sink).await,
            C::Load(path) => self.load_from(&path, sink).await,
            C::Mode(m) => self.set_mode(m, sink).await,
            C::Set(setting) => self.setting(setting, sink).await,
            C::Redis(on) => self.redis_cmd(on, sink).await,
            C::Discover { cidr, timeout_ms } => self.discover_cmd(cidr, timeout_ms, sink).await,
            C::Distributed(r) => self.distributed(r, sink).await,
            C::Rpc(r) => self.rpc(r, sink).await,
            C::Pull { model, nodes } => self.pull_cmd(&model, &nodes, sink).await,
            C::Rm { model, nodes, yes } => self.rm_cmd(&model, &nodes, yes, sink).await,
            C::Metrics { json } => self.metrics(json, sink),
            C::Benchmark => self.benchmark(sink).await,
            C::Dashboard { stop, port, bind } => self.dashboard_cmd(stop, port, bind, sink).await,
            C::Serve(opts) => self.serve_cmd(opts, sink).await,
            C::Rag(r) => self.rag_cmd(r, sink).await,
            C::Query(q) => self.query(&q, sink).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_not_saved_says_so_once() {
        let report = |saved| {
            let mut ch = Changes::default();
            ch.done("Model set to: m");
            ch.detail("   a detail");
            ch.done("Synthesis model: none");
            let mut c = Captured::default();
            ch.report(&mut c, saved);
            c.out
        };
        assert_eq!(
            report(true),
            "✅ Model set to: m\n   a detail\n✅ Synthesis model: none\n"
        );
        assert_eq!(
            report(false),
            "⚠️  Model set to: m — this session only, not saved\n   a detail\n⚠️  Synthesis model: none\n"
        );
    }
}
