//! The two persistent files: settings (`~/.synapticllamas.json`) and the node
//! registry (`~/.synapticllamas_nodes.json`), in the Python original's shapes;
//! the environment the program reads (`env`) and the settings in force
//! (`effective`: settings, flags and environment resolved once).

pub mod atomic;
pub mod choices;
pub mod effective;
pub mod env;
pub mod lock;
pub mod nodes_file;
pub mod read;
pub mod settings;

use std::path::{Path, PathBuf};

pub(crate) const SETTINGS_FILE: &str = ".synapticllamas.json";
pub(crate) const NODES_FILE: &str = ".synapticllamas_nodes.json";
pub(crate) const HISTORY_FILE: &str = ".synapticllamas_history";

/// A path as typed: a leading `~` or `~/` means the home directory (`$HOME`).
pub(crate) fn expand_tilde(path: &str) -> PathBuf {
    let home = || {
        env::Env::process()
            .user_home
            .clone()
            .or_else(dirs::home_dir)
    };
    if path == "~" {
        if let Some(h) = home() {
            return h;
        }
    } else if let Some(rest) = path.strip_prefix("~/") {
        if let Some(h) = home() {
            return h.join(rest);
        }
    }
    PathBuf::from(path)
}

/// A problem with a file that only a person acts on: one line naming the file
/// and the place at fault (callers never decide by its kind).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    pub message: String,
}

impl FileError {
    pub fn new(path: &Path, message: impl Into<String>) -> FileError {
        FileError {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Describe a serde_json error with its line and column.
pub(crate) fn json_error(path: &Path, text: &str, err: &serde_json::Error) -> FileError {
    let message = if text.trim().is_empty() {
        "the file is empty (expected a JSON object)".to_string()
    } else {
        let what = match err.classify() {
            serde_json::error::Category::Eof => "unexpected end of file (truncated?)".to_string(),
            _ => {
                let s = err.to_string();
                // serde appends " at line L column C"; we put the position first.
                match s.rfind(" at line ") {
                    Some(i) => s[..i].to_string(),
                    None => s,
                }
            }
        };
        format!("line {}, column {}: {}", err.line(), err.column(), what)
    };
    FileError::new(path, message)
}

/// A file's text, and whether it started with a UTF-8 byte-order mark (which
/// is dropped: serde would reject it with a confusing message).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Text {
    pub text: String,
    pub bom: bool,
}

/// Read a file of `kind` as UTF-8 text (see [`read::read`]: a regular file,
/// within its size limit); `Ok(None)` when it does not exist.
pub(crate) fn read_text(path: &Path, kind: read::FileKind) -> Result<Option<Text>, FileError> {
    let Some(bytes) = read::read(path, kind)? else {
        return Ok(None);
    };
    let (bom, bytes) = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => (true, rest),
        None => (false, &bytes[..]),
    };
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(Some(Text {
            text: s.to_string(),
            bom,
        })),
        Err(e) => {
            let upto = &bytes[..e.valid_up_to()];
            let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
            let col = upto.len() - upto.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
            Err(FileError::new(
                path,
                format!("line {line}, column {col}: not valid UTF-8 text"),
            ))
        }
    }
}
