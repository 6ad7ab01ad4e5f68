//! A simulated model's reply to a request whose `format` is a JSON Schema:
//! a value that satisfies it, as a server that constrains decoding to the
//! schema returns. The first text property of the top object (the main text
//! field) gets the reply's prose; other text gets sentences, lists three
//! entries (or as many as `minItems`/`maxItems` ask), numbers a value in
//! range. `$ref` (to `#/$defs/…`), `const`, `enum`, `anyOf`/`oneOf` (the
//! first), `allOf` (merged), `minLength`/`maxLength` and the common string
//! `format`s are honoured; other keywords are not checked.

use serde_json::{json, Map, Value};

use super::text::{self, Rng};

/// Deepest nesting filled (a recursive schema stops there).
const MAX_DEPTH: usize = 12;

/// Entries of a list when the schema leaves it open.
const LIST_LEN: u64 = 3;

/// A value satisfying `schema`; `main` is the text of the main text field.
pub(super) fn fill(schema: &Value, main: String, rng: &mut Rng) -> Value {
    let mut f = Filler {
        root: schema,
        main: Some(main),
        rng,
    };
    f.value(schema, 0)
}

struct Filler<'a> {
    root: &'a Value,
    /// The prose, until the main text field takes it.
    main: Option<String>,
    rng: &'a mut Rng,
}

impl Filler<'_> {
    fn value(&mut self, schema: &Value, depth: usize) -> Value {
        let Some(s) = schema.as_object() else {
            // `true` (or anything that is not an object): any value will do.
            return Value::String(text::sentence(self.rng));
        };
        if depth > MAX_DEPTH {
            return Value::Null;
        }
        if let Some(target) = s.get("$ref").and_then(Value::as_str) {
            let resolved = target
                .strip_prefix('#')
                .and_then(|p| self.root.pointer(p))
                .cloned()
                .unwrap_or(Value::Bool(true));
            return self.value(&resolved, depth + 1);
        }
        if let Some(c) = s.get("const") {
            return c.clone();
        }
        if let Some(first) = s
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            return first.clone();
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(alts) = s.get(key).and_then(Value::as_array) {
                let pick = alts.iter().find(|a| a["type"] != "null").or(alts.first());
                if let Some(a) = pick {
                    return self.value(a, depth + 1);
                }
            }
        }
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            return self.value(&merged(s, all), depth + 1);
        }
        match kind(s) {
            "object" => self.object(s, depth),
            "array" => self.array(s, depth),
            "string" => Value::String(self.string(s, false)),
            "number" => number(s, self.rng),
            "integer" => integer(s, self.rng),
            "boolean" => Value::Bool(true),
            "null" => Value::Null,
            _ => Value::String(text::sentence(self.rng)),
        }
    }

    /// Every required property (every property when none is marked), in the
    /// order the schema lists them.
    fn object(&mut self, s: &Map<String, Value>, depth: usize) -> Value {
        let empty = Map::new();
        let props = s
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let required: Option<Vec<&str>> = s
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect());
        let wanted = |name: &str| required.as_ref().is_none_or(|r| r.contains(&name));
        let mut out = Map::new();
        for (name, p) in props.iter().filter(|(n, _)| wanted(n)) {
            let v = if depth == 0 && kind_of(p) == "string" && self.main.is_some() {
                Value::String(self.string(p.as_object().unwrap_or(&empty), true))
            } else {
                self.value(p, depth + 1)
            };
            out.insert(name.clone(), v);
        }
        for name in required.iter().flatten() {
            if !out.contains_key(*name) {
                out.insert(name.to_string(), Value::String(text::sentence(self.rng)));
            }
        }
        Value::Object(out)
    }

    fn array(&mut self, s: &Map<String, Value>, depth: usize) -> Value {
        let min = s.get("minItems").and_then(Value::as_u64).unwrap_or(0);
        let max = s
            .get("maxItems")
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX);
        let n = LIST_LEN.max(min).min(max.max(min));
        let prefix: Vec<Value> = s
            .get("prefixItems")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let items = s.get("items").cloned().unwrap_or(Value::Bool(true));
        let n = n.max(prefix.len() as u64);
        (0..n as usize)
            .map(|i| {
                let item = prefix.get(i).unwrap_or(&items);
                self.value(item, depth + 1)
            })
            .collect()
    }

    /// Text within the schema's length: the prose for the main text field,
    /// else a sentence (or a value of the string `format` asked for).
    fn string(&mut self, s: &Map<String, Value>, main: bool) -> String {
        let formatted = match s.get("format").and_then(Value::as_str) {
            Some("date-time") => Some("2026-01-01T00:00:00Z"),
            Some("date") => Some("2026-01-01"),
            Some("time") => Some("00:00:00Z"),
            Some("email") => Some("sim@example.com"),
            Some("uri" | "url") => Some("http://example.com/"),
            Some("uuid") => Some("00000000-0000-4000-8000-000000000000"),
            _ => None,
        };
        let mut t = match (formatted, main) {
            (Some(f), _) => f.to_string(),
            (None, true) => self.main.take().unwrap_or_default(),
            (None, false) => text::sentence(self.rng),
        };
        let min = s.get("minLength").and_then(Value::as_u64).unwrap_or(1) as usize;
        while t.chars().count() < min {
            t.push(' ');
            t.push_str(&text::sentence(self.rng));
        }
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
            t = t.chars().take(max as usize).collect();
        }
        t
    }
}

