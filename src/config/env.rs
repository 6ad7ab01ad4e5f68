//! Every environment variable the program reads, read in this one module,
//! once per process ([`Env::process`]); everything else is handed the values.
//!
//! | variable | effect |
//! |---|---|
//! | `SYNAPTICLLAMAS_HOME` | directory holding the two files instead of `$HOME` |
//! | `HOME` | what a leading `~` in a typed path means |
//! | `OLLAMA_HOST` | the node used when the registry is empty, and probed first by discovery |
//! | `SYNAPTICLLAMAS_SUBNETS` | CIDRs discovery scans instead of the local /24 |
//! | `SOLLOL_AUTO_DISCOVER` | `false`/`0`/`no`/`off`: no scan at start-up in distributed mode |
//! | `NO_COLOR` | no colour (any non-empty value) |
//! | `SYNAPTICLLAMAS_AGENTS` | directory of agent JSON files |
//! | `SOLLOL_MODEL_PATH` | GGUF file for the sharding coordinator |
//! | `OLLAMA_MODELS` | Ollama's model store, looked in first for a GGUF file |
//! | `SOLLOL_COORDINATOR_HOST`, `SOLLOL_COORDINATOR_PORT` | where the coordinator is (beat `coordinator_url`) |
//! | `SYNAPTICLLAMAS_LLAMA_SERVER` | llama-server binary to start |
//! | `PATH` | where `llama-server` is looked for otherwise |
//! | `SYNAPTICLLAMAS_API_KEY` | API key(s), comma-separated, that `serve` requires |
//! | `SYNAPTICLLAMAS_REDIS_URL`, then `SOLLOL_REDIS_URL`, then `REDIS_URL` | Redis instead of the `redis_*` settings |
//!
//! An empty value counts as unset everywhere. The test suite's and the
//! benchmarks' own knobs (`SYNAPTICLLAMAS_BIN`, `_CACHE`, `_PYENV`, `_SEED`,
//! `_FAULT_SEED`, `_FUZZ_SECS`, `_FUZZ_SEED`, `_SCREENSHOT_DIR`,
//! `SL_TEST_LEASE_*`, `BENCH_ANSWERS_DUMP`) are read where they are used, in
//! `tests/` and `examples/`, never by the program.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The variables that name a Redis URL, strongest first.
pub const REDIS_URL_VARS: [&str; 3] = ["SYNAPTICLLAMAS_REDIS_URL", "SOLLOL_REDIS_URL", "REDIS_URL"];

/// The environment as the program uses it (empty values are `None`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Env {
    /// `SYNAPTICLLAMAS_HOME`.
    pub home: Option<PathBuf>,
    /// `HOME`.
    pub user_home: Option<PathBuf>,
    /// `OLLAMA_HOST`, as written.
    pub ollama_host: Option<String>,
    /// `SYNAPTICLLAMAS_SUBNETS`, as written.
    pub subnets: Option<String>,
    /// `SOLLOL_AUTO_DISCOVER` is false, 0, no or off.
    pub auto_discover_off: bool,
    /// `NO_COLOR` is set.
    pub no_color: bool,
    /// `SYNAPTICLLAMAS_AGENTS`.
    pub agents: Option<PathBuf>,
    /// `SOLLOL_MODEL_PATH`.
    pub model_path: Option<PathBuf>,
    /// `OLLAMA_MODELS`.
    pub ollama_models: Option<PathBuf>,
    /// `SOLLOL_COORDINATOR_HOST`.
    pub coordinator_host: Option<String>,
    /// `SOLLOL_COORDINATOR_PORT`, as written.
    pub coordinator_port: Option<String>,
    /// `SYNAPTICLLAMAS_LLAMA_SERVER`.
    pub llama_server: Option<PathBuf>,
    /// `PATH`.
    pub path: Option<OsString>,
    /// `SYNAPTICLLAMAS_API_KEY`, as written (comma-separated keys).
    pub api_key: Option<String>,
    /// The strongest of [`REDIS_URL_VARS`] that is set (and not blank): its
    /// name and its value.
    pub redis_url: Option<(&'static str, String)>,
}

