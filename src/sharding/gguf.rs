//! Finding a model's GGUF file: `SOLLOL_MODEL_PATH`, else Ollama's model store
//! (manifest → the layer of media type `application/vnd.ollama.image.model` →
//! `blobs/sha256-DIGEST`).

use std::path::{Path, PathBuf};

use super::ShardingError;
use crate::config::env::Env;
use crate::config::read::FileKind;
use crate::config::read_text;

pub(crate) const MODEL_MEDIA_TYPE: &str = "application/vnd.ollama.image.model";

/// The model stores to look in, in order (`OLLAMA_MODELS` first).
pub(crate) fn stores(env: &Env) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = &env.ollama_models {
        v.push(p.clone());
    }
    if let Some(h) = dirs::home_dir() {
        v.push(h.join(".ollama").join("models"));
    }
    v.push(PathBuf::from("/usr/share/ollama/.ollama/models"));
    v
}

/// `llama3.2` → (registry.ollama.ai, library, llama3.2, latest);
/// `user/model:tag` and `host/ns/model:tag` are understood too.
pub(crate) fn manifest_path(store: &Path, model: &str) -> PathBuf {
    let (name, tag) = match model.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (model, "latest"),
    };
    let parts: Vec<&str> = name.split('/').collect();
    let (host, ns, repo) = match parts.as_slice() {
        [repo] => ("registry.ollama.ai", "library", *repo),
        [ns, repo] => ("registry.ollama.ai", *ns, *repo),
        [host, ns, repo, ..] => (*host, *ns, *repo),
        [] => ("registry.ollama.ai", "library", ""),
    };
    store
        .join("manifests")
        .join(host)
        .join(ns)
        .join(repo)
        .join(tag)
}

/// Resolve `model` to a GGUF file; the error names every place looked at.
pub fn resolve(model: &str, env: &Env) -> Result<PathBuf, ShardingError> {
    if let Some(p) = &env.model_path {
        return if p.is_file() {
            Ok(p.clone())
        } else {
            Err(ShardingError::ModelNotAFile(p.clone()))
        };
    }
    resolve_in(&stores(env), model)
}

pub(crate) fn resolve_in(stores: &[PathBuf], model: &str) -> Result<PathBuf, ShardingError> {
    let mut looked = Vec::new();
    for store in stores {
        let manifest = manifest_path(store, model);
        let text = match read_text(&manifest, FileKind::Manifest) {
            Ok(Some(t)) => t.text,
            Ok(None) => {
                looked.push(format!("{} (no manifest)", manifest.display()));
                continue;
            }
            Err(e) => {
                looked.push(format!("{} ({})", manifest.display(), e.message));
                continue;
            }
        };
        let v: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                looked.push(format!("{} (not JSON: {e})", manifest.display()));
                continue;
            }
        };
        let digest = v["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["mediaType"] == MODEL_MEDIA_TYPE)
            .and_then(|l| l["digest"].as_str());
        let Some(digest) = digest else {
            looked.push(format!(
                "{} (no layer of type {MODEL_MEDIA_TYPE})",
                manifest.display()
            ));
            continue;
        };
        let blob = store.join("blobs").join(digest.replacen(':', "-", 1));
        if blob.is_file() {
            return Ok(blob);
        }
        looked.push(format!("{} (missing)", blob.display()));
    }
    Err(ShardingError::NoGguf {
        model: model.to_string(),
        looked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(model_path: &str, digest: &str, media: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let m = manifest_path(d.path(), model_path);
        std::fs::create_dir_all(m.parent().unwrap()).unwrap();
        let manifest = serde_json::json!({"schemaVersion": 2, "layers": [
            {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:aaa", "size": 10},
            {"mediaType": media, "digest": digest, "size": 100}
        ]});
        std::fs::write(&m, manifest.to_string()).unwrap();
        std::fs::create_dir_all(d.path().join("blobs")).unwrap();
        std::fs::write(
            d.path().join("blobs").join(digest.replace(':', "-")),
            b"GGUF",
        )
        .unwrap();
        d
    }

    #[test]
    fn resolves_through_the_manifest() {
        let d = store_with("codellama:13b", "sha256:beef", MODEL_MEDIA_TYPE);
        let p = resolve_in(&[d.path().to_path_buf()], "codellama:13b").unwrap();
        assert_eq!(p, d.path().join("blobs").join("sha256-beef"));
        let e = resolve_in(&[d.path().to_path_buf()], "llama3.2").unwrap_err();
        assert!(
            e.to_string()
                .contains("library/llama3.2/latest (no manifest)"),
            "{e}"
        );
    }

    #[test]
    fn names_and_tags() {
        let s = Path::new("/s");
        assert_eq!(
            manifest_path(s, "llama3.2"),
            Path::new("/s/manifests/registry.ollama.ai/library/llama3.2/latest")
        );
        assert_eq!(
            manifest_path(s, "me/tiny:q4"),
            Path::new("/s/manifests/registry.ollama.ai/me/tiny/q4")
        );
        assert_eq!(
            manifest_path(s, "hf.co/org/m:Q4_K_M"),
            Path::new("/s/manifests/hf.co/org/m/Q4_K_M")
        );
    }

    #[test]
    fn a_manifest_without_a_model_layer_is_reported() {
        let d = store_with("x", "sha256:1", "application/vnd.ollama.image.license");
        let e = resolve_in(&[d.path().to_path_buf()], "x").unwrap_err();
        assert!(e.to_string().contains("no layer of type"), "{e}");
    }
}
