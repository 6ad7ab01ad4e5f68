//! Which path a request takes: the Ollama pool or the llama.cpp coordinator.

use regex::Regex;
use std::sync::OnceLock;

use crate::config::choices::Route;

/// Models whose name implies more than this many billion parameters go to the
/// coordinator in `distributed both`.
pub(crate) const LARGE_MODEL_BILLIONS: u64 = 8;

/// The parameter count in billions a model name implies (first `(\d+)b`).
pub(crate) fn billions(model: &str) -> Option<u64> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"(\d+)b").expect("a valid regex literal"));
    re.captures(&model.to_ascii_lowercase())
        .and_then(|c| c[1].parse().ok())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Pool,
    Coordinator,
}

/// The routing rule for a model, with the reason shown to the user.
pub(crate) fn decide(route: Route, model: &str) -> (Target, String) {
    match route {
        Route::Task | Route::Off => (Target::Pool, "model sharding is off".into()),
        Route::Model => (
            Target::Coordinator,
            "distributed model: every request goes to the coordinator".into(),
        ),
        Route::Both => match billions(model) {
            Some(b) if b > LARGE_MODEL_BILLIONS => (
                Target::Coordinator,
                format!("{model} implies {b}B parameters (> {LARGE_MODEL_BILLIONS}B): sharded"),
            ),
            Some(b) => (
                Target::Pool,
                format!(
                    "{model} implies {b}B parameters (<= {LARGE_MODEL_BILLIONS}B): Ollama pool"
                ),
            ),
            None => (Target::Pool, format!("{model} names no size: Ollama pool")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_rule() {
        assert_eq!(billions("codellama:13b"), Some(13));
        assert_eq!(billions("llama3.2"), None);
        assert_eq!(
            billions("qwen2.5:0.5b"),
            Some(5),
            "first (\\d+)b, as the original"
        );
        assert_eq!(decide(Route::Both, "llama3.1:70b").0, Target::Coordinator);
        assert_eq!(decide(Route::Both, "llama3.1:8b").0, Target::Pool);
        assert_eq!(decide(Route::Both, "codellama:13b").0, Target::Coordinator);
        assert_eq!(decide(Route::Both, "llama3.2").0, Target::Pool);
        assert_eq!(decide(Route::Model, "llama3.2").0, Target::Coordinator);
        assert_eq!(decide(Route::Task, "codellama:13b").0, Target::Pool);
    }
}
