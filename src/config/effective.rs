//! What the program runs with: the settings, the command-line flags and the
//! environment resolved into one value, once at start-up and again whenever
//! the settings or flags change (the app's `Config` keeps it current). Every
//! default of a key written only once set is applied here and nowhere else;
//! the shell's queries and the gateway take their plan from this one value.

use std::time::Duration;

use super::choices::{Mode, Route, Strategy};
use super::env::Env;
use super::settings::{self, Settings};
use crate::config::choices::Longform;

/// Values given on the command line: they beat the saved settings for this run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flags {
    /// `--model`.
    pub model: Option<String>,
    /// `--distributed` (or a simulated cluster): distributed for this run.
    pub mode: Option<Mode>,
}

/// Where Redis is: a URL from the environment beats the `redis_*` settings.
#[derive(Clone, PartialEq)]
pub enum RedisAt {
    /// `var` (one of [`super::env::REDIS_URL_VARS`]) holds `url`.
    Url { var: &'static str, url: String },
    Settings {
        host: String,
        port: u16,
        db: u32,
        password: Option<String>,
    },
}

impl std::fmt::Debug for RedisAt {
    /// Never the password, nor a URL (it may hold one).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisAt::Url { var, .. } => write!(f, "RedisAt::Url({var})"),
            RedisAt::Settings {
                host,
                port,
                db,
                password,
            } => write!(
                f,
                "RedisAt::Settings({host}:{port}/{db}, password {})",
                if password.is_some() { "set" } else { "unset" }
            ),
        }
    }
}

/// The settings in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// `--distributed`, else the `mode` setting, else standard.
    pub mode: Mode,
    /// `--model`, else the `model` setting.
    pub model: String,
    pub synthesis_model: Option<String>,
    pub strategy: Strategy,
    pub longform: Longform,
    pub route: Route,
    pub collaborative: bool,
    pub refinement_rounds: u32,
    pub ast_voting: bool,
    pub quality_threshold: f64,
    pub max_quality_retries: u32,
    /// The outer bound of one agent request (`agent_timeout`, at least 1 s).
    pub agent_timeout: Duration,
    /// Silence allowed inside a request once it began (`request_idle_timeout_ms`).
    pub request_idle: Duration,
    /// `num_predict` / `max_tokens` of agent requests.
    pub num_predict: u64,
    /// Requests a physical host takes at once unless its nodes say more (at least 1).
    pub host_capacity: u32,
    pub discovery_connect: Duration,
    pub discovery_verify: Duration,
    /// `monitor_interval_secs` as set; see [`Effective::monitor_every`].
    pub monitor_interval_secs: Option<u64>,
    /// RAG (`rag on`).
    pub rag_enabled: bool,
    /// `rag_path` as set (unset: `~/FlockParser` when it exists, decided by RAG).
    pub rag_path: Option<String>,
    /// The embedding model.
    pub rag_model: String,
    /// A coordinator already running: `SOLLOL_COORDINATOR_HOST`/`_PORT`, else
    /// `coordinator_url`, else the default address.
    pub coordinator_url: String,
    /// Whether `coordinator_url` came from the environment or the settings.
    pub coordinator_configured: bool,
    pub coordinator_args: Vec<String>,
    /// How long a starting llama-server may take to answer /health.
    pub coordinator_start: Duration,
    pub redis: RedisAt,
}

