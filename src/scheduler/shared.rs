//! What the scheduler keeps together with other instances of this program:
//! the host rule ([`HostLeases`]: a host's slots counted across instances)
//! and the health view ([`HealthReports`]: a node one instance cooled is
//! cooling for all). The scheduler owns these traits; `crate::redis`
//! implements them. With nobody to share with, [`Alone`] stands in: every
//! claim is local, nothing is reported or heard.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;

/// The outcome of claiming a slot on a host across instances.
pub enum Claim {
    /// Granted: the slot counts for every instance while the guard lives;
    /// dropping it gives the slot back.
    Granted(Box<dyn Send + Sync>),
    /// Nothing is shared right now (off, or away): the local rule alone holds.
    Local,
    /// Other instances hold every slot of the host.
    Full,
}

/// A host's slots counted across every instance.
pub trait HostLeases: Send + Sync {
    /// True while slots are counted with other instances.
    fn is_shared(&self) -> bool;

    /// Take one of `capacity` slots on `host` if one is free across every
    /// instance (one round trip; never an error: trouble means `Local`).
    fn claim<'a>(&'a self, host: &'a str, capacity: u32) -> BoxFuture<'a, Claim>;

    /// A count that changes whenever a slot may have been freed by any
    /// instance. Mark it seen *before* claiming, then wait with
    /// [`HostLeases::next_release`].
    fn releases(&self) -> watch::Receiver<u64>;

    /// Wait until the count changes, or a poll interval passed (a crashed
    /// holder's slot frees itself without any announcement).
    fn next_release<'a>(&'a self, seen: &'a mut watch::Receiver<u64>) -> BoxFuture<'a, ()>;
}

/// What the other instances say about a node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeView {
    /// Nothing known (never reported, expired, or sharing off/away): use the local view.
    Unknown,
    /// Cooling until `until` after `failures` failures in a row.
    Cooling {
        until: Instant,
        failures: u32,
        by: String,
        reason: String,
    },
    /// Seen answering again `ago` ago: end any local cooling that began before.
    Recovered { ago: Duration, by: String },
}

/// Node health told to and heard from every instance.
pub trait HealthReports: Send + Sync {
    /// True while reports reach other instances.
    fn is_shared(&self) -> bool;

    /// `node` (its URL) is cooling for `for_` after `failures` failures in a
    /// row (`reason`: the last). Never waits.
    fn report_cooling(&self, node: &str, for_: Duration, failures: u32, reason: &str);

    /// `node` answered again: every instance may use it now. Never waits.
    fn report_recovered(&self, node: &str);

    /// What the other instances say about `nodes` (missing: `Unknown`).
    fn views<'a>(&'a self, nodes: &'a [String]) -> BoxFuture<'a, HashMap<String, NodeView>>;
}

/// Nobody to share with: every claim is local, nothing is reported or heard.
pub struct Alone;

impl HostLeases for Alone {
    fn is_shared(&self) -> bool {
        false
    }

    fn claim<'a>(&'a self, _host: &'a str, _capacity: u32) -> BoxFuture<'a, Claim> {
        Box::pin(async { Claim::Local })
    }

    fn releases(&self) -> watch::Receiver<u64> {
        watch::channel(0).1
    }

    fn next_release<'a>(&'a self, _seen: &'a mut watch::Receiver<u64>) -> BoxFuture<'a, ()> {
        Box::pin(std::future::pending())
    }
}

impl HealthReports for Alone {
    fn is_shared(&self) -> bool {
        false
    }

    fn report_cooling(&self, _node: &str, _for: Duration, _failures: u32, _reason: &str) {}

    fn report_recovered(&self, _node: &str) {}

    fn views<'a>(&'a self, _nodes: &'a [String]) -> BoxFuture<'a, HashMap<String, NodeView>> {
        Box::pin(async { HashMap::new() })
    }
}
