//! The three parts the application state is made of: the settings side
//! (`Config`), the nodes and the queue that drives them (`Cluster`), and what
//! runs beside the prompt (`Services`). Each keeps its own invariants; `App`
//! ties them to the commands.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::redis_tap::EventTap;
use super::{dashboard::HubShown, sharding::ShardingState, Notifier, Sink};
use crate::config::choices::{Longform, Mode, Route, Strategy};
use crate::config::effective::{Effective, Flags};
use crate::config::env::Env;
use crate::config::settings::{Key, Settings, SettingsStore};
use crate::nodes::{Node, Registry};
use crate::ollama::Client;
use crate::scheduler::Scheduler;
use crate::sim::SimHost;

/// The settings: as loaded and changed, where they are saved, the flags and
/// environment of this run, the values in force ([`Effective`], resolved
/// again on every change), and the directory the program's files live in.
pub struct Config {
    settings: Settings,
    pub store: SettingsStore,
    flags: Flags,
    pub env: &'static Env,
    pub home: PathBuf,
    effective: Effective,
}

impl Config {
    pub fn new(
        settings: Settings,
        store: SettingsStore,
        flags: Flags,
        env: &'static Env,
        home: PathBuf,
    ) -> Config {
        let effective = Effective::resolve(&settings, &flags, env);
        Config {
            settings,
            store,
            flags,
            env,
            home,
            effective,
        }
    }

    /// The settings as saved (or to be saved).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Change the settings: the values in force follow when the guard goes.
    pub fn settings_mut(&mut self) -> SettingsMut<'_> {
        SettingsMut(self)
    }

    /// The values in force: settings, flags and environment resolved.
    pub fn effective(&self) -> &Effective {
        &self.effective
    }

    pub fn flags(&self) -> &Flags {
        &self.flags
    }

    /// Change the command-line values of this run.
    pub fn set_flags(&mut self, change: impl FnOnce(&mut Flags)) {
        change(&mut self.flags);
        self.resolve();
    }

    fn resolve(&mut self) {
        self.effective = Effective::resolve(&self.settings, &self.flags, self.env);
    }

    /// The model in use: the command-line value, else the saved one.
    pub fn model(&self) -> &str {
        &self.effective.model
    }

    pub fn mode(&self) -> Mode {
        self.effective.mode
    }

    pub fn strategy(&self) -> Strategy {
        self.effective.strategy
    }

    /// The `longform` setting (auto when unset).
    pub fn longform(&self) -> Longform {
        self.effective.longform
    }

    /// The routing path (`distributed task|model|both|off`).
    pub fn route(&self) -> Route {
        self.effective.route
    }

    /// Save the settings this session changed (and `touched`, keys set even to
    /// the value they had); `waiting` is told when another program holds the lock.
    pub async fn save(
        &mut self,
        touched: &[Key],
        waiting: impl FnOnce(&Path),
    ) -> anyhow::Result<()> {
        self.store
            .save_async(&self.settings, touched, waiting)
            .await
    }
}

/// The settings being changed; the values in force are resolved again when
/// it is dropped.
pub struct SettingsMut<'a>(&'a mut Config);

impl std::ops::Deref for SettingsMut<'_> {
    type Target = Settings;
    fn deref(&self) -> &Settings {
        &self.0.settings
    }
}

impl std::ops::DerefMut for SettingsMut<'_> {
    fn deref_mut(&mut self) -> &mut Settings {
        &mut self.0.settings
    }
}

impl Drop for SettingsMut<'_> {
    fn drop(&mut self) {
        self.0.resolve();
    }
}

/// The nodes and what sends them work: the registry, the node used when it is
/// empty, the simulated hosts, the one HTTP client and host-aware queue, and
/// the sharding coordinator.
pub struct Cluster {
    pub registry: Registry,
    pub client: Client,
    /// The one host-aware queue of this process (every query, every client).
    pub sched: Arc<Scheduler>,
    /// The node used when the registry is empty (OLLAMA_HOST or the default),
    /// kept so its health survives from one query to the next.
    pub(super) fallback: Option<Arc<Node>>,
    /// Simulated hosts started by this process (`--simulate N`).
    pub simulated: Vec<Arc<SimHost>>,
    pub sharding: ShardingState,
    /// Probes of a large registry running in the background (`probing`).
    pub(super) probing: Option<super::probing::BackgroundProbe>,
}

