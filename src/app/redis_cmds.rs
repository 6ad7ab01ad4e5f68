//! `redis on|off`, connecting at start-up, and the RPC registrations that
//! `rpc discover` merges.

use std::time::Duration;

use super::{App, CommandError, Handled, Outcome, Sink};
use crate::config::settings::{Key, RpcBackendEntry};
use crate::redis::link::{self, LinkState, Refusal};
use crate::redis::registry::{self, Found};
use crate::redis::target::{self, Target};
use crate::sharding::backends;

/// How long a registered backend gets to accept a TCP connection.
const REGISTERED_CHECK: Duration = Duration::from_millis(500);

impl App {
    /// `redis on|off`: save the setting, then connect or disconnect at once.
    /// A URL that cannot be used turns nothing on (the setting is left as it
    /// is); `redis on` while connected to the same server says so in one line.
    pub(super) async fn redis_cmd(&mut self, on: bool, sink: &mut dyn Sink) -> Handled {
        let target = if on {
            Some(self.redis_target().await?)
        } else {
            None
        };
        self.cfg.settings_mut().redis_logging_enabled = on;
        let saved = self.save_settings(&[Key::RedisLoggingEnabled], sink).await;
        let saved_note = if saved { " (saved)" } else { "" };
        let Some(target) = target else {
            self.redis_stop().await;
            super::confirm(
                sink,
                saved,
                &format!(
                    "Redis OFF{saved_note}: host rule, node health and events stay in this instance"
                ),
            );
            return Ok(Outcome::from(saved));
        };
        let link = &self.services.redis.link;
        let same = link
            .target()
            .is_some_and(|t| t.describe() == target.describe());
        if same && link.is_connected() {
            super::confirm(
                sink,
                saved,
                &format!(
                    "Redis ON{saved_note}: already connected — {}",
                    target.describe()
                ),
            );
            return Ok(Outcome::from(saved));
        }
        super::confirm(
            sink,
            saved,
            &format!(
                "Redis ON{saved_note}: host leases, node health, RPC registrations and events go through Redis"
            ),
        );
        self.redis_connect(target, sink).await?;
        Ok(Outcome::from(saved))
    }

    /// The Redis the environment and settings name; when they name none that
    /// can be used, Redis is stopped (it stays off) and the error says why.
    async fn redis_target(&mut self) -> Result<Target, CommandError> {
        match target::of(&self.cfg.effective().redis) {
            Ok(t) => Ok(t),
            Err(e) => {
                self.redis_stop().await;
                Err(CommandError::Redis(e))
            }
        }
    }

    /// Connect per the environment and settings, reporting the outcome in one
    /// line. An error when Redis refuses us or the URL cannot be used; an
    /// unreachable Redis is retried in the background (Ok: nothing to fix here).
    pub(crate) async fn redis_start(&mut self, sink: &mut dyn Sink) -> Result<(), CommandError> {
        let target = self.redis_target().await?;
        self.redis_connect(target, sink).await
    }

    /// Connect to `target`, reporting the first verdict in one line: an error
    /// when the server answers but will not serve us (a password, a database
    /// it does not have, not Redis at all), a warning when nothing answers.
    async fn redis_connect(
        &mut self,
        target: Target,
        sink: &mut dyn Sink,
    ) -> Result<(), CommandError> {
        let at = target.describe();
        self.services
            .hub
            .set_tap(Some(self.services.redis_tap.clone()));
        let state = self.services.redis.link.enable(target).await;
        let meanwhile = "retrying in the background, host rule per instance until then";
        match state {
            LinkState::Connected => {
                sink.err(&format!("🔗 Redis connected: {at}"));
                Ok(())
            }
            LinkState::Failed(why) => match link::refusal(&why) {
                Some(Refusal::Password) => Err(CommandError::network(format!(
                    "Redis at {at} refused us: {why} — check redis_password or the URL; {meanwhile}"
                ))),
                Some(Refusal::Database) => Err(CommandError::network(format!(
                    "Redis at {at}: {why} — use a database number the server has (below its `databases` setting, 16 by default); {meanwhile}"
                ))),
                Some(Refusal::NotRedis) => Err(CommandError::network(format!(
                    "Redis at {at}: {why} — check the host and port; {meanwhile}"
                ))),
                None => {
                    sink.warn(&format!(
                        "⚠️  Redis at {at} is unreachable: {why} — retrying in the background; host rule per instance until then"
                    ));
                    Ok(())
                }
            },
            _ => {
                sink.err(&format!(
                    "⏳ Redis at {at} has not answered yet — still trying in the background; host rule per instance until then"
                ));
                Ok(())
            }
        }
    }

    /// Stop using Redis (queued events get a moment to go out first).
    pub(crate) async fn redis_stop(&mut self) {
        self.services.hub.set_tap(None);
        self.services
            .redis
            .events
            .flush(Duration::from_millis(300))
            .await;
        self.services.redis.link.disable();
    }

    /// RPC backends registered in Redis that accept a TCP connection now.
    /// Quiet when Redis is off; one line when it cannot be read.
    pub(super) async fn redis_registrations(&self, sink: &mut dyn Sink) -> Vec<RpcBackendEntry> {
        match self.services.redis.link.state() {
            LinkState::Off => return Vec::new(),
            LinkState::Connected => {}
            other => {
                sink.warn(&format!(
                    "⚠️  Redis is {}: registrations under {}* not read",
                    other.word(),
                    registry::NODE_PREFIX
                ));
                return Vec::new();
            }
        }
        sink.err(&format!(
            "🔍 Reading RPC backend registrations from Redis ({}*, {}) ...",
            registry::NODE_PREFIX,
            registry::ROUTER_METADATA
        ));
        let regs = match registry::registered_backends(&self.services.redis.link).await {
            Ok(r) => r,
            Err(e) => {
                sink.warn(&format!("⚠️  Redis: could not read the registrations: {e}"));
                return Vec::new();
            }
        };
        let entries: Vec<(RpcBackendEntry, Found)> = regs
            .into_iter()
            .map(|r| {
                (
                    RpcBackendEntry {
                        host: r.host,
                        port: r.port,
                        extra: Default::default(),
                    },
                    r.found,
                )
            })
            .collect();
        let checks = entries
            .iter()
            .map(|(b, _)| backends::reachable(b, REGISTERED_CHECK));
        let answers = futures_util::future::join_all(checks).await;
        let mut out = Vec::new();
        for ((b, found), up) in entries.into_iter().zip(answers) {
            let place = match found {
                Found::NodeKey => registry::node_key(&b.host, b.port),
                Found::RouterMetadata => format!("{}.rpc_backends", registry::ROUTER_METADATA),
            };
            if !up {
                sink.err(&format!(
                    "   ⚠️  {} is registered ({place}) but does not accept connections: skipped",
                    backends::addr(&b)
                ));
                continue;
            }
            if let Some(w) = backends::exposure_warning(&b) {
                sink.warn(&w);
            }
            out.push(b);
        }
        out
    }
}
