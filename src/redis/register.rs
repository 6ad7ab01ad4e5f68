//! `synapticllamas rpc-register HOST:PORT`: run on a worker machine beside its
//! `rpc-server`. Writes SOLLOL's registration key and refreshes it (every
//! TTL/3) until stopped, so the registration never expires while the worker
//! is up; SIGTERM, SIGINT or SIGHUP deletes the key and exits 0, and so does
//! its output's reader going away. Redis going away is survived: the key is
//! written again as soon as it is back.

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use super::link::{CallError, Link, LinkState};
use super::registry::{available_ram_mb, node_key, registration_value};
use super::target::Target;
use crate::config::effective::{Effective, Flags};
use crate::config::env::Env;
use crate::config::settings;
use crate::config::settings::RpcBackendEntry;
use crate::config::SETTINGS_FILE;
use crate::sharding::backends;
use crate::ui;

/// What the command line gave: the worker's address and its registration.
#[derive(Debug, Clone)]
pub struct Options {
    /// HOST:PORT as other machines reach the rpc-server.
    pub addr: String,
    /// Lifetime of the key; it is refreshed every third of it.
    pub ttl_secs: u64,
    /// Memory offered for layers (default: the memory available now).
    pub ram_mb: Option<u64>,
    /// VRAM of each GPU, as cuda:0, cuda:1, …
    pub gpu_vram_mb: Vec<u64>,
}

/// Limit for one write.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the output is checked for a reader that has gone away.
const OUTPUT_CHECK: Duration = Duration::from_millis(250);

/// Run until a signal or until our output's reader has gone away (`2>&1 |
/// head -1` ended); either way the key is deleted before the exit status is
/// returned.
pub async fn run(args: Options) -> i32 {
    let (backend, target) = match configured(&args) {
        Ok(c) => c,
        Err(status) => return status,
    };
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        // The terminal that started it closing: as SIGTERM.
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        _ => {
            say("❌ rpc-register: cannot listen for signals");
            return 1;
        }
    };
    let reg = Registration::new(&args, &backend);
    if !backends::reachable(&backend, Duration::from_millis(500)).await {
        say(&format!(
            "⚠️  {} does not accept connections now (is rpc-server running?); registering anyway",
            reg.addr
        ));
    }
    let link = Link::new(|line| say(&line));
    let shown = target.describe();
    if let LinkState::Failed(why) = link.enable(target).await {
        say(&format!(
            "❌ Redis at {shown}: {why} — retrying in the background"
        ));
    }
    say(&format!(
        "📡 Registering {} as {} (TTL {} s, refreshed every {:.1} s); SIGTERM or Ctrl-C removes it",
        reg.addr,
        reg.key,
        reg.ttl.as_secs(),
        reg.every.as_secs_f64()
    ));
    let mut state = link.watch();
    let mut written = false;
    while !ui::stderr_gone() {
        written = link.is_connected() && reg.write(&link, written).await;
        tokio::select! {
            _ = tokio::time::sleep(reg.every) => {}
            changed = state.changed() => {
                if changed.is_err() { break; }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => break,
            _ = output_gone() => break,
        }
    }
    reg.remove(&link).await;
    link.disable();
    0
}

/// A line on stderr (never a panic when stderr is closed or full).
fn say(line: &str) {
    ui::err_line(line);
}

/// Returns once stderr's reader has gone away.
async fn output_gone() {
    let mut every = tokio::time::interval(OUTPUT_CHECK);
    loop {
        every.tick().await;
        if ui::stderr_gone() {
            return;
        }
    }
}

/// The worker's address (the argument) and the Redis to register it in
/// (the settings file and the environment); the exit status when either is
/// wrong, said on stderr.
fn configured(args: &Options) -> Result<(RpcBackendEntry, Target), i32> {
    let backend = match backends::parse(&args.addr) {
        Ok(b) => b,
        Err(e) => {
            say(&format!("❌ rpc-register: {e}"));
            say("   Usage: synapticllamas rpc-register HOST:PORT [--ttl SECS]");
            return Err(2);
        }
    };
    let env = Env::process();
    let loaded = settings::load(&env.home_dir().join(SETTINGS_FILE));
    if let Some(e) = &loaded.error {
        say(&format!("⚠️  {e} — using the default Redis settings"));
    }
    let effective = Effective::resolve(&loaded.settings, &Flags::default(), env);
    match super::target::of(&effective.redis) {
        Ok(t) => Ok((backend, t)),
        Err(e) => {
            say(&format!("❌ rpc-register: {e}"));
            Err(2)
        }
    }
}

/// The registration key of one worker, its value and how long it lives.
struct Registration {
    /// HOST:PORT, for messages.
    addr: String,
    key: String,
    value: String,
    ttl: Duration,
    /// How often the key is written again (a third of its TTL).
    every: Duration,
}

impl Registration {
    fn new(args: &Options, backend: &RpcBackendEntry) -> Registration {
        // The command line refuses 0 (`--ttl` is at least 1).
        let ttl = Duration::from_secs(args.ttl_secs.max(1));
        Registration {
            addr: backends::addr(backend),
            key: node_key(&backend.host, backend.port),
            value: registration_value(
                args.ram_mb.unwrap_or_else(available_ram_mb),
                &args.gpu_vram_mb,
            )
            .to_string(),
            ttl,
            every: ttl / 3,
        }
    }

    /// Write the key with its TTL; whether it is written now. The first
    /// write (and the first after a failure) is said, and so is a failed
    /// refresh of a written key.
    async fn write(&self, link: &Link, written: bool) -> bool {
        let (k, v) = (self.key.clone(), self.value.clone());
        let ttl_ms = self.ttl.as_millis() as u64;
        let ok = link
            .call(OP_TIMEOUT, |mut c| async move {
                redis::cmd("SET")
                    .arg(k)
                    .arg(v)
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        match ok {
            Ok(()) if !written => {
                say(&format!("✅ Registered {} in Redis", self.addr));
                true
            }
            Ok(()) => true,
            Err(e) => {
                if written {
                    say(&format!("⚠️  Could not refresh {}: {e}", self.key));
                }
                false
            }
        }
    }

    /// Delete the key on the way out; when Redis is away it expires by itself.
    async fn remove(&self, link: &Link) {
        let (addr, key) = (&self.addr, &self.key);
        let k = key.clone();
        match link
            .call(OP_TIMEOUT, |mut c| async move {
                redis::cmd("DEL").arg(k).query_async::<i64>(&mut c).await
            })
            .await
        {
            Ok(_) => say(&format!("🛑 Unregistered {addr} ({key} deleted)")),
            Err(CallError::Offline) => say(&format!(
                "⚠️  Redis is away: {key} could not be deleted and expires by itself within {} s",
                self.ttl.as_secs()
            )),
            Err(e) => say(&format!(
                "⚠️  {key} could not be deleted ({e}); it expires by itself"
            )),
        }
    }
}
