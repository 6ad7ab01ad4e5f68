//! `~/.synapticllamas.json`: every key of the original with its default, plus the
//! keys this port adds (the table in `table.rs`); keys nobody here knows are
//! kept on every rewrite. Loading checks each known key on its own, so one
//! unusable value costs only its key; `store.rs` saves only what changed.

mod store;
mod table;

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::choices::{Longform, Mode, Route, Strategy};
use super::read::FileKind;
use super::{json_error, read_text, FileError};
use crate::names::{ModelName, NAME_MAX};
pub use store::SettingsStore;
pub use table::*;

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

/// Whether `m` is a model name (the one validator the commands use too).
fn is_model_name(m: &str) -> bool {
    m.parse::<ModelName>().is_ok()
}

/// What a model name is, in the user's words.
fn model_name_rule() -> String {
    format!(
        "a model name (letters, digits and - _ . : /, at most {} characters)",
        NAME_MAX
    )
}

/// The legacy key the original migrated to `model_sharding_enabled`.
const LEGACY_SHARDING_KEY: &str = "distributed_inference_enabled";

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
    let mut invalid = Vec::new();
    let mut usable = Map::new();
    for (name, val) in map {
        if let Some(key) = Key::from_name(&name) {
            if let Err(problem) = check_key(key, &val) {
                invalid.push(InvalidKey {
                    line: line_of_key(text, &name),
                    key: name,
                    problem: problem.to_string(),
                });
                continue;
            }
        }
        usable.insert(name, val);
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
fn check_key(key: Key, val: &Value) -> Result<(), BadValue> {
    if key.accepts(val) {
        return Ok(());
    }
    let shown = if key.kind() == Kind::Secret {
        format!("{} (value not shown)", kind_of(val))
    } else {
        shown(val)
    };
    Err(BadValue {
        shown,
        rule: key.rule(),
    })
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

/// The default value of a key, as it reads in the file ("unset" for a key
/// written only once set).
pub(crate) fn default_shown(key: &str) -> String {
    match Key::from_name(key) {
        Some(k) if k.kind() != Kind::OnceSet => shown(&k.default_value()),
        _ => "unset".into(),
    }
}

/// Every key this program reads (the legacy one included).
pub fn known_keys() -> Vec<String> {
    let mut keys: Vec<String> = Key::ALL.iter().map(|k| k.name().to_string()).collect();
    keys.push(LEGACY_SHARDING_KEY.to_string());
    keys
}

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
    match read_text(path, FileKind::Settings) {
        Ok(None) => {}
        Ok(Some(super::Text { text, bom })) => {
            out.existed = true;
            if bom {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

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

    /// The file's bytes as the settings struct wrote them before the table
    /// (and as the Python original writes its keys): defaults, then every key set.
    #[test]
    fn the_file_keeps_its_shape() {
        let default = r#"{
  "mode": null,
  "collaborative_mode": false,
  "refinement_rounds": 1,
  "agent_timeout": 300,
  "ast_voting_enabled": false,
  "quality_threshold": 0.7,
  "max_quality_retries": 2,
  "flockparser_enabled": false,
  "dashboard_verbose": true,
  "model": "llama3.2",
  "synthesis_model": null,
  "strategy": null,
  "task_distribution_enabled": true,
  "model_sharding_enabled": false,
  "rpc_backends": [],
  "redis_logging_enabled": false,
  "redis_host": "localhost",
  "redis_port": 6379,
  "redis_db": 0,
  "redis_password": null
}
"#;
        assert_eq!(to_json(&Settings::default()), default);
        let full = r#"{
  "mode": "distributed",
  "collaborative_mode": false,
  "refinement_rounds": 1,
  "agent_timeout": 300,
  "ast_voting_enabled": false,
  "quality_threshold": 0.7,
  "max_quality_retries": 2,
  "flockparser_enabled": false,
  "dashboard_verbose": true,
  "model": "llama3.2",
  "synthesis_model": "syn",
  "strategy": "gpu_routing",
  "task_distribution_enabled": true,
  "model_sharding_enabled": false,
  "rpc_backends": [
    {
      "host": "h",
      "port": 1
    }
  ],
  "coordinator_url": "http://c:1",
  "redis_logging_enabled": false,
  "redis_host": "localhost",
  "redis_port": 6379,
  "redis_db": 0,
  "redis_password": "pw",
  "discovery_connect_timeout_ms": 1,
  "discovery_verify_timeout_ms": 2,
  "host_capacity": 3,
  "num_predict": 4,
  "coordinator_args": [
    "-x"
  ],
  "coordinator_start_timeout_secs": 5,
  "monitor_interval_secs": 6,
  "request_idle_timeout_ms": 7,
  "rag_path": "/r",
  "rag_model": "rm",
  "longform": "never",
  "zz": 1
}
"#;
        let s = Settings {
            mode: Some(Mode::Distributed),
            synthesis_model: Some("syn".into()),
            strategy: Some(Strategy::Gpu),
            rpc_backends: vec![RpcBackendEntry {
                host: "h".into(),
                port: 1,
                extra: Map::new(),
            }],
            coordinator_url: Some("http://c:1".into()),
            redis_password: Some("pw".into()),
            discovery_connect_timeout_ms: Some(1),
            discovery_verify_timeout_ms: Some(2),
            host_capacity: Some(3),
            num_predict: Some(4),
            coordinator_args: Some(vec!["-x".into()]),
            coordinator_start_timeout_secs: Some(5),
            monitor_interval_secs: Some(6),
            request_idle_timeout_ms: Some(7),
            rag_path: Some("/r".into()),
            rag_model: Some("rm".into()),
            longform: Some(Longform::Never),
            extra: [("zz".to_string(), Value::from(1))].into_iter().collect(),
            ..Settings::default()
        };
        assert_eq!(to_json(&s), full);
        assert_eq!(ok(full).settings, s);
    }

    #[test]
    fn warnings_name_the_rule_and_the_default() {
        let r = parse(
            &p(),
            "{\"rag_model\": 5, \"host_capacity\": -1, \"redis_port\": 70000}",
        )
        .unwrap();
        let problems: Vec<&str> = r.invalid.iter().map(|k| k.problem.as_str()).collect();
        assert_eq!(
            problems,
            [
                "5 is not a model name string",
                "-1 is not a whole number from 0 to 4294967295",
                "70000 is not a port number from 0 to 65535"
            ]
        );
        assert_eq!(default_shown("host_capacity"), "unset");
        assert_eq!(default_shown("redis_port"), "6379");
        assert_eq!(default_shown("redis_password"), "null");
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
        assert_eq!(s.strategy, Some(Strategy::Multi));
        assert_eq!(s.longform, Some(Longform::Never));
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
        store.save(&s, &[Key::RefinementRounds]).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["mode"], "dask");
        assert_eq!(v["strategy"], "fastest");
        assert_eq!(v["longform"], "sometimes");
        // Setting the key replaces the unknown word.
        s.mode = Some(Mode::Standard);
        store.save(&s, &[Key::Mode]).unwrap();
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
        b.save(&sb, &[Key::RefinementRounds]).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["refinement_rounds"], 1);
        assert_eq!(v["max_quality_retries"], 4);
    }
}
