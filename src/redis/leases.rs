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
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::Script;
use tokio::sync::{mpsc, oneshot, watch};

use super::instance;
use super::link::{CallError, Link, LinkState, LEASE_RELEASED_CHANNEL};
use crate::scheduler::{Claim, HostLeases};

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

/// The scheduler's host rule, shared through Redis: a claim is local while
/// Redis is off or away.
impl HostLeases for SharedLeases {
    fn is_shared(&self) -> bool {
        SharedLeases::is_shared(self)
    }

    fn claim<'a>(&'a self, host: &'a str, capacity: u32) -> BoxFuture<'a, Claim> {
        Box::pin(async move {
            if !SharedLeases::is_shared(self) {
                return Claim::Local;
            }
            match self.try_acquire(host, capacity).await {
                Some(lease) => Claim::Granted(Box::new(lease)),
                None => Claim::Full,
            }
        })
    }

    fn releases(&self) -> watch::Receiver<u64> {
        SharedLeases::releases(self)
    }

    fn next_release<'a>(&'a self, seen: &'a mut watch::Receiver<u64>) -> BoxFuture<'a, ()> {
        Box::pin(self.wait_for_release(seen))
    }
}

/// Where held leases live: Redis through the link (the tests model it, to
/// drive the worker on a paused clock).
trait Store: Send + Sync + 'static {
    /// The connection's state, to renew at once when it comes back.
    fn watch(&self) -> watch::Receiver<LinkState>;

    fn is_connected(&self) -> bool;

    /// Remove one lease; false if it could not be reached (tried again later).
    fn release(&self, held: &Held) -> impl Future<Output = bool> + Send;

    /// Every lease in `held` now lives `ttl` more (one round trip).
    fn renew(&self, held: Vec<Held>, ttl: Duration) -> impl Future<Output = ()> + Send;
}

impl Store for Link {
    fn watch(&self) -> watch::Receiver<LinkState> {
        Link::watch(self)
    }

    fn is_connected(&self) -> bool {
        Link::is_connected(self)
    }

    /// The release script (announced on the channel); false if Redis could
    /// not be reached.
    async fn release(&self, held: &Held) -> bool {
        let (key, member, host) = (held.key.clone(), held.member.clone(), held.host.clone());
        let done = self
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
        self.note_release();
        if self.state() == LinkState::Off {
            return true;
        }
        !matches!(done, Err(CallError::Offline | CallError::Timeout(_)))
            && !matches!(&done, Err(CallError::Redis(e)) if e.is_io_error() || e.is_connection_dropped())
    }

