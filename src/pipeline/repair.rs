//! Getting a JSON object out of a small model's reply, and checking it
//! against an agent's required fields. With a JSON Schema in the request
//! (`schema.rs`) the server writes the object itself; this is the fallback
//! for a node that takes no schema (`format: "json"`, Ollama before 0.5.0) and
//! for a reply that is still not the object (a server that ignores the
//! schema, a reply cut off by the length limit). `check_fields` also decides
//! whether a reply was the object as it came (`metrics.replies`).

use serde_json::{Map, Value};

use super::schema::{Field, FieldType};

/// Most `{` positions tried before giving up on a reply.
const MAX_CANDIDATES: usize = 256;

/// Values a model sometimes copies from the schema instead of writing content.
const PLACEHOLDERS: &[&str] = &[
    "str", "string", "list", "array", "dict", "object", "number", "int", "float", "...", "…",
];

/// Finds a JSON object in `text`: the whole text, a fenced block, or the
/// first balanced `{...}` that parses (with a light fix pass for trailing
/// commas and smart quotes). A lone `"data"` wrapper object is unwrapped.
pub(crate) fn extract_object(text: &str) -> Option<Map<String, Value>> {
    let trimmed = text.trim();
    if let Some(obj) = parse_lenient(trimmed) {
        return Some(unwrap_data(obj));
    }
    for block in fenced_blocks(trimmed) {
        if let Some(obj) = parse_lenient(block.trim()) {
            return Some(unwrap_data(obj));
        }
    }
    for (start, _) in trimmed.match_indices('{').take(MAX_CANDIDATES) {
        if let Some(end) = balanced_end(&trimmed[start..]) {
            if let Some(obj) = parse_lenient(&trimmed[start..start + end]) {
                return Some(unwrap_data(obj));
            }
        }
    }
    None
}

/// Where a scan of JSON text stands with respect to strings (escapes honoured).
#[derive(Default)]
struct Strings {
    in_string: bool,
    escaped: bool,
}

impl Strings {
    /// Take the next character; true when it is structure (outside every
    /// string, and not a quote).
    fn outside(&mut self, c: char) -> bool {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if c == '\\' {
                self.escaped = true;
            } else if c == '"' {
                self.in_string = false;
            }
            return false;
        }
        if c == '"' {
            self.in_string = true;
            return false;
        }
        true
    }
}

/// An object cut off before its end (a reply stopped by a length limit),
/// closed where it stops: an open string is ended (its unfinished last
/// sentence dropped) and open lists and objects are closed; a dangling key or
/// a value cut inside a number or word is left out. None when `text` holds no
/// object start, or nothing readable follows it.
pub(crate) fn close_truncated(text: &str) -> Option<Map<String, Value>> {
    let start = text.find('{')?;
    let body = &text[start..];
    // Positions after which the object can be closed, with the closers needed there.
    let mut safe: Vec<(usize, String)> = Vec::new();
    let mut closers: Vec<char> = Vec::new();
    let mut strings = Strings::default();
    for (i, c) in body.char_indices() {
        if !strings.outside(c) {
            continue;
        }
        match c {
            '{' => closers.push('}'),
            '[' => closers.push(']'),
            '}' | ']' => {
                closers.pop();
                if closers.is_empty() {
                    // The object is complete after all: the ordinary parser's case.
                    return None;
                }
            }
            ',' => safe.push((i, closers.iter().rev().collect())),
            _ => {}
        }
    }
    let mut attempts: Vec<String> = Vec::new();
    if strings.in_string {
        // End the open string where it stops, without a half escape.
        let mut cut = body.trim_end_matches('\\').to_string();
        if let Some(u) = cut.rfind("\\u") {
            if cut.len() - u < 6 {
                cut.truncate(u);
            }
        }
        attempts.push(format!(
            "{cut}\"{}",
            closers.iter().rev().collect::<String>()
        ));
    } else {
        attempts.push(format!(
            "{}{}",
            body.trim_end().trim_end_matches(','),
            closers.iter().rev().collect::<String>()
        ));
    }
    for (at, closing) in safe.iter().rev().take(8) {
        attempts.push(format!("{}{closing}", &body[..*at]));
    }
    let cut_string = strings.in_string;
    attempts.iter().enumerate().find_map(|(n, a)| {
        let mut obj = parse_object(a).or_else(|| parse_object(&fix_json(a)))?;
        if n == 0 && cut_string {
            drop_unfinished_sentence(&mut obj);
        }
        (!obj.is_empty()).then(|| unwrap_data(obj))
    })
}

