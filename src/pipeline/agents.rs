//! Agents are data: one JSON file each (name, role, system prompt, required
//! reply fields, timeout, priority). Six are built in; a directory of JSON
//! files can override them (matched by file stem or name) or add new ones.

use super::repair::FieldType;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::path::Path;

/// Built-in agent files, by file stem.
const BUILTIN: &[(&str, &str)] = &[
    ("researcher", include_str!("../../agents/researcher.json")),
    ("critic", include_str!("../../agents/critic.json")),
    ("editor", include_str!("../../agents/editor.json")),
    ("storyteller", include_str!("../../agents/storyteller.json")),
    (
        "chunk_writer",
        include_str!("../../agents/chunk_writer.json"),
    ),
    (
        "quality_voter",
        include_str!("../../agents/quality_voter.json"),
    ),
];

/// One agent definition.
#[derive(Deserialize, Clone, Debug)]
pub struct Agent {
    pub name: String,
    pub role: String,
    pub system_prompt: String,
    /// Fields the reply object must carry, in file order.
    #[serde(deserialize_with = "field_list")]
    pub required_fields: Vec<(String, FieldType)>,
    pub timeout_secs: u64,
    pub priority: i32,
}

/// Reads `{"field": "type", ...}` into an ordered list.
fn field_list<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<(String, FieldType)>, D::Error> {
    let map = Map::<String, Value>::deserialize(de)?;
    map.into_iter()
        .map(|(name, ty)| {
            FieldType::deserialize(ty)
                .map(|t| (name.clone(), t))
                .map_err(|e| serde::de::Error::custom(format!("field \"{name}\": {e}")))
        })
        .collect()
}

/// The six built-in agents: Researcher, Critic, Editor, Storyteller,
/// ChunkWriter, QualityVoter.
pub fn builtin() -> Vec<Agent> {
    BUILTIN
        .iter()
        .map(|(stem, text)| {
            serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("built-in agent file {stem}.json is invalid: {e}"))
        })
        .collect()
}

/// Built-ins, overridden or extended by the `*.json` files in `dir`. A file
/// replaces the agent whose name (or built-in file stem) matches its file
/// stem or name, ignoring case, spaces, `_` and `-`; other files add agents. A missing directory is fine; an
/// unreadable or malformed file is an error naming the file.
pub fn load(dir: Option<&Path>) -> Result<Vec<Agent>, String> {
    let mut agents = builtin();
    let Some(dir) = dir else {
        return Ok(agents);
    };
    if !dir.exists() {
        return Ok(agents);
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .path();
        if path.is_file()
            && path
                .extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("json"))
        {
            paths.push(path);
        }
    }
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let agent: Agent =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let wanted = [key(stem), key(&agent.name)];
        let slot = agents.iter().enumerate().position(|(i, a)| {
            let builtin_stem = BUILTIN.get(i).map(|(s, _)| key(s));
            wanted
                .iter()
                .any(|w| *w == key(&a.name) || Some(w) == builtin_stem.as_ref())
        });
        match slot {
            Some(i) => agents[i] = agent,
            None => agents.push(agent),
        }
    }
    Ok(agents)
}

/// The agent called `name`, ignoring case, spaces, `_` and `-`.
pub fn find<'a>(agents: &'a [Agent], name: &str) -> Option<&'a Agent> {
    let wanted = key(name);
    agents.iter().find(|a| key(&a.name) == wanted)
}

