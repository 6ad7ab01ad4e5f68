//! Host leases shared by every orchestrator that uses the same Redis: a
//! per-host semaphore of `capacity` slots.
//!
//! Each host has a sorted set `synapticllamas:lease:<host>` whose members are
//! lease ids scored by their expiry (Redis server time, so clocks of different
//! machines never matter). Taking a lease is one Lua script: drop expired
//! members, count, add if below capacity. Every lease this process holds is
//! renewed every TTL/3 by one background task, and released when its
//! [`RemoteLease`] is dropped (the release is announced on a pub/sub channel so
//! waiters elsewhere wake at once). A process that dies leaves leases that
//! expire by themselves within the TTL.
//!
//! Without Redis (off, down, or refusing us) every lease is granted locally:
//! the caller's own per-host count is then the only rule. Leases held while
//! Redis was away are registered again by the next renewal, so the shared
//! count is right again as soon as it is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, Weak};
use std::time::Duration;

use redis::Script;
use tokio::sync::{mpsc, oneshot, watch};

use super::instance;
use super::link::{CallError, Link, LinkState, LEASE_RELEASED_CHANNEL};

/// How long a lease lives unless renewed.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Limit for one lease operation; past it the lease is granted locally.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_millis(500);
/// Waiters look again at least this often (a crashed holder's lease expires
/// without any announcement).
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(100);

/// The Redis key of a host's leases.
pub fn lease_key(host: &str) -> String {
    format!("synapticllamas:lease:{host}")
}

/// KEYS[1] = the host's set; ARGV = capacity, member, ttl ms. Returns 1 if granted.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
  if redis.call('PTTL', KEYS[1]) < 2 * ttl then
    redis.call('PEXPIRE', KEYS[1], 2 * ttl)
  end
  return 1
end
return 0
",
    )
});

/// KEYS = the sets; ARGV[1] = ttl ms, ARGV[i+1] = the member in KEYS[i].
/// Re-adds members Redis lost (a restart), so the count stays true.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[i + 1])
  if redis.call('PTTL', key) < 2 * ttl then
    redis.call('PEXPIRE', key, 2 * ttl)
  end
end
return #KEYS
",
    )
});

/// KEYS[1] = the set; ARGV = member, channel, host. Announces the release.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('ZREM', KEYS[1], ARGV[1])
if n > 0 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return n
",
    )
});

#[derive(Debug, Clone)]
struct Held {
    key: String,
    member: String,
    host: String,
}

enum Job {
    Release {
        held: Held,
        ack: Option<oneshot::Sender<()>>,
    },
}

struct Inner {
    link: Arc<Link>,
    ttl: Duration,
    held: Mutex<HashMap<u64, Held>>,
    jobs: OnceLock<mpsc::UnboundedSender<Job>>,
    warned: AtomicBool,
}

/// Shared host leases; cheap to clone. Works the same whether Redis is on,
/// off or down (then every lease is local).
#[derive(Clone)]
pub struct SharedLeases {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SharedLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLeases")
            .field("link", &self.inner.link.state())
            .field("held", &self.held())
            .finish()
    }
}

/// A slot on a host. Dropping it releases the slot (at once locally, within a
/// round trip in Redis); while it lives it is renewed in the background.
pub struct RemoteLease {
    id: u64,
    host: String,
    shared: bool,
    owner: Arc<Inner>,
    done: bool,
}

impl std::fmt::Debug for RemoteLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteLease")
            .field("host", &self.host)
            .field("shared", &self.shared)
            .finish()
    }
}

impl RemoteLease {
    pub fn host(&self) -> &str {
        &self.host
    }

    /// True when Redis granted it (it counts for every instance); false when
    /// it was granted locally because Redis was off or away.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Release now and wait until Redis has it (or gave up on it).
    pub async fn release(mut self) {
        self.done = true;
        let (tx, rx) = oneshot::channel();
        if self.owner.release(self.id, Some(tx)) {
            let _ = tokio::time::timeout(OP_TIMEOUT * 2, rx).await;
        }
    }
}

impl Drop for RemoteLease {
    fn drop(&mut self) {
        if !self.done {
            self.owner.release(self.id, None);
        }
    }
}

impl Inner {
    /// Forget lease `id` and queue its release; false if there was nothing to do.
    fn release(&self, id: u64, ack: Option<oneshot::Sender<()>>) -> bool {
        let held = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        let Some(held) = held else { return false };
        match self.jobs.get() {
            Some(tx) => tx.send(Job::Release { held, ack }).is_ok(),
            None => {
                self.link.note_release();
                false
            }
        }
    }

    fn snapshot(&self) -> Vec<Held> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn warn_once(&self, e: &CallError) {
        if matches!(e, CallError::Redis(_)) && !self.warned.swap(true, Ordering::Relaxed) {
            self.link.say(format!(
                "⚠️  Redis refused a host lease ({e}); leases are granted locally when that happens"
            ));
        }
    }
}

impl SharedLeases {
    /// Leases through `link` with the default TTL.
    pub fn new(link: Arc<Link>) -> SharedLeases {
        SharedLeases::with_ttl(link, DEFAULT_TTL)
    }

    pub fn with_ttl(link: Arc<Link>, ttl: Duration) -> SharedLeases {
        SharedLeases {
            inner: Arc::new(Inner {
                link,
                ttl: ttl.max(Duration::from_millis(300)),
                held: Mutex::new(HashMap::new()),
                jobs: OnceLock::new(),
                warned: AtomicBool::new(false),
            }),
        }
    }