/// The last string in `obj` (in document order) was cut off: keep its whole
/// sentences, or mark the cut when it has none.
fn drop_unfinished_sentence(obj: &mut Map<String, Value>) {
    fn last_string(v: &mut Value) -> Option<&mut String> {
        match v {
            Value::String(s) => Some(s),
            Value::Array(items) => items.last_mut().and_then(last_string),
            Value::Object(m) => m.values_mut().last().and_then(last_string),
            _ => None,
        }
    }
    let Some(s) = obj.values_mut().last().and_then(last_string) else {
        return;
    };
    let end = s.trim_end().rfind(['.', '!', '?']).map(|i| i + 1);
    match end {
        Some(i) if i * 2 >= s.trim_end().len() => s.truncate(i),
        _ if !s.trim().is_empty() => {
            let t = s.trim_end().to_string();
            *s = format!("{t}…");
        }
        _ => {}
    }
}

/// Problems with `obj` against `required`, one line each, starting with the
/// field name: missing, wrong type, empty text, or a copied schema word.
pub(crate) fn check_fields(obj: &Map<String, Value>, required: &[Field]) -> Vec<String> {
    let mut problems = Vec::new();
    for field in required {
        let (name, ty) = (&field.name, field.kind);
        match obj.get(name) {
            None | Some(Value::Null) => problems.push(format!("{name}: missing")),
            Some(v) if is_placeholder(v) => problems.push(format!(
                "{name}: holds the placeholder {v} instead of real content"
            )),
            Some(v) if !ty.matches(v) => {
                problems.push(format!("{name}: expected {}, got {}", ty.as_str(), kind(v)))
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                problems.push(format!("{name}: empty"))
            }
            Some(Value::Array(list)) if field.items.is_some() => {
                problems.extend(check_records(list, field))
            }
            Some(_) => {}
        }
    }
    problems
}

/// A list of objects (`field.items`): as many entries as the field allows,
/// each an object whose own fields pass `check_fields`.
fn check_records(list: &[Value], field: &Field) -> Vec<String> {
    let (name, fields) = (&field.name, field.items.as_deref().unwrap_or_default());
    let mut problems = Vec::new();
    let n = list.len() as u64;
    if n < field.min_items || field.max_items.is_some_and(|m| n > m) {
        problems.push(format!("{name}: {n} entries"));
    }
    for (i, v) in list.iter().enumerate() {
        match v {
            Value::Object(o) => problems.extend(
                check_fields(o, fields)
                    .into_iter()
                    .map(|p| format!("{name}[{i}].{p}")),
            ),
            other => problems.push(format!("{name}[{i}]: expected object, got {}", kind(other))),
        }
    }
    problems
}

/// Fixes what can be fixed without asking the model again: a string where a
/// list is required becomes a one-element list (empty string: empty list),
/// and a numeric string where a number is required becomes that number.
pub(crate) fn coerce(obj: &mut Map<String, Value>, required: &[Field]) {
    for Field { name, kind: ty, .. } in required {
        let Some(value) = obj.get_mut(name) else {
            continue;
        };
        let Value::String(s) = value else {
            continue;
        };
        match ty {
            FieldType::List if is_placeholder_str(s) => {}
            FieldType::List if s.trim().is_empty() => *value = Value::Array(Vec::new()),
            FieldType::List => *value = Value::Array(vec![Value::String(s.clone())]),
            FieldType::Number => {
                if let Some(n) = s
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    *value = Value::Number(n);
                }
            }
            _ => {}
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

fn is_placeholder_str(s: &str) -> bool {
    let s = s.trim().to_ascii_lowercase();
    PLACEHOLDERS.contains(&s.as_str())
}

/// `"str"`, `["string"]` and the like.
fn is_placeholder(v: &Value) -> bool {
    match v {
        Value::String(s) => is_placeholder_str(s),
        Value::Array(items) => {
            items.len() == 1 && matches!(&items[0], Value::String(s) if is_placeholder_str(s))
        }
        _ => false,
    }
}

fn unwrap_data(mut obj: Map<String, Value>) -> Map<String, Value> {
    while obj.len() == 1 && obj.get("data").is_some_and(Value::is_object) {
        match obj.remove("data") {
            Some(Value::Object(inner)) => obj = inner,
            _ => unreachable!("checked above"),
        }
    }
    obj
}

/// Parses an object as is, then after the fix pass.
fn parse_lenient(text: &str) -> Option<Map<String, Value>> {
    if !text.starts_with('{') {
        return None;
    }
    parse_object(text).or_else(|| parse_object(&fix_json(text)))
}

fn parse_object(text: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(obj)) => Some(obj),
        _ => None,
    }
}