impl Effective {
    /// Resolve the settings, flags and environment into the values in force.
    pub fn resolve(s: &Settings, flags: &Flags, env: &Env) -> Effective {
        let ms = Duration::from_millis;
        let (coordinator_url, coordinator_configured) = coordinator_url(s, env);
        Effective {
            mode: flags.mode.or(s.mode).unwrap_or(Mode::Standard),
            model: flags.model.clone().unwrap_or_else(|| s.model.clone()),
            synthesis_model: s.synthesis_model.clone(),
            strategy: Strategy::from_stored(s.strategy),
            longform: s.longform.unwrap_or_default(),
            route: s.route(),
            collaborative: s.collaborative_mode,
            refinement_rounds: s.refinement_rounds,
            ast_voting: s.ast_voting_enabled,
            quality_threshold: s.quality_threshold,
            max_quality_retries: s.max_quality_retries,
            agent_timeout: Duration::from_secs(s.agent_timeout.max(1)),
            request_idle: ms(s
                .request_idle_timeout_ms
                .unwrap_or(settings::REQUEST_IDLE_MS)),
            num_predict: s.num_predict.unwrap_or(settings::NUM_PREDICT),
            host_capacity: s.host_capacity.unwrap_or(settings::HOST_CAPACITY).max(1),
            discovery_connect: ms(s
                .discovery_connect_timeout_ms
                .unwrap_or(settings::DISCOVERY_CONNECT_MS)),
            discovery_verify: ms(s
                .discovery_verify_timeout_ms
                .unwrap_or(settings::DISCOVERY_VERIFY_MS)),
            monitor_interval_secs: s.monitor_interval_secs,
            rag_enabled: s.flockparser_enabled,
            rag_path: s.rag_path.clone(),
            rag_model: s
                .rag_model
                .clone()
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| settings::RAG_MODEL.to_string()),
            coordinator_url,
            coordinator_configured,
            coordinator_args: s.coordinator_args.clone().unwrap_or_default(),
            coordinator_start: Duration::from_secs(
                s.coordinator_start_timeout_secs
                    .unwrap_or(settings::COORDINATOR_START_SECS),
            ),
            redis: match &env.redis_url {
                Some((var, url)) => RedisAt::Url {
                    var,
                    url: url.clone(),
                },
                None => RedisAt::Settings {
                    host: s.redis_host.clone(),
                    port: s.redis_port,
                    db: s.redis_db,
                    password: s.redis_password.clone(),
                },
            },
        }
    }

    /// Seconds between background probes (0: none): the setting, else on for
    /// `people` (a terminal, an open dashboard or gateway) and off for scripts.
    pub fn monitor_every(&self, people: bool) -> u64 {
        let default = if people {
            settings::MONITOR_EVERY_SECS
        } else {
            0
        };
        self.monitor_interval_secs.unwrap_or(default)
    }
}

