//! Turning agent JSON into text: the Editor's Markdown answer, and the
//! single narrative string of a chunk. Newlines inside text are kept.

use serde_json::{Map, Value};

/// Fields tried, in order, by [`narrative`].
const NARRATIVE_FIELDS: &[&str] = &[
    "detailed_explanation",
    "story",
    "context",
    "summary",
    "content",
    "narrative",
];

/// Markdown for an Editor reply: Summary, Key Points, Detailed Explanation,
/// Examples, Practical Applications (each only if non-empty). With none of
/// them present, the longest string value in the object.
pub(crate) fn editor_markdown(obj: &Map<String, Value>) -> String {
    let obj = unwrap_data(obj);
    let mut sections = Vec::new();
    if let Some(text) = field_text(obj, "summary") {
        sections.push(format!("## Summary\n{text}"));
    }
    let points = field_items(obj, "key_points");
    if !points.is_empty() {
        let lines: Vec<String> = points.iter().map(|p| bullet(&format!("**{p}**"))).collect();
        sections.push(format!("## Key Points\n{}", lines.join("\n")));
    }
    if let Some(text) = field_text(obj, "detailed_explanation") {
        sections.push(format!("## Detailed Explanation\n{text}"));
    }
    let examples = field_items(obj, "examples");
    if !examples.is_empty() {
        let lines: Vec<String> = examples
            .iter()
            .enumerate()
            .map(|(i, e)| indent_rest(&format!("{}. {e}", i + 1), "   "))
            .collect();
        sections.push(format!("## Examples\n{}", lines.join("\n")));
    }
    let apps = field_items(obj, "practical_applications");
    if !apps.is_empty() {
        let lines: Vec<String> = apps.iter().map(|a| bullet(a)).collect();
        sections.push(format!("## Practical Applications\n{}", lines.join("\n")));
    }
    if sections.is_empty() {
        return longest_in(obj).unwrap_or_default().trim().to_string();
    }
    sections.join("\n\n")
}

/// Markdown for the Editor's short answer (`schema::brief`): its summary and
/// key points only, whatever else the reply holds; the full rendering when
/// it has neither.
pub(crate) fn brief_markdown(obj: &Map<String, Value>) -> String {
    let inner = unwrap_data(obj);
    let kept: Map<String, Value> = inner
        .iter()
        .filter(|(k, _)| crate::pipeline::schema::BRIEF_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    match editor_markdown(&kept) {
        md if md.is_empty() => editor_markdown(obj),
        md => md,
    }
}

/// The main text of a chunk reply: the first non-empty of
/// detailed_explanation, story, context, summary, content, narrative;
/// otherwise the longest string value (empty if there is none).
pub(crate) fn narrative(obj: &Map<String, Value>) -> String {
    let obj = unwrap_data(obj);
    NARRATIVE_FIELDS
        .iter()
        .find_map(|f| match obj.get(*f) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim()),
            _ => None,
        })
        .or_else(|| longest_in(obj).map(str::trim))
        .unwrap_or_default()
        .to_string()
}

/// Uses the object under a `data` key when the outer one only wraps it.
fn unwrap_data(obj: &Map<String, Value>) -> &Map<String, Value> {
    let known = NARRATIVE_FIELDS
        .iter()
        .chain(["key_points", "examples", "practical_applications"].iter())
        .any(|f| obj.contains_key(*f));
    match obj.get("data") {
        Some(Value::Object(inner)) if !known => inner,
        _ => obj,
    }
}

