//! The connection to Redis and its life: connect in the background, check it
//! with a PING every second, notice when it goes away (one warning per outage),
//! reconnect with backoff, say when it is back. Everything that uses Redis asks
//! the link for a connection per operation and falls back to its local view
//! when there is none, so nothing fails because Redis did.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ErrorKind, RedisError};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::target::Target;

/// Time between PINGs while connected.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);
/// First and longest wait between reconnection attempts.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(250);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Limit for connecting and for one answer.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `enable` waits for the first verdict before leaving it to the background.
pub(crate) const FIRST_VERDICT: Duration = Duration::from_secs(3);

/// The pub/sub channel on which a released host lease is announced (message: the host).
pub(crate) const LEASE_RELEASED_CHANNEL: &str = "synapticllamas:lease:released";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Redis is not in use (`redis off`).
    Off,
    /// The first attempt is under way.
    Connecting,
    Connected,
    /// It was connected and went away: the local view rules until it is back.
    Reconnecting(String),
    /// It never connected, or it answers but refuses us (a wrong password): retrying.
    Failed(String),
}

impl LinkState {
    /// connected / connecting / reconnecting / off / error.
    pub fn word(&self) -> &'static str {
        match self {
            LinkState::Off => "off",
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Reconnecting(_) => "reconnecting",
            LinkState::Failed(_) => "error",
        }
    }
}

/// Why one operation did not reach Redis.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("Redis is not connected")]
    Offline,
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{}", one_line(.0))]
    Redis(#[from] RedisError),
}

/// A Redis error as one line without a trailing period.
pub(crate) fn one_line(e: &RedisError) -> String {
    let text = e.to_string();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    text.trim_end_matches('.').to_string()
}

/// An error that means the connection is gone (not a refusal of one command).
fn connection_lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

struct Inner {
    target: Option<Target>,
    client: Option<Client>,
    conn: Option<ConnectionManager>,
    tasks: Vec<JoinHandle<()>>,
    generation: u64,
    /// While `enable` waits for the first verdict it reports it itself.
    quiet_first: bool,
}

/// One process's connection to Redis (or none). Cheap to share: `Arc<Link>`.
pub struct Link {
    inner: Mutex<Inner>,
    state: watch::Sender<LinkState>,
    notify: Box<dyn Fn(String) + Send + Sync>,
    released: watch::Sender<u64>,
    wake: Notify,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("state", &self.state())
            .finish()
    }
}

impl Link {
    /// A link that is off; `notify` receives the lines worth telling the user
    /// (Redis went away, is back, refuses the password).
    pub fn new(notify: impl Fn(String) + Send + Sync + 'static) -> Arc<Link> {
        Arc::new(Link {
            inner: Mutex::new(Inner {
                target: None,
                client: None,
                conn: None,
                tasks: Vec::new(),
                generation: 0,
                quiet_first: false,
            }),
            state: watch::channel(LinkState::Off).0,
            notify: Box::new(notify),
            released: watch::channel(0).0,
            wake: Notify::new(),
        })
    }