/// `SOLLOL_COORDINATOR_HOST`/`_PORT` (either; the other defaults), else the
/// `coordinator_url` setting, else the default address; and whether it was
/// configured at all.
fn coordinator_url(s: &Settings, env: &Env) -> (String, bool) {
    let (host, port) = (&env.coordinator_host, &env.coordinator_port);
    if host.is_some() || port.is_some() {
        let h = host.as_deref().unwrap_or(settings::COORDINATOR_HOST);
        let p = port
            .as_deref()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(settings::COORDINATOR_PORT);
        return (format!("http://{h}:{p}"), true);
    }
    match &s.coordinator_url {
        Some(u) => (
            crate::ollama::host::canonical_url(u).unwrap_or_else(|_| u.to_string()),
            true,
        ),
        None => (
            format!(
                "http://{}:{}",
                settings::COORDINATOR_HOST,
                settings::COORDINATOR_PORT
            ),
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env(vars: &[(&str, &str)]) -> Env {
        Env::from_vars(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        })
    }

    fn saved() -> Settings {
        Settings {
            mode: Some(Mode::Standard),
            model: "saved".into(),
            redis_host: "redis.lan".into(),
            redis_password: Some("pw".into()),
            coordinator_url: Some("10.0.0.9:9000".into()),
            ..Settings::default()
        }
    }

    #[test]
    fn flags_beat_settings() {
        let s = saved();
        let e = Effective::resolve(&s, &Flags::default(), &Env::default());
        assert_eq!((e.mode, e.model.as_str()), (Mode::Standard, "saved"));
        let flags = Flags {
            model: Some("given".into()),
            mode: Some(Mode::Distributed),
        };
        let e = Effective::resolve(&s, &flags, &Env::default());
        assert_eq!((e.mode, e.model.as_str()), (Mode::Distributed, "given"));
        let unset = Settings { mode: None, ..s };
        let e = Effective::resolve(&unset, &Flags::default(), &Env::default());
        assert_eq!(e.mode, Mode::Standard, "unset is standard");
    }

    #[test]
    fn redis_urls_from_the_environment_beat_the_settings_in_order() {
        let s = saved();
        let e = Effective::resolve(&s, &Flags::default(), &Env::default());
        assert_eq!(
            e.redis,
            RedisAt::Settings {
                host: "redis.lan".into(),
                port: 6379,
                db: 0,
                password: Some("pw".into())
            }
        );
        let all = env(&[
            ("REDIS_URL", "redis://c"),
            ("SOLLOL_REDIS_URL", "redis://b"),
            ("SYNAPTICLLAMAS_REDIS_URL", "redis://a"),
        ]);
        let e = Effective::resolve(&s, &Flags::default(), &all);
        assert_eq!(
            e.redis,
            RedisAt::Url {
                var: "SYNAPTICLLAMAS_REDIS_URL",
                url: "redis://a".into()
            }
        );
        let last = env(&[("REDIS_URL", "redis://c")]);
        let e = Effective::resolve(&s, &Flags::default(), &last);
        assert!(matches!(
            e.redis,
            RedisAt::Url {
                var: "REDIS_URL",
                ..
            }
        ));
        assert!(!format!("{:?}", e.redis).contains("redis://c"));
    }

    #[test]
    fn the_coordinators_address_from_the_environment_beats_the_setting() {
        let s = saved();
        let e = Effective::resolve(&s, &Flags::default(), &Env::default());
        assert_eq!(
            (e.coordinator_url.as_str(), e.coordinator_configured),
            ("http://10.0.0.9:9000", true)
        );
        let port_only = env(&[("SOLLOL_COORDINATOR_PORT", "9100")]);
        let e = Effective::resolve(&s, &Flags::default(), &port_only);
        assert_eq!(e.coordinator_url, "http://127.0.0.1:9100");
        let unset = Settings::default();
        let e = Effective::resolve(&unset, &Flags::default(), &Env::default());
        assert_eq!(
            (e.coordinator_url.as_str(), e.coordinator_configured),
            ("http://127.0.0.1:18080", false)
        );
    }

    #[test]
    fn unset_keys_take_the_tables_defaults() {
        let e = Effective::resolve(&Settings::default(), &Flags::default(), &Env::default());
        assert_eq!(e.request_idle, Duration::from_secs(120));
        assert_eq!(e.num_predict, 4096);
        assert_eq!(e.host_capacity, 1);
        assert_eq!(e.agent_timeout, Duration::from_secs(300));
        assert_eq!(
            (e.discovery_connect, e.discovery_verify),
            (Duration::from_millis(100), Duration::from_millis(500))
        );
        assert_eq!(e.coordinator_start, Duration::from_secs(600));
        assert_eq!(e.rag_model, "mxbai-embed-large");
        assert_eq!((e.monitor_every(true), e.monitor_every(false)), (30, 0));
        assert_eq!(
            (e.strategy, e.longform, e.route),
            (Strategy::Auto, Longform::Auto, Route::Task)
        );
        let set = Settings {
            request_idle_timeout_ms: Some(5),
            host_capacity: Some(0),
            rag_model: Some(" ".into()),
            monitor_interval_secs: Some(7),
            ..Settings::default()
        };
        let e = Effective::resolve(&set, &Flags::default(), &Env::default());
        assert_eq!(e.request_idle, Duration::from_millis(5));
        assert_eq!(e.host_capacity, 1, "at least one request per host");
        assert_eq!(e.rag_model, "mxbai-embed-large", "a blank name is unset");
        assert_eq!(e.monitor_every(false), 7);
        let named = Settings {
            rag_model: Some("nomic-embed-text".into()),
            ..Settings::default()
        };
        let e = Effective::resolve(&named, &Flags::default(), &Env::default());
        assert_eq!(e.rag_model, "nomic-embed-text");
    }
}
