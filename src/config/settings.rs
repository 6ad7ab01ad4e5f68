//! `~/.synapticllamas.json`: every key of the original with its default, plus the
//! keys this port adds; keys nobody here knows are kept on every rewrite.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::choices::{Longform, Mode, Route, Strategy};
use super::{json_error, read_text, FileError};
use crate::names::{ModelName, NAME_MAX};

/// An RPC backend entry (`{"host", "port"}`), extra fields kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcBackendEntry {
    pub host: String,
    #[serde(default = "default_rpc_port")]
    pub port: u16,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

pub(crate) fn default_rpc_port() -> u16 {
    50052
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub mode: Option<Mode>,
    pub collaborative_mode: bool,
    pub refinement_rounds: u32,
    pub agent_timeout: u64,
    pub ast_voting_enabled: bool,
    pub quality_threshold: f64,
    pub max_quality_retries: u32,
    pub flockparser_enabled: bool,
    pub dashboard_verbose: bool,
    pub model: String,
    pub synthesis_model: Option<String>,
    /// `null` is auto ([`Strategy::stored`]).
    pub strategy: Option<Strategy>,
    pub task_distribution_enabled: bool,
    pub model_sharding_enabled: bool,
    pub rpc_backends: Vec<RpcBackendEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordinator_url: Option<String>,
    pub redis_logging_enabled: bool,
    pub redis_host: String,
    pub redis_port: u16,
    pub redis_db: u32,
    pub redis_password: Option<String>,
    // Keys this port adds (written only once set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_connect_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_verify_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_capacity: Option<u32>,
    /// `num_predict` / `max_tokens` for agent requests (default 4096).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_predict: Option<u64>,
    /// Extra arguments for a llama-server this program starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordinator_args: Option<Vec<String>>,
    /// How long to wait for a starting llama-server's /health (default 600 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordinator_start_timeout_secs: Option<u64>,
    /// Seconds between background probes of the nodes (default 30; 0 = off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor_interval_secs: Option<u64>,
    /// Longest silence allowed inside one agent request (default 120 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_idle_timeout_ms: Option<u64>,
    /// RAG: a FlockParser folder or API URL (default ~/FlockParser when it exists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rag_path: Option<String>,
    /// RAG: the embedding model (default mxbai-embed-large).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rag_model: Option<String>,
    /// When an answer is written in parts: "auto" (default), "always", "never".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub longform: Option<Longform>,
    /// Keys this program does not know: kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: None,
            collaborative_mode: false,
            refinement_rounds: 1,
            agent_timeout: 300,
            ast_voting_enabled: false,
            quality_threshold: 0.7,
            max_quality_retries: 2,
            flockparser_enabled: false,
            dashboard_verbose: true,
            model: "llama3.2".into(),
            synthesis_model: None,
            strategy: None,
            task_distribution_enabled: true,
            model_sharding_enabled: false,
            rpc_backends: Vec::new(),
            coordinator_url: None,
            redis_logging_enabled: false,
            redis_host: "localhost".into(),
            redis_port: 6379,
            redis_db: 0,
            redis_password: None,
            discovery_connect_timeout_ms: None,
            discovery_verify_timeout_ms: None,
            host_capacity: None,
            request_idle_timeout_ms: None,
            num_predict: None,
            monitor_interval_secs: None,
            coordinator_args: None,
            coordinator_start_timeout_secs: None,
            rag_path: None,
            rag_model: None,
            longform: None,
            extra: Map::new(),
        }
    }
}

/// The legacy key the original migrated to `model_sharding_enabled`.
const LEGACY_SHARDING_KEY: &str = "distributed_inference_enabled";

/// Limits a user can see in `help` and in the settings warnings.
pub const REFINE_MAX: u32 = 5;
pub const QRETRIES_MAX: u32 = 5;
pub const TIMEOUT_MIN_SECS: u64 = 30;
pub const TIMEOUT_MAX_SECS: u64 = 86_400;

impl Settings {
    /// The routing path the two saved flags describe.
    pub fn route(&self) -> Route {
        Route::from_flags(self.task_distribution_enabled, self.model_sharding_enabled)
    }