    /// A link that stays off (local view only).
    pub fn off() -> Arc<Link> {
        Link::new(|_| {})
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> LinkState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change of state.
    pub fn watch(&self) -> watch::Receiver<LinkState> {
        self.state.subscribe()
    }

    pub fn target(&self) -> Option<Target> {
        self.lock().target.clone()
    }

    pub fn is_connected(&self) -> bool {
        *self.state.borrow() == LinkState::Connected
    }

    /// The connection, while connected.
    pub fn conn(&self) -> Option<ConnectionManager> {
        let inner = self.lock();
        if self.is_connected() {
            inner.conn.clone()
        } else {
            None
        }
    }

    /// A counter bumped whenever any instance announces a released host lease.
    pub(crate) fn lease_released(&self) -> watch::Receiver<u64> {
        self.released.subscribe()
    }

    /// Tell the user something (through the notifier given to `new`).
    pub(super) fn say(&self, line: String) {
        (self.notify)(line);
    }

    /// Bump the release counter (a lease of this process was released).
    pub(super) fn note_release(&self) {
        self.released.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Start using `target`; waits up to [`FIRST_VERDICT`] for the first
    /// verdict and returns the state then (Connecting if it is still trying).
    /// Must run inside a Tokio runtime.
    pub async fn enable(self: &Arc<Self>, target: Target) -> LinkState {
        let client = match Client::open(target.info.clone()) {
            Ok(c) => Some(c),
            Err(e) => {
                self.stop_tasks();
                let mut inner = self.lock();
                inner.target = Some(target);
                inner.client = None;
                let msg = one_line(&e);
                self.state.send_replace(LinkState::Failed(msg.clone()));
                return LinkState::Failed(msg);
            }
        };
        let mut rx = self.state.subscribe();
        let generation = {
            self.stop_tasks();
            let mut inner = self.lock();
            inner.generation += 1;
            inner.target = Some(target);
            inner.client = client.clone();
            inner.conn = None;
            inner.quiet_first = true;
            self.state.send_replace(LinkState::Connecting);
            inner.generation
        };
        rx.borrow_and_update();
        if let Some(client) = client {
            let weak = Arc::downgrade(self);
            let sup = tokio::spawn(supervise(weak.clone(), client.clone(), generation));
            let sub = tokio::spawn(listen_releases(weak, client, generation));
            self.lock().tasks = vec![sup, sub];
        }
        let deadline = tokio::time::Instant::now() + FIRST_VERDICT;
        loop {
            if *rx.borrow_and_update() != LinkState::Connecting {
                break;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                break;
            }
        }
        self.lock().quiet_first = false;
        self.state()
    }

    /// Stop using Redis.
    pub fn disable(&self) {
        self.stop_tasks();
        let mut inner = self.lock();
        inner.generation += 1;
        inner.conn = None;
        inner.client = None;
        self.state.send_replace(LinkState::Off);
    }

    fn stop_tasks(&self) {
        let tasks = std::mem::take(&mut self.lock().tasks);
        for t in tasks {
            t.abort();
        }
    }

    /// Move to `next` if `generation` is current, telling the user what changed.
    fn transition(&self, generation: u64, next: LinkState, conn: Option<ConnectionManager>) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        let prev = self.state();
        inner.conn = conn;
        let shown = inner
            .target
            .as_ref()
            .map(|t| t.shown.clone())
            .unwrap_or_default();
        let line = match (&prev, &next) {
            (LinkState::Connecting, _) if inner.quiet_first => None,
            (LinkState::Connected, LinkState::Reconnecting(why)) => Some(format!(
                "⚠️  Redis at {shown} went away ({why}): host rule now per instance; reconnecting in the background"
            )),
            (LinkState::Reconnecting(_), LinkState::Connected) => Some(format!(
                "✅ Redis at {shown} is back: host leases, node health and events are shared again"
            )),
            (LinkState::Connecting | LinkState::Failed(_), LinkState::Connected) => {
                Some(format!("✅ Redis connected: {shown}"))
            }
            (LinkState::Connecting | LinkState::Reconnecting(_), LinkState::Failed(why)) => {
                Some(format!(
                    "❌ Redis at {shown}: {why} — retrying in the background; host rule per instance until then"
                ))
            }
            _ => None,
        };
        if prev != next {
            self.state.send_replace(next);
        }
        drop(inner);
        if let Some(line) = line {
            (self.notify)(line);
        }
    }

    /// An operation found the connection gone: use the local view at once and
    /// let the supervisor reconnect.
    pub fn lost(&self, why: &str) {
        let generation = self.lock().generation;
        if self.is_connected() {
            self.transition(generation, LinkState::Reconnecting(why.to_string()), None);
        }
        self.wake.notify_one();
    }

    /// Run one operation on the connection, within `limit`. A timeout or a
    /// broken connection marks the link lost.
    pub async fn call<T, F, Fut>(&self, limit: Duration, f: F) -> Result<T, CallError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let conn = self.conn().ok_or(CallError::Offline)?;
        match tokio::time::timeout(limit, f(conn)).await {
            Err(_) => {
                self.lost(&format!("no answer within {} ms", limit.as_millis()));
                Err(CallError::Timeout(limit))
            }
            Ok(Err(e)) => {
                if connection_lost(&e) {
                    self.lost(&one_line(&e));
                }
                Err(CallError::Redis(e))
            }
            Ok(Ok(v)) => Ok(v),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

/// Why the link could not connect, or a PING went unanswered.
#[derive(Debug, thiserror::Error)]
enum Unreachable {
    #[error("no answer within {} ms", .0.as_millis())]
    Silent(Duration),
    #[error("{}", one_line(.0))]
    Redis(#[from] RedisError),
}

/// A server that answered, but not as a Redis server would.
const NOT_REDIS: &str = "not a Redis server (its reply is not in the Redis protocol)";
/// The start of the reason when the server refused the database in the URL.
const NO_SUCH_DB: &str = "the server refused database ";

/// Why the server that answered will not serve us, read from a failed
/// connection's reason (the link's `Failed` state); `None` when nothing
/// answered (unreachable, silent, reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A password is missing or wrong.
    Password,
    /// The database number is one the server does not have.
    Database,
    /// What answered is not a Redis server (an HTTP port, say).
    NotRedis,
}

/// The refusal a `Failed` reason tells of, if any.
pub fn refusal(why: &str) -> Option<Refusal> {
    if why.starts_with(NOT_REDIS) {
        return Some(Refusal::NotRedis);
    }
    if why.starts_with(NO_SUCH_DB) {
        return Some(Refusal::Database);
    }
    let w = why.to_ascii_uppercase();
    (w.contains("NOAUTH") || w.contains("WRONGPASS") || w.contains("AUTH") || w.contains("NOPERM"))
        .then_some(Refusal::Password)
}

impl Unreachable {
    /// The reason in the user's terms: the library's words, except for a reply
    /// that is not Redis's protocol and a database the server refuses.
    fn explain(&self, db: i64) -> String {
        match self {
            Unreachable::Redis(e) if e.kind() == ErrorKind::Parse => NOT_REDIS.to_string(),
            Unreachable::Redis(e) if e.to_string().contains("refused to switch database") => {
                format!(
                    "{NO_SUCH_DB}{db} ({})",
                    e.detail().unwrap_or("no reason given")
                )
            }
            other => other.to_string(),
        }
    }
}

/// `f` within `limit`, a silence as an error.
async fn within<T>(
    limit: Duration,
    f: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, Unreachable> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(Unreachable::Silent(limit)),
    }
}

/// Connect and check with a PING (which also catches a missing password).
async fn connect(client: &Client) -> Result<ConnectionManager, Unreachable> {
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(0)
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(CONNECT_TIMEOUT));
    within(CONNECT_TIMEOUT * 2, async {
        let mut m = ConnectionManager::new_with_config(client.clone(), config).await?;
        redis::cmd("PING").query_async::<String>(&mut m).await?;
        Ok(m)
    })
    .await
}

async fn ping(m: &ConnectionManager) -> Result<(), Unreachable> {
    let mut m = m.clone();
    within(
        CONNECT_TIMEOUT,
        redis::cmd("PING").query_async::<String>(&mut m),
    )
    .await
    .map(drop)
}

/// Keep the link connected for as long as `generation` is current (and the
/// link is in use).
async fn supervise(link: Weak<Link>, client: Client, generation: u64) {
    let db = client.get_connection_info().redis_settings().db();
    let mut backoff = BACKOFF_MIN;
    let mut conn: Option<ConnectionManager> = None;
    loop {
        let Some(link) = link.upgrade() else { return };
        let result = match &conn {
            Some(m) => ping(m).await.map(|_| m.clone()),
            None => connect(&client).await,
        };
        match result {
            Ok(m) => {
                backoff = BACKOFF_MIN;
                if !link.is_connected() {
                    link.transition(generation, LinkState::Connected, Some(m.clone()));
                }
                conn = Some(m);
                tokio::select! {
                    _ = tokio::time::sleep(HEARTBEAT) => {}
                    _ = link.wake.notified() => {}
                }
                if !link.is_connected() {
                    // An operation saw it go: start over with a fresh connection.
                    conn = None;
                }
            }
            Err(e) => {
                conn = None;
                let why = e.explain(db);
                let next = match link.state() {
                    LinkState::Connected => LinkState::Reconnecting(why),
                    LinkState::Reconnecting(_) if refusal(&why).is_none() => {
                        LinkState::Reconnecting(why)
                    }
                    _ => LinkState::Failed(why),
                };
                // Repeated failures of the same kind stay quiet (see `transition`).
                link.transition(generation, next, None);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = link.wake.notified() => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Listen for released host leases (any instance) and bump the counter.
async fn listen_releases(link: Weak<Link>, client: Client, generation: u64) {
    use futures_util::StreamExt;
    let mut backoff = BACKOFF_MIN;
    loop {
        let subscribed = async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(LEASE_RELEASED_CHANNEL).await?;
            Ok::<_, RedisError>(ps)
        };
        if let Ok(Ok(ps)) = tokio::time::timeout(CONNECT_TIMEOUT * 2, subscribed).await {
            backoff = BACKOFF_MIN;
            let mut stream = ps.into_on_message();
            while stream.next().await.is_some() {
                let Some(link) = link.upgrade() else { return };
                if link.lock().generation != generation {
                    return;
                }
                link.note_release();
            }
            // The server went away: whoever waits polls until it is back.
            let Some(link) = link.upgrade() else { return };
            link.note_release();
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_tells_a_refusal_from_an_outage() {
        assert_eq!(refusal(NOT_REDIS), Some(Refusal::NotRedis));
        assert_eq!(
            refusal("the server refused database 99 (DB index is out of range)"),
            Some(Refusal::Database)
        );
        assert_eq!(
            refusal("WRONGPASS invalid username-password pair"),
            Some(Refusal::Password)
        );
        assert_eq!(refusal("no answer within 2000 ms"), None);
        assert_eq!(refusal("Connection refused (os error 111)"), None);
    }
}