/// The type a schema asks for: `type` (the first that is not `null` of a
/// list), else what its keywords imply.
fn kind(s: &Map<String, Value>) -> &str {
    match s.get("type") {
        Some(Value::String(t)) => t,
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .or(ts.first().and_then(Value::as_str))
            .unwrap_or(""),
        _ if s.contains_key("properties") => "object",
        _ if s.contains_key("items") || s.contains_key("prefixItems") => "array",
        _ if s.contains_key("minimum") || s.contains_key("maximum") => "number",
        _ => "",
    }
}

fn kind_of(schema: &Value) -> &str {
    schema.as_object().map(kind).unwrap_or("")
}

/// `allOf`'s schemas as one (their keywords together, properties and
/// `required` gathered), beside the schema's own keywords.
fn merged(own: &Map<String, Value>, all: &[Value]) -> Value {
    let mut out = own.clone();
    out.remove("allOf");
    let mut props = Map::new();
    let mut required: Vec<Value> = Vec::new();
    for part in std::iter::once(&Value::Object(own.clone())).chain(all) {
        let Some(p) = part.as_object() else { continue };
        for (k, v) in p {
            match k.as_str() {
                "properties" => props.extend(v.as_object().cloned().unwrap_or_default()),
                "required" => required.extend(v.as_array().cloned().unwrap_or_default()),
                "allOf" => {}
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if !props.is_empty() {
        out.insert("properties".into(), Value::Object(props));
    }
    if !required.is_empty() {
        out.insert("required".into(), Value::Array(required));
    }
    Value::Object(out)
}

/// A number schema's bounds: (lower, upper), each with whether it is exclusive.
type Bounds = (Option<(f64, bool)>, Option<(f64, bool)>);

fn bounds(s: &Map<String, Value>) -> Bounds {
    let get = |k: &str| s.get(k).and_then(Value::as_f64);
    let lo = get("minimum")
        .map(|x| (x, false))
        .or(get("exclusiveMinimum").map(|x| (x, true)));
    let hi = get("maximum")
        .map(|x| (x, false))
        .or(get("exclusiveMaximum").map(|x| (x, true)));
    (lo, hi)
}

/// A score-like number (0.60–0.94, as a model rates a fair answer), moved into
/// the schema's range when it is outside.
fn number(s: &Map<String, Value>, rng: &mut Rng) -> Value {
    let x = 0.6 + (rng.next_u64() % 35) as f64 / 100.0;
    let (lo, hi) = bounds(s);
    let above = |(l, open): (f64, bool)| if open { x > l } else { x >= l };
    let below = |(h, open): (f64, bool)| if open { x < h } else { x <= h };
    let v = if lo.is_none_or(above) && hi.is_none_or(below) {
        x
    } else {
        match (lo, hi) {
            (Some((l, _)), Some((h, _))) => (l + h) / 2.0,
            (Some((l, _)), None) => l + 1.0,
            (None, Some((h, _))) => h - 1.0,
            (None, None) => x,
        }
    };
    json!(v)
}

/// An integer from 1 to 10, moved into the schema's range when it is outside.
fn integer(s: &Map<String, Value>, rng: &mut Rng) -> Value {
    let x = 1 + (rng.next_u64() % 10) as i64;
    let (lo, hi) = bounds(s);
    let lo = lo.map(|(l, open)| {
        if open {
            l.floor() as i64 + 1
        } else {
            l.ceil() as i64
        }
    });
    let hi = hi.map(|(h, open)| {
        if open {
            h.ceil() as i64 - 1
        } else {
            h.floor() as i64
        }
    });
    let v = match (lo, hi) {
        (Some(l), Some(h)) if l <= h => x.clamp(l, h),
        (Some(l), _) => x.max(l),
        (None, Some(h)) => x.min(h),
        (None, None) => x,
    };
    json!(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(schema: Value) -> Value {
        fill(&schema, "THE PROSE".into(), &mut Rng::new(7))
    }

    #[test]
    fn a_reply_satisfies_the_agents_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "score": {"type": "number", "minimum": 0.0, "maximum": 1.0},
                "reasoning": {"type": "string", "minLength": 1},
                "issues": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "key_facts": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 5},
                "extra": {"type": "object"}
            },
            "required": ["score", "reasoning", "issues", "key_facts", "extra"],
            "additionalProperties": false
        });
        let v = filled(schema);
        let o = v.as_object().unwrap();
        assert_eq!(
            o.keys().collect::<Vec<_>>(),
            ["score", "reasoning", "issues", "key_facts", "extra"]
        );
        let score = v["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score), "{score}");
        assert_eq!(
            v["reasoning"], "THE PROSE",
            "the main text field has the prose"
        );
        assert_eq!(v["issues"].as_array().unwrap().len(), 3);
        let facts = v["key_facts"].as_array().unwrap();
        assert_eq!(facts.len(), 5, "minItems");
        assert!(facts.iter().all(|f| !f.as_str().unwrap().is_empty()));
        assert!(v["extra"].is_object());
    }

    #[test]
    fn refs_choices_ranges_and_lengths() {
        let schema = json!({
            "$defs": {"City": {"type": "object", "properties": {
                "name": {"type": "string", "maxLength": 4},
                "population": {"type": "integer", "minimum": 100, "maximum": 200},
                "kind": {"enum": ["capital", "town"]},
                "founded": {"type": "string", "format": "date"}
            }, "required": ["name", "population", "kind", "founded"]}},
            "type": "object",
            "properties": {
                "answer": {"type": "string", "minLength": 40},
                "city": {"$ref": "#/$defs/City"},
                "maybe": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                "ratio": {"type": "number", "exclusiveMinimum": 5, "maximum": 6},
                "optional": {"type": "string"}
            },
            "required": ["answer", "city", "maybe", "tags", "ratio"]
        });
        let v = filled(schema);
        let answer = v["answer"].as_str().unwrap();
        assert!(
            answer.starts_with("THE PROSE") && answer.len() >= 40,
            "{answer}"
        );
        assert_eq!(v["city"]["name"].as_str().unwrap().chars().count(), 4);
        let p = v["city"]["population"].as_i64().unwrap();
        assert!((100..=200).contains(&p), "{p}");
        assert_eq!(v["city"]["kind"], "capital");
        assert_eq!(v["city"]["founded"], "2026-01-01");
        assert_eq!(v["maybe"], true);
        assert_eq!(v["tags"].as_array().unwrap().len(), 2);
        let r = v["ratio"].as_f64().unwrap();
        assert!(r > 5.0 && r <= 6.0, "{r}");
        assert!(v.get("optional").is_none(), "only what is required");
    }

    #[test]
    fn no_top_level_text_means_no_prose() {
        let v = filled(json!({"type": "object", "properties": {
            "issues": {"type": "array", "items": {"type": "string"}}}, "required": ["issues"]}));
        assert!(v["issues"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i != "THE PROSE"));
    }
}
