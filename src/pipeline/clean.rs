//! What a model wrote, made fit for the answer: small models repeat their
//! instructions ("Write at least 400 words.", "Reply shape: …", the question),
//! leave JSON syntax in their text, and say a sentence twice. Lines and
//! sentences that repeat this program's own prompt text are dropped (never the
//! material a prompt quotes: an Editor that reuses the Researcher's sentences
//! is doing its job), JSON syntax is read out of the text, and repeats go.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::repair;

/// A repeated line at least this long (normalised) is an echo.
const ECHO_LINE: usize = 16;
/// A repeated sentence at least this long (normalised) is an echo or a repeat.
const ECHO_SENTENCE: usize = 24;
/// Text before a JSON object that is still read as the reply's lead-in ("Sure! Here it is:").
const JSON_LEAD_IN: usize = 120;

/// This program's own text in one prompt, normalised for comparison, and
/// the labels it put before quoted material ("key facts:").
pub struct Echo {
    own: String,
    labels: Vec<String>,
    /// The own text's sentences (normalised), to catch a reply sentence that
    /// starts like one of them and ends its own way ("Write it as connected
    /// paragraphs of full text of part 2.").
    starts: Vec<String>,
}

/// A reply sentence is an echo when at least this share of it is the start
/// of one of the prompt's own sentences (and at least `ECHO_SENTENCE` long).
const ECHO_START_SHARE: f64 = 0.6;

/// The longest piece of own text that counts as a label.
const LABEL_MAX: usize = 40;

impl Echo {
    /// From the prompt pieces this program wrote (system prompt, instructions,
    /// the question, labels), not the material they quote.
    pub fn new<'a>(own: impl IntoIterator<Item = &'a str>) -> Echo {
        let pieces: Vec<&str> = own.into_iter().collect();
        let mut labels: Vec<String> = pieces
            .iter()
            .map(|p| p.trim().to_lowercase())
            .filter(|p| p.ends_with(':') && p.len() <= LABEL_MAX && !p.contains('\n'))
            .collect();
        labels.sort_by_key(|l| std::cmp::Reverse(l.len()));
        labels.dedup();
        let starts = pieces
            .iter()
            .flat_map(|p| p.split(['.', '!', '?', '\n']))
            .map(norm)
            .filter(|s| s.len() >= ECHO_SENTENCE)
            .collect();
        Echo {
            own: pieces
                .iter()
                .map(|p| norm(p))
                .collect::<Vec<_>>()
                .join("\n"),
            labels,
            starts,
        }
    }

    fn repeats(&self, piece: &str, min: usize) -> bool {
        let n = norm(piece);
        n.chars().count() >= min && self.own.contains(&n)
    }

    /// Most of `sentence` is the start of one of the prompt's own sentences.
    fn starts_like_ours(&self, sentence: &str) -> bool {
        let n = norm(sentence);
        let words: Vec<&str> = n.split(' ').collect();
        let mut longest = 0;
        for k in 5..=words.len() {
            let prefix = words[..k].join(" ");
            if self.starts.iter().any(|s| s.starts_with(&prefix)) {
                longest = prefix.len();
            } else {
                break;
            }
        }
        longest >= ECHO_SENTENCE && longest as f64 >= ECHO_START_SHARE * n.len() as f64
    }

    /// A line without a label of ours at its start.
    fn unlabelled<'a>(&self, line: &'a str) -> &'a str {
        let t = line.trim_start();
        for l in &self.labels {
            if t.len() >= l.len()
                && t.is_char_boundary(l.len())
                && t[..l.len()].to_lowercase() == *l
            {
                return t[l.len()..].trim_start();
            }
        }
        line
    }
}

/// Lower case, one space between words, no quotes or bullets around.
fn norm(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_string()
}

/// Clean every string (and every string in a list) of an agent's reply.
/// List items that clean to nothing are dropped.
pub fn fields(obj: &mut Map<String, Value>, echo: &Echo) {
    for v in obj.values_mut() {
        match v {
            Value::String(s) => *s = text(s, echo),
            Value::Array(items) => {
                let mut seen: HashSet<String> = HashSet::new();
                for item in items.iter_mut() {
                    if let Value::String(s) = item {
                        *s = text(s, echo);
                    }
                }
                // Empty items, and items said before, go.
                items.retain(|i| match i {
                    Value::String(s) => !s.is_empty() && seen.insert(norm(s)),
                    _ => true,
                });
            }
            _ => {}
        }
    }
}