    /// Store a routing path as the original's two flags.
    pub(crate) fn set_route(&mut self, route: Route) {
        self.task_distribution_enabled = route.task_distribution();
        self.model_sharding_enabled = route.model_sharding();
    }

    /// The saved strategy (auto when unset).
    pub fn strategy(&self) -> Strategy {
        Strategy::from_stored(self.strategy)
    }

    /// The saved `longform` rule (auto when unset).
    pub fn longform(&self) -> Longform {
        self.longform.unwrap_or_default()
    }
}

/// A key whose value could not be used: the default is used instead, and the
/// value stays in the file until the user sets that key.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidKey {
    pub key: String,
    pub line: usize,
    /// What is wrong, in the user's words (value and allowed range).
    pub problem: String,
}

/// What loading the settings file produced.
#[derive(Debug)]
pub struct LoadedSettings {
    pub settings: Settings,
    /// Set when the file exists but is not a JSON object at all: it must not be overwritten.
    pub error: Option<FileError>,
    /// Notes worth one line each (a byte-order mark, a migrated key, an empty file).
    pub notes: Vec<String>,
    /// Keys whose values were not used, one warning each.
    pub invalid: Vec<InvalidKey>,
    pub existed: bool,
}

impl LoadedSettings {
    /// The warning line for one invalid key.
    pub fn warning(&self, path: &Path, k: &InvalidKey) -> String {
        format!(
            "{}: key `{}` at line {}: {}; using the default ({}) — the value stays in the file until you set it",
            path.display(),
            k.key,
            k.line,
            k.problem,
            default_shown(&k.key)
        )
    }
}

/// Parsed settings: the values, notes, and the keys whose values were not used.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub settings: Settings,
    pub notes: Vec<String>,
    pub invalid: Vec<InvalidKey>,
}

/// Parse the file's text. Only a text that is not a JSON object is an error; a
/// key with an unusable value is reported in `invalid` and its default used.
pub fn parse(path: &Path, text: &str) -> Result<Parsed, FileError> {
    let mut notes = Vec::new();
    let value: Value = serde_json::from_str(text).map_err(|e| json_error(path, text, &e))?;
    let Value::Object(mut map) = value else {
        return Err(FileError::new(
            path,
            format!(
                "the top level is {} (expected a JSON object of settings)",
                kind_of(&value)
            ),
        ));
    };
    if migrate_legacy(&mut map) {
        notes.push(format!(
            "{}: migrated legacy key `{LEGACY_SHARDING_KEY}` to `model_sharding_enabled`",
            path.display()
        ));
    }
    // Check each known key on its own so one bad value costs only that key.
    let known = known_keys();
    let mut invalid = Vec::new();
    let mut usable = Map::new();
    for (key, val) in map {
        if known.contains(&key) {
            if let Err(problem) = check_key(&key, &val) {
                invalid.push(InvalidKey {
                    line: line_of_key(text, &key),
                    key,
                    problem: problem.to_string(),
                });
                continue;
            }
        }
        usable.insert(key, val);
    }
    let settings: Settings = serde_json::from_value(Value::Object(usable))
        .map_err(|e| FileError::new(path, e.to_string()))?;
    Ok(Parsed {
        settings,
        notes,
        invalid,
    })
}

/// Move the legacy sharding key to its new name; true when it was there.
fn migrate_legacy(map: &mut Map<String, Value>) -> bool {
    let Some(v) = map.shift_remove(LEGACY_SHARDING_KEY) else {
        return false;
    };
    if !map.contains_key("model_sharding_enabled") {
        map.insert("model_sharding_enabled".into(), v);
    }
    true
}

/// A value a key cannot take: the value as shown (never a secret) and what
/// the key takes, in the user's words.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{shown} is not {rule}")]
pub(crate) struct BadValue {
    shown: String,
    rule: String,
}

