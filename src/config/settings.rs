//! `~/.synapticllamas.json`: every key of the original with its default, plus the
//! keys this port adds; keys nobody here knows are kept on every rewrite.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{json_error, read_text, FileError};

/// An RPC backend entry (`{"host", "port"}`), extra fields kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcBackendEntry {
    pub host: String,
    #[serde(default = "default_rpc_port")]
    pub port: u16,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

pub fn default_rpc_port() -> u16 {
    50052
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub mode: Option<String>,
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
    pub strategy: Option<String>,
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
            extra: Map::new(),
        }
    }
}

/// The legacy key the original migrated to `model_sharding_enabled`.
const LEGACY_SHARDING_KEY: &str = "distributed_inference_enabled";

/// What loading the settings file produced.
#[derive(Debug)]
pub struct LoadedSettings {
    pub settings: Settings,
    /// Set when the file exists but could not be used: it must not be overwritten.
    pub error: Option<FileError>,
    /// Notes worth one line each (a byte-order mark, a migrated key).
    pub notes: Vec<String>,
    pub existed: bool,
}

pub fn parse(path: &Path, text: &str) -> Result<(Settings, Vec<String>), FileError> {
    let mut notes = Vec::new();
    let value: Value = serde_json::from_str(text).map_err(|e| json_error(path, text, &e))?;
    let Value::Object(mut map) = value else {
        return Err(FileError {
            path: path.to_path_buf(),
            message: format!(
                "the top level is {} (expected a JSON object of settings)",
                kind_of(&value)
            ),
        });
    };
    if let Some(v) = map.shift_remove(LEGACY_SHARDING_KEY) {
        if !map.contains_key("model_sharding_enabled") {
            map.insert("model_sharding_enabled".into(), v);
        }
        notes.push(format!(
            "{}: migrated legacy key `{LEGACY_SHARDING_KEY}` to `model_sharding_enabled`",
            path.display()
        ));
    }
    // Check each known key's type separately so the message names the key.
    let defaults = serde_json::to_value(Settings::default()).expect("defaults serialize");
    for (key, val) in &map {
        if defaults.get(key).is_none() && !OPTIONAL_KEYS.contains(&key.as_str()) {
            continue;
        }
        let mut probe = Map::new();
        probe.insert(key.clone(), val.clone());
        if let Err(e) = serde_json::from_value::<Settings>(Value::Object(probe)) {
            // serde quotes the offending value; a secret must not reach the screen.
            let msg = if SECRET_KEYS.contains(&key.as_str()) {
                format!(
                    "expected a string or null, got {} (value not shown)",
                    kind_of(val)
                )
            } else {
                e.to_string()
            };
            return Err(FileError {
                path: path.to_path_buf(),
                message: format!("key `{key}` at line {}: {msg}", line_of_key(text, key)),
            });
        }
    }
    let settings: Settings = serde_json::from_value(Value::Object(map)).map_err(|e| FileError {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if settings.quality_threshold.is_nan() || !(0.0..=1.0).contains(&settings.quality_threshold) {
        return Err(FileError {
            path: path.to_path_buf(),
            message: format!(
                "key `quality_threshold` at line {}: {} is outside 0.0-1.0",
                line_of_key(text, "quality_threshold"),
                settings.quality_threshold
            ),
        });
    }
    Ok((settings, notes))
}

/// Keys whose values are never printed.
const SECRET_KEYS: &[&str] = &["redis_password"];

/// Every key this program reads (the legacy one included).
pub fn known_keys() -> Vec<String> {
    let defaults = serde_json::to_value(Settings::default()).expect("defaults serialize");
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
];

fn line_of_key(text: &str, key: &str) -> usize {
    let needle = format!("\"{key}\"");
    text.find(&needle)
        .map(|i| text[..i].matches('\n').count() + 1)
        .unwrap_or(1)
}

pub fn kind_of(v: &Value) -> &'static str {
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
            match parse(path, &text) {
                Ok((s, notes)) => {
                    out.settings = s;
                    out.notes.extend(notes);
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
    let mut s = serde_json::to_string_pretty(settings).expect("settings serialize");
    s.push('\n');
    s
}

/// Where the settings live and whether they may be written.
#[derive(Debug, Clone)]
pub struct SettingsStore {
    pub path: PathBuf,
    /// Why the file must not be written (it did not parse), if so.
    pub blocked: Option<String>,
}

impl SettingsStore {
    pub fn save(&self, settings: &Settings) -> anyhow::Result<()> {
        if let Some(why) = &self.blocked {
            anyhow::bail!(
                "{}: not saved, the file on disk could not be read ({why}); fix or remove it",
                self.path.display()
            );
        }
        super::atomic::write_atomic(&self.path, to_json(settings).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> PathBuf {
        PathBuf::from("/x/.synapticllamas.json")
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
        let (s, _) = parse(&p(), text).unwrap();
        let back: Value = serde_json::from_str(&to_json(&s)).unwrap();
        assert_eq!(back["dashboard_enable_dask"], false);
        assert_eq!(back["zzz"]["a"][1], 2);
        assert_eq!(back["mode"], "standard");
    }

    #[test]
    fn legacy_key_migrates() {
        let (s, notes) = parse(&p(), r#"{"distributed_inference_enabled": true}"#).unwrap();
        assert!(s.model_sharding_enabled);
        assert!(!to_json(&s).contains("distributed_inference_enabled"));
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn wrong_type_names_the_key_and_line() {
        let e = parse(&p(), "{\n  \"refinement_rounds\": \"two\"\n}").unwrap_err();
        assert!(e.message.contains("refinement_rounds"), "{}", e.message);
        assert!(e.message.contains("line 2"), "{}", e.message);
    }

    #[test]
    fn rpc_backend_extra_fields_kept() {
        let text = r#"{"rpc_backends":[{"host":"10.77.0.5","port":50052,"has_gpu":true}]}"#;
        let (s, _) = parse(&p(), text).unwrap();
        assert_eq!(s.rpc_backends[0].extra["has_gpu"], true);
        assert!(to_json(&s).contains("has_gpu"));
    }

    #[test]
    fn rewrites_keep_the_order_of_unknown_keys() {
        let text = r#"{"distributed_inference_enabled": true, "a": 1, "b": 2, "c": 3}"#;
        let (s, _) = parse(&p(), text).unwrap();
        let once = to_json(&s);
        let (s2, _) = parse(&p(), &once).unwrap();
        assert_eq!(to_json(&s2), once);
        assert!(once.find("\"a\"").unwrap() < once.find("\"b\"").unwrap());
        assert!(once.find("\"b\"").unwrap() < once.find("\"c\"").unwrap());
    }

    #[test]
    fn unknown_numbers_survive_rewrites_exactly() {
        // Values another tool wrote with full precision must not drift one ulp per save.
        let text = r#"{"a": 5.713428168508627e161, "b": 0.30000000000000004, "c": 5e-324, "d": 18446744073709551615}"#;
        let (s, _) = parse(&p(), text).unwrap();
        let once = to_json(&s);
        let (s2, _) = parse(&p(), &once).unwrap();
        assert_eq!(s2, s);
        assert_eq!(s.extra["a"].as_f64(), Some(5.713428168508627e161));
        assert_eq!(s.extra["b"].as_f64(), Some(0.30000000000000004));
        assert_eq!(s.extra["d"].as_u64(), Some(u64::MAX));
    }

    #[test]
    fn a_password_of_the_wrong_type_is_not_echoed() {
        let e = parse(&p(), "{\n \"redis_password\": 987654321\n}").unwrap_err();
        assert!(!e.message.contains("987654321"), "{}", e.message);
        assert!(e.message.contains("redis_password") && e.message.contains("line 2"));
        assert!(e.message.contains("a number"), "{}", e.message);
    }

    #[test]
    fn top_level_array_rejected() {
        let e = parse(&p(), "[1,2]").unwrap_err();
        assert!(e.message.contains("an array"));
    }
}
