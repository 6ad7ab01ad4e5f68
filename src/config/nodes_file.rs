//! `~/.synapticllamas_nodes.json`: `{"nodes": [{"url", "name", "priority"}]}`.
//! Unknown fields and entries this program cannot use are kept on rewrite.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::read::FileKind;
use super::settings::kind_of;
use super::{json_error, read_text, FileError};
use crate::names::{NameError, NodeName};
use crate::ollama::host;

/// One usable registry entry, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEntry {
    pub url: String,
    pub name: String,
    #[serde(default)]
    pub priority: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The whole file: usable entries, entries kept verbatim because they cannot be
/// used, and any other top-level keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFile {
    pub entries: Vec<NodeEntry>,
    /// Entries that could not be used, kept as they were (written back after the usable ones).
    pub unusable: Vec<Value>,
    pub extra: Map<String, Value>,
}

/// Parse the file's text. A fault in the whole shape is an error; a fault in one
/// entry is a warning (the entry is kept aside, the others load).
pub fn parse(path: &Path, text: &str) -> Result<(NodeFile, Vec<String>), FileError> {
    let value: Value = serde_json::from_str(text).map_err(|e| json_error(path, text, &e))?;
    let err = |message: String| FileError::new(path, message);
    let Value::Object(mut top) = value else {
        return Err(err(format!(
            "the top level is {} (expected an object with a \"nodes\" list)",
            kind_of(&value)
        )));
    };
    let nodes = match top.shift_remove("nodes") {
        None => return Err(err("no \"nodes\" list (is this a node file?)".into())),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(err(format!(
                "\"nodes\" is {} (expected a list)",
                kind_of(&other)
            )))
        }
    };
    let mut file = NodeFile {
        extra: top,
        ..Default::default()
    };
    let mut warnings = Vec::new();
    let mut urls = std::collections::HashSet::new();
    for (i, raw) in nodes.into_iter().enumerate() {
        match entry_from_value(&raw) {
            Ok(e) => {
                if !urls.insert(e.url.clone()) {
                    warnings.push(format!(
                        "{}: entry {} ({}) repeats an earlier URL; kept aside",
                        path.display(),
                        i + 1,
                        e.url
                    ));
                    file.unusable.push(raw);
                } else {
                    file.entries.push(e);
                }
            }
            Err(why) => {
                warnings.push(format!(
                    "{}: entry {}: {why}; kept in the file but not used",
                    path.display(),
                    i + 1
                ));
                file.unusable.push(raw);
            }
        }
    }
    Ok((file, warnings))
}

