//! Agents are data: one JSON file each (name, role, system prompt, required
//! reply fields, and optionally a timeout and a priority). Six are built in; a
//! directory of JSON files can override them (matched by file stem or name) or
//! add new ones. The role is a description for people; it is not sent.

use super::schema::{self, Field};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::read::FileKind;
use crate::config::{read_text, FileError};
use crate::names::AgentName;
use crate::ollama::Timeouts;

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
    pub system_prompt: String,
    /// Fields the reply object must carry, in file order.
    #[serde(deserialize_with = "schema::field_list")]
    pub required_fields: Vec<Field>,
    /// This agent's own outer bound for a request, instead of the session's
    /// `timeout` (the built-in agents have none and follow `timeout`).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Among one query's tasks waiting for a host, a higher priority goes first.
    #[serde(default = "default_priority")]
    pub priority: i32,
}

fn default_priority() -> i32 {
    crate::scheduler::DEFAULT_PRIORITY
}

impl Agent {
    /// The limits of this agent's requests: the session's, with the agent's
    /// own outer bound when its file sets one.
    pub(crate) fn limits(&self, session: Timeouts) -> Timeouts {
        match self.timeout_secs {
            Some(secs) => Timeouts {
                total: Duration::from_secs(secs.max(1)),
                ..session
            },
            None => session,
        }
    }
}

/// The six built-in agents: Researcher, Critic, Editor, Storyteller,
/// ChunkWriter, QualityVoter.
pub fn builtin() -> Vec<Agent> {
    builtin_static().to_vec()
}

/// The built-in agents, parsed once (they are compiled in and checked by tests).
fn builtin_static() -> &'static [Agent] {
    static BUILT: std::sync::OnceLock<Vec<Agent>> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        BUILTIN
            .iter()
            .map(|(stem, text)| {
                serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("built-in agent file {stem}.json is invalid: {e}"))
            })
            .collect()
    })
}

/// The built-in agent for a role name (`Researcher`, `chunk_writer`, …). A name
/// that is no built-in role gets the Researcher, the general-purpose agent.
pub(crate) fn builtin_role(name: &str) -> &'static Agent {
    let all = builtin_static();
    find(all, name).unwrap_or(&all[0])
}

/// Agents as loaded: every built-in role is there (overridden or not), plus
/// added agents; `problems` has one line per file that was not used, `notes`
/// one per file used with a remark (a byte-order mark).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub agents: Vec<Agent>,
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

/// Why a file in the agents directory was not used; told once every file is
/// read, so each line says which definition is in use in the end.
enum Unused {
    /// It cannot be read or is not an agent; `slot` is the built-in agent its
    /// file name is after, if any.
    Broken {
        why: FileError,
        slot: Option<String>,
    },
    /// Named after the built-in `slot`, it defines another agent.
    Misnamed {
        path: PathBuf,
        names: String,
        slot: String,
    },
    /// A file later in name order defines the same agent.
    Shadowed {
        path: PathBuf,
        agent: String,
        by: PathBuf,
    },
}

