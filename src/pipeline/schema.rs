//! The shape of every JSON reply the pipeline asks for, and that shape as a
//! JSON Schema. An agent file's `required_fields` (`{"field": "string|list|
//! number|object"}`, or `{"field": {"type": "list", "min_items": 0}}`) and the
//! pipeline's own shapes (a synthesis' one text field, below) are lists of
//! [`Field`]s; [`object`] turns one into the schema a request carries, so the
//! server constrains the model's output to it (Ollama's `format` object since
//! 0.5.0, llama-server's `response_format` of type `json_schema`).
//!
//! A reply field is text, a list of texts, a number or a free object. The
//! schema asks for what the pipeline can use: every field present and nothing
//! else (`required`, `additionalProperties: false`), text that is not empty
//! (`minLength: 1`), lists with at least `min_items` entries (1 unless the
//! agent says an empty list is a fair answer), numbers in their range.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Map, Value};

/// Type a reply field must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    #[serde(alias = "str")]
    String,
    #[serde(alias = "array")]
    List,
    #[serde(alias = "dict")]
    Object,
    #[serde(alias = "float", alias = "int", alias = "integer")]
    Number,
}

impl FieldType {
    /// Lower-case name, as written in agent files.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::List => "list",
            FieldType::Object => "object",
            FieldType::Number => "number",
        }
    }

    /// Whether `value` has this type.
    pub fn matches(self, value: &Value) -> bool {
        match self {
            FieldType::String => value.is_string(),
            FieldType::List => value.is_array(),
            FieldType::Object => value.is_object(),
            FieldType::Number => value.is_number(),
        }
    }
}

/// One field of a reply object.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: String,
    pub kind: FieldType,
    /// A list's fewest entries (1 by default: an empty list is no answer).
    pub min_items: u64,
    /// A list's most entries, where it has a limit (the pipeline's shapes).
    pub max_items: Option<u64>,
    /// A list of objects with these fields, instead of a list of texts (the
    /// pipeline's shapes; agent files have lists of texts).
    pub items: Option<Vec<Field>>,
    /// A text's fewest and most characters (at least 1: empty is no answer).
    pub min_length: u64,
    pub max_length: Option<u64>,
    /// A number's range, where it has one.
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
}

impl Field {
    /// A field of type `kind` with the default rules.
    pub fn new(name: impl Into<String>, kind: FieldType) -> Field {
        Field {
            name: name.into(),
            kind,
            min_items: u64::from(kind == FieldType::List),
            max_items: None,
            items: None,
            min_length: 1,
            max_length: None,
            minimum: None,
            maximum: None,
        }
    }

    /// One text field.
    pub fn text(name: impl Into<String>) -> Field {
        Field::new(name, FieldType::String)
    }

    /// This field's schema.
    pub fn schema(&self) -> Value {
        match self.kind {
            FieldType::String => {
                let mut s = json!({"type": "string", "minLength": self.min_length.max(1)});
                if let Some(n) = self.max_length {
                    s["maxLength"] = n.into();
                }
                s
            }
            FieldType::List => {
                let items = match &self.items {
                    Some(fields) => object(fields),
                    None => json!({"type": "string", "minLength": 1}),
                };
                let mut s = json!({"type": "array", "items": items});
                if self.min_items > 0 {
                    s["minItems"] = self.min_items.into();
                }
                if let Some(n) = self.max_items {
                    s["maxItems"] = n.into();
                }
                s
            }
            FieldType::Object => json!({"type": "object"}),
            FieldType::Number => {
                let mut s = json!({"type": "number"});
                if let Some(n) = self.minimum {
                    s["minimum"] = n.into();
                }
                if let Some(n) = self.maximum {
                    s["maximum"] = n.into();
                }
                s
            }
        }
    }
}

/// A field's rules as an agent file may spell them out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    #[serde(rename = "type")]
    kind: FieldType,
    #[serde(default)]
    min_items: Option<u64>,
    #[serde(default)]
    minimum: Option<f64>,
    #[serde(default)]
    maximum: Option<f64>,
}