/// One text, cleaned: JSON read out of it, echoed lines and sentences and
/// repeated sentences dropped, whitespace tidied.
pub fn text(s: &str, echo: &Echo) -> String {
    if is_placeholder(s) {
        return String::new();
    }
    let s = unjson(s);
    let mut seen: HashSet<String> = HashSet::new();
    let mut out: Vec<String> = Vec::new();
    for raw in s.lines() {
        let line = echo.unlabelled(raw);
        let trimmed = line.trim();
        if trimmed.is_empty() && !raw.trim().is_empty() {
            // Nothing but one of our labels.
            continue;
        }
        if trimmed.is_empty() {
            if out.last().is_some_and(|l| !l.is_empty()) {
                out.push(String::new());
            }
            continue;
        }
        if echo.repeats(trimmed, ECHO_LINE) {
            continue;
        }
        let kept: Vec<&str> = sentences(line)
            .filter(|sentence| {
                let n = norm(sentence);
                if n.chars().count() < ECHO_SENTENCE {
                    return true;
                }
                !echo.repeats(sentence, ECHO_SENTENCE)
                    && !echo.starts_like_ours(sentence)
                    && seen.insert(n)
            })
            .collect();
        let joined = kept.concat();
        let joined = joined
            .trim()
            .trim_start_matches(['—', '–', '-', ':', ',', ';'])
            .trim();
        if !joined.is_empty() {
            // Keep the line's indentation (lists, code) when nothing was dropped.
            if kept.concat() == line {
                out.push(line.trim_end().to_string());
            } else {
                out.push(joined.to_string());
            }
        }
    }
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out.join("\n")
}

/// The reply shape's own placeholders (`<text>`, `<item>`), copied instead of content.
fn is_placeholder(s: &str) -> bool {
    let t = s.trim();
    t.len() <= 12
        && t.starts_with('<')
        && t.ends_with('>')
        && t[1..t.len() - 1]
            .chars()
            .all(|c| c.is_ascii_alphabetic() || c == '_')
}

/// A line split after each `.`, `!` or `?` that ends a sentence, the pieces
/// keeping their spacing so they can be joined back.
fn sentences(line: &str) -> impl Iterator<Item = &str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let bytes = line.as_bytes();
    for (i, c) in line.char_indices() {
        if matches!(c, '.' | '!' | '?') {
            let next = bytes.get(i + 1).copied();
            if next.is_none_or(|b| b == b' ') {
                pieces.push(&line[start..=i]);
                start = i + 1;
            }
        }
    }
    if start < line.len() {
        pieces.push(&line[start..]);
    }
    pieces.into_iter()
}

/// Text that is (or holds) a JSON object: its string values, in order, as
/// paragraphs; lines of leftover JSON syntax dropped. Other text unchanged.
fn unjson(s: &str) -> String {
    // An object at the start (after a short lead-in), not a sample inside prose
    // or in a code block.
    let start = s
        .find('{')
        .filter(|i| *i <= JSON_LEAD_IN && !s.contains("```"));
    let opens_object = start.is_some_and(|i| s[i + 1..].trim_start().starts_with(['"', '}']));
    if let (Some(i), true) = (start, opens_object) {
        let (obj, after) = match repair::balanced_end(&s[i..]) {
            Some(end) => (repair::extract_object(&s[i..i + end]), s[i + end..].trim()),
            None => (repair::close_truncated(&s[i..]), ""),
        };
        if let Some(obj) = obj {
            let mut parts: Vec<String> = Vec::new();
            let before = s[..i].trim();
            if !before.is_empty() {
                parts.push(before.to_string());
            }
            collect_strings(&Value::Object(obj), &mut parts);
            if !after.is_empty() {
                parts.push(unjson(after));
            }
            return parts.join("\n\n");
        }
    }
    s.lines()
        .filter(|l| !is_json_syntax(l))
        .map(strip_json_key)
        .collect::<Vec<_>>()
        .join("\n")
}

fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if !s.trim().is_empty() => out.push(s.trim().to_string()),
        Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Value::Object(m) => {
            for (k, v) in m {
                if is_prose(k) {
                    out.push(k.trim().to_string());
                }
                collect_strings(v, out);
            }
        }
        _ => {}
    }
}

/// Text a model put where a key belongs (`{"Paris is the capital. It…": …}`):
/// several words, not a field name.
pub(crate) fn is_prose(key: &str) -> bool {
    key.split_whitespace().count() >= 4
}

/// Every text in an object, in order: string values, list items, and keys
/// that are prose.
pub fn texts(obj: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    collect_strings(&Value::Object(obj.clone()), &mut out);
    out
}

/// A line of nothing but JSON punctuation (`{`, `}],`, `"`).
fn is_json_syntax(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty()
        && t.chars()
            .all(|c| "{}[],:\"".contains(c) || c.is_whitespace())
}

