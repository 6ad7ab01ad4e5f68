//! The one table of settings. Each row is one key of `~/.synapticllamas.json`:
//! its name (the Python original's, which is also the field's), its type and
//! default, how the file holds it ([`Kind`]), the values it takes in the user's
//! words (`rule`) and as a check beyond its type (`check`), and what it does
//! (`help`). The [`Settings`] struct, its default, the file's shape and the
//! [`Key`] enum are made from this table, and loading, warnings and saving go
//! by it: adding a setting is a row here plus the code that uses the value
//! (usually one line of [`crate::config::effective::Effective::resolve`]).

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{is_model_name, model_name_rule, Longform, Mode, RpcBackendEntry, Strategy};

/// Limits a user can see in `help` and in the settings warnings.
pub const REFINE_MAX: u32 = 5;
pub const QRETRIES_MAX: u32 = 5;
pub const TIMEOUT_MIN_SECS: u64 = 30;
pub const TIMEOUT_MAX_SECS: u64 = 86_400;

/// What the keys written only once set mean while they are unset.
pub const DISCOVERY_CONNECT_MS: u64 = 100;
pub const DISCOVERY_VERIFY_MS: u64 = 500;
pub const HOST_CAPACITY: u32 = 1;
pub const NUM_PREDICT: u64 = 4096;
pub const COORDINATOR_START_SECS: u64 = 600;
/// Where a coordinator is looked for, and started, unless configured.
pub const COORDINATOR_HOST: &str = "127.0.0.1";
pub const COORDINATOR_PORT: u16 = 18080;
/// Background probes for people (a terminal, an open dashboard or gateway);
/// none for scripts, whose output should not depend on timing.
pub const MONITOR_EVERY_SECS: u64 = 30;
pub const REQUEST_IDLE_MS: u64 = 120_000;
pub const RAG_MODEL: &str = "mxbai-embed-large";

/// How the file holds a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Always written (the original's keys).
    Always,
    /// Written only once set (keys this port adds): a file the original wrote
    /// stays as it was until the user sets one.
    OnceSet,
    /// Always written; its value is never printed (a password).
    Secret,
}

/// Any value of the key's type.
fn any<T>(_: &T) -> bool {
    true
}