/// Why one entry of a node file cannot be used (it is kept in the file).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum EntryError {
    #[error("is {0} (expected an object)")]
    NotAnObject(&'static str),
    #[error("has no \"url\"")]
    NoUrl,
    #[error("\"{field}\" is {found} (expected {expected})")]
    WrongType {
        field: &'static str,
        found: &'static str,
        expected: &'static str,
    },
    #[error("bad \"url\": {0}")]
    Url(#[from] host::HostError),
    #[error("bad \"name\": {0}")]
    Name(#[from] NameError),
}

/// `field`'s value when it is a string (or absent / null).
fn optional_string(
    obj: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, EntryError> {
    match obj.shift_remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(EntryError::WrongType {
            field,
            found: kind_of(&v),
            expected: "a string",
        }),
    }
}

fn entry_from_value(raw: &Value) -> Result<NodeEntry, EntryError> {
    let Value::Object(obj) = raw else {
        return Err(EntryError::NotAnObject(kind_of(raw)));
    };
    let mut obj = obj.clone();
    if !obj.contains_key("url") {
        return Err(EntryError::NoUrl);
    }
    let url = optional_string(&mut obj, "url")?.ok_or(EntryError::WrongType {
        field: "url",
        found: "null",
        expected: "a string",
    })?;
    let spec = host::parse(&url)?;
    let name = match optional_string(&mut obj, "name")? {
        None => spec.default_name(),
        Some(s) => NodeName::try_from(s)?.into(),
    };
    let priority = match obj.shift_remove("priority") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_i64().ok_or(EntryError::WrongType {
            field: "priority",
            found: kind_of(&v),
            expected: "a whole number",
        })?,
    };
    let host_id = optional_string(&mut obj, "host_id")?;
    Ok(NodeEntry {
        // The original stored URLs as typed; we store the canonical form.
        url: spec.base_url(),
        name,
        priority,
        host_id,
        extra: obj,
    })
}

pub fn to_json(file: &NodeFile) -> String {
    let mut nodes: Vec<Value> = file
        .entries
        .iter()
        .map(|e| {
            serde_json::to_value(e).expect("an entry (strings, a number, JSON values) serializes")
        })
        .collect();
    nodes.extend(file.unusable.iter().cloned());
    let mut top = Map::new();
    top.insert("nodes".into(), Value::Array(nodes));
    for (k, v) in &file.extra {
        top.insert(k.clone(), v.clone());
    }
    let mut s =
        serde_json::to_string_pretty(&Value::Object(top)).expect("a JSON object always serializes");
    s.push('\n');
    s
}

/// Load a node file. `Ok(None)` when it does not exist.
pub fn load(path: &Path) -> Result<Option<(NodeFile, Vec<String>)>, FileError> {
    let Some(super::Text { text, bom }) = read_text(path, FileKind::Nodes)? else {
        return Ok(None);
    };
    let (file, mut warnings) = parse(path, &text)?;
    if bom {
        warnings.insert(
            0,
            format!(
                "{}: starts with a UTF-8 byte-order mark; read anyway",
                path.display()
            ),
        );
    }
    Ok(Some((file, warnings)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn p() -> PathBuf {
        PathBuf::from("/x/.synapticllamas_nodes.json")
    }

    #[test]
    fn original_shape_round_trips() {
        let text = r#"{"nodes":[{"url":"http://10.9.66.154:11434","name":"ollama-10-9-66-154","priority":0,"gpu":"yes"}]}"#;
        let (f, w) = parse(&p(), text).unwrap();
        assert!(w.is_empty());
        assert_eq!(f.entries[0].url, "http://10.9.66.154:11434");
        let back: Value = serde_json::from_str(&to_json(&f)).unwrap();
        assert_eq!(back["nodes"][0]["gpu"], "yes");
        assert_eq!(back["nodes"][0]["priority"], 0);
    }

    #[test]
    fn bad_entries_are_kept_aside() {
        let text = r#"{"nodes":[{"name":"x"},{"url":5},{"url":"10.1.1.1"}],"version":2}"#;
        let (f, w) = parse(&p(), text).unwrap();
        assert_eq!(f.entries.len(), 1);
        assert_eq!(f.unusable.len(), 2);
        assert_eq!(w.len(), 2);
        assert!(w[0].contains("entry 1") && w[0].contains("no \"url\""));
        assert!(w[1].contains("entry 2") && w[1].contains("a number"));
        let back: Value = serde_json::from_str(&to_json(&f)).unwrap();
        assert_eq!(back["nodes"].as_array().unwrap().len(), 3);
        assert_eq!(back["version"], 2);
    }

    #[test]
    fn rewrites_keep_the_order_of_unknown_keys() {
        let text =
            r#"{"nodes":[{"url":"http://h:1","name":"n","a":1,"b":2,"c":3}],"x":1,"y":2,"z":3}"#;
        let (f, _) = parse(&p(), text).unwrap();
        let once = to_json(&f);
        let (g, _) = parse(&p(), &once).unwrap();
        assert_eq!(to_json(&g), once, "a second rewrite changes nothing");
        let keys: Vec<String> = serde_json::from_str::<Value>(&once).unwrap()["nodes"][0]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["url", "name", "priority", "a", "b", "c"]);
        assert!(once.find("\"x\"").unwrap() < once.find("\"y\"").unwrap());
        assert!(once.find("\"y\"").unwrap() < once.find("\"z\"").unwrap());
    }

    #[test]
    fn names_go_through_the_one_validator() {
        let long = "n".repeat(201);
        let text = format!(
            r#"{{"nodes":[{{"url":"http://h:1","name":"bell\u0007"}},{{"url":"http://h:2","name":"{long}"}},{{"url":"http://h:3","name":"Kitchen box (GPU)"}}]}}"#
        );
        let (f, w) = parse(&p(), &text).unwrap();
        assert_eq!(f.entries.len(), 1);
        assert_eq!(f.entries[0].name, "Kitchen box (GPU)");
        assert_eq!(f.unusable.len(), 2, "kept aside, written back");
        assert!(
            w[0].contains("control characters") && !w[0].contains('\u{7}'),
            "{w:?}"
        );
        assert!(w[1].contains("201 characters"), "{w:?}");
    }

    #[test]
    fn wrong_shapes() {
        assert!(parse(&p(), "[]").unwrap_err().message.contains("an array"));
        assert!(parse(&p(), r#"{"nodes": {}}"#)
            .unwrap_err()
            .message
            .contains("expected a list"));
        let e = parse(&p(), "{\"nodes\": [\n").unwrap_err();
        assert!(e.message.contains("line 2"), "{}", e.message);
    }
}