/// Whether `val` can be used for `key`; the problem in user words when not.
fn check_key(key: &str, val: &Value) -> Result<(), BadValue> {
    let mut probe = Map::new();
    probe.insert(key.to_string(), val.clone());
    let ok = match serde_json::from_value::<Settings>(Value::Object(probe)) {
        Ok(s) => in_range(key, &s),
        Err(_) => false,
    };
    if ok {
        return Ok(());
    }
    let shown = if SECRET_KEYS.contains(&key) {
        format!("{} (value not shown)", kind_of(val))
    } else {
        shown(val)
    };
    Err(BadValue {
        shown,
        rule: rule(key),
    })
}

/// The checks beyond the value's type.
fn in_range(key: &str, s: &Settings) -> bool {
    match key {
        "refinement_rounds" => s.refinement_rounds <= REFINE_MAX,
        "agent_timeout" => (TIMEOUT_MIN_SECS..=TIMEOUT_MAX_SECS).contains(&s.agent_timeout),
        "quality_threshold" => (0.0..=1.0).contains(&s.quality_threshold),
        "max_quality_retries" => s.max_quality_retries <= QRETRIES_MAX,
        "model" => s.model.parse::<ModelName>().is_ok(),
        "synthesis_model" => s
            .synthesis_model
            .as_deref()
            .is_none_or(|m| m.parse::<ModelName>().is_ok()),
        _ => true,
    }
}

