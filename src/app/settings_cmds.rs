//! Commands that change a setting and save the settings file.

use super::{App, Changes, Handled, Outcome, Sink};
use crate::command::SettingCmd;
use crate::config::choices::{Longform, Mode, Strategy};
use crate::config::settings::Key;

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
    pub(super) async fn setting(&mut self, cmd: SettingCmd, out: &mut dyn Sink) -> Handled {
        let key = cmd.key();
        let mut ch = Changes::default();
        match cmd {
            SettingCmd::Collab(on) => {
                self.cfg.settings_mut().collaborative_mode = on;
                ch.done(format!("Collaborative mode {}", on_off(on)));
                ch.detail(if on {
                    "   Agents will work sequentially with feedback loops"
                } else {
                    "   Agents will work in parallel independently"
                });
            }
            SettingCmd::Refine(n) => {
                self.cfg.settings_mut().refinement_rounds = n;
                ch.done(format!("Refinement rounds set to {n}"));
            }
            SettingCmd::Synthesis(None) => {
                self.cfg.settings_mut().synthesis_model = None;
                ch.done("Synthesis model disabled (will use same model for all phases)");
            }
            SettingCmd::Synthesis(Some(m)) => {
                ch.done(format!("Synthesis model set to: {m}"));
                ch.detail(format!("   Phases 1-3: {}", self.model()));
                ch.detail(format!("   Phase 4: {m}"));
                self.cfg.settings_mut().synthesis_model = Some(m.into());
            }
            SettingCmd::Timeout(secs) => {
                self.cfg.settings_mut().agent_timeout = secs;
                ch.done(format!("Inference timeout set to {secs}s"));
            }
            SettingCmd::Ast(on) => {
                self.cfg.settings_mut().ast_voting_enabled = on;
                ch.done(format!("AST Quality Voting {}", on_off(on)));
                if on {
                    ch.detail("   Output will be evaluated by voting agents (collaborative mode)");
                }
            }
            SettingCmd::Quality(x) => {
                self.cfg.settings_mut().quality_threshold = x;
                ch.done(format!("Quality threshold set to {x:.2}"));
            }
            SettingCmd::QRetries(n) => {
                self.cfg.settings_mut().max_quality_retries = n;
                ch.done(format!("Max quality retries set to {n}"));
            }
            SettingCmd::Longform(l) => {
                self.cfg.settings_mut().longform = Some(l);
                ch.done(format!("Long-form answers: {}", longform_label(l)));
                ch.detail("   `!long QUESTION` / `!short QUESTION` decide for one query");
            }
            SettingCmd::Strategy(st) => {
                self.cfg.settings_mut().strategy = st.stored();
                ch.done(format!("Strategy: {}", strategy_label(st)));
            }
            SettingCmd::Model(m) => {
                ch.done(format!("Model set to: {m}"));
                if self.cfg.flags().model.is_some() {
                    self.cfg.set_flags(|f| f.model = None);
                    ch.detail("   (replaces the --model given on the command line)");
                }
                self.cfg.settings_mut().model = m.into();
            }
            SettingCmd::Verbose(on) => {
                self.cfg.settings_mut().dashboard_verbose = on;
                ch.done(format!("Verbose dashboard logging {}", on_off(on)));
            }
        }
        let saved = self.save_settings(&[key], out).await;
        ch.report(out, saved);
        Ok(Outcome::from(saved))
    }

    pub(super) async fn set_mode(&mut self, mode: Mode, sink: &mut dyn Sink) -> Handled {
        self.cfg.set_flags(|f| f.mode = None);
        let mut ch = Changes::default();
        self.cfg.settings_mut().mode = Some(mode);
        match mode {
            Mode::Standard => {
                ch.done("Switched to Standard Mode");
                let saved = self.save_settings(&[Key::Mode], sink).await;
                ch.report(sink, saved);
                Ok(Outcome::from(saved))
            }
            Mode::Distributed => {
                ch.done("Switched to Distributed Mode");
                let saved = self.save_settings(&[Key::Mode], sink).await;
                ch.report(sink, saved);
                let scanned = self.discover_for_mode(sink).await?;
                Ok(Outcome::from(saved && scanned.ok))
            }
        }
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
