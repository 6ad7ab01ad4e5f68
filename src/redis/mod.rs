//! Redis: several orchestrators keep the host rule together, workers register
//! themselves, events go where dashboards listen.
//!
//! - [`target`]: which Redis (settings, or `SYNAPTICLLAMAS_REDIS_URL`, then
//!   `SOLLOL_REDIS_URL` / `REDIS_URL`);
//! - [`link`]: the connection, its state, one warning per outage, reconnection;
//! - [`leases`]: per-host semaphores shared by every instance (TTL, renewed);
//! - [`health`]: node cooling and recovery shared by every instance;
//! - [`registry`]: RPC backends registered under `sollol:rpc:node:<ip>:<port>`;
//! - [`events`]: the original's and SOLLOL's pub/sub events (the app's tap
//!   turns what the dashboard hears into them);
//! - [`register`]: the `rpc-register` worker command.
//!
//! Everything works with Redis off or away: leases are then granted locally,
//! health reads answer "unknown", events are dropped and counted.

pub mod events;
pub mod health;
pub mod instance;
pub mod leases;
pub mod link;
pub mod register;
pub mod registry;
pub mod target;

use std::sync::Arc;

use serde_json::{json, Map};

pub use events::Publisher;
pub use health::{NodeView, SharedHealth};
pub use leases::{RemoteLease, SharedLeases};
pub use link::{Link, LinkState};
pub use target::{Source, Target, TargetError};

/// Everything Redis gives one process; the parts share one link, so turning
/// it on or off (`redis on|off`) applies to all of them at once.
pub struct Redis {
    pub link: Arc<Link>,
    pub leases: SharedLeases,
    pub health: SharedHealth,
    pub events: Arc<Publisher>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("link", &self.link.state())
            .finish()
    }
}

impl Redis {
    /// Off until `link.enable`; `notify` gets the lines worth telling the user.
    pub fn new(notify: impl Fn(String) + Send + Sync + 'static) -> Redis {
        let link = Link::new(notify);
        let events = Publisher::new(link.clone());
        Redis {
            leases: SharedLeases::new(link.clone()),
            health: SharedHealth::new(link.clone()),
            events,
            link,
        }
    }

    /// A routing decision (SOLLOL's `ROUTE_DECISION`): `model` goes to
    /// `backend` (`ollama` or `llamacpp`) because `reason`.
    pub(crate) fn route_decision(&self, model: &str, backend: &str, reason: &str) {
        if !self.link.is_connected() {
            return;
        }
        let mut extra = Map::new();
        extra.insert("reason".into(), json!(reason));
        extra.insert("cached".into(), json!(false));
        self.events.routing(events::routing_event(
            "ROUTE_DECISION",
            Some(model),
            Some(backend),
            extra,
        ));
    }

    /// One line for `status` and `nodes`.
    pub fn describe(&self) -> String {
        let state = self.link.state();
        let Some(target) = self.link.target().filter(|_| state != LinkState::Off) else {
            return "off (`redis on` shares host leases, node health and events through Redis)"
                .into();
        };
        let at = target.describe();
        match state {
            LinkState::Off => unreachable!("handled above"),
            LinkState::Connecting => format!("connecting — {at}"),
            LinkState::Connected => format!(
                "connected — {at}; host leases and node health shared; events: {} published, {} dropped",
                self.events.published(),
                self.events.dropped()
            ),
            LinkState::Reconnecting(why) => format!(
                "reconnecting — {at}: {why}; host rule per instance meanwhile"
            ),
            LinkState::Failed(why) => format!("error — {at}: {why}; retrying"),
        }
    }
}