/// `"a", "b" or null`-style lists: each word quoted, comma-separated.
fn quoted<'a>(words: impl Iterator<Item = &'a str>) -> String {
    words
        .map(|w| format!("\"{w}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

const BOOL: &str = "true or false";

/// Makes the table's types from its rows (see the module's comment).
macro_rules! settings_table {
    (@written OnceSet, $value:expr) => {
        Option::is_some($value)
    };
    (@written $kind:ident, $value:expr) => {
        true
    };
    ($(
        $name:ident: $ty:ty => $Key:ident {
            default: $default:expr,
            kind: $kind:ident,
            rule: $rule:expr,
            check: $check:expr,
            help: $help:expr $(,)?
        }
    ),+ $(,)?) => {
        /// Every setting, as loaded and changed: one field per row of the
        /// table (same name as the key), and the keys nobody here knows.
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(default)]
        pub struct Settings {
            $(
                #[doc = concat!("`", stringify!($name), "` (see the settings table).")]
                pub $name: $ty,
            )+
            /// Keys this program does not know: kept as they were.
            #[serde(flatten)]
            pub extra: Map<String, Value>,
        }

        impl Default for Settings {
            fn default() -> Self {
                Settings {
                    $($name: $default,)+
                    extra: Map::new(),
                }
            }
        }

        /// The file's shape: the keys in the table's order (those written only
        /// once set left out while unset), then the unknown keys as they came.
        impl Serialize for Settings {
            fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                let mut map = ser.serialize_map(None)?;
                $(
                    if settings_table!(@written $kind, &self.$name) {
                        map.serialize_entry(stringify!($name), &self.$name)?;
                    }
                )+
                for (k, v) in &self.extra {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }

        /// A key of the settings file.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Key {
            $($Key,)+
        }

        impl Key {
            /// Every key, in the file's order.
            pub const ALL: &'static [Key] = &[$(Key::$Key,)+];

            /// The key's name in the file.
            pub fn name(self) -> &'static str {
                match self {
                    $(Key::$Key => stringify!($name),)+
                }
            }

            pub fn kind(self) -> Kind {
                match self {
                    $(Key::$Key => Kind::$kind,)+
                }
            }

            /// What the key takes, in the user's words.
            pub fn rule(self) -> String {
                match self {
                    $(Key::$Key => String::from($rule),)+
                }
            }

            /// What the key does.
            pub fn help(self) -> String {
                match self {
                    $(Key::$Key => String::from($help),)+
                }
            }

            /// Whether the key can take `value`: its type, then its rule.
            pub fn accepts(self, value: &Value) -> bool {
                match self {
                    $(Key::$Key => {
                        let check: fn(&$ty) -> bool = $check;
                        <$ty>::deserialize(value).is_ok_and(|v| check(&v))
                    })+
                }
            }

            /// The default as the file holds it.
            pub fn default_value(self) -> Value {
                match self {
                    $(Key::$Key => {
                        let d: $ty = $default;
                        serde_json::to_value(d).expect("a default always serializes")
                    })+
                }
            }
        }
    };
}

settings_table! {
    mode: Option<Mode> => Mode {
        default: None,
        kind: Always,
        rule: format!("{} or null", quoted(Mode::ALL.iter().map(|m| m.word()))),
        check: any,
        help: "standard (one node at a time) or distributed (the node pool); null is standard",
    },
    collaborative_mode: bool => CollaborativeMode {
        default: false,
        kind: Always,
        rule: BOOL,
        check: any,
        help: "agents work in turn with feedback (research, critique, refine, edit)",
    },
    refinement_rounds: u32 => RefinementRounds {
        default: 1,
        kind: Always,
        rule: format!("a whole number from 0 to {REFINE_MAX}"),
        check: |n| *n <= REFINE_MAX,
        help: "refinement rounds in collaborative mode",
    },
    agent_timeout: u64 => AgentTimeout {
        default: 300,
        kind: Always,
        rule: format!("a whole number of seconds from {TIMEOUT_MIN_SECS} to {TIMEOUT_MAX_SECS}"),
        check: |s| (TIMEOUT_MIN_SECS..=TIMEOUT_MAX_SECS).contains(s),
        help: "the longest one agent request may take, in seconds",
    },
    ast_voting_enabled: bool => AstVotingEnabled {
        default: false,
        kind: Always,
        rule: BOOL,
        check: any,
        help: "voting agents judge the answer (collaborative mode)",
    },
    quality_threshold: f64 => QualityThreshold {
        default: 0.7,
        kind: Always,
        rule: "a number from 0.0 to 1.0",
        check: |x| (0.0..=1.0).contains(x),
        help: "the score the voters must give the answer",
    },
    max_quality_retries: u32 => MaxQualityRetries {
        default: 2,
        kind: Always,
        rule: format!("a whole number from 0 to {QRETRIES_MAX}"),
        check: |n| *n <= QRETRIES_MAX,
        help: "how often an answer the voters reject is revised",
    },
    flockparser_enabled: bool => FlockparserEnabled {
        default: false,
        kind: Always,
        rule: BOOL,
        check: any,
        help: "answers draw on your documents (RAG)",
    },
    dashboard_verbose: bool => DashboardVerbose {
        default: true,
        kind: Always,
        rule: BOOL,
        check: any,
        help: "dashboard verbosity (kept for the original)",
    },
    model: String => Model {
        default: "llama3.2".into(),
        kind: Always,
        rule: model_name_rule(),
        check: |m| is_model_name(m),
        help: "the model the agents use (--model beats it for one run)",
    },
    synthesis_model: Option<String> => SynthesisModel {
        default: None,
        kind: Always,
        rule: "a model name or null",
        check: |m| m.as_deref().is_none_or(is_model_name),
        help: "the model of the final synthesis; null is the agents' model",
    },
    strategy: Option<Strategy> => Strategy {
        default: None,
        kind: Always,
        rule: format!(
            "one of {} or null (auto)",
            quoted(Strategy::ALL.iter().filter_map(|s| s.setting()))
        ),
        check: any,
        help: "how work is spread over the nodes; null is auto",
    },
    task_distribution_enabled: bool => TaskDistributionEnabled {
        default: true,
        kind: Always,
        rule: BOOL,
        check: any,
        help: "queries may go to the Ollama node pool (`distributed task|both`)",
    },
    model_sharding_enabled: bool => ModelShardingEnabled {
        default: false,
        kind: Always,
        rule: BOOL,
        check: any,
        help: "large models may go to the llama.cpp coordinator (`distributed model|both`)",
    },
    rpc_backends: Vec<RpcBackendEntry> => RpcBackends {
        default: Vec::new(),
        kind: Always,
        rule: "a list of {\"host\": \"…\", \"port\": 0-65535} objects",
        check: any,
        help: "llama.cpp RPC backends for model sharding",
    },
    coordinator_url: Option<String> => CoordinatorUrl {
        default: None,
        kind: OnceSet,
        rule: "a URL string",
        check: any,
        help: "a running llama.cpp coordinator to use (SOLLOL_COORDINATOR_HOST/PORT beat it)",
    },
    redis_logging_enabled: bool => RedisLoggingEnabled {
        default: false,
        kind: Always,
        rule: BOOL,
        check: any,
        help: "share host leases, node health and events through Redis",
    },
    redis_host: String => RedisHost {
        default: "localhost".into(),
        kind: Always,
        rule: "a host name string",
        check: any,
        help: "the Redis server (a *_REDIS_URL variable beats the redis_* keys)",
    },
    redis_port: u16 => RedisPort {
        default: 6379,
        kind: Always,
        rule: "a port number from 0 to 65535",
        check: any,
        help: "the Redis server's port",
    },
    redis_db: u32 => RedisDb {
        default: 0,
        kind: Always,
        rule: "a whole number from 0 to 4294967295",
        check: any,
        help: "the Redis database number",
    },
    redis_password: Option<String> => RedisPassword {
        default: None,
        kind: Secret,
        rule: "a string or null",
        check: any,
        help: "the Redis password (used, never shown)",
    },
    discovery_connect_timeout_ms: Option<u64> => DiscoveryConnectTimeoutMs {
        default: None,
        kind: OnceSet,
        rule: "a whole number of milliseconds (0 or more)",
        check: any,
        help: format!("discovery: how long a connect may take (unset: {DISCOVERY_CONNECT_MS} ms)"),
    },
    discovery_verify_timeout_ms: Option<u64> => DiscoveryVerifyTimeoutMs {
        default: None,
        kind: OnceSet,
        rule: "a whole number of milliseconds (0 or more)",
        check: any,
        help: format!("discovery: how long an Ollama check may take (unset: {DISCOVERY_VERIFY_MS} ms)"),
    },
    host_capacity: Option<u32> => HostCapacity {
        default: None,
        kind: OnceSet,
        rule: "a whole number from 0 to 4294967295",
        check: any,
        help: format!("requests a physical host takes at once (unset: {HOST_CAPACITY})"),
    },
    num_predict: Option<u64> => NumPredict {
        default: None,
        kind: OnceSet,
        rule: "a whole number of tokens (0 or more)",
        check: any,
        help: format!("num_predict / max_tokens of agent requests (unset: {NUM_PREDICT})"),
    },
    coordinator_args: Option<Vec<String>> => CoordinatorArgs {
        default: None,
        kind: OnceSet,
        rule: "a list of strings",
        check: any,
        help: "extra arguments for a llama-server this program starts",
    },
    coordinator_start_timeout_secs: Option<u64> => CoordinatorStartTimeoutSecs {
        default: None,
        kind: OnceSet,
        rule: "a whole number of seconds (0 or more)",
        check: any,
        help: format!(
            "how long a starting llama-server may take to answer /health (unset: {COORDINATOR_START_SECS} s)"
        ),
    },
    monitor_interval_secs: Option<u64> => MonitorIntervalSecs {
        default: None,
        kind: OnceSet,
        rule: "a whole number of seconds (0 or more)",
        check: any,
        help: format!(
            "seconds between background probes of the nodes, 0 = off (unset: {MONITOR_EVERY_SECS} \
             on a terminal or with the dashboard or gateway open, else off)"
        ),
    },
    request_idle_timeout_ms: Option<u64> => RequestIdleTimeoutMs {
        default: None,
        kind: OnceSet,
        rule: "a whole number of milliseconds (0 or more)",
        check: any,
        help: format!(
            "the longest silence inside one request once it began (unset: {REQUEST_IDLE_MS} ms)"
        ),
    },
    rag_path: Option<String> => RagPath {
        default: None,
        kind: OnceSet,
        rule: "a folder or http(s) URL string",
        check: any,
        help: "RAG: a FlockParser folder or API URL (unset: ~/FlockParser when it exists)",
    },
    rag_model: Option<String> => RagModel {
        default: None,
        kind: OnceSet,
        rule: "a model name string",
        check: any,
        help: format!("RAG: the embedding model (unset: {RAG_MODEL})"),
    },
    longform: Option<Longform> => Longform {
        default: None,
        kind: OnceSet,
        rule: format!("one of {} or null (auto)", quoted(Longform::WORDS.iter().copied())),
        check: any,
        help: "when an answer is written in parts: auto, always or never (unset: auto)",
    },
}

impl Key {
    /// The key named `name`, if it is one.
    pub fn from_name(name: &str) -> Option<Key> {
        Key::ALL.iter().copied().find(|k| k.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_passes_its_own_rule() {
        for k in Key::ALL {
            assert!(k.accepts(&k.default_value()), "{}", k.name());
            assert!(!k.help().is_empty() && !k.rule().is_empty(), "{}", k.name());
        }
    }

    #[test]
    fn names_and_keys_are_one_to_one() {
        for k in Key::ALL {
            assert_eq!(Key::from_name(k.name()), Some(*k));
        }
        let fields = serde_json::to_value(Settings::default()).unwrap();
        let written: Vec<&String> = fields.as_object().unwrap().keys().collect();
        let always: Vec<&str> = Key::ALL
            .iter()
            .filter(|k| k.kind() != Kind::OnceSet)
            .map(|k| k.name())
            .collect();
        assert_eq!(
            written, always,
            "the default file holds every key but those set once"
        );
    }

    #[test]
    fn defaults_round_trip_through_the_file() {
        let d = Settings::default();
        let text = serde_json::to_string(&d).unwrap();
        let back: Settings = serde_json::from_str(&text).unwrap();
        assert_eq!(back, d);
        let v: Value = serde_json::from_str(&text).unwrap();
        for k in Key::ALL {
            let held = v.get(k.name()).cloned().unwrap_or(Value::Null);
            assert_eq!(held, k.default_value(), "{}", k.name());
        }
    }

    #[test]
    fn checks_beyond_the_type() {
        use serde_json::json;
        assert!(!Key::RefinementRounds.accepts(&json!(REFINE_MAX + 1)));
        assert!(!Key::AgentTimeout.accepts(&json!(TIMEOUT_MIN_SECS - 1)));
        assert!(!Key::QualityThreshold.accepts(&json!(1.5)));
        assert!(!Key::Model.accepts(&json!("a;b")));
        assert!(!Key::SynthesisModel.accepts(&json!("a b")));
        assert!(Key::SynthesisModel.accepts(&Value::Null));
        assert!(
            !Key::Strategy.accepts(&json!("auto")),
            "auto is null in the file"
        );
        assert!(!Key::HostCapacity.accepts(&json!(-1)));
        assert!(Key::HostCapacity.accepts(&Value::Null), "unset");
        assert!(!Key::CollaborativeMode.accepts(&Value::Null));
    }
}