/// Name used for matching: lower-case letters and digits only, so
/// `chunk_writer`, `Chunk Writer` and `ChunkWriter` are the same agent.
fn key(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A fresh, empty directory under the system temp dir.
    fn temp_dir(tag: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "pipeline-agents-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(agents: &[Agent]) -> Vec<&str> {
        agents.iter().map(|a| a.name.as_str()).collect()
    }

    fn fields(agent: &Agent) -> Vec<(&str, FieldType)> {
        agent
            .required_fields
            .iter()
            .map(|(n, t)| (n.as_str(), *t))
            .collect()
    }

    #[test]
    fn builtins_parse_with_schemas() {
        use FieldType::*;
        let agents = builtin();
        assert_eq!(
            names(&agents),
            [
                "Researcher",
                "Critic",
                "Editor",
                "Storyteller",
                "ChunkWriter",
                "QualityVoter"
            ]
        );
        type Expected = (&'static str, Vec<(&'static str, FieldType)>, u64, i32);
        let expect: [Expected; 6] = [
            (
                "Researcher",
                vec![
                    ("context", String),
                    ("key_facts", List),
                    ("topics", List),
                    ("sources", List),
                ],
                600,
                7,
            ),
            (
                "Critic",
                vec![
                    ("issues", List),
                    ("biases", List),
                    ("strengths", List),
                    ("recommendations", List),
                ],
                300,
                6,
            ),
            (
                "Editor",
                vec![
                    ("summary", String),
                    ("key_points", List),
                    ("detailed_explanation", String),
                    ("examples", List),
                    ("practical_applications", List),
                ],
                1200,
                5,
            ),
            ("Storyteller", vec![("story", String)], 300, 5),
            ("ChunkWriter", vec![("context", String)], 600, 5),
            (
                "QualityVoter",
                vec![("score", Number), ("reasoning", String), ("issues", List)],
                300,
                5,
            ),
        ];
        for (agent, (name, schema, timeout, priority)) in agents.iter().zip(expect) {
            assert_eq!(agent.name, name);
            assert_eq!(fields(agent), schema, "{name}");
            assert_eq!(
                (agent.timeout_secs, agent.priority),
                (timeout, priority),
                "{name}"
            );
            assert!(
                !agent.role.is_empty() && !agent.role.contains('\n'),
                "{name}"
            );
            // Every prompt names each required field and asks for bare JSON.
            for (field, _) in &agent.required_fields {
                assert!(
                    agent.system_prompt.contains(&format!("\"{field}\"")),
                    "{name}: {field}"
                );
            }
            assert!(agent.system_prompt.contains("ONE JSON object"), "{name}");
            assert!(agent.system_prompt.contains("no code fences"), "{name}");
        }
    }

    #[test]
    fn find_ignores_case_and_separators() {
        let agents = builtin();
        assert_eq!(find(&agents, "editor").unwrap().name, "Editor");
        assert_eq!(find(&agents, "chunk_writer").unwrap().name, "ChunkWriter");
        assert!(find(&agents, "nobody").is_none());
    }

    #[test]
    fn load_without_dir_gives_builtins() {
        assert_eq!(load(None).unwrap().len(), 6);
        let missing = std::env::temp_dir().join("pipeline-agents-definitely-missing-dir");
        assert_eq!(load(Some(&missing)).unwrap().len(), 6);
    }

    #[test]
    fn load_overrides_and_adds() {
        let dir = temp_dir("override");
        // Matched by file stem, although the name differs in case.
        std::fs::write(
            dir.join("EDITOR.json"),
            r#"{"name": "editor", "role": "r", "system_prompt": "custom",
                "required_fields": {"detailed_explanation": "string"},
                "timeout_secs": 60, "priority": 9}"#,
        )
        .unwrap();
        // Matched by name field.
        std::fs::write(
            dir.join("my_critic.json"),
            r#"{"name": "CRITIC", "role": "r", "system_prompt": "picky",
                "required_fields": {}, "timeout_secs": 5, "priority": 1}"#,
        )
        .unwrap();
        // A new agent.
        std::fs::write(
            dir.join("poet.json"),
            r#"{"name": "Poet", "role": "r", "system_prompt": "rhyme",
                "required_fields": {"poem": "string"}, "timeout_secs": 30, "priority": 4}"#,
        )
        .unwrap();
        std::fs::write(dir.join("notes.txt"), "not an agent").unwrap();
        let agents = load(Some(&dir)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(agents.len(), 7);
        let editor = &agents[2];
        assert_eq!(
            (editor.system_prompt.as_str(), editor.timeout_secs),
            ("custom", 60)
        );
        assert_eq!(
            fields(editor),
            [("detailed_explanation", FieldType::String)]
        );
        assert_eq!(agents[1].system_prompt, "picky");
        assert_eq!(find(&agents, "poet").unwrap().required_fields.len(), 1);
        assert_eq!(find(&agents, "Researcher").unwrap().priority, 7);
    }

    #[test]
    fn malformed_file_is_named() {
        let dir = temp_dir("malformed");
        let path = dir.join("critic.json");
        std::fs::write(&path, "{\n  \"name\": \"Critic\",\n  oops\n}").unwrap();
        let err = load(Some(&dir)).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("line 3 column 3"), "{err}");
    }

    #[test]
    fn bad_field_type_is_reported() {
        let dir = temp_dir("badtype");
        let path = dir.join("x.json");
        std::fs::write(
            &path,
            r#"{"name": "X", "role": "r", "system_prompt": "p",
                "required_fields": {"a": "blob"}, "timeout_secs": 1, "priority": 1}"#,
        )
        .unwrap();
        let err = load(Some(&dir)).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            err.contains("x.json") && err.contains("field \"a\""),
            "{err}"
        );
        assert!(err.contains("line "), "{err}");
    }
}