impl Field {
    /// The field `name` from its value in an agent file: a type name, or an
    /// object with `type` and the rules that fit it.
    pub fn read(name: &str, spec: Value) -> Result<Field, String> {
        let spec = match spec {
            Value::String(_) => Spec {
                kind: FieldType::deserialize(spec).map_err(|e| e.to_string())?,
                min_items: None,
                minimum: None,
                maximum: None,
            },
            other => Spec::deserialize(other).map_err(|e| e.to_string())?,
        };
        let mut f = Field::new(name, spec.kind);
        if let Some(n) = spec.min_items {
            if spec.kind != FieldType::List {
                return Err("`min_items` is for a list".into());
            }
            f.min_items = n;
        }
        if spec.minimum.is_some() || spec.maximum.is_some() {
            if spec.kind != FieldType::Number {
                return Err("`minimum` and `maximum` are for a number".into());
            }
            if let (Some(lo), Some(hi)) = (spec.minimum, spec.maximum) {
                if lo > hi {
                    return Err(format!("`minimum` {lo} is above `maximum` {hi}"));
                }
            }
            f.minimum = spec.minimum;
            f.maximum = spec.maximum;
        }
        Ok(f)
    }
}

/// Reads `{"field": spec, ...}` into an ordered list of fields.
pub(crate) fn field_list<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<Field>, D::Error> {
    let map = Map::<String, Value>::deserialize(de)?;
    map.into_iter()
        .map(|(name, spec)| {
            Field::read(&name, spec).map_err(|e| D::Error::custom(format!("field \"{name}\": {e}")))
        })
        .collect()
}

/// The JSON Schema of a reply object with exactly `fields`, all required.
pub fn object(fields: &[Field]) -> Value {
    let properties: Map<String, Value> = fields
        .iter()
        .map(|f| (f.name.clone(), f.schema()))
        .collect();
    let required: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// `response_format` for an OpenAI-style server (OpenAI, llama-server's
/// `/v1/chat/completions`): the schema under a name (`[A-Za-z0-9_-]`, at
/// most 64), strict.
pub fn response_format(name: &str, schema: &Value) -> Value {
    let mut name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        name = "reply".into();
    }
    json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": true}})
}

// The pipeline's own shapes. The agents' come from their files (the
// Researcher's, the Critic's, the Editor's, a part's from the ChunkWriter or
// the Storyteller, a quality vote's from the QualityVoter); these are the
// replies the pipeline asks an agent for in place of its own fields. A new
// shape is one more function here.

/// One text field named `name`: what a synthesis request (a group summary,
/// the overview) asks the Editor for.
pub fn one_text(name: &str) -> Vec<Field> {
    vec![Field::text(name)]
}

/// A part title's length range in characters: a few words, never a paragraph.
pub const TITLE_CHARS: (u64, u64) = (4, 90);
/// A part focus's most characters: one line.
pub const FOCUS_CHARS: u64 = 300;

/// The outline of a long-form answer (`outline.rs`): exactly `parts` parts,
/// each a title and a one-line focus:
/// `{"parts": [{"title": string, "focus": string}]}` with
/// `minItems` = `maxItems` = `parts`.
pub fn outline(parts: usize) -> Vec<Field> {
    let n = parts as u64;
    let title = Field {
        min_length: TITLE_CHARS.0,
        max_length: Some(TITLE_CHARS.1),
        ..Field::text("title")
    };
    let focus = Field {
        max_length: Some(FOCUS_CHARS),
        ..Field::text("focus")
    };
    vec![Field {
        min_items: n,
        max_items: Some(n),
        items: Some(vec![title, focus]),
        ..Field::new("parts", FieldType::List)
    }]
}

/// Fields of the Editor's reply that a short answer keeps.
pub const BRIEF_FIELDS: &[&str] = &["summary", "key_points"];

