//! Command-line flags.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "synapticllamas",
    version,
    about = "An orchestrator shell for a LAN of Ollama nodes"
)]
pub struct Cli {
    /// Model the agents use (beats the saved setting for this run)
    #[arg(short, long)]
    pub model: Option<String>,
    /// Start in distributed mode (scans the subnet for Ollama nodes)
    #[arg(short, long)]
    pub distributed: bool,
    /// Add an Ollama node at start-up (repeatable)
    #[arg(long = "add-node", value_name = "URL")]
    pub add_node: Vec<String>,
    /// Scan this subnet for Ollama nodes at start-up (repeatable)
    #[arg(long, value_name = "CIDR")]
    pub discover: Vec<String>,
    /// Load the node list from FILE
    #[arg(long = "load-config", value_name = "FILE")]
    pub load_config: Option<String>,
    /// Run one query, print the result as JSON, exit
    #[arg(short, long, value_name = "TEXT")]
    pub input: Option<String>,
    /// With --input: kept for compatibility (the JSON always carries the metrics)
    #[arg(long)]
    pub metrics: bool,
    /// Turn model sharding on (saved)
    #[arg(long = "enable-distributed-inference")]
    pub enable_distributed_inference: bool,
    /// RPC backend HOST[:PORT] for model sharding (repeatable; saved)
    #[arg(long = "rpc-backend", value_name = "HOST[:PORT]")]
    pub rpc_backend: Vec<String>,
    /// Start N simulated Ollama hosts on 127.0.0.1 and use them (nothing is saved)
    #[arg(long, value_name = "N")]
    pub simulate: Option<usize>,
    /// No colour
    #[arg(long = "no-color")]
    pub no_color: bool,
    /// Piped input: stop at the first command that fails
    #[arg(long)]
    pub bail: bool,
    #[command(subcommand)]
    pub sub: Option<Sub>,
}

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Serve one simulated Ollama host (for tests and the network lab)
    #[command(name = "sim-serve", hide = true)]
    SimServe(SimServe),
}

#[derive(Debug, Args)]
pub struct SimServe {
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Port to listen on (repeatable: one host, several Ollama instances)
    #[arg(long = "port", default_values_t = [11434u16])]
    pub ports: Vec<u16>,
    #[arg(long, default_value_t = 0.0)]
    pub tps: f64,
    #[arg(long = "ttft-ms", default_value_t = 0)]
    pub ttft_ms: u64,
    #[arg(long, default_value_t = 120)]
    pub words: usize,
    #[arg(long, default_value_t = 1)]
    pub capacity: u32,
    #[arg(long, default_value_t = 1.5)]
    pub penalty: f64,
    #[arg(long, default_value = "none")]
    pub fault: crate::sim::Fault,
    #[arg(long = "fault-after", default_value_t = 0)]
    pub fault_after: u64,
    /// Of the requests after --fault-after, fault every n-th one only
    #[arg(long = "fault-every", default_value_t = 0)]
    pub fault_every: u64,
    /// Comma-separated model names
    #[arg(long)]
    pub models: Option<String>,
}