impl Cluster {
    pub fn new(registry: Registry, client: Client, sched: Arc<Scheduler>) -> Cluster {
        Cluster {
            registry,
            client,
            sched,
            fallback: None,
            simulated: Vec::new(),
            sharding: ShardingState::default(),
            probing: None,
        }
    }
}

/// What runs beside the prompt: the dashboard's hub and server, the gateway,
/// the background monitors, Redis, and where background notices go.
pub struct Services {
    /// What the web dashboard shows.
    pub hub: Arc<crate::dashboard::Hub>,
    pub dashboard: Option<crate::dashboard::Dashboard>,
    /// The Ollama/OpenAI gateway (`serve`), when it runs.
    pub gateway: Option<crate::gateway::Gateway>,
    /// The background monitors, with the node URLs and backend addresses they watch.
    pub(super) monitor: Option<(Vec<String>, Vec<tokio::task::JoinHandle<()>>)>,
    /// What was last pushed to the hub (so an unchanged view is not pushed again).
    pub(super) shown: HubShown,
    /// Where background notices go (the shell decides how to show them; it may
    /// change its mind once the line editor is up).
    pub notifier: Notifier,
    /// Shared host leases, node health and events (off until `redis on`).
    pub redis: crate::redis::Redis,
    /// What the dashboard hears, published as Redis events while Redis is on.
    pub redis_tap: Arc<EventTap>,
}

impl Services {
    /// Services with nothing running; Redis notices go to the notifier.
    pub fn new() -> Services {
        let notifier: Notifier = Arc::new(std::sync::RwLock::new(Arc::new(|_| {})));
        let redis = crate::redis::Redis::new(say(notifier.clone()));
        let redis_tap = EventTap::new(redis.events.clone());
        Services {
            hub: Arc::new(crate::dashboard::Hub::new()),
            dashboard: None,
            gateway: None,
            monitor: None,
            shown: HubShown::default(),
            notifier,
            redis,
            redis_tap,
        }
    }

    /// A callback that passes a line to whatever the notifier is at the time.
    pub fn say(&self) -> impl Fn(String) + Send + Sync + 'static {
        say(self.notifier.clone())
    }
}

impl Default for Services {
    fn default() -> Self {
        Services::new()
    }
}

fn say(notifier: Notifier) -> impl Fn(String) + Send + Sync + 'static {
    move |line: String| {
        if let Ok(f) = notifier.read().map(|f| f.clone()) {
            f(line)
        }
    }
}

/// Another program holds the lock on the file a command saves.
pub(super) fn waiting_for(sink: &mut dyn Sink, path: &Path) {
    sink.err(&format!(
        "⏳ {}: another program is writing here; waiting for it (Ctrl-C gives up)",
        path.display()
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_values_in_force_follow_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            mode: Some(Mode::Distributed),
            model: "saved".into(),
            ..Settings::default()
        };
        let store = SettingsStore::new(dir.path().join("s.json"), None, &settings);
        let env: &'static Env = Box::leak(Box::default());
        let mut cfg = Config::new(settings, store, Flags::default(), env, dir.path().into());
        assert_eq!((cfg.mode(), cfg.model()), (Mode::Distributed, "saved"));
        cfg.set_flags(|f| {
            *f = Flags {
                model: Some("given".into()),
                mode: Some(Mode::Standard),
            }
        });
        assert_eq!((cfg.mode(), cfg.model()), (Mode::Standard, "given"));
        cfg.settings_mut().mode = None;
        cfg.set_flags(|f| f.mode = None);
        assert_eq!(cfg.mode(), Mode::Standard, "unset is standard");
        assert_eq!(cfg.strategy(), Strategy::Auto);
        assert_eq!(cfg.route(), Route::Task);
        cfg.settings_mut().set_route(Route::Model);
        cfg.settings_mut().request_idle_timeout_ms = Some(10);
        assert_eq!(cfg.route(), Route::Model);
        assert_eq!(
            cfg.effective().request_idle,
            std::time::Duration::from_millis(10)
        );
    }
}