    /// The renewal script, which also re-adds members Redis lost.
    async fn renew(&self, held: Vec<Held>, ttl: Duration) {
        let ttl_ms = ttl.as_millis() as u64;
        let _ = self
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
}

/// Renew every held lease each TTL/3 (and at once when Redis comes back);
/// release in order, so a renewal never revives a released lease. A release
/// that could not reach Redis is tried again once it is back.
/// Releases still queued when the last `SharedLeases` goes are carried out
/// before the task ends.
async fn work<S: Store>(inner: Weak<Inner>, store: Arc<S>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let every = match inner.upgrade() {
        Some(i) => i.ttl / 3,
        None => return,
    };
    let mut state = store.watch();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut orphans: Vec<Held> = Vec::new();
    loop {
        let renew = tokio::select! {
            job = jobs.recv() => {
                let Some(Job::Release { held, ack }) = job else { return };
                if !store.release(&held).await && orphans.len() < MAX_ORPHANS {
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
            if store.is_connected() && !orphans.is_empty() {
                let mut left = Vec::new();
                for held in orphans.drain(..) {
                    if !store.release(&held).await {
                        left.push(held);
                    }
                }
                orphans = left;
            }
            let Some(inner) = inner.upgrade() else {
                continue;
            };
            let held = inner.snapshot();
            let ttl = inner.ttl;
            drop(inner);
            if !held.is_empty() && store.is_connected() {
                store.renew(held, ttl).await;
            }
        }
    }
}

/// Releases kept for retry at most (beyond that, the TTL cleans up).
const MAX_ORPHANS: usize = 10_000;

#[cfg(test)]
mod tests {
    //! The renewal worker on a paused clock, against a model of the Redis
    //! side (each member lives until its score, as the scripts keep it).

    use super::*;
    use tokio::time::Instant;

    /// Members and their expiry, as the sorted sets hold them.
    struct Model {
        state: watch::Sender<LinkState>,
        expiry: Mutex<HashMap<String, Instant>>,
        renewed: Mutex<Vec<Instant>>,
    }

    impl Model {
        fn new() -> Arc<Model> {
            Arc::new(Model {
                state: watch::channel(LinkState::Connected).0,
                expiry: Mutex::default(),
                renewed: Mutex::default(),
            })
        }

        /// The acquire script: the member lives `ttl` from now.
        fn acquired(&self, held: &Held, ttl: Duration) {
            let until = Instant::now() + ttl;
            self.expiry
                .lock()
                .unwrap()
                .insert(held.member.clone(), until);
        }

        /// The slot still counts (the member has not expired).
        fn live(&self, member: &str) -> bool {
            self.expiry
                .lock()
                .unwrap()
                .get(member)
                .is_some_and(|t| Instant::now() < *t)
        }
    }

    impl Store for Model {
        fn watch(&self) -> watch::Receiver<LinkState> {
            self.state.subscribe()
        }

        fn is_connected(&self) -> bool {
            true
        }

        async fn release(&self, held: &Held) -> bool {
            self.expiry.lock().unwrap().remove(&held.member);
            true
        }

        async fn renew(&self, held: Vec<Held>, ttl: Duration) {
            let until = Instant::now() + ttl;
            let mut expiry = self.expiry.lock().unwrap();
            for h in held {
                expiry.insert(h.member, until);
            }
            self.renewed.lock().unwrap().push(Instant::now());
        }
    }

    /// Leases with `ttl` whose worker keeps them in `model`; one held lease.
    fn holding(
        ttl: Duration,
        model: &Arc<Model>,
    ) -> (
        SharedLeases,
        RemoteLease,
        String,
        tokio::task::JoinHandle<()>,
    ) {
        let leases = SharedLeases::with_ttl(Link::off(), ttl);
        let (tx, rx) = mpsc::unbounded_channel();
        leases.inner.jobs.set(tx).unwrap();
        let worker = tokio::spawn(work(Arc::downgrade(&leases.inner), model.clone(), rx));
        let held = Held {
            key: lease_key("h"),
            member: "me#1".into(),
            host: "h".into(),
        };
        model.acquired(&held, ttl);
        leases.inner.held.lock().unwrap().insert(1, held.clone());
        let lease = RemoteLease {
            id: 1,
            host: "h".into(),
            shared: true,
            owner: leases.inner.clone(),
            done: false,
        };
        (leases, lease, held.member, worker)
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_lease_is_renewed_every_third_of_its_ttl_and_never_expires() {
        let ttl = Duration::from_secs(3);
        let model = Model::new();
        let (_leases, _lease, member, _worker) = holding(ttl, &model);
        let start = Instant::now();
        for _ in 0..300 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(model.live(&member), "expired at {:?}", start.elapsed());
        }
        let renewed: Vec<Duration> = model
            .renewed
            .lock()
            .unwrap()
            .iter()
            .map(|t| *t - start)
            .collect();
        // At once, then every TTL/3 (the one due at the very end may or may
        // not have run when the loop stops).
        assert!(renewed.len() >= 30, "{renewed:?}");
        let want: Vec<Duration> = (0..30).map(|i| ttl / 3 * i).collect();
        assert_eq!(renewed[..30], want[..], "{renewed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_no_longer_renewed_expires_one_ttl_after_its_last_renewal() {
        let ttl = Duration::from_secs(3);
        let model = Model::new();
        let (_leases, lease, member, worker) = holding(ttl, &model);
        tokio::time::sleep(Duration::from_secs(5)).await;
        // The holder dies: no release, no more renewals.
        worker.abort();
        std::mem::forget(lease);
        let last = *model.renewed.lock().unwrap().last().unwrap();
        let expires = last + ttl;
        tokio::time::sleep_until(expires - Duration::from_millis(1)).await;
        assert!(model.live(&member), "gone before its TTL");
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(
            !model.live(&member),
            "still counted a TTL after the last renewal"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_lease_is_released_at_once_and_no_longer_renewed() {
        let ttl = Duration::from_secs(3);
        let model = Model::new();
        let (leases, lease, member, _worker) = holding(ttl, &model);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = model.renewed.lock().unwrap().len();
        let released = Instant::now();
        lease.release().await;
        assert_eq!(
            Instant::now(),
            released,
            "the release waited for time to pass"
        );
        assert!(!model.live(&member));
        assert_eq!(leases.held(), 0);
        tokio::time::sleep(ttl * 3).await;
        assert!(!model.live(&member), "a renewal revived a released lease");
        // Nothing left to renew.
        assert_eq!(model.renewed.lock().unwrap().len(), before);
    }
}
