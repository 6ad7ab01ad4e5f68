//! `synapticllamas rpc-register HOST:PORT`: run on a worker machine beside its
//! `rpc-server`. Writes SOLLOL's registration key and refreshes it (every
//! TTL/3) until stopped, so the registration never expires while the worker
//! is up; SIGTERM or SIGINT deletes the key and exits 0. Redis going away is
//! survived: the key is written again as soon as it is back.

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use super::link::{CallError, Link, LinkState};
use super::registry::{available_ram_mb, node_key, registration_value};
use crate::cli::RpcRegister;
use crate::config::settings;
use crate::config::{home_dir, SETTINGS_FILE};
use crate::sharding::backends;

/// Limit for one write.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// Run until a signal; the process exit status.
pub async fn run(args: &RpcRegister) -> i32 {
    let backend = match backends::parse(&args.addr) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("❌ rpc-register: {e}");
            eprintln!("   Usage: synapticllamas rpc-register HOST:PORT [--ttl SECS]");
            return 2;
        }
    };
    let loaded = settings::load(&home_dir().join(SETTINGS_FILE));
    if let Some(e) = &loaded.error {
        eprintln!("⚠️  {e} — using the default Redis settings");
    }
    let target = match super::target::resolve_env(&loaded.settings) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("❌ rpc-register: {e}");
            return 2;
        }
    };
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            eprintln!("❌ rpc-register: cannot listen for signals");
            return 1;
        }
    };
    let ttl = Duration::from_secs(args.ttl.max(1));
    let every = ttl / 3;
    let addr = backends::addr(&backend);
    let key = node_key(&backend.host, backend.port);
    let value = registration_value(
        args.ram_mb.unwrap_or_else(available_ram_mb),
        &args.gpu_vram_mb,
    )
    .to_string();
    if !backends::reachable(&backend, Duration::from_millis(500)).await {
        eprintln!(
            "⚠️  {addr} does not accept connections now (is rpc-server running?); registering anyway"
        );
    }
    let link = Link::new(|line| eprintln!("{line}"));
    let shown = target.describe();
    if let LinkState::Failed(why) = link.enable(target).await {
        eprintln!("❌ Redis at {shown}: {why} — retrying in the background");
    }
    eprintln!(
        "📡 Registering {addr} as {key} (TTL {} s, refreshed every {:.1} s); SIGTERM or Ctrl-C removes it",
        ttl.as_secs(),
        every.as_secs_f64()
    );
    let mut state = link.watch();
    let mut written = false;
    loop {
        if link.is_connected() {
            let (k, v) = (key.clone(), value.clone());
            let ttl_ms = ttl.as_millis() as u64;
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
                    eprintln!("✅ Registered {addr} in Redis");
                    written = true;
                }
                Ok(()) => {}
                Err(e) => {
                    if written {
                        eprintln!("⚠️  Could not refresh {key}: {e}");
                    }
                    written = false;
                }
            }
        } else {
            written = false;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            changed = state.changed() => {
                if changed.is_err() { break; }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let k = key.clone();
    match link
        .call(OP_TIMEOUT, |mut c| async move {
            redis::cmd("DEL").arg(k).query_async::<i64>(&mut c).await
        })
        .await
    {
        Ok(_) => eprintln!("🛑 Unregistered {addr} ({key} deleted)"),
        Err(CallError::Offline) => eprintln!(
            "⚠️  Redis is away: {key} could not be deleted and expires by itself within {} s",
            ttl.as_secs()
        ),
        Err(e) => eprintln!("⚠️  {key} could not be deleted ({e}); it expires by itself"),
    }
    link.disable();
    0
}