impl Env {
    /// The process's environment, read on first use and kept.
    pub fn process() -> &'static Env {
        static ENV: OnceLock<Env> = OnceLock::new();
        ENV.get_or_init(|| Env::from_vars(|k| std::env::var_os(k)))
    }

    /// The environment `var` describes (tests give their own).
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Env {
        let os = |k: &str| var(k).filter(|v| !v.is_empty());
        // Text that is not UTF-8 counts as unset, as `std::env::var` has it.
        let text = |k: &str| os(k).and_then(|v| v.into_string().ok());
        Env {
            home: os("SYNAPTICLLAMAS_HOME").map(PathBuf::from),
            user_home: os("HOME").map(PathBuf::from),
            ollama_host: text("OLLAMA_HOST"),
            subnets: text("SYNAPTICLLAMAS_SUBNETS"),
            auto_discover_off: text("SOLLOL_AUTO_DISCOVER").is_some_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "false" | "0" | "no" | "off"
                )
            }),
            no_color: os("NO_COLOR").is_some(),
            agents: os("SYNAPTICLLAMAS_AGENTS").map(PathBuf::from),
            model_path: os("SOLLOL_MODEL_PATH").map(PathBuf::from),
            ollama_models: os("OLLAMA_MODELS").map(PathBuf::from),
            coordinator_host: text("SOLLOL_COORDINATOR_HOST"),
            coordinator_port: text("SOLLOL_COORDINATOR_PORT"),
            llama_server: os("SYNAPTICLLAMAS_LLAMA_SERVER").map(PathBuf::from),
            path: var("PATH"),
            api_key: text("SYNAPTICLLAMAS_API_KEY"),
            redis_url: REDIS_URL_VARS.into_iter().find_map(|name| {
                text(name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (name, v))
            }),
        }
    }

    /// The directory holding the two files: `$SYNAPTICLLAMAS_HOME`, else the home directory.
    pub fn home_dir(&self) -> PathBuf {
        self.home
            .clone()
            .or_else(dirs::home_dir)
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        Env::from_vars(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn redis_urls_strongest_first_and_blank_is_unset() {
        let e = env(&[
            ("REDIS_URL", "redis://c"),
            ("SOLLOL_REDIS_URL", "redis://b"),
        ]);
        assert_eq!(e.redis_url, Some(("SOLLOL_REDIS_URL", "redis://b".into())));
        let e = env(&[
            ("SYNAPTICLLAMAS_REDIS_URL", "  "),
            ("REDIS_URL", "redis://c"),
        ]);
        assert_eq!(e.redis_url, Some(("REDIS_URL", "redis://c".into())));
        assert_eq!(env(&[]).redis_url, None);
    }

    #[test]
    fn empty_values_are_unset() {
        let e = env(&[
            ("SYNAPTICLLAMAS_HOME", ""),
            ("NO_COLOR", ""),
            ("OLLAMA_HOST", ""),
        ]);
        assert_eq!(e, Env::default());
        let e = env(&[("SYNAPTICLLAMAS_HOME", "/h"), ("NO_COLOR", "1")]);
        assert_eq!(e.home_dir(), PathBuf::from("/h"));
        assert!(e.no_color);
    }

    #[test]
    fn auto_discover_off_words() {
        for w in ["false", "0", "no", "OFF", " off "] {
            assert!(env(&[("SOLLOL_AUTO_DISCOVER", w)]).auto_discover_off, "{w}");
        }
        for w in ["true", "1", "yes"] {
            assert!(
                !env(&[("SOLLOL_AUTO_DISCOVER", w)]).auto_discover_off,
                "{w}"
            );
        }
    }
}
