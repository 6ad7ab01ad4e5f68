//! Why the llama.cpp coordinator could not be used: each case names what to
//! fix (a path, a variable, the backends, the log to read).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ShardingError {
    #[error("SYNAPTICLLAMAS_LLAMA_SERVER={} is not a file", .0.display())]
    ServerNotAFile(PathBuf),
    #[error("llama-server not found: put it on PATH or set SYNAPTICLLAMAS_LLAMA_SERVER (scripts/install-llama-cpp.sh builds one)")]
    ServerNotFound,
    #[error("{}: cannot create the coordinator log: {source}", path.display())]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot start: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("llama-server exited ({status}) before it was ready; {log}")]
    Exited { status: String, log: String },
    #[error("llama-server was not ready after {secs}s; {log}")]
    NotReady { secs: u64, log: String },
    #[error("SOLLOL_MODEL_PATH={} is not a file", .0.display())]
    ModelNotAFile(PathBuf),
    #[error("no GGUF file for model `{model}`; set SOLLOL_MODEL_PATH, or pull it with Ollama. Looked at: {}", looked.join("; "))]
    NoGguf { model: String, looked: Vec<String> },
    #[error("no RPC backend is left: {} not answering", .0.join(", "))]
    NoBackends(Vec<String>),
    #[error(
        "the configured coordinator at {0} is not answering and no RPC backends are configured"
    )]
    CoordinatorDown(String),
    #[error(transparent)]
    Stopped(#[from] crate::blocking::Stopped),
}
