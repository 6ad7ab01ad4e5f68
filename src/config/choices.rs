//! The settings that are one of a few words: the mode, the work-spreading
//! strategy, the routing path and when answers are written in parts. Each keeps the settings file's spelling (the
//! Python original's) as its serde name, so the file and the `-i` JSON read the
//! same whatever the variants are called here. A word the program does not know
//! fails to deserialize: the settings loader then warns, uses the default and
//! leaves the word in the file (see `settings::parse`).

use serde::{Deserialize, Serialize};

/// `mode`: one node at a time, or the node pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    #[serde(rename = "standard")]
    Standard,
    #[serde(rename = "distributed")]
    Distributed,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Standard, Mode::Distributed];

    /// The word the settings file, the command and the `-i` JSON use (the serde name).
    pub fn word(self) -> &'static str {
        match self {
            Mode::Standard => "standard",
            Mode::Distributed => "distributed",
        }
    }
}

/// `strategy`: how work is spread over the nodes. The file stores `null` for
/// auto and the original's names for the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// Never stored: auto is `null` in the file ([`Strategy::stored`]).
    #[serde(rename = "auto", skip_deserializing)]
    Auto,
    #[serde(rename = "single_node")]
    Single,
    #[serde(rename = "parallel_same")]
    Parallel,
    #[serde(rename = "parallel_multi")]
    Multi,
    #[serde(rename = "gpu_routing")]
    Gpu,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::Auto,
        Strategy::Single,
        Strategy::Parallel,
        Strategy::Multi,
        Strategy::Gpu,
    ];

    /// The value the settings file holds for this strategy (auto is `null`).
    pub fn stored(self) -> Option<Strategy> {
        (self != Strategy::Auto).then_some(self)
    }

    /// The strategy a stored value means (`null` is auto).
    pub(crate) fn from_stored(s: Option<Strategy>) -> Strategy {
        s.unwrap_or(Strategy::Auto)
    }

    /// The file's spelling (the serde name); `None` for auto.
    pub fn setting(self) -> Option<&'static str> {
        match self {
            Strategy::Auto => None,
            Strategy::Single => Some("single_node"),
            Strategy::Parallel => Some("parallel_same"),
            Strategy::Multi => Some("parallel_multi"),
            Strategy::Gpu => Some("gpu_routing"),
        }
    }

    /// The word typed after `strategy` (and shown in metrics).
    pub fn word(self) -> &'static str {
        match self {
            Strategy::Auto => "auto",
            Strategy::Single => "single",
            Strategy::Parallel => "parallel",
            Strategy::Multi => "multi",
            Strategy::Gpu => "gpu",
        }
    }
}

/// `distributed task|model|both|off`: which paths a query may take. The file
/// keeps it as the original's two flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Task,
    Model,
    Both,
    Off,
}

impl Route {
    /// The route the two saved flags describe (`task_distribution_enabled`,
    /// `model_sharding_enabled`, the original's keys).
    pub(crate) fn from_flags(task_distribution: bool, model_sharding: bool) -> Route {
        match (task_distribution, model_sharding) {
            (true, false) => Route::Task,
            (false, true) => Route::Model,
            (true, true) => Route::Both,
            (false, false) => Route::Off,
        }
    }

    /// Whether queries may go to the Ollama pool.
    pub(crate) fn task_distribution(self) -> bool {
        matches!(self, Route::Task | Route::Both)
    }

    /// Whether large models may go to the sharded coordinator.
    pub(crate) fn model_sharding(self) -> bool {
        matches!(self, Route::Model | Route::Both)
    }
}

/// The `longform` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Longform {
    /// Split only when the question asks for depth, breadth, a long form or a length.
    #[default]
    Auto,
    /// The original's rule: every question that scores for a type is split.
    Always,
    /// Never split (a `!long` query still is).
    Never,
}

impl Longform {
    pub const WORDS: &'static [&'static str] = &["auto", "always", "never"];

    pub fn word(self) -> &'static str {
        match self {
            Longform::Auto => "auto",
            Longform::Always => "always",
            Longform::Never => "never",
        }
    }

    pub fn parse(s: &str) -> Option<Longform> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Some(Longform::Auto),
            "always" => Some(Longform::Always),
            "never" => Some(Longform::Never),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn words_are_the_serde_names() {
        for m in Mode::ALL {
            assert_eq!(serde_json::to_value(m).unwrap(), json!(m.word()));
        }
        for s in Strategy::ALL {
            let v = serde_json::to_value(s.stored()).unwrap();
            assert_eq!(v, s.setting().map_or(Value::Null, |w| json!(w)));
        }
    }

    #[test]
    fn the_files_spelling_round_trips() {
        for w in [
            "single_node",
            "parallel_same",
            "parallel_multi",
            "gpu_routing",
        ] {
            let s: Strategy = serde_json::from_value(json!(w)).unwrap();
            assert_eq!(serde_json::to_value(s).unwrap(), json!(w));
        }
        for w in ["standard", "distributed"] {
            let m: Mode = serde_json::from_value(json!(w)).unwrap();
            assert_eq!(serde_json::to_value(m).unwrap(), json!(w));
        }
        let none: Option<Strategy> = serde_json::from_value(Value::Null).unwrap();
        assert_eq!(Strategy::from_stored(none), Strategy::Auto);
    }

    #[test]
    fn unknown_words_do_not_deserialize() {
        // The settings loader turns this into a warning and keeps the word in the file.
        for bad in ["auto", "Standard", "fastest", ""] {
            assert!(
                serde_json::from_value::<Strategy>(json!(bad)).is_err(),
                "{bad}"
            );
            assert!(serde_json::from_value::<Mode>(json!(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn routes_and_their_flags() {
        for r in [Route::Task, Route::Model, Route::Both, Route::Off] {
            assert_eq!(
                Route::from_flags(r.task_distribution(), r.model_sharding()),
                r
            );
        }
    }
}
