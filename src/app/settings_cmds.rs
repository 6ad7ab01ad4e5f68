//! Commands that change a setting and save the settings file.

use super::{App, Sink};
use crate::command::{Command, Mode, Strategy};

fn on_off(b: bool) -> &'static str {
    if b {
        "ENABLED"
    } else {
        "DISABLED"
    }
}

impl App {
    /// Apply one setting command, print what changed, save.
    pub(super) fn setting(&mut self, cmd: Command, sink: &mut dyn Sink) -> bool {
        let s = &mut self.settings;
        match cmd {
            Command::Collab(on) => {
                s.collaborative_mode = on;
                sink.out(&format!("✅ Collaborative mode {}", on_off(on)));
                sink.out(if on {
                    "   Agents will work sequentially with feedback loops"
                } else {
                    "   Agents will work in parallel independently"
                });
            }
            Command::Refine(n) => {
                s.refinement_rounds = n;
                sink.out(&format!("✅ Refinement rounds set to {n}"));
            }
            Command::Synthesis(None) => {
                s.synthesis_model = None;
                sink.out("✅ Synthesis model disabled (will use same model for all phases)");
            }
            Command::Synthesis(Some(m)) => {
                sink.out(&format!("✅ Synthesis model set to: {m}"));
                sink.out(&format!(
                    "   Phases 1-3: {}",
                    self.overrides.model.as_deref().unwrap_or(&s.model)
                ));
                sink.out(&format!("   Phase 4: {m}"));
                s.synthesis_model = Some(m);
            }
            Command::Timeout(secs) => {
                s.agent_timeout = secs;
                sink.out(&format!("✅ Inference timeout set to {secs}s"));
            }
            Command::Ast(on) => {
                s.ast_voting_enabled = on;
                sink.out(&format!("✅ AST Quality Voting {}", on_off(on)));
                if on {
                    sink.out("   Output will be evaluated by voting agents (collaborative mode)");
                }
            }
            Command::Quality(x) => {
                s.quality_threshold = x;
                sink.out(&format!("✅ Quality threshold set to {x:.2}"));
            }
            Command::QRetries(n) => {
                s.max_quality_retries = n;
                sink.out(&format!("✅ Max quality retries set to {n}"));
            }
            Command::Strategy(st) => {
                s.strategy = st.setting().map(String::from);
                sink.out(&format!("✅ Strategy: {}", strategy_label(st)));
            }
            Command::Model(m) => {
                sink.out(&format!("✅ Model set to: {m}"));
                if self.overrides.model.take().is_some() {
                    sink.out("   (replaces the --model given on the command line)");
                }
                s.model = m;
            }
            Command::Redis(on) => {
                s.redis_logging_enabled = on;
                sink.out(&format!("✅ Redis log publishing {} (saved)", on_off(on)));
                sink.err("ℹ️  This port does not publish logs to Redis; the setting is kept for the Python tool.");
            }
            Command::Verbose(on) => {
                s.dashboard_verbose = on;
                sink.out(&format!("✅ Verbose dashboard logging {}", on_off(on)));
            }
            other => unreachable!("not a setting command: {other:?}"),
        }
        self.save_settings(sink)
    }

    pub(super) async fn set_mode(&mut self, mode: Mode, sink: &mut dyn Sink) -> bool {
        self.overrides.mode = None;
        match mode {
            Mode::Standard => {
                self.settings.mode = Some("standard".into());
                sink.out("✅ Switched to Standard Mode");
                self.save_settings(sink)
            }
            Mode::Distributed => {
                self.settings.mode = Some("distributed".into());
                sink.out("✅ Switched to Distributed Mode");
                let saved = self.save_settings(sink);
                let scanned = self.discover_for_mode(sink).await;
                saved && scanned
            }
        }
    }
}

pub fn strategy_label(s: Strategy) -> &'static str {
    match s {
        Strategy::Auto => "Auto (host-aware work queue)",
        Strategy::Single => "Single Node (sequential)",
        Strategy::Parallel => {
            "Parallel Same Node (work queue; one request per host unless host_capacity is raised)"
        }
        Strategy::Multi => "Parallel Multi-Node (work queue across physical hosts)",
        Strategy::Gpu => "GPU Routing (prefer nodes with the model loaded in VRAM)",
    }
}
