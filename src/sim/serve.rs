//! `synapticllamas sim-serve`: one simulated host as its own process (the lab).

use std::net::IpAddr;

use super::{SimConfig, SimHost};

/// Where the host listens and how it behaves (the command line's flags).
#[derive(Debug, Clone)]
pub struct Options {
    pub bind: IpAddr,
    /// One Ollama instance per port, all on the same simulated host.
    pub ports: Vec<u16>,
    pub config: SimConfig,
}

pub async fn run(opts: Options) -> i32 {
    let Options {
        bind,
        ports,
        config,
    } = opts;
    match SimHost::start(format!("sim-{bind}"), bind, &ports, config).await {
        Ok(h) => {
            eprintln!("simulated Ollama host listening on {}", h.urls().join(", "));
            // Serve until killed.
            std::future::pending::<()>().await;
            0
        }
        Err(e) => {
            eprintln!("❌ sim-serve: cannot listen on {bind}: {e}");
            1
        }
    }
}
