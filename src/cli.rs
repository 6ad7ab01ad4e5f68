//! Command-line flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ipnet::Ipv4Net;

use crate::config::settings::RpcBackendEntry;

#[derive(Debug, Parser)]
#[command(
    name = "synapticllamas",
    version,
    about = "An orchestrator shell for a LAN of Ollama nodes"
)]
pub struct Cli {
    /// Model the agents use (beats the saved setting for this run)
    #[arg(short, long, value_parser = model_name)]
    pub model: Option<String>,
    /// Start in distributed mode (scans the subnet for Ollama nodes)
    #[arg(short, long)]
    pub distributed: bool,
    /// Add an Ollama node at start-up (repeatable)
    #[arg(long = "add-node", value_name = "URL", value_parser = node_url)]
    pub add_node: Vec<String>,
    /// Scan this subnet for Ollama nodes at start-up (repeatable)
    #[arg(long, value_name = "CIDR", value_parser = subnet)]
    pub discover: Vec<Ipv4Net>,
    /// Merge the node list from FILE into the registry
    #[arg(long = "load-config", value_name = "FILE", value_parser = node_file)]
    pub load_config: Option<PathBuf>,
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
    #[arg(long = "rpc-backend", value_name = "HOST[:PORT]", value_parser = rpc_backend)]
    pub rpc_backend: Vec<RpcBackendEntry>,
    /// Start N simulated Ollama hosts on 127.0.0.1 and use them (nothing is saved)
    #[arg(long, value_name = "N", value_parser = simulated_hosts)]
    pub simulate: Option<usize>,
    /// No colour
    #[arg(long = "no-color")]
    pub no_color: bool,
    /// Piped input: stop at the first command that fails
    #[arg(long)]
    pub bail: bool,
    /// The original's flag, accepted for old launch scripts (see the note it prints)
    #[arg(long)]
    pub interactive: bool,
    /// The original's worker count, accepted for old launch scripts and ignored
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: Option<u32>,
    #[command(subcommand)]
    pub sub: Option<Sub>,
}

/// The most simulated hosts `--simulate` starts (each is a listener and a task).
pub(crate) const MAX_SIMULATED: usize = 64;

fn model_name(s: &str) -> Result<String, String> {
    s.parse::<crate::names::ModelName>()
        .map(String::from)
        .map_err(|e| e.to_string())
}

fn node_url(s: &str) -> Result<String, String> {
    crate::command::node_addr(s).map(|_| s.to_string())
}

fn subnet(s: &str) -> Result<Ipv4Net, String> {
    let net = crate::nodes::scan::parse_cidr(s).map_err(|e| e.to_string())?;
    crate::nodes::scan::hosts(&net).map_err(|e| e.to_string())?;
    Ok(net)
}

/// A node file that exists and reads as one (it is merged at start-up): a
/// regular file within a node file's size limit (`config::read`).
fn node_file(s: &str) -> Result<PathBuf, String> {
    let p = crate::config::expand_tilde(s);
    match crate::config::nodes_file::load(&p) {
        Ok(Some(_)) => Ok(p),
        Ok(None) => Err(format!("{}: no such file", p.display())),
        Err(e) => Err(e.to_string()),
    }
}

fn rpc_backend(s: &str) -> Result<RpcBackendEntry, String> {
    crate::sharding::backends::parse(s).map_err(|e| e.to_string())
}

/// A count or a number of seconds: a whole number, 1 or more.
fn at_least_one(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a whole number of at least 1")),
    }
}

fn simulated_hosts(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number"))?;
    if !(1..=MAX_SIMULATED).contains(&n) {
        return Err(format!(
            "simulate between 1 and {MAX_SIMULATED} hosts (each one is a listening socket)"
        ));
    }
    Ok(n)
}

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Serve one simulated Ollama host (for tests and the network lab)
    #[command(name = "sim-serve", hide = true)]
    SimServe(SimServe),
    /// Register this worker's llama.cpp rpc-server in Redis (SOLLOL's key) and
    /// keep the registration fresh until stopped (SIGTERM/Ctrl-C removes it)
    #[command(name = "rpc-register")]
    RpcRegister(RpcRegister),
    /// Serve the cluster as one Ollama- and OpenAI-compatible endpoint (headless:
    /// logs to stderr, drains requests in flight on SIGTERM/SIGINT)
    #[command(name = "serve")]
    Serve(Serve),
    /// Print a completion script for bash, zsh or fish on stdout, e.g.
    /// `synapticllamas completions bash > ~/.local/share/bash-completion/completions/synapticllamas`
    #[command(name = "completions")]
    Completions(Completions),
}

/// The shells `completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct Completions {
    /// The shell to complete in
    #[arg(value_name = "SHELL")]
    pub shell: CompletionShell,
}

impl Completions {
    /// The completion script, generated from this program's own flags.
    pub fn script(&self) -> Vec<u8> {
        use clap::CommandFactory;
        let shell = match self.shell {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
        };
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "synapticllamas", &mut out);
        out
    }
}