/// Built-ins, overridden or extended by the `*.json` files in `dir`, read in
/// name order. A file whose `name` is a known agent's (ignoring case, spaces,
/// `_` and `-`) replaces it (of two such files, the later in name order); a
/// file named after a built-in (`researcher.json`) must name that agent and is
/// otherwise ignored (it replaces no agent); other files add agents. A missing
/// directory is fine; a file that cannot be read or used is reported in one
/// line naming it and saying which definition is used instead.
pub fn load(dir: Option<&Path>) -> Loaded {
    let mut out = Loaded {
        agents: builtin(),
        problems: Vec::new(),
        notes: Vec::new(),
    };
    let Some(dir) = dir else {
        return out;
    };
    if !dir.exists() {
        return out;
    }
    let mut paths = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let path = entry.path();
                // Not only regular files: a FIFO or a directory named `*.json`
                // is reported by the reader, not passed over in silence.
                if path
                    .extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("json"))
                {
                    paths.push(path);
                }
            }
        }
        Err(e) => {
            out.problems.push(format!(
                "{}: cannot read the directory: {e}; the built-in agents are used",
                dir.display()
            ));
            return out;
        }
    }
    paths.sort();
    // Where each agent's definition comes from (None: built in), by index.
    let mut from: Vec<Option<PathBuf>> = vec![None; out.agents.len()];
    let mut unused = Vec::new();
    for path in paths {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let slot = BUILTIN
            .iter()
            .position(|(s, _)| key(s) == key(stem))
            .map(|i| builtin_static()[i].name.clone());
        let (agent, bom) = match read_agent(&path) {
            Ok(a) => a,
            Err(why) => {
                unused.push(Unused::Broken { why, slot });
                continue;
            }
        };
        if let Some(slot) = slot.filter(|s| key(s) != key(&agent.name)) {
            unused.push(Unused::Misnamed {
                path,
                names: agent.name,
                slot,
            });
            continue;
        }
        if bom {
            out.notes.push(format!(
                "{}: starts with a UTF-8 byte-order mark; read anyway",
                path.display()
            ));
        }
        match out
            .agents
            .iter()
            .position(|a| key(&a.name) == key(&agent.name))
        {
            Some(i) => {
                if let Some(earlier) = from[i].take() {
                    unused.push(Unused::Shadowed {
                        path: earlier,
                        agent: out.agents[i].name.clone(),
                        by: path.clone(),
                    });
                }
                out.agents[i] = agent;
                from[i] = Some(path);
            }
            None => {
                out.agents.push(agent);
                from.push(Some(path));
            }
        }
    }
    // Which definition of `name` is in use, in words.
    let in_use = |name: &str| -> String {
        match out.agents.iter().position(|a| key(&a.name) == key(name)) {
            Some(i) => match &from[i] {
                None => format!("the built-in {} is used", out.agents[i].name),
                Some(p) => format!("the {} from {} is used", out.agents[i].name, p.display()),
            },
            None => format!("no agent {name} is defined"),
        }
    };
    let problems: Vec<String> = unused
        .iter()
        .map(|u| match u {
            Unused::Broken { why, slot: None } => format!("{why}; ignored"),
            Unused::Broken {
                why,
                slot: Some(slot),
            } => format!("{why}; ignored; {}", in_use(slot)),
            Unused::Misnamed { path, names, slot } => {
                let other = find(&out.agents, names).map(|a| a.name.clone());
                let (also, rename) = match &other {
                    Some(o) => (
                        format!(" ({} is not changed by this file: {})", o, in_use(o)),
                        format!("rename the file to override the {o}"),
                    ),
                    None => (String::new(), "rename the file to add a new agent".into()),
                };
                format!(
                    "{}: names its agent `{}`, but this file name overrides the built-in {slot}; ignored; {}{also} (set \"name\": \"{slot}\" to override the {slot}, or {rename})",
                    path.display(),
                    names.escape_debug(),
                    in_use(slot),
                )
            }
            Unused::Shadowed { path, agent, by } => format!(
                "{}: defines the {agent}, as {} (later in name order) does; ignored; {}",
                path.display(),
                by.display(),
                in_use(agent)
            ),
        })
        .collect();
    out.problems = problems;
    out
}