/// What a key takes, in the user's words.
fn rule(key: &str) -> String {
    let list = |xs: &mut dyn Iterator<Item = &str>| {
        xs.map(|x| format!("\"{x}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match key {
        "mode" => format!("{} or null", list(&mut Mode::ALL.iter().map(|m| m.word()))),
        "refinement_rounds" => format!("a whole number from 0 to {REFINE_MAX}"),
        "agent_timeout" => {
            format!("a whole number of seconds from {TIMEOUT_MIN_SECS} to {TIMEOUT_MAX_SECS}")
        }
        "quality_threshold" => "a number from 0.0 to 1.0".into(),
        "max_quality_retries" => format!("a whole number from 0 to {QRETRIES_MAX}"),
        "model" => format!(
            "a model name (letters, digits and - _ . : /, at most {} characters)",
            NAME_MAX
        ),
        "synthesis_model" => "a model name or null".into(),
        "strategy" => format!(
            "one of {} or null (auto)",
            list(&mut Strategy::ALL.iter().filter_map(|s| s.setting()))
        ),
        "longform" => format!(
            "one of {} or null (auto)",
            list(&mut Longform::WORDS.iter().copied())
        ),
        "collaborative_mode"
        | "ast_voting_enabled"
        | "flockparser_enabled"
        | "dashboard_verbose"
        | "task_distribution_enabled"
        | "model_sharding_enabled"
        | "redis_logging_enabled"
        | LEGACY_SHARDING_KEY => "true or false".into(),
        "rpc_backends" => "a list of {\"host\": \"…\", \"port\": 0-65535} objects".into(),
        "coordinator_url" => "a URL string".into(),
        "redis_host" => "a host name string".into(),
        "redis_port" => "a port number from 0 to 65535".into(),
        "redis_db" => "a whole number from 0 to 4294967295".into(),
        "redis_password" => "a string or null".into(),
        "host_capacity" => "a whole number from 0 to 4294967295".into(),
        "coordinator_args" => "a list of strings".into(),
        "discovery_connect_timeout_ms"
        | "discovery_verify_timeout_ms"
        | "request_idle_timeout_ms" => "a whole number of milliseconds (0 or more)".into(),
        "num_predict" => "a whole number of tokens (0 or more)".into(),
        "coordinator_start_timeout_secs" | "monitor_interval_secs" => {
            "a whole number of seconds (0 or more)".into()
        }
        _ => "a value of the right type".into(),
    }
}

/// A value as the user wrote it, short and on one line.
fn shown(v: &Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    let s: String = s
        .chars()
        .flat_map(|c| {
            let e: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            e
        })
        .collect();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

/// The default value of a key, as it reads in the file.
pub(crate) fn default_shown(key: &str) -> String {
    let defaults = serde_json::to_value(Settings::default()).unwrap_or_default();
    match defaults.get(key) {
        Some(v) => shown(v),
        None => "unset".into(),
    }
}

/// Keys whose values are never printed.
const SECRET_KEYS: &[&str] = &["redis_password"];

/// Every key this program reads (the legacy one included).
pub fn known_keys() -> Vec<String> {
    let defaults = serde_json::to_value(Settings::default()).unwrap_or_default();
    let mut keys: Vec<String> = defaults
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    keys.extend(OPTIONAL_KEYS.iter().map(|k| k.to_string()));
    keys.push(LEGACY_SHARDING_KEY.to_string());
    keys
}

const OPTIONAL_KEYS: &[&str] = &[
    "coordinator_url",
    "discovery_connect_timeout_ms",
    "discovery_verify_timeout_ms",
    "host_capacity",
    "request_idle_timeout_ms",
    "num_predict",
    "monitor_interval_secs",
    "coordinator_args",
    "coordinator_start_timeout_secs",
    "rag_path",
    "rag_model",
    "longform",
];

fn line_of_key(text: &str, key: &str) -> usize {
    let needle = format!("\"{key}\"");
    text.find(&needle)
        .map(|i| text[..i].matches('\n').count() + 1)
        .unwrap_or(1)
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub fn load(path: &Path) -> LoadedSettings {
    let mut out = LoadedSettings {
        settings: Settings::default(),
        error: None,
        notes: Vec::new(),
        invalid: Vec::new(),
        existed: false,
    };
    match read_text(path) {
        Ok(None) => {}
        Ok(Some(text)) => {
            out.existed = true;
            if super::has_bom(path) {
                out.notes.push(format!(
                    "{}: starts with a UTF-8 byte-order mark; read anyway",
                    path.display()
                ));
            }
            if text.trim().is_empty() {
                out.notes.push(format!(
                    "{}: the file is empty; using the default settings (a setting you change is written to it)",
                    path.display()
                ));
                return out;
            }
            match parse(path, &text) {
                Ok(p) => {
                    out.settings = p.settings;
                    out.notes.extend(p.notes);
                    out.invalid = p.invalid;
                }
                Err(e) => out.error = Some(e),
            }
        }
        Err(e) => {
            out.existed = true;
            out.error = Some(e);
        }
    }
    out
}

pub fn to_json(settings: &Settings) -> String {
    let mut s = serde_json::to_string_pretty(settings).unwrap_or_default();
    s.push('\n');
    s
}

fn to_map(settings: &Settings) -> Map<String, Value> {
    match serde_json::to_value(settings) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// Where the settings live, whether they may be written, and what this session
/// has saved so far (to tell which keys it changed).
#[derive(Debug, Clone)]
pub struct SettingsStore {
    pub path: PathBuf,
    /// Why the file must not be written (it is not a JSON object), if so.
    pub blocked: Option<String>,
    /// The settings as loaded or last saved by this session.
    baseline: Map<String, Value>,
}

impl SettingsStore {
    pub fn new(path: PathBuf, blocked: Option<String>, loaded: &Settings) -> SettingsStore {
        SettingsStore {
            path,
            blocked,
            baseline: to_map(loaded),
        }
    }

    /// Save what this session changed: lock, re-read the file, apply only the
    /// keys whose values differ from what was loaded (plus `touched`, keys the
    /// user set even to the value they had), write atomically. Keys another
    /// session changed meanwhile, unknown keys and values this program could
    /// not use are left as they are on disk. Blocks the thread (start-up and
    /// tests); commands use [`SettingsStore::save_async`].
    pub fn save(&mut self, settings: &Settings, touched: &[&str]) -> anyhow::Result<()> {
        let change = self.change(settings, touched)?;
        let _lock = super::lock::FileLock::acquire(&self.path)?;
        self.baseline = change.write()?;
        Ok(())
    }

    /// `save` from async code: the lock is waited for and the file written on
    /// the blocking pool. `waiting` is told when another program holds the
    /// lock; dropping the future then gives up the save (nothing is written).
    pub(crate) async fn save_async(
        &mut self,
        settings: &Settings,
        touched: &[&str],
        waiting: impl FnOnce(&Path),
    ) -> anyhow::Result<()> {
        let change = self.change(settings, touched)?;
        let path = &self.path;
        self.baseline =
            super::lock::with_lock(path, || waiting(path), move || change.write()).await?;
        Ok(())
    }

    /// What a save is to write, or why the file must not be written.
    fn change(&self, settings: &Settings, touched: &[&str]) -> anyhow::Result<Change> {
        if let Some(why) = &self.blocked {
            anyhow::bail!(
                "{}: not saved, the file on disk could not be read ({why}); fix or remove it",
                self.path.display()
            );
        }
        Ok(Change {
            path: self.path.clone(),
            baseline: self.baseline.clone(),
            current: to_map(settings),
            touched: touched.iter().map(|t| t.to_string()).collect(),
            whole: to_json(settings),
        })
    }
}

/// One save of the settings, ready to run under the lock.
struct Change {
    path: PathBuf,
    /// The settings as loaded or last saved.
    baseline: Map<String, Value>,
    current: Map<String, Value>,
    touched: Vec<String>,
    /// Every setting, for a file that does not exist yet.
    whole: String,
}

impl Change {
    /// Re-read the file, apply the changed keys, write atomically; the new
    /// baseline. Runs holding the lock.
    fn write(self) -> anyhow::Result<Map<String, Value>> {
        let disk = match read_text(&self.path) {
            Ok(None) => None,
            Ok(Some(text)) if text.trim().is_empty() => None,
            Ok(Some(text)) => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(m)) => Some(m),
                Ok(other) => anyhow::bail!(
                    "{}: not saved, the file now holds {} (expected a JSON object of settings)",
                    self.path.display(),
                    kind_of(&other)
                ),
                Err(e) => anyhow::bail!("not saved: {}", json_error(&self.path, &text, &e)),
            },
            Err(e) => anyhow::bail!("not saved: {e}"),
        };
        let Some(mut map) = disk else {
            // No file yet (or an empty one): write every setting, as the original does.
            super::atomic::write_atomic(&self.path, self.whole.as_bytes())?;
            return Ok(self.current);
        };
        migrate_legacy(&mut map);
        let current = self.current;
        let mut keys: Vec<&String> = current
            .iter()
            .filter(|(k, v)| self.baseline.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .collect();
        // Optional keys this session unset.
        let unset: Vec<&String> = self
            .baseline
            .keys()
            .filter(|k| !current.contains_key(*k))
            .collect();
        for t in &self.touched {
            if let Some((k, _)) = current.get_key_value(t) {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        for k in keys {
            map.insert(k.clone(), current[k].clone());
        }
        for k in unset {
            map.shift_remove(k);
        }
        let mut text = serde_json::to_string_pretty(&Value::Object(map))
            .expect("a JSON object always serializes");
        text.push('\n');
        super::atomic::write_atomic(&self.path, text.as_bytes())?;
        Ok(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> PathBuf {
        PathBuf::from("/x/.synapticllamas.json")
    }

    fn ok(text: &str) -> Parsed {
        let r = parse(&p(), text).unwrap();
        assert!(r.invalid.is_empty(), "{:?}", r.invalid);
        r
    }

    #[test]
    fn defaults_match_the_original() {
        let v = serde_json::to_value(Settings::default()).unwrap();
        assert_eq!(v["mode"], Value::Null);
        assert_eq!(v["refinement_rounds"], 1);
        assert_eq!(v["agent_timeout"], 300);
        assert_eq!(v["quality_threshold"], 0.7);
        assert_eq!(v["model"], "llama3.2");
        assert_eq!(v["redis_port"], 6379);
        assert!(v.get("coordinator_url").is_none());
        assert_eq!(v["rpc_backends"], serde_json::json!([]));
    }

    #[test]
    fn unknown_keys_survive_a_round_trip() {
        let text = r#"{"mode":"standard","dashboard_enable_dask":false,"zzz":{"a":[1,2]}}"#;
        let s = ok(text).settings;
        let back: Value = serde_json::from_str(&to_json(&s)).unwrap();
        assert_eq!(back["dashboard_enable_dask"], false);
        assert_eq!(back["zzz"]["a"][1], 2);
        assert_eq!(back["mode"], "standard");
    }

    #[test]
    fn word_settings_keep_the_files_spelling() {
        let text = r#"{"mode":"distributed","strategy":"parallel_multi","longform":"never"}"#;
        let s = ok(text).settings;
        assert_eq!(s.mode, Some(Mode::Distributed));
        assert_eq!(s.strategy(), Strategy::Multi);
        assert_eq!(s.longform(), Longform::Never);
        let back: Value = serde_json::from_str(&to_json(&s)).unwrap();
        assert_eq!(back["mode"], "distributed");
        assert_eq!(back["strategy"], "parallel_multi");
        assert_eq!(back["longform"], "never");
        let mut s = s;
        s.strategy = Strategy::Auto.stored();
        s.set_route(Route::Model);
        let back: Value = serde_json::from_str(&to_json(&s)).unwrap();
        assert_eq!(
            back["strategy"],
            Value::Null,
            "auto is null, as the original writes it"
        );
        assert_eq!(back["task_distribution_enabled"], false);
        assert_eq!(back["model_sharding_enabled"], true);
    }

    #[test]
    fn an_unknown_word_is_warned_about_and_stays_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".synapticllamas.json");
        let text = "{\n  \"mode\": \"dask\",\n  \"strategy\": \"fastest\",\n  \"longform\": \"sometimes\"\n}\n";
        std::fs::write(&path, text).unwrap();
        let loaded = load(&path);
        let keys: Vec<&str> = loaded.invalid.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["mode", "strategy", "longform"]);
        assert!(loaded.invalid[0]
            .problem
            .contains("\"dask\" is not \"standard\", \"distributed\" or null"));
        assert!(
            loaded.invalid[1].problem.contains("\"single_node\""),
            "{:?}",
            loaded.invalid[1]
        );
        assert_eq!(loaded.settings.mode, None);
        let mut store = SettingsStore::new(path.clone(), None, &loaded.settings);
        let mut s = loaded.settings.clone();
        s.refinement_rounds = 3;
        store.save(&s, &["refinement_rounds"]).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["mode"], "dask");
        assert_eq!(v["strategy"], "fastest");
        assert_eq!(v["longform"], "sometimes");
        // Setting the key replaces the unknown word.
        s.mode = Some(Mode::Standard);
        store.save(&s, &["mode"]).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["mode"], "standard");
        assert_eq!(v["strategy"], "fastest");
    }

    #[test]
    fn legacy_key_migrates() {
        let r = ok(r#"{"distributed_inference_enabled": true}"#);
        assert!(r.settings.model_sharding_enabled);
        assert!(!to_json(&r.settings).contains("distributed_inference_enabled"));
        assert_eq!(r.notes.len(), 1);
    }

    #[test]
    fn one_bad_value_costs_only_its_key() {
        let text = "{\"strategy\":\"weird\",\"model\":\"mistral\",\n\"agent_timeout\":10,\"quality_threshold\":5,\"refinement_rounds\":\"two\"}";
        let r = parse(&p(), text).unwrap();
        assert_eq!(r.settings.model, "mistral");
        assert_eq!(r.settings.agent_timeout, 300);
        assert_eq!(r.settings.quality_threshold, 0.7);
        let keys: Vec<&str> = r.invalid.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "strategy",
                "agent_timeout",
                "quality_threshold",
                "refinement_rounds"
            ]
        );
        let q = &r.invalid[2];
        assert_eq!(q.line, 2);
        assert_eq!(q.problem, "5 is not a number from 0.0 to 1.0");
        assert_eq!(
            r.invalid[1].problem,
            "10 is not a whole number of seconds from 30 to 86400"
        );
        assert!(r.invalid[0].problem.contains("\"weird\" is not one of"));
        assert_eq!(
            r.invalid[3].problem,
            "\"two\" is not a whole number from 0 to 5"
        );
    }

    #[test]
    fn names_use_the_one_validator() {
        let r = parse(
            &p(),
            "{\"synthesis_model\": \"a\\u0007b\", \"model\": \"x;y\"}",
        )
        .unwrap();
        assert_eq!(r.invalid.len(), 2, "{:?}", r.invalid);
        assert!(r.invalid[0].problem.contains("\\u0007"), "{:?}", r.invalid);
        let long = format!("{{\"model\": \"{}\"}}", "m".repeat(5000));
        let r = parse(&p(), &long).unwrap();
        assert_eq!(r.invalid.len(), 1);
        assert!(r.invalid[0].problem.len() < 300, "{}", r.invalid[0].problem);
    }

    #[test]
    fn rpc_backend_extra_fields_kept() {
        let text = r#"{"rpc_backends":[{"host":"10.77.0.5","port":50052,"has_gpu":true}]}"#;
        let s = ok(text).settings;
        assert_eq!(s.rpc_backends[0].extra["has_gpu"], true);
        assert!(to_json(&s).contains("has_gpu"));
    }

    #[test]
    fn rewrites_keep_the_order_of_unknown_keys() {
        let text = r#"{"distributed_inference_enabled": true, "a": 1, "b": 2, "c": 3}"#;
        let s = ok(text).settings;
        let once = to_json(&s);
        let s2 = ok(&once).settings;
        assert_eq!(to_json(&s2), once);
        assert!(once.find("\"a\"").unwrap() < once.find("\"b\"").unwrap());
        assert!(once.find("\"b\"").unwrap() < once.find("\"c\"").unwrap());
    }

    #[test]
    fn unknown_numbers_survive_rewrites_exactly() {
        // Values another tool wrote with full precision must not drift one ulp per save.
        let text = r#"{"a": 5.713428168508627e161, "b": 0.30000000000000004, "c": 5e-324, "d": 18446744073709551615}"#;
        let s = ok(text).settings;
        let once = to_json(&s);
        let s2 = ok(&once).settings;
        assert_eq!(s2, s);
        assert_eq!(s.extra["a"].as_f64(), Some(5.713428168508627e161));
        assert_eq!(s.extra["b"].as_f64(), Some(0.30000000000000004));
        assert_eq!(s.extra["d"].as_u64(), Some(u64::MAX));
    }

    #[test]
    fn a_password_of_the_wrong_type_is_not_echoed() {
        let r = parse(&p(), "{\n \"redis_password\": 987654321\n}").unwrap();
        let k = &r.invalid[0];
        assert!(!k.problem.contains("987654321"), "{}", k.problem);
        assert!(k.key == "redis_password" && k.line == 2);
        assert!(k.problem.contains("a number"), "{}", k.problem);
    }

    #[test]
    fn top_level_array_rejected() {
        let e = parse(&p(), "[1,2]").unwrap_err();
        assert!(e.message.contains("an array"));
    }

    #[test]
    fn saving_applies_only_changed_keys_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".synapticllamas.json");
        let text = "{\n  \"refinement_rounds\": 9,\n  \"x\": 1,\n  \"model\": \"m\"\n}\n";
        std::fs::write(&path, text).unwrap();
        let loaded = load(&path);
        assert_eq!(loaded.invalid.len(), 1);
        let mut a = SettingsStore::new(path.clone(), None, &loaded.settings);
        let mut b = SettingsStore::new(path.clone(), None, &loaded.settings);
        let mut sa = loaded.settings.clone();
        let mut sb = loaded.settings.clone();
        sa.max_quality_retries = 4;
        a.save(&sa, &[]).unwrap();
        sb.collaborative_mode = true;
        b.save(&sb, &[]).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["refinement_rounds"], 9, "the unusable value stays");
        assert_eq!(v["max_quality_retries"], 4, "A's change survives B's save");
        assert_eq!(v["collaborative_mode"], true);
        assert_eq!(v["x"], 1);
        // Setting the key (even to the default) replaces the unusable value.
        sb.refinement_rounds = 1;
        b.save(&sb, &["refinement_rounds"]).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["refinement_rounds"], 1);
        assert_eq!(v["max_quality_retries"], 4);
    }
}