/// Contents of every ```-fenced block (language tag dropped). An unclosed
/// final fence runs to the end of the text.
fn fenced_blocks(text: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        // The rest of the opening line is the language tag (e.g. `json`).
        let body_start = after.find('\n').map_or(after.len(), |i| i + 1);
        let body = &after[body_start..];
        match body.find("```") {
            Some(close) => {
                blocks.push(&body[..close]);
                rest = &body[close + 3..];
            }
            None => {
                blocks.push(body);
                break;
            }
        }
    }
    blocks
}

/// Byte length of the balanced `{...}` at the start of `text`, honouring
/// strings and escapes; `None` if it never closes.
pub(crate) fn balanced_end(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut strings = Strings::default();
    for (i, c) in text.char_indices() {
        if !strings.outside(c) {
            continue;
        }
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Replaces smart double quotes with plain ones and drops commas that come
/// right before a closing `}` or `]` (outside strings).
fn fix_json(text: &str) -> String {
    let text: String = text
        .chars()
        .map(|c| match c {
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' => '"',
            other => other,
        })
        .collect();
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut strings = Strings::default();
    for (i, &c) in chars.iter().enumerate() {
        if strings.outside(c) && c == ',' {
            let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
            if matches!(next, Some('}') | Some(']')) {
                continue;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(fields: &[(&str, FieldType)]) -> Vec<Field> {
        fields.iter().map(|(n, t)| Field::new(*n, *t)).collect()
    }

    #[test]
    fn a_list_of_objects_is_checked_entry_by_entry() {
        let fields = crate::pipeline::schema::outline(2);
        let obj = |v: Value| v.as_object().unwrap().clone();
        let good = obj(
            json!({"parts": [{"title": "Tides", "focus": "What they are."},
                                        {"title": "Moon", "focus": "Its pull."}]}),
        );
        assert!(check_fields(&good, &fields).is_empty());
        let bad = obj(json!({"parts": [{"title": " ", "focus": "f"}, "Moon", {"title": "x"}]}));
        assert_eq!(
            check_fields(&bad, &fields),
            [
                "parts: 3 entries",
                "parts[0].title: empty",
                "parts[1]: expected object, got string",
                "parts[2].focus: missing"
            ]
        );
    }

    #[test]
    fn raw_object() {
        let obj = extract_object("  {\"story\": \"Once.\"}\n").unwrap();
        assert_eq!(obj["story"], "Once.");
    }

    #[test]
    fn fenced_block() {
        let text = "Here you go:\n```json\n{\"a\": 1, \"b\": [1, 2]}\n```\nEnjoy!";
        assert_eq!(extract_object(text).unwrap()["a"], 1);
        let plain = "```\n{\"a\": 2}\n```";
        assert_eq!(extract_object(plain).unwrap()["a"], 2);
    }

    #[test]
    fn prose_around() {
        let text = "Sure! The {answer} is below.\n{\"context\": \"x\"} Hope it helps.";
        assert_eq!(extract_object(text).unwrap()["context"], "x");
    }

    #[test]
    fn braces_inside_strings() {
        let text = r#"Result: {"code": "fn f() { if x { \"}\" } }", "n": {"k": 1}} done"#;
        let obj = extract_object(text).unwrap();
        assert_eq!(obj["code"], "fn f() { if x { \"}\" } }");
        assert_eq!(obj["n"]["k"], 1);
    }

    #[test]
    fn truncated_is_none() {
        assert!(extract_object("{\"context\": \"The answer is").is_none());
        assert!(extract_object("```json\n{\"a\": [1, 2").is_none());
        assert!(extract_object("no json here").is_none());
        assert!(extract_object("[1, 2]").is_none());
    }

    #[test]
    fn trailing_commas_and_smart_quotes() {
        let obj = extract_object("{\"a\": [1, 2,], \"b\": \"c\",\n}").unwrap();
        assert_eq!(obj["a"], json!([1, 2]));
        let obj = extract_object("{\u{201C}a\u{201D}: \u{201C}b\u{201D}}").unwrap();
        assert_eq!(obj["a"], "b");
        // A comma inside a string is left alone.
        let obj = extract_object("{\"a\": \"x,}\", \"b\": 1,}").unwrap();
        assert_eq!(obj["a"], "x,}");
    }

    #[test]
    fn truncated_objects_are_closed() {
        let obj =
            close_truncated("{\"context\": \"The press spread. It changed Europe. Printers mov")
                .unwrap();
        assert_eq!(obj["context"], "The press spread. It changed Europe.");
        let obj = close_truncated("{\"context\": \"abc.\", \"key_facts\": [\"x\", \"y").unwrap();
        assert_eq!(obj["key_facts"], json!(["x", "y…"]));
        let obj = close_truncated("Sure: {\"context\": \"abc.\", \"key_fa").unwrap();
        assert_eq!(obj.len(), 1);
        assert_eq!(obj["context"], "abc.");
        let obj = close_truncated("{\"context\": \"abc.\", \"n\": 12").unwrap();
        assert_eq!(obj["n"], 12);
        let obj = close_truncated("{\"context\": \"caf\\u00").unwrap();
        assert_eq!(obj["context"], "caf…");
        let obj = close_truncated("{\"data\": {\"story\": \"Once. Tw").unwrap();
        assert_eq!(obj["story"], "Once.");
        assert!(
            close_truncated("{\"a\": 1}").is_none(),
            "complete: not this function's case"
        );
        assert!(close_truncated("no json").is_none());
        assert!(close_truncated("{\"ke").is_none());
    }

    #[test]
    fn data_wrapper_unwrapped() {
        let obj = extract_object("{\"data\": {\"story\": \"s\"}}").unwrap();
        assert_eq!(obj["story"], "s");
        // Not unwrapped when other keys sit next to it.
        let obj = extract_object("{\"data\": {\"a\": 1}, \"agent\": \"x\"}").unwrap();
        assert!(obj.contains_key("agent"));
    }

    #[test]
    fn check_missing_and_types() {
        let obj = json!({"context": "text", "key_facts": "one fact", "topics": ["t"], "n": null})
            .as_object()
            .unwrap()
            .clone();
        let required = req(&[
            ("context", FieldType::String),
            ("key_facts", FieldType::List),
            ("topics", FieldType::List),
            ("sources", FieldType::List),
            ("n", FieldType::Number),
        ]);
        let problems = check_fields(&obj, &required);
        assert_eq!(
            problems,
            vec![
                "key_facts: expected list, got string",
                "sources: missing",
                "n: missing"
            ]
        );
    }

    #[test]
    fn check_placeholders_and_empty() {
        let obj = json!({"context": "str", "key_facts": ["list"], "summary": "  "})
            .as_object()
            .unwrap()
            .clone();
        let required = req(&[
            ("context", FieldType::String),
            ("key_facts", FieldType::List),
            ("summary", FieldType::String),
        ]);
        let problems = check_fields(&obj, &required);
        assert_eq!(problems.len(), 3);
        assert!(problems[0].starts_with("context: holds the placeholder"));
        assert!(problems[1].starts_with("key_facts: holds the placeholder"));
        assert_eq!(problems[2], "summary: empty");
    }

    #[test]
    fn coerce_fixes_lists_and_numbers() {
        let mut obj = json!({"issues": "one issue", "empty": "", "score": " 0.75 ", "bad": "high", "ph": "list"})
            .as_object()
            .unwrap()
            .clone();
        let required = req(&[
            ("issues", FieldType::List),
            ("empty", FieldType::List),
            ("score", FieldType::Number),
            ("bad", FieldType::Number),
            ("ph", FieldType::List),
            ("absent", FieldType::List),
        ]);
        coerce(&mut obj, &required);
        assert_eq!(obj["issues"], json!(["one issue"]));
        assert_eq!(obj["empty"], json!([]));
        assert_eq!(obj["score"], json!(0.75));
        assert_eq!(obj["bad"], "high");
        assert_eq!(obj["ph"], "list");
        assert!(!obj.contains_key("absent"));
        let problems = check_fields(&obj, &required);
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