    /// Leases that are always granted (no Redis).
    pub fn local() -> SharedLeases {
        SharedLeases::new(Link::off())
    }

    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// True while leases are counted in Redis.
    pub fn is_shared(&self) -> bool {
        self.inner.link.is_connected()
    }

    /// Leases this process holds now.
    pub fn held(&self) -> usize {
        self.inner
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Take one of `capacity` slots on `host` if one is free across every
    /// instance: `None` when the host is full. One round trip; never fails
    /// (without Redis the lease is granted locally).
    pub async fn try_acquire(&self, host: &str, capacity: u32) -> Option<RemoteLease> {
        self.ensure_worker();
        let inner = &self.inner;
        // Unique in the process (the member's prefix is the process's id):
        // two sets of leases in one process — a reconnect while leases are
        // held, or the tests' two instances — never name the same member.
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let held = Held {
            key: lease_key(host),
            member: format!("{}#{id}", instance::id()),
            host: host.to_string(),
        };
        let ttl_ms = inner.ttl.as_millis() as u64;
        let (key, member) = (held.key.clone(), held.member.clone());
        let granted = inner
            .link
            .call(OP_TIMEOUT, |mut c| async move {
                ACQUIRE
                    .key(key)
                    .arg(capacity.max(1))
                    .arg(member)
                    .arg(ttl_ms)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await;
        let shared = match granted {
            Ok(1) => true,
            Ok(_) => return None,
            Err(e) => {
                inner.warn_once(&e);
                false
            }
        };
        inner
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, held);
        Some(RemoteLease {
            id,
            host: host.to_string(),
            shared,
            owner: inner.clone(),
            done: false,
        })
    }

    /// A receiver whose value changes whenever a lease may have been freed (a
    /// release by this or another instance). Mark it seen *before* trying, then
    /// wait with [`SharedLeases::wait_for_release`].
    pub(crate) fn releases(&self) -> watch::Receiver<u64> {
        self.inner.link.lease_released()
    }

    /// Wait until a release is announced, or [`POLL_EVERY`] (a crashed
    /// holder's lease expires silently), whichever comes first.
    pub(crate) async fn wait_for_release(&self, rx: &mut watch::Receiver<u64>) {
        let _ = tokio::time::timeout(POLL_EVERY, rx.changed()).await;
    }

    /// Take a slot on `host`, waiting as long as it takes.
    pub async fn acquire(&self, host: &str, capacity: u32) -> RemoteLease {
        let mut rx = self.releases();
        loop {
            rx.borrow_and_update();
            if let Some(lease) = self.try_acquire(host, capacity).await {
                return lease;
            }
            self.wait_for_release(&mut rx).await;
        }
    }

    /// Start the task that renews and releases (once, inside a runtime).
    fn ensure_worker(&self) {
        if self.inner.jobs.get().is_some() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        if self.inner.jobs.set(tx).is_ok() {
            let link = self.inner.link.clone();
            tokio::spawn(work(Arc::downgrade(&self.inner), link, rx));
        }
    }
}

/// Renew every held lease each TTL/3 (and at once when Redis comes back);
/// release in order, so a renewal never revives a released lease. A release
/// that could not reach Redis is tried again once it is back.
/// Releases still queued when the last `SharedLeases` goes are carried out
/// before the task ends.
async fn work(inner: Weak<Inner>, link: Arc<Link>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let every = match inner.upgrade() {
        Some(i) => i.ttl / 3,
        None => return,
    };
    let mut state = link.watch();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut orphans: Vec<Held> = Vec::new();
    loop {
        let renew = tokio::select! {
            job = jobs.recv() => {
                let Some(Job::Release { held, ack }) = job else { return };
                if !release(&link, &held).await && orphans.len() < MAX_ORPHANS {
                    orphans.push(held);
                }
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
                false
            }
            _ = tick.tick() => true,
            changed = state.changed() => {
                if changed.is_err() { return; }
                *state.borrow_and_update() == LinkState::Connected
            }
        };
        if renew {
            if link.is_connected() && !orphans.is_empty() {
                let mut left = Vec::new();
                for held in orphans.drain(..) {
                    if !release(&link, &held).await {
                        left.push(held);
                    }
                }
                orphans = left;
            }
            if let Some(inner) = inner.upgrade() {
                renew_all(&inner).await;
            }
        }
    }
}

/// Releases kept for retry at most (beyond that, the TTL cleans up).
const MAX_ORPHANS: usize = 10_000;

/// Remove one lease from Redis; false if Redis could not be reached.
async fn release(link: &Link, held: &Held) -> bool {
    let (key, member, host) = (held.key.clone(), held.member.clone(), held.host.clone());
    let done = link
        .call(OP_TIMEOUT, |mut c| async move {
            RELEASE
                .key(key)
                .arg(member)
                .arg(LEASE_RELEASED_CHANNEL)
                .arg(host)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await;
    // Waiters in this process wake even when the announcement cannot go out.
    link.note_release();
    if link.state() == LinkState::Off {
        return true;
    }
    !matches!(done, Err(CallError::Offline | CallError::Timeout(_)))
        && !matches!(&done, Err(CallError::Redis(e)) if e.is_io_error() || e.is_connection_dropped())
}

async fn renew_all(inner: &Inner) {
    let held = inner.snapshot();
    if held.is_empty() || !inner.link.is_connected() {
        return;
    }
    let ttl_ms = inner.ttl.as_millis() as u64;
    let _ = inner
        .link
        .call(OP_TIMEOUT, |mut c| async move {
            let mut inv = RENEW.prepare_invoke();
            inv.arg(ttl_ms);
            for h in &held {
                inv.key(&h.key).arg(&h.member);
            }
            inv.invoke_async::<i64>(&mut c).await
        })
        .await;
}
