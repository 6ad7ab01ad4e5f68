//! `synapticllamas sim-serve`: one simulated host as its own process (the lab).

use super::{SimConfig, SimHost};
use crate::cli::SimServe;

pub async fn run(args: &SimServe) -> i32 {
    let mut cfg = SimConfig {
        tokens_per_sec: args.tps,
        ttft_ms: args.ttft_ms,
        reply_words: args.words,
        capacity: args.capacity,
        penalty: args.penalty,
        fault: args.fault,
        fault_after: args.fault_after,
        fault_every: args.fault_every,
        context_length: args.context_length,
        echo_prompt: args.echo_prompt,
        broken_json: args.broken_json,
        ignore_schema: args.ignore_schema,
        version: args.ollama_version.clone(),
        ..SimConfig::default()
    };
    if let Some(m) = &args.models {
        cfg.models = m
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
    }
    match SimHost::start(format!("sim-{}", args.bind), args.bind, &args.ports, cfg).await {
        Ok(h) => {
            eprintln!("simulated Ollama host listening on {}", h.urls().join(", "));
            // Serve until killed.
            std::future::pending::<()>().await;
            0
        }
        Err(e) => {
            eprintln!("❌ sim-serve: cannot listen on {}: {e}", args.bind);
            1
        }
    }
}
