//! The llama.cpp `llama-server` coordinator: reuse a healthy one, else start one
//! (argv, never a shell) over the RPC backends, wait for `/health`, stop it at
//! exit only if this process started it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ShardingError;
use crate::config::env::Env;
use crate::ollama::{Client, ErrorKind, Timeouts};

pub(crate) use crate::config::settings::{
    COORDINATOR_HOST as DEFAULT_HOST, COORDINATOR_PORT as DEFAULT_PORT,
};
pub(crate) const CTX_SIZE: u32 = 8192;

/// PIDs of coordinators this process started, for a last-moment cleanup.
static OWNED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Stop every coordinator this process started (SIGTERM, then SIGKILL).
pub async fn kill_owned() {
    let pids: Vec<u32> = std::mem::take(&mut *OWNED.lock().unwrap_or_else(|e| e.into_inner()));
    for pid in &pids {
        // SAFETY: signalling a child this process spawned and still owns.
        unsafe { libc::kill(*pid as i32, libc::SIGTERM) };
    }
    if !pids.is_empty() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for pid in &pids {
            // SAFETY: as above; a process already gone makes this a no-op.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
    }
}

/// The llama-server binary: `SYNAPTICLLAMAS_LLAMA_SERVER`, else `llama-server` on PATH.
pub fn binary(env: &Env) -> Result<PathBuf, ShardingError> {
    if let Some(p) = &env.llama_server {
        return if p.is_file() {
            Ok(p.clone())
        } else {
            Err(ShardingError::ServerNotAFile(p.clone()))
        };
    }
    env.path
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("llama-server"))
        .find(|p| p.is_file())
        .ok_or(ShardingError::ServerNotFound)
}

/// The argument vector for llama-server (passed as argv: spaces and `;` in a path are harmless).
pub fn argv(
    model: &Path,
    host: &str,
    port: u16,
    backends: &[String],
    extra: &[String],
) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![
        "--model".into(),
        model.as_os_str().to_owned(),
        "--host".into(),
        host.into(),
        "--port".into(),
        port.to_string().into(),
    ];
    if !backends.is_empty() {
        v.push("--rpc".into());
        v.push(backends.join(",").into());
    }
    v.extend([
        "--ctx-size".into(),
        CTX_SIZE.to_string().into(),
        "-ngl".into(),
        "99".into(),
    ]);
    v.extend(extra.iter().map(OsString::from));
    v
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ready,
    Loading,
    /// It accepted the connection but did not answer in time: working, not down.
    Busy,
    Down,
}

pub async fn health(client: &Client, url: &str) -> Health {
    let t = Timeouts::new(
        Duration::from_millis(500),
        Duration::from_secs(2),
        Duration::from_secs(2),
    );
    match client
        .get_status_classified(&format!("{}/health", url.trim_end_matches('/')), t)
        .await
    {
        Ok(200) => Health::Ready,
        Ok(503) => Health::Loading,
        Err(e)
            if matches!(
                e.kind,
                ErrorKind::NoFirstToken { .. } | ErrorKind::Deadline { .. }
            ) =>
        {
            Health::Busy
        }
        _ => Health::Down,
    }
}

/// How many requests llama-server serves at once (`/props` → `total_slots`).
pub async fn slots(client: &Client, url: &str) -> Option<u32> {
    let props = client
        .get_value(url, "/props", Timeouts::PROBE)
        .await
        .ok()?;
    props
        .get("total_slots")
        .and_then(|v| v.as_u64())
        .map(|n| n.clamp(1, 256) as u32)
}

/// A coordinator in use.
pub struct Coordinator {
    pub url: String,
    /// Set when this process started it.
    pub child: Option<tokio::process::Child>,
    pub pid: Option<u32>,
    pub model_path: Option<PathBuf>,
    pub backends: Vec<String>,
    pub log_path: Option<PathBuf>,
}

impl Coordinator {
    pub fn found(url: String) -> Coordinator {
        Coordinator {
            url,
            child: None,
            pid: None,
            model_path: None,
            backends: Vec::new(),
            log_path: None,
        }
    }

    pub fn ours(&self) -> bool {
        self.child.is_some()
    }

