//! Saving the settings: only the keys this session changed, written over what
//! is on disk then, under the file's lock, atomically.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{kind_of, migrate_legacy, to_json, to_map, Key, Settings};
use crate::config::read::FileKind;
use crate::config::{json_error, read_text};

/// Where the settings live, whether they may be written, and what this session
/// has saved so far (to tell which keys it changed).
#[derive(Debug, Clone)]
pub struct SettingsStore {
    pub path: PathBuf,
    /// Why the file must not be written (it is not a JSON object), if so.
    pub blocked: Option<String>,
    /// The settings as loaded or last saved by this session.
    baseline: Map<String, Value>,
}

impl SettingsStore {
    pub fn new(path: PathBuf, blocked: Option<String>, loaded: &Settings) -> SettingsStore {
        SettingsStore {
            path,
            blocked,
            baseline: to_map(loaded),
        }
    }

    /// Save what this session changed: lock, re-read the file, apply only the
    /// keys whose values differ from what was loaded (plus `touched`, keys the
    /// user set even to the value they had), write atomically. Keys another
    /// session changed meanwhile, unknown keys and values this program could
    /// not use are left as they are on disk. Blocks the thread (start-up and
    /// tests); commands use [`SettingsStore::save_async`].
    pub fn save(&mut self, settings: &Settings, touched: &[Key]) -> anyhow::Result<()> {
        let change = self.change(settings, touched)?;
        let _lock = crate::config::lock::FileLock::acquire(&self.path)?;
        self.baseline = change.write()?;
        Ok(())
    }

    /// `save` from async code: the lock is waited for and the file written on
    /// the blocking pool. `waiting` is told when another program holds the
    /// lock; dropping the future then gives up the save (nothing is written).
    pub(crate) async fn save_async(
        &mut self,
        settings: &Settings,
        touched: &[Key],
        waiting: impl FnOnce(&Path),
    ) -> anyhow::Result<()> {
        let change = self.change(settings, touched)?;
        let path = &self.path;
        self.baseline =
            crate::config::lock::with_lock(path, || waiting(path), move || change.write()).await?;
        Ok(())
    }

    /// What a save is to write, or why the file must not be written.
    fn change(&self, settings: &Settings, touched: &[Key]) -> anyhow::Result<Change> {
        if let Some(why) = &self.blocked {
            anyhow::bail!(
                "{}: not saved, the file on disk could not be read ({why}); fix or remove it",
                self.path.display()
            );
        }
        Ok(Change {
            path: self.path.clone(),
            baseline: self.baseline.clone(),
            current: to_map(settings),
            touched: touched.iter().map(|k| k.name().to_string()).collect(),
            whole: to_json(settings),
        })
    }
}

/// One save of the settings, ready to run under the lock.
struct Change {
    path: PathBuf,
    /// The settings as loaded or last saved.
    baseline: Map<String, Value>,
    current: Map<String, Value>,
    touched: Vec<String>,
    /// Every setting, for a file that does not exist yet.
    whole: String,
}

impl Change {
    /// Re-read the file, apply the changed keys, write atomically; the new
    /// baseline. Runs holding the lock.
    fn write(self) -> anyhow::Result<Map<String, Value>> {
        let disk = match read_text(&self.path, FileKind::Settings).map(|t| t.map(|t| t.text)) {
            Ok(None) => None,
            Ok(Some(text)) if text.trim().is_empty() => None,
            Ok(Some(text)) => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(m)) => Some(m),
                Ok(other) => anyhow::bail!(
                    "{}: not saved, the file now holds {} (expected a JSON object of settings)",
                    self.path.display(),
                    kind_of(&other)
                ),
                Err(e) => anyhow::bail!("not saved: {}", json_error(&self.path, &text, &e)),
            },
            Err(e) => anyhow::bail!("not saved: {e}"),
        };
        let Some(mut map) = disk else {
            // No file yet (or an empty one): write every setting, as the original does.
            crate::config::atomic::write_atomic(&self.path, self.whole.as_bytes())?;
            return Ok(self.current);
        };
        migrate_legacy(&mut map);
        let current = self.current;
        let mut keys: Vec<&String> = current
            .iter()
            .filter(|(k, v)| self.baseline.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .collect();
        // Optional keys this session unset.
        let unset: Vec<&String> = self
            .baseline
            .keys()
            .filter(|k| !current.contains_key(*k))
            .collect();
        for t in &self.touched {
            if let Some((k, _)) = current.get_key_value(t) {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        for k in keys {
            map.insert(k.clone(), current[k].clone());
        }
        for k in unset {
            map.shift_remove(k);
        }
        let mut text = serde_json::to_string_pretty(&Value::Object(map))
            .expect("a JSON object always serializes");
        text.push('\n');
        crate::config::atomic::write_atomic(&self.path, text.as_bytes())?;
        Ok(current)
    }
}
