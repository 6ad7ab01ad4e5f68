//! The agents a query uses: loaded once, and again only when the override
//! directory changes (a file added, removed or rewritten). Each file that
//! cannot be used is reported once, in one line naming it.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::Sink;
use crate::config::env::Env;
use crate::pipeline::agents::{self, Agent};

/// Where agents are overridden from: `$SYNAPTICLLAMAS_AGENTS`, else
/// `~/.config/synapticllamas/agents/`.
pub(crate) fn agents_dir(env: &Env) -> Option<PathBuf> {
    env.agents
        .clone()
        .or_else(|| dirs::config_dir().map(|c| c.join("synapticllamas").join("agents")))
}

/// What the directory looked like when it was read: each JSON file's name,
/// size and modification time (no file is opened to tell).
type Stamp = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn stamp(dir: Option<&Path>) -> Option<Stamp> {
    let entries = std::fs::read_dir(dir?).ok()?;
    let mut s: Stamp = entries
        .flatten()
        .filter(|e| {
            e.path()
                .extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("json"))
        })
        .map(|e| {
            let m = e.metadata().ok();
            (
                e.path(),
                m.as_ref().map_or(0, |m| m.len()),
                m.and_then(|m| m.modified().ok()),
            )
        })
        .collect();
    s.sort();
    Some(s)
}

/// The loaded agents and the directory state they came from.
pub struct AgentCache {
    dir: Option<PathBuf>,
    stamp: Option<Stamp>,
    agents: Vec<Agent>,
}

impl AgentCache {
    /// Load from the configured directory, reporting files that were not used.
    pub fn load(env: &Env, sink: &mut dyn Sink) -> AgentCache {
        let dir = agents_dir(env);
        let mut c = AgentCache {
            dir,
            stamp: None,
            agents: Vec::new(),
        };
        c.reload(sink);
        c
    }

    fn reload(&mut self, sink: &mut dyn Sink) {
        let dir = self.dir.as_deref();
        self.take(stamp(dir), agents::load(dir), sink);
    }

    fn take(&mut self, stamp: Option<Stamp>, loaded: agents::Loaded, sink: &mut dyn Sink) {
        for n in &loaded.notes {
            sink.err(&format!("ℹ️  {n}"));
        }
        for p in &loaded.problems {
            sink.warn(&format!("⚠️  {p}"));
        }
        self.stamp = stamp;
        self.agents = loaded.agents;
    }

    /// The agents for the next query, re-read if the directory changed (the
    /// directory is looked at, and read, off the async threads).
    pub(crate) async fn current(&mut self, sink: &mut dyn Sink) -> Vec<Agent> {
        let dir = self.dir.clone();
        let known = self.stamp.clone();
        let changed = crate::blocking::run(move || {
            let now = stamp(dir.as_deref());
            (now != known).then(|| (now, agents::load(dir.as_deref())))
        })
        .await;
        if let Ok(Some((stamp, loaded))) = changed {
            self.take(stamp, loaded, sink);
        }
        self.agents.clone()
    }
}

impl Default for AgentCache {
    /// The built-in agents only (no directory read).
    fn default() -> Self {
        AgentCache {
            dir: None,
            stamp: None,
            agents: agents::builtin(),
        }
    }
}
