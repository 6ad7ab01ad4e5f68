//! How a query runs, decided in one place for the shell and the gateway: the
//! settings in force ([`Effective`]) and what one request asks for beyond them
//! (`/api/orchestrate`'s fields; nothing in the shell).

use std::time::Duration;

use super::{collab, Plan};
use crate::config::choices::{Route, Strategy};
use crate::config::effective::Effective;
use crate::ollama::Timeouts;
use crate::scheduler::Policy;

/// What one request asks for beyond the settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Asked {
    pub model: Option<String>,
    pub collaborative: Option<bool>,
    pub refinement_rounds: Option<u32>,
    pub ast_voting: Option<bool>,
    pub strategy: Option<Strategy>,
}

/// Everything the settings and the request decide about one query (the
/// nodes, agents and retrieval are the caller's).
pub(crate) struct QueryPlan {
    /// Retrieval is left for the caller to add (`plan.rag`).
    pub plan: Plan,
    pub policy: Policy,
    pub route: Route,
    pub model: String,
    pub synthesis_model: Option<String>,
    pub num_predict: u64,
    pub timeouts: Timeouts,
}

impl QueryPlan {
    pub(crate) fn new(eff: &Effective, asked: Asked) -> QueryPlan {
        let strategy = asked.strategy.unwrap_or(eff.strategy);
        QueryPlan {
            plan: Plan {
                distributed: eff.mode == crate::config::choices::Mode::Distributed,
                collaborative: asked.collaborative.unwrap_or(eff.collaborative),
                collab: collab::Settings {
                    refinement_rounds: asked.refinement_rounds.unwrap_or(eff.refinement_rounds),
                    ast_voting: asked.ast_voting.unwrap_or(eff.ast_voting),
                    quality_threshold: eff.quality_threshold,
                    max_quality_retries: eff.max_quality_retries,
                },
                mode_label: eff.mode.word().to_string(),
                strategy_label: strategy.word().to_string(),
                longform: eff.longform,
                rag: None,
            },
            policy: policy(strategy, eff.route),
            route: eff.route,
            model: asked.model.unwrap_or_else(|| eff.model.clone()),
            synthesis_model: eff.synthesis_model.clone(),
            num_predict: eff.num_predict,
            timeouts: timeouts(eff),
        }
    }
}

/// How a query's nodes are used under `strategy` on the routing path `route`.
pub fn policy(strategy: Strategy, route: Route) -> Policy {
    match strategy {
        Strategy::Single => Policy::Single,
        Strategy::Gpu => Policy::Gpu,
        _ if !route.task_distribution() => Policy::Single,
        _ => Policy::Pool,
    }
}

/// Connect, silence and total limits of one agent request.
pub fn timeouts(eff: &Effective) -> Timeouts {
    let total = eff.agent_timeout;
    Timeouts::new(Duration::from_secs(3), eff.request_idle.min(total), total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::choices::Mode;
    use crate::config::effective::Flags;
    use crate::config::env::Env;
    use crate::config::settings::Settings;

    fn eff(s: Settings) -> Effective {
        Effective::resolve(&s, &Flags::default(), &Env::default())
    }

    #[test]
    fn the_shells_plan_is_the_settings() {
        let e = eff(Settings {
            mode: Some(Mode::Distributed),
            collaborative_mode: true,
            refinement_rounds: 3,
            agent_timeout: 60,
            strategy: Some(Strategy::Gpu),
            ..Settings::default()
        });
        let q = QueryPlan::new(&e, Asked::default());
        assert!(q.plan.distributed && q.plan.collaborative);
        assert_eq!(q.plan.collab.refinement_rounds, 3);
        assert_eq!(
            (q.plan.mode_label.as_str(), q.plan.strategy_label.as_str()),
            ("distributed", "gpu")
        );
        assert_eq!(q.policy, Policy::Gpu);
        assert_eq!(q.model, "llama3.2");
        assert_eq!(q.num_predict, 4096);
        assert_eq!(q.timeouts.total, Duration::from_secs(60));
        assert_eq!(
            q.timeouts.idle,
            Duration::from_secs(60),
            "silence within the total"
        );
    }

    #[test]
    fn a_request_overrides_only_what_it_names() {
        let e = eff(Settings::default());
        let asked = Asked {
            model: Some("m2".into()),
            collaborative: Some(true),
            refinement_rounds: Some(0),
            ast_voting: Some(true),
            strategy: Some(Strategy::Single),
        };
        let q = QueryPlan::new(&e, asked);
        assert_eq!(q.model, "m2");
        assert!(q.plan.collaborative && q.plan.collab.ast_voting);
        assert_eq!(q.plan.collab.refinement_rounds, 0);
        assert_eq!(q.plan.collab.quality_threshold, 0.7);
        assert_eq!(q.policy, Policy::Single);
        assert_eq!(q.plan.strategy_label, "single");
        assert_eq!(q.timeouts.idle, Duration::from_secs(120));
    }

    #[test]
    fn policies() {
        assert_eq!(policy(Strategy::Auto, Route::Task), Policy::Pool);
        assert_eq!(policy(Strategy::Multi, Route::Model), Policy::Single);
        assert_eq!(policy(Strategy::Gpu, Route::Off), Policy::Gpu);
        assert_eq!(policy(Strategy::Single, Route::Both), Policy::Single);
    }
}