#[derive(Debug, Args)]
pub struct Serve {
    /// Address to listen on (default 127.0.0.1; any other needs --api-key or --no-auth)
    #[arg(long, value_name = "ADDR", value_parser = crate::command::bind_addr)]
    pub bind: Option<std::net::IpAddr>,
    /// Port to listen on (default 11434, Ollama's; 0 picks a free one)
    #[arg(long, value_name = "P")]
    pub port: Option<u16>,
    /// A key clients must send as `Authorization: Bearer KEY` (repeatable; also
    /// SYNAPTICLLAMAS_API_KEY, comma-separated); each key waits its turn in the queue
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_key: Vec<String>,
    /// Listen beyond this machine without an API key
    #[arg(long = "no-auth")]
    pub no_auth: bool,
    /// Requests that may wait for a free host before new ones get 503 (default 512)
    #[arg(long = "max-queue", value_name = "N", value_parser = at_least_one)]
    pub max_queue: Option<u64>,
    /// Largest request body in MB (default 64)
    #[arg(long = "max-body-mb", value_name = "MB", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_body_mb: Option<u64>,
    /// Longest a request may take, its wait in the queue included (default 1800)
    #[arg(long = "request-timeout", value_name = "SECS", value_parser = at_least_one)]
    pub request_timeout: Option<u64>,
    /// On SIGTERM/SIGINT, how long requests in flight get to finish (default 30)
    #[arg(long, value_name = "SECS")]
    pub drain: Option<u64>,
    /// Time a connection has to send a request's head, counted from when it
    /// connected or its previous reply ended (so idle keep-alive connections
    /// close after it too; default 30)
    #[arg(long = "header-timeout", value_name = "SECS", value_parser = at_least_one)]
    pub header_timeout: Option<u64>,
    /// Client connections open at once; beyond it new ones wait until one
    /// closes (default 1024)
    #[arg(long = "max-connections", value_name = "N", value_parser = at_least_one)]
    pub max_connections: Option<u64>,
    /// No line per request on stderr
    #[arg(long)]
    pub quiet: bool,
}

impl Serve {
    pub fn options(&self) -> crate::app::ServeOptions {
        crate::app::ServeOptions {
            bind: self.bind,
            port: self.port,
            api_keys: self.api_key.clone(),
            no_auth: self.no_auth,
            max_queue: self.max_queue.map(|n| n as usize),
            max_body_mb: self.max_body_mb.map(|n| n as usize),
            request_timeout_secs: self.request_timeout,
            drain_secs: self.drain,
            header_timeout_secs: self.header_timeout,
            max_connections: self.max_connections.map(|n| n as usize),
            quiet: self.quiet,
        }
    }
}

#[derive(Debug, Args)]
pub struct RpcRegister {
    /// The rpc-server's address as other machines reach it (port 50052 by default)
    #[arg(value_name = "HOST:PORT")]
    pub addr: String,
    /// Lifetime of the key in seconds (at least 1); it is refreshed every third of it
    #[arg(long, value_name = "SECS", default_value_t = crate::redis::registry::DEFAULT_TTL_SECS, value_parser = at_least_one)]
    pub ttl: u64,
    /// Memory offered for layers, in MB (default: the memory available now)
    #[arg(long = "ram-mb", value_name = "MB")]
    pub ram_mb: Option<u64>,
    /// VRAM of one GPU in MB, as cuda:0, cuda:1, … (repeatable)
    #[arg(long = "gpu-vram-mb", value_name = "MB")]
    pub gpu_vram_mb: Vec<u64>,
}

impl RpcRegister {
    /// The worker command's own options.
    pub fn options(&self) -> crate::redis::register::Options {
        crate::redis::register::Options {
            addr: self.addr.clone(),
            ttl_secs: self.ttl,
            ram_mb: self.ram_mb,
            gpu_vram_mb: self.gpu_vram_mb.clone(),
        }
    }
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
    /// The models' context window in tokens: reported by /api/show and /api/ps;
    /// a request that does not fit gets HTTP 400
    #[arg(long = "context-length", value_name = "TOKENS")]
    pub context_length: Option<u64>,
    /// Repeat each request's prompt before the reply's text
    #[arg(long = "echo-prompt")]
    pub echo_prompt: bool,
    /// Send JSON replies cut off before their end
    #[arg(long = "broken-json")]
    pub broken_json: bool,
    /// Answer a JSON Schema in `format` as if only "json" had been asked
    #[arg(long = "ignore-schema")]
    pub ignore_schema: bool,
    /// The release /api/version reports (below 0.5.0: no JSON Schema in `format`)
    #[arg(long = "ollama-version", value_name = "VERSION", default_value = crate::sim::config::SIM_VERSION)]
    pub ollama_version: String,
}

impl SimServe {
    /// The simulator's own options.
    pub fn options(&self) -> crate::sim::serve::Options {
        let mut config = crate::sim::SimConfig {
            tokens_per_sec: self.tps,
            ttft_ms: self.ttft_ms,
            reply_words: self.words,
            capacity: self.capacity,
            penalty: self.penalty,
            fault: self.fault,
            fault_after: self.fault_after,
            fault_every: self.fault_every,
            context_length: self.context_length,
            echo_prompt: self.echo_prompt,
            broken_json: self.broken_json,
            ignore_schema: self.ignore_schema,
            version: self.ollama_version.clone(),
            ..crate::sim::SimConfig::default()
        };
        if let Some(m) = &self.models {
            config.models = m
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        crate::sim::serve::Options {
            bind: self.bind,
            ports: self.ports.clone(),
            config,
        }
    }
}