/// `"context": "The text",` → `The text`; other lines unchanged.
fn strip_json_key(line: &str) -> String {
    let t = line.trim();
    let Some(rest) = t.strip_prefix('"') else {
        return line.to_string();
    };
    let Some(end) = rest.find('"') else {
        return line.to_string();
    };
    let key = &rest[..end];
    let after = rest[end + 1..].trim_start();
    if key.is_empty() || !after.starts_with(':') {
        return line.to_string();
    }
    let value = after[1..]
        .trim()
        .trim_end_matches(',')
        .trim_matches(|c| c == '"' || c == '{' || c == '}' || c == '[' || c == ']')
        .to_string();
    // A field name goes; text a model wrote as a key stays.
    match (is_prose(key), value.is_empty()) {
        (true, true) => key.to_string(),
        (true, false) => format!("{key} {value}"),
        (false, _) => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn echo() -> Echo {
        Echo::new([
            "Reply shape (one JSON object, real content in every field): {\"context\": \"<text>\"}",
            "Part 2 of 5. Focus: The evidence.\n\nRequest: What is the capital of France?\n\nWrite only about this focus; do not repeat what part 1 covered. Write about 300 words.",
        ])
    }

    #[test]
    fn echoed_instructions_are_dropped() {
        let reply = "Part 2 of 5. Focus: The evidence.\n\nRequest: What is the capital of France?\n\nParis is the capital of France. It has been since the Middle Ages. Write only about this focus; do not repeat what part 1 covered.";
        assert_eq!(
            text(reply, &echo()),
            "Paris is the capital of France. It has been since the Middle Ages."
        );
    }

    #[test]
    fn an_instruction_echoed_with_its_own_ending_is_dropped() {
        let e = Echo::new([
            "Request: Write a report on the history of the printing press in Europe\n\n",
            "Write it as connected paragraphs of complete, grammatical sentences in plain prose.",
        ]);
        let reply = "The history of the printing press in Europe began in Mainz around 1450. Write it as connected paragraphs of full text of part 2.";
        assert_eq!(
            text(reply, &e),
            "The history of the printing press in Europe began in Mainz around 1450."
        );
    }

    #[test]
    fn material_and_short_repeats_stay() {
        // A fact that merely contains prompt words stays; so do short sentences.
        let reply = "The evidence is clear. France's capital, Paris, sits on the Seine.";
        assert_eq!(text(reply, &echo()), reply);
    }

    #[test]
    fn repeated_sentences_go() {
        let reply = "Paris sits on the river Seine in the north. Paris sits on the river Seine in the north. It is old.";
        assert_eq!(
            text(reply, &echo()),
            "Paris sits on the river Seine in the north. It is old."
        );
    }

    #[test]
    fn json_is_read_out_of_text() {
        let reply = "{\"context\": \"Paris is the capital. It is large. Its old t";
        assert_eq!(text(reply, &echo()), "Paris is the capital. It is large.");
        let lines = "{\n\"context\": \"Paris is the capital.\",\n\"sources\": [\"Atlas\"]\n}";
        assert_eq!(text(lines, &echo()), "Paris is the capital.\n\nAtlas");
        let loose = "Here it is:\n\"summary\": \"Paris.\",\n}";
        assert_eq!(text(loose, &echo()), "Here it is:\nParis.");
        let sample = "In the request described in the previous section, to send a name, write a body such as the one below, which the server reads as an object with one key and one value: {\"name\": \"x\"} and so on.";
        assert_eq!(text(sample, &echo()), sample, "a sample inside prose stays");
    }

    #[test]
    fn labels_of_quoted_material_are_dropped_the_material_kept() {
        let e = Echo::new([
            "Question to answer: Why?\n\n",
            "Researcher's findings:\n",
            "key facts:",
        ]);
        let reply = "Researcher's findings:\nkey facts: - Light scatters in the air.\nKey Facts:\n- Blue scatters most.";
        assert_eq!(
            text(reply, &e),
            "- Light scatters in the air.\n- Blue scatters most."
        );
    }

    #[test]
    fn prose_written_as_keys_is_kept_as_text() {
        let cut = "{\n\"Paris is the capital of France and its largest city.\": \"\",\n\"It lies on the Seine river in the north.\":";
        let t = text(cut, &echo());
        assert!(!t.contains("\":") && !t.contains('{'), "{t}");
        assert!(
            t.contains("Paris is the capital of France and its largest city."),
            "{t}"
        );
        let whole = "{\"Paris is the capital of France.\": {\"population\": \"2 million\"}}";
        assert_eq!(
            text(whole, &echo()),
            "Paris is the capital of France.\n\n2 million"
        );
    }

    #[test]
    fn fields_cleans_strings_and_lists() {
        let mut obj = json!({
            "context": "Request: What is the capital of France?\nParis.",
            "key_facts": ["Write only about this focus; do not repeat what part 1 covered.", "Paris is large."],
            "score": 0.5
        })
        .as_object()
        .unwrap()
        .clone();
        obj.insert(
            "topics".into(),
            json!(["Paris", "<item>", "paris", "Seine"]),
        );
        obj.insert("summary".into(), json!("<text>"));
        fields(&mut obj, &echo());
        assert_eq!(obj["context"], "Paris.");
        assert_eq!(obj["key_facts"], json!(["Paris is large."]));
        assert_eq!(
            obj["topics"],
            json!(["Paris", "Seine"]),
            "placeholders and repeats go"
        );
        assert_eq!(obj["summary"], "");
        assert_eq!(obj["score"], 0.5);
    }
}
