//! Building the application from the command line and the two files.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use crate::app::{App, Sink};
use crate::cli::Cli;
use crate::config::choices::Mode;
use crate::config::env::Env;
use crate::config::nodes_file::{self, NodeEntry};
use crate::config::settings::Key;
use crate::config::settings::{self, SettingsStore};
use crate::config::{NODES_FILE, SETTINGS_FILE};
use crate::nodes::{NodeStore, Registry};
use crate::sim::{SimConfig, SimHost};

/// Load files, apply flags, start simulated hosts. Problems are reported on the
/// sink; the app always comes up.
pub async fn build(cli: &Cli, sink: &mut dyn Sink) -> App {
    let env = Env::process();
    let home = env.home_dir();
    let settings_path = home.join(SETTINGS_FILE);
    let loaded = settings::load(&settings_path);
    for n in &loaded.notes {
        sink.err(&format!("ℹ️  {n}"));
    }
    for k in &loaded.invalid {
        sink.warn(&format!("⚠️  {}", loaded.warning(&settings_path, k)));
    }
    let blocked = loaded.error.as_ref().map(|e| e.message.clone());
    if let Some(e) = &loaded.error {
        sink.fail(&format!(
            "❌ {e} — using default settings; the file is left as it is and will not be written until fixed"
        ));
    }
    let store = SettingsStore::new(settings_path, blocked, &loaded.settings);
    old_flag_notes(cli, sink);

    let registry = if cli.simulate.is_some() {
        Registry::in_memory()
    } else {
        load_registry(&home.join(NODES_FILE), sink)
    };
    let mut app = App::new(loaded.settings, store, registry, home);
    // Thousands of nodes are probed in the background; a few, when shown.
    app.probe_in_background_if_large(sink);
    app.agents = crate::app::agents::AgentCache::load(env, sink);
    app.cfg.set_flags(|f| f.model = cli.model.clone());
    if app.cfg.settings().redis_logging_enabled {
        if let Err(e) = app.redis_start(sink).await {
            crate::app::render_error(&e, sink);
        }
    }
    if cli.distributed {
        app.cfg.set_flags(|f| f.mode = Some(Mode::Distributed));
    }

    if let Some(n) = cli.simulate {
        start_simulated(&mut app, n, sink).await;
        // A simulated cluster is there to be used as one: distributed for this run (not saved).
        app.cfg.set_flags(|f| {
            f.mode.get_or_insert(Mode::Distributed);
        });
    }
    if let Some(path) = &cli.load_config {
        let _ = app
            .run_line(&format!("load {}", path.display()), sink)
            .await;
    }
    for url in &cli.add_node {
        let _ = app.run_line(&format!("add {url}"), sink).await;
    }
    if cli.enable_distributed_inference || !cli.rpc_backend.is_empty() {
        apply_sharding_flags(&mut app, cli, sink).await;
    }
    for cidr in &cli.discover {
        let _ = app.run_line(&format!("discover {cidr}"), sink).await;
    }
    if app.mode() == Mode::Distributed && cli.discover.is_empty() && cli.simulate.is_none() {
        if env.auto_discover_off {
            sink.err("ℹ️  SOLLOL_AUTO_DISCOVER=false: start-up scan skipped");
        } else {
            let _ = app.run_line("discover", sink).await;
        }
    }
    app
}

/// The original's `--interactive` and `--workers`: accepted, with what they mean here.
fn old_flag_notes(cli: &Cli, sink: &mut dyn Sink) {
    if cli.interactive {
        sink.err("ℹ️  --interactive: accepted for old launch scripts; the shell is interactive whenever standard input is a terminal (with -i the one query still runs)");
    }
    if let Some(n) = cli.workers {
        sink.err(&format!(
            "ℹ️  --workers {n}: accepted for old launch scripts and ignored; requests are spread one per physical host (the host_capacity setting raises that)"
        ));
    }
}

fn load_registry(path: &Path, sink: &mut dyn Sink) -> Registry {
    match nodes_file::load(path) {
        Ok(None) => Registry::from_file(
            NodeStore {
                path: path.to_path_buf(),
                blocked: None,
            },
            Default::default(),
        ),
        Ok(Some((file, warnings))) => {
            for w in warnings {
                sink.warn(&format!("⚠️  {w}"));
            }
            Registry::from_file(
                NodeStore {
                    path: path.to_path_buf(),
                    blocked: None,
                },
                file,
            )
        }
        Err(e) => {
            sink.fail(&format!(
                "❌ {e} — no nodes loaded; the file is left as it is and will not be written until fixed"
            ));
            Registry::from_file(
                NodeStore {
                    path: path.to_path_buf(),
                    blocked: Some(e.message),
                },
                Default::default(),
            )
        }
    }
}

/// Start `n` simulated hosts on 127.0.0.1 and register them in memory.
pub(crate) async fn start_simulated(app: &mut App, n: usize, sink: &mut dyn Sink) {
    for i in 1..=n {
        match SimHost::start(
            format!("sim-{i}"),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &[0],
            SimConfig::demo(),
        )
        .await
        {
            Ok(h) => {
                let url = h.url();
                app.cluster.registry.add(
                    NodeEntry {
                        url,
                        name: format!("sim-{i}"),
                        priority: 0,
                        host_id: Some(format!("simulated-host-{i}")),
                        extra: Default::default(),
                    },
                    true,
                );
                app.cluster.simulated.push(h);
            }
            Err(e) => sink.fail(&format!(
                "❌ simulated host {i}: cannot listen on 127.0.0.1: {e}"
            )),
        }
    }
}

async fn apply_sharding_flags(app: &mut App, cli: &Cli, sink: &mut dyn Sink) {
    if cli.enable_distributed_inference {
        app.cfg.settings_mut().model_sharding_enabled = true;
    }
    // Every value was checked when the flags were parsed (a bad one exits 2).
    if !cli.rpc_backend.is_empty() {
        for b in &cli.rpc_backend {
            if let Some(w) = crate::sharding::backends::exposure_warning(b) {
                sink.warn(&w);
            }
        }
        sink.err(&format!(
            "🔗 Configured {} RPC backend(s) for distributed inference",
            cli.rpc_backend.len()
        ));
        app.cfg.settings_mut().rpc_backends = cli.rpc_backend.clone();
    }
    let mut touched = Vec::new();
    if cli.enable_distributed_inference {
        touched.push(Key::ModelShardingEnabled);
    }
    if !cli.rpc_backend.is_empty() {
        touched.push(Key::RpcBackends);
    }
    app.save_settings(&touched, sink).await;
}