/// One agent file and whether it began with a byte-order mark (dropped), or
/// what is wrong with it (one line naming the file). Only a regular file of
/// an agent file's size is read (`config::read`).
fn read_agent(path: &Path) -> Result<(Agent, bool), FileError> {
    let fault = |message: String| FileError::new(path, message);
    let text = read_text(path, FileKind::Agent)?
        .ok_or_else(|| fault("cannot read: no such file".into()))?;
    let agent: Agent = serde_json::from_str(&text.text).map_err(|e| fault(e.to_string()))?;
    agent
        .name
        .parse::<AgentName>()
        .map_err(|e| fault(e.to_string()))?;
    Ok((agent, text.bom))
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
    use crate::pipeline::schema::FieldType;

    /// A fresh, empty directory, removed when the test ends.
    fn temp_dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("a temporary directory")
    }

    fn names(agents: &[Agent]) -> Vec<&str> {
        agents.iter().map(|a| a.name.as_str()).collect()
    }

    fn fields(agent: &Agent) -> Vec<(&str, FieldType)> {
        agent
            .required_fields
            .iter()
            .map(|f| (f.name.as_str(), f.kind))
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
        type Expected = (
            &'static str,
            Vec<(&'static str, FieldType)>,
            Option<u64>,
            i32,
        );
        let expect: [Expected; 6] = [
            (
                "Researcher",
                vec![
                    ("context", String),
                    ("key_facts", List),
                    ("topics", List),
                    ("sources", List),
                ],
                None,
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
                None,
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
                None,
                5,
            ),
            ("Storyteller", vec![("story", String)], None, 5),
            ("ChunkWriter", vec![("context", String)], None, 5),
            (
                "QualityVoter",
                vec![("score", Number), ("reasoning", String), ("issues", List)],
                None,
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
            // Every prompt names each required field and asks for bare JSON.
            for Field { name: field, .. } in &agent.required_fields {
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
    fn builtin_fields_say_which_lists_may_be_empty_and_the_scores_range() {
        let agents = builtin();
        let field = |agent: &str, name: &str| {
            find(&agents, agent)
                .unwrap()
                .required_fields
                .iter()
                .find(|f| f.name == name)
                .unwrap()
                .clone()
        };
        assert_eq!(field("Researcher", "key_facts").min_items, 1);
        assert_eq!(field("Researcher", "sources").min_items, 0);
        assert_eq!(field("Editor", "examples").min_items, 1);
        for list in ["issues", "biases", "strengths", "recommendations"] {
            assert_eq!(field("Critic", list).min_items, 0, "{list}");
        }
        assert_eq!(field("QualityVoter", "issues").min_items, 0);
        let score = field("QualityVoter", "score");
        assert_eq!((score.minimum, score.maximum), (Some(0.0), Some(1.0)));
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
        assert_eq!(load(None).agents.len(), 6);
        let dir = temp_dir();
        let missing = dir.path().join("missing");
        assert_eq!(load(Some(&missing)).agents.len(), 6);
    }

    #[test]
    fn load_overrides_and_adds() {
        let tmp = temp_dir();
        let dir = tmp.path().to_path_buf();
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
        let loaded = load(Some(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        let agents = loaded.agents;

        assert_eq!(agents.len(), 7);
        let editor = &agents[2];
        assert_eq!(
            (editor.system_prompt.as_str(), editor.timeout_secs),
            ("custom", Some(60))
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
    fn malformed_file_is_named_and_the_builtin_kept() {
        let tmp = temp_dir();
        let dir = tmp.path().to_path_buf();
        let path = dir.join("critic.json");
        std::fs::write(&path, "{\n  \"name\": \"Critic\",\n  oops\n}").unwrap();
        let loaded = load(Some(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
        let [p] = loaded.problems.as_slice() else {
            panic!("{:?}", loaded.problems)
        };
        assert!(p.contains(&path.display().to_string()), "{p}");
        assert!(p.contains("line 3 column 3"), "{p}");
        assert!(p.contains("the built-in Critic is used"), "{p}");
        assert_eq!(find(&loaded.agents, "critic").unwrap().priority, 6);
    }

    #[test]
    fn bad_field_type_is_reported() {
        let tmp = temp_dir();
        let dir = tmp.path().to_path_buf();
        let path = dir.join("x.json");
        std::fs::write(
            &path,
            r#"{"name": "X", "role": "r", "system_prompt": "p",
                "required_fields": {"a": "blob"}, "timeout_secs": 1, "priority": 1}"#,
        )
        .unwrap();
        let loaded = load(Some(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
        let p = &loaded.problems[0];
        assert!(p.contains("x.json") && p.contains("field \"a\""), "{p}");
        assert!(p.contains("line "), "{p}");
        assert_eq!(loaded.agents.len(), 6);
    }

    /// A valid agent file's text.
    fn agent_json(name: &str, priority: i32) -> String {
        format!(
            r#"{{"name": "{name}", "role": "r", "system_prompt": "p",
                "required_fields": {{}}, "timeout_secs": 1, "priority": {priority}}}"#
        )
    }

    #[test]
    fn a_file_named_after_one_agent_that_names_another_replaces_neither() {
        let tmp = temp_dir();
        let dir = tmp.path();
        let wrong = dir.join("Researcher.json");
        std::fs::write(&wrong, agent_json("Critic", 1)).unwrap();
        let broken = dir.join("critic.json");
        std::fs::write(&broken, "{ oops").unwrap();
        let loaded = load(Some(dir));
        assert_eq!(
            find(&loaded.agents, "Critic").unwrap().priority,
            6,
            "built in"
        );
        assert_eq!(find(&loaded.agents, "Researcher").unwrap().priority, 7);
        assert_eq!(loaded.problems.len(), 2, "{:?}", loaded.problems);
        let about = |p: &Path| {
            let p = p.display().to_string();
            loaded
                .problems
                .iter()
                .find(|l| l.contains(&p))
                .unwrap()
                .clone()
        };
        let w = about(&wrong);
        assert!(w.contains("names its agent `Critic`"), "{w}");
        assert!(w.contains("the built-in Researcher is used"), "{w}");
        assert!(w.contains("the built-in Critic is used"), "{w}");
        assert!(about(&broken).contains("ignored; the built-in Critic is used"));
    }

    #[test]
    fn each_warning_names_the_definition_in_use() {
        let tmp = temp_dir();
        let dir = tmp.path();
        // critic.json is broken, but another file defines the Critic.
        let broken = dir.join("critic.json");
        std::fs::write(&broken, "[]").unwrap();
        let mine = dir.join("my_critic.json");
        std::fs::write(&mine, agent_json("Critic", 2)).unwrap();
        // Two files define the Poet: the later in name order wins.
        let (a, b) = (dir.join("a_poet.json"), dir.join("b_poet.json"));
        std::fs::write(&a, agent_json("Poet", 3)).unwrap();
        std::fs::write(&b, agent_json("Poet", 4)).unwrap();
        let loaded = load(Some(dir));
        assert_eq!(find(&loaded.agents, "Critic").unwrap().priority, 2);
        assert_eq!(find(&loaded.agents, "Poet").unwrap().priority, 4);
        let [p1, p2] = loaded.problems.as_slice() else {
            panic!("{:?}", loaded.problems)
        };
        let (shadowed, broken_line) = if p1.contains("a_poet") {
            (p1, p2)
        } else {
            (p2, p1)
        };
        assert!(
            broken_line.contains(&format!("the Critic from {} is used", mine.display())),
            "{broken_line}"
        );
        assert!(
            shadowed.contains(&format!("the Poet from {} is used", b.display())),
            "{shadowed}"
        );
    }

    #[test]
    fn a_byte_order_mark_is_read_with_a_note() {
        let tmp = temp_dir();
        let path = tmp.path().join("critic.json");
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend_from_slice(agent_json("Critic", 2).as_bytes());
        std::fs::write(&path, bytes).unwrap();
        let loaded = load(Some(tmp.path()));
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        assert_eq!(find(&loaded.agents, "Critic").unwrap().priority, 2);
        assert!(
            loaded.notes[0].contains("byte-order mark"),
            "{:?}",
            loaded.notes
        );
    }

    #[test]
    fn an_override_that_renames_its_role_is_refused() {
        let tmp = temp_dir();
        let dir = tmp.path().to_path_buf();
        let path = dir.join("researcher.json");
        std::fs::write(
            &path,
            r#"{"name": "Investigator", "role": "r", "system_prompt": "p",
                "required_fields": {}, "timeout_secs": 1, "priority": 1}"#,
        )
        .unwrap();
        let loaded = load(Some(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(loaded.problems.len(), 1, "{:?}", loaded.problems);
        assert!(loaded.problems[0].contains("Investigator"));
        assert_eq!(find(&loaded.agents, "Researcher").unwrap().priority, 7);
        assert!(find(&loaded.agents, "Investigator").is_none());
        for (stem, _) in BUILTIN {
            assert!(find(&loaded.agents, stem).is_some(), "{stem}");
        }
    }
}
