//! Commands that change a setting and save the settings file.

use super::{App, Changes, Handled, Outcome, Sink};
use crate::command::Command;
use crate::config::choices::{Longform, Mode, Strategy};

fn on_off(b: bool) -> &'static str {
    if b {
        "ENABLED"
    } else {
        "DISABLED"
    }
}

impl App {
    /// Apply one setting command, save, then print what changed (marked as
    /// not saved when the file could not be written).
    pub(super) async fn setting(&mut self, cmd: Command, out: &mut dyn Sink) -> Handled {
        let key = setting_key(&cmd);
        let mut ch = Changes::default();
        let s = &mut self.cfg.settings;
        match cmd {
            Command::Collab(on) => {
                s.collaborative_mode = on;
                ch.done(format!("Collaborative mode {}", on_off(on)));
                ch.detail(if on {
                    "   Agents will work sequentially with feedback loops"
                } else {
                    "   Agents will work in parallel independently"
                });
            }
            Command::Refine(n) => {
                s.refinement_rounds = n;
                ch.done(format!("Refinement rounds set to {n}"));
            }
            Command::Synthesis(None) => {
                s.synthesis_model = None;
                ch.done("Synthesis model disabled (will use same model for all phases)");
            }
            Command::Synthesis(Some(m)) => {
                ch.done(format!("Synthesis model set to: {m}"));
                ch.detail(format!(
                    "   Phases 1-3: {}",
                    self.cfg.overrides.model.as_deref().unwrap_or(&s.model)
                ));
                ch.detail(format!("   Phase 4: {m}"));
                s.synthesis_model = Some(m.into());
            }
            Command::Timeout(secs) => {
                s.agent_timeout = secs;
                ch.done(format!("Inference timeout set to {secs}s"));
            }
            Command::Ast(on) => {
                s.ast_voting_enabled = on;
                ch.done(format!("AST Quality Voting {}", on_off(on)));
                if on {
                    ch.detail("   Output will be evaluated by voting agents (collaborative mode)");
                }
            }
            Command::Quality(x) => {
                s.quality_threshold = x;
                ch.done(format!("Quality threshold set to {x:.2}"));
            }
            Command::QRetries(n) => {
                s.max_quality_retries = n;
                ch.done(format!("Max quality retries set to {n}"));
            }
            Command::Longform(l) => {
                s.longform = Some(l);
                ch.done(format!("Long-form answers: {}", longform_label(l)));
                ch.detail("   `!long QUESTION` / `!short QUESTION` decide for one query");
            }
            Command::Strategy(st) => {
                s.strategy = st.stored();
                ch.done(format!("Strategy: {}", strategy_label(st)));
            }
            Command::Model(m) => {
                ch.done(format!("Model set to: {m}"));
                if self.cfg.overrides.model.take().is_some() {
                    ch.detail("   (replaces the --model given on the command line)");
                }
                s.model = m.into();
            }
            Command::Verbose(on) => {
                s.dashboard_verbose = on;
                ch.done(format!("Verbose dashboard logging {}", on_off(on)));
            }
            other => unreachable!("not a setting command: {other:?}"),
        }
        let saved = self.save_settings(&[key], out).await;
        ch.report(out, saved);
        Ok(Outcome::from(saved))
    }

    pub(super) async fn set_mode(&mut self, mode: Mode, sink: &mut dyn Sink) -> Handled {
        self.cfg.overrides.mode = None;
        let mut ch = Changes::default();
        self.cfg.settings.mode = Some(mode);
        match mode {
            Mode::Standard => {
                ch.done("Switched to Standard Mode");
                let saved = self.save_settings(&["mode"], sink).await;
                ch.report(sink, saved);
                Ok(Outcome::from(saved))
            }
            Mode::Distributed => {
                ch.done("Switched to Distributed Mode");
                let saved = self.save_settings(&["mode"], sink).await;
                ch.report(sink, saved);
                let scanned = self.discover_for_mode(sink).await?;
                Ok(Outcome::from(saved && scanned.ok))
            }
        }
    }
}

/// The settings-file key a setting command sets.
fn setting_key(cmd: &Command) -> &'static str {
    match cmd {
        Command::Collab(_) => "collaborative_mode",
        Command::Refine(_) => "refinement_rounds",
        Command::Synthesis(_) => "synthesis_model",
        Command::Timeout(_) => "agent_timeout",
        Command::Ast(_) => "ast_voting_enabled",
        Command::Quality(_) => "quality_threshold",
        Command::QRetries(_) => "max_quality_retries",
        Command::Longform(_) => "longform",
        Command::Strategy(_) => "strategy",
        Command::Model(_) => "model",
        Command::Redis(_) => "redis_logging_enabled",
        Command::Verbose(_) => "dashboard_verbose",
        _ => "",
    }
}

pub(crate) fn strategy_label(s: Strategy) -> &'static str {
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

pub(crate) fn longform_label(l: Longform) -> &'static str {
    match l {
        Longform::Auto => {
            "auto (in parts when the question asks for depth, breadth, a long form or a length; distributed mode)"
        }
        Longform::Always => {
            "always (the original's rule: every question that scores for a content type; distributed mode)"
        }
        Longform::Never => "never (one part unless a query starts with !long)",
    }
}