/// A text field as trimmed text, if non-empty. Lists become paragraphs.
fn field_text(obj: &Map<String, Value>, key: &str) -> Option<String> {
    let text = match obj.get(key)? {
        Value::Array(_) => field_items(obj, key).join("\n\n"),
        other => item_text(other),
    };
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// A list field as non-empty item texts. A lone string counts as one item.
fn field_items(obj: &Map<String, Value>, key: &str) -> Vec<String> {
    let items: Vec<String> = match obj.get(key) {
        Some(Value::Array(list)) => list.iter().map(item_text).collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![item_text(other)],
    };
    items
        .into_iter()
        .map(|s| strip_marker(s.trim()).to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Text for one value: strings as is, objects as their string values joined
/// with ": " (or, with none, "key: value" pairs), lists as their items joined
/// with ", ", numbers and booleans as written. Never JSON syntax.
fn item_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Object(map) => {
            let parts: Vec<&str> = map
                .values()
                .filter_map(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            if parts.is_empty() {
                map.iter()
                    .map(|(k, v)| (k.replace('_', " "), item_text(v)))
                    .filter(|(_, t)| !t.is_empty())
                    .map(|(k, t)| format!("{k}: {t}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                parts.join(": ")
            }
        }
        Value::Array(items) => items
            .iter()
            .map(item_text)
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// Drops a bullet or number the model already put in front of an item.
fn strip_marker(s: &str) -> &str {
    for marker in ["- ", "* ", "• "] {
        if let Some(rest) = s.strip_prefix(marker) {
            return rest.trim_start();
        }
    }
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 {
        if let Some(rest) = s[digits..].strip_prefix(". ") {
            return rest.trim_start();
        }
    }
    s
}

fn bullet(text: &str) -> String {
    indent_rest(&format!("- {text}"), "  ")
}

/// Indents every line after the first, so a multi-line item stays one item.
fn indent_rest(text: &str, pad: &str) -> String {
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            if i == 0 || line.trim().is_empty() {
                line.to_string()
            } else {
                format!("{pad}{line}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Longest non-blank string anywhere inside `v`.
fn longest_string(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s),
        Value::Array(items) => items
            .iter()
            .filter_map(longest_string)
            .max_by_key(|s| s.len()),
        Value::Object(map) => longest_in(map),
        _ => None,
    }
}

fn longest_in(map: &Map<String, Value>) -> Option<&str> {
    map.values()
        .filter_map(longest_string)
        .max_by_key(|s| s.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn items_without_text_never_show_json() {
        let md = editor_markdown(&obj(json!({
            "summary": "S.",
            "examples": [{"year": 1450, "place": {"city_id": 7}}, ["a", 2], true]
        })));
        assert!(md.contains("1. year: 1450, place: city id: 7"), "{md}");
        assert!(md.contains("2. a, 2"), "{md}");
        assert!(!md.contains("\":") && !md.contains('{'), "{md}");
    }

    #[test]
    fn full_editor_output() {
        let md = editor_markdown(&obj(json!({
            "summary": "Short summary.",
            "key_points": ["First", "- Second"],
            "detailed_explanation": "Para one.\n\nPara two.\nLine three.",
            "examples": ["Ex A", {"title": "Ex B", "detail": "more"}],
            "practical_applications": ["App 1"]
        })));
        let expected = "## Summary\nShort summary.\n\n\
            ## Key Points\n- **First**\n- **Second**\n\n\
            ## Detailed Explanation\nPara one.\n\nPara two.\nLine three.\n\n\
            ## Examples\n1. Ex A\n2. Ex B: more\n\n\
            ## Practical Applications\n- App 1";
        assert_eq!(md, expected);
    }

    #[test]
    fn newlines_kept_in_all_text() {
        let md = editor_markdown(&obj(json!({
            "summary": "Line one.\nLine two.",
            "examples": ["step a\nstep b"]
        })));
        assert!(md.contains("Line one.\nLine two."));
        assert!(md.contains("1. step a\n   step b"));
    }

    #[test]
    fn empty_sections_skipped() {
        let md = editor_markdown(&obj(json!({
            "summary": "S", "key_points": [], "detailed_explanation": "  ",
            "examples": [""], "practical_applications": null
        })));
        assert_eq!(md, "## Summary\nS");
    }

    #[test]
    fn odd_shapes() {
        let md = editor_markdown(&obj(json!({
            "key_points": "only one",
            "examples": [{"n": 1}, 42, "1. numbered"]
        })));
        assert_eq!(
            md,
            "## Key Points\n- **only one**\n\n## Examples\n1. n: 1\n2. 42\n3. numbered"
        );
    }

    #[test]
    fn fallback_longest_string() {
        let md = editor_markdown(&obj(json!({"a": "short", "b": {"c": "the longest one"}})));
        assert_eq!(md, "the longest one");
        assert_eq!(editor_markdown(&Map::new()), "");
    }

    #[test]
    fn a_brief_answer_has_a_summary_and_key_points_only() {
        let md = brief_markdown(&obj(json!({
            "summary": "Paris.", "key_points": ["Seat of government"],
            "examples": ["Le Grand Sadusion de Paris"], "practical_applications": ["French"]
        })));
        assert_eq!(
            md,
            "## Summary\nParis.\n\n## Key Points\n- **Seat of government**"
        );
        assert_eq!(brief_markdown(&obj(json!({"answer": "Paris."}))), "Paris.");
    }

    #[test]
    fn data_wrapper() {
        let md = editor_markdown(&obj(json!({"agent": "Editor", "data": {"summary": "S"}})));
        assert_eq!(md, "## Summary\nS");
    }

    #[test]
    fn narrative_order() {
        let o = obj(json!({"summary": "sum", "context": "ctx", "story": " "}));
        assert_eq!(narrative(&o), "ctx");
        let o = obj(json!({"detailed_explanation": "de\nmore", "context": "ctx"}));
        assert_eq!(narrative(&o), "de\nmore");
        let o = obj(json!({"narrative": "n"}));
        assert_eq!(narrative(&o), "n");
    }

    #[test]
    fn narrative_fallback() {
        let o = obj(json!({"x": "a bit longer", "y": ["tiny"], "story": 3}));
        assert_eq!(narrative(&o), "a bit longer");
        assert_eq!(narrative(&obj(json!({"n": 1}))), "");
        let o = obj(json!({"data": {"story": "inner"}}));
        assert_eq!(narrative(&o), "inner");
    }
}