/// The Editor's fields for a short factual question: its `summary` and
/// `key_points` (no detailed explanation, examples or applications). An
/// Editor file with neither keeps its own fields.
pub fn brief(editor: &[Field]) -> Vec<Field> {
    let kept: Vec<Field> = editor
        .iter()
        .filter(|f| BRIEF_FIELDS.contains(&f.name.as_str()))
        .cloned()
        .collect();
    if kept.is_empty() {
        editor.to_vec()
    } else {
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: Value) -> Vec<Field> {
        #[derive(Deserialize)]
        struct F(#[serde(deserialize_with = "field_list")] Vec<Field>);
        serde_json::from_value::<F>(v).unwrap().0
    }

    #[test]
    fn a_schema_from_required_fields() {
        let f = fields(json!({
            "context": "string",
            "key_facts": "list",
            "sources": {"type": "list", "min_items": 0},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "extra": "dict"
        }));
        let s = object(&f);
        assert_eq!(
            s,
            json!({
                "type": "object",
                "properties": {
                    "context": {"type": "string", "minLength": 1},
                    "key_facts": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
                    "sources": {"type": "array", "items": {"type": "string", "minLength": 1}},
                    "score": {"type": "number", "minimum": 0.0, "maximum": 1.0},
                    "extra": {"type": "object"}
                },
                "required": ["context", "key_facts", "sources", "score", "extra"],
                "additionalProperties": false
            })
        );
        // Properties keep the file's order (the main text field first).
        let names: Vec<&String> = s["properties"].as_object().unwrap().keys().collect();
        assert_eq!(names, ["context", "key_facts", "sources", "score", "extra"]);
    }

    #[test]
    fn field_specs_that_cannot_be_used_are_refused_in_words() {
        let bad = |spec: Value| Field::read("f", spec).unwrap_err();
        assert!(bad(json!("blob")).contains("unknown variant `blob`"));
        assert_eq!(
            bad(json!({"type": "string", "min_items": 2})),
            "`min_items` is for a list"
        );
        assert_eq!(
            bad(json!({"type": "list", "maximum": 2})),
            "`minimum` and `maximum` are for a number"
        );
        assert_eq!(
            bad(json!({"type": "number", "minimum": 2, "maximum": 1})),
            "`minimum` 2 is above `maximum` 1"
        );
        assert!(bad(json!({"type": "list", "min": 2})).contains("unknown field `min`"));
        assert!(Field::read("f", json!(5)).is_err());
    }

    #[test]
    fn openai_response_format_names_the_schema() {
        let s = object(&one_text("summary"));
        let rf = response_format("Editor: summary of parts 1–2", &s);
        assert_eq!(rf["type"], "json_schema");
        assert_eq!(rf["json_schema"]["name"], "Editor__summary_of_parts_1_2");
        assert_eq!(rf["json_schema"]["strict"], true);
        assert_eq!(rf["json_schema"]["schema"], s);
        assert_eq!(response_format("", &s)["json_schema"]["name"], "reply");
    }

    #[test]
    fn the_outline_asks_for_exactly_n_titled_parts() {
        let s = object(&outline(5));
        assert_eq!(s["required"], json!(["parts"]));
        let parts = &s["properties"]["parts"];
        assert_eq!(
            (&parts["minItems"], &parts["maxItems"]),
            (&json!(5), &json!(5))
        );
        let item = &parts["items"];
        assert_eq!(item["required"], json!(["title", "focus"]));
        assert_eq!(item["additionalProperties"], false);
        assert_eq!(
            item["properties"]["title"],
            json!({"type": "string", "minLength": 4, "maxLength": 90})
        );
        assert_eq!(item["properties"]["focus"]["maxLength"], 300);
    }

    #[test]
    fn the_brief_editor_keeps_a_summary_and_key_points() {
        let editor = vec![
            Field::text("summary"),
            Field::new("key_points", FieldType::List),
            Field::text("detailed_explanation"),
            Field::new("examples", FieldType::List),
        ];
        let names: Vec<String> = brief(&editor).into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["summary", "key_points"]);
        let custom = vec![Field::text("answer")];
        assert_eq!(
            brief(&custom),
            custom,
            "an Editor of its own keeps its fields"
        );
    }

    #[test]
    fn field_type_names() {
        let t: FieldType = serde_json::from_str("\"list\"").unwrap();
        assert_eq!(t, FieldType::List);
        let t: FieldType = serde_json::from_str("\"str\"").unwrap();
        assert_eq!(t, FieldType::String);
        assert!(serde_json::from_str::<FieldType>("\"blob\"").is_err());
        assert_eq!(FieldType::Number.as_str(), "number");
        assert!(FieldType::Object.matches(&json!({})));
        assert!(!FieldType::Number.matches(&json!("1")));
    }
}