    /// Start llama-server and wait until `/health` answers 200.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        client: &Client,
        binary: &Path,
        model: &Path,
        port: u16,
        backends: &[String],
        extra: &[String],
        log_path: &Path,
        wait: Duration,
        on_wait: &mut dyn FnMut(Duration),
    ) -> Result<Coordinator, ShardingError> {
        let log_error = |source| ShardingError::Log {
            path: log_path.to_path_buf(),
            source,
        };
        let log = tokio::fs::File::create(log_path)
            .await
            .map_err(log_error)?
            .into_std()
            .await;
        let log2 = log.try_clone().map_err(log_error)?;
        let mut cmd = tokio::process::Command::new(binary);
        cmd.args(argv(model, DEFAULT_HOST, port, backends, extra))
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| ShardingError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;
        let pid = child.id();
        if let Some(p) = pid {
            OWNED.lock().unwrap_or_else(|e| e.into_inner()).push(p);
        }
        let url = format!("http://{DEFAULT_HOST}:{port}");
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                forget(pid);
                return Err(ShardingError::Exited {
                    status: status.to_string(),
                    log: tail(log_path).await,
                });
            }
            if health(client, &url).await == Health::Ready {
                break;
            }
            if started.elapsed() > wait {
                let _ = child.kill().await;
                forget(pid);
                return Err(ShardingError::NotReady {
                    secs: wait.as_secs(),
                    log: tail(log_path).await,
                });
            }
            on_wait(started.elapsed());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(Coordinator {
            url,
            child: Some(child),
            pid,
            model_path: Some(model.to_path_buf()),
            backends: backends.to_vec(),
            log_path: Some(log_path.to_path_buf()),
        })
    }

    /// Stop it if this process started it; a coordinator found running is left alone.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                // SAFETY: our own child; SIGTERM lets llama-server close its RPC connections.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            if tokio::time::timeout(Duration::from_secs(3), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
            forget(self.pid);
        }
    }

    /// Whether our child process is still alive.
    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }
}

fn forget(pid: Option<u32>) {
    if let Some(p) = pid {
        OWNED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|x| *x != p);
    }
}

/// The last lines of a log, for an error message (only its last 64 KiB are
/// read: a server that logged for hours leaves a large file).
pub async fn tail(path: &Path) -> String {
    const LAST: u64 = 64 * 1024;
    let text = async {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut f = tokio::fs::File::open(path).await.ok()?;
        let len = f.metadata().await.ok()?.len();
        f.seek(std::io::SeekFrom::Start(len.saturating_sub(LAST)))
            .await
            .ok()?;
        let mut bytes = Vec::new();
        f.take(LAST).read_to_end(&mut bytes).await.ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }
    .await
    .unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = &lines[lines.len().saturating_sub(5)..];
    format!("last log lines ({}): {}", path.display(), last.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tail_reads_the_end_of_a_long_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let mut text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        text.push_str("\nerror: out of memory\n");
        std::fs::write(&log, text).unwrap();
        let t = tail(&log).await;
        assert!(
            t.ends_with("line 19997 | line 19998 | line 19999 | error: out of memory"),
            "{t}"
        );
        assert!(tail(&dir.path().join("none")).await.ends_with("): "));
    }

    #[test]
    fn argv_keeps_odd_paths_whole() {
        let a = argv(
            Path::new("/m/my model; rm -rf x.gguf"),
            "127.0.0.1",
            18080,
            &["127.0.0.1:50052".into(), "127.0.0.1:50053".into()],
            &["--threads".into(), "2".into()],
        );
        let s: Vec<String> = a.iter().map(|x| x.to_string_lossy().into_owned()).collect();
        assert_eq!(
            s[0..2],
            [
                "--model".to_string(),
                "/m/my model; rm -rf x.gguf".to_string()
            ]
        );
        assert!(s
            .windows(2)
            .any(|w| w == ["--rpc", "127.0.0.1:50052,127.0.0.1:50053"]));
        assert!(s.windows(2).any(|w| w == ["--ctx-size", "8192"]));
        assert!(s.windows(2).any(|w| w == ["-ngl", "99"]));
        assert_eq!(s[s.len() - 2..], ["--threads".to_string(), "2".to_string()]);
        let none = argv(Path::new("/m.gguf"), "127.0.0.1", 1, &[], &[]);
        assert!(!none.iter().any(|x| x == "--rpc"));
    }
}
