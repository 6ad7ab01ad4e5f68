//! The text the agents are sent. Written for this port; the agents' own role
//! descriptions live in `agents/*.json`.

use serde_json::{Map, Value};

use super::agents::Agent;
use super::budget::cut;
use super::detect::ContentType;
use super::schema::{Field, FieldType};
use crate::prompt::{weight, Prompt};

/// `{"context": "<string>", "key_facts": ["<string>"]}`: the reply's shape, shown
/// to the model (and recognised by the simulator).
pub fn example(fields: &[Field]) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(
            |Field {
                 name, kind, items, ..
             }| {
                let v = match (kind, items) {
                    (FieldType::List, Some(items)) => format!("[{}, …]", example(items)),
                    (FieldType::String, _) => "\"<text>\"".into(),
                    (FieldType::List, None) => "[\"<item>\", \"<item>\"]".into(),
                    (FieldType::Object, _) => "{}".into(),
                    (FieldType::Number, _) => "0.0".into(),
                };
                format!("\"{name}\": {v}")
            },
        )
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// The system message: the agent's own prompt plus the exact reply shape.
/// When the pipeline asks for other fields than the agent's own (a
/// synthesis, an outline, a short answer), the prompt's lines describing
/// fields that are not asked for (`- "examples": …`) are left out, so the
/// prompt and the schema agree.
pub fn system(agent: &Agent, fields: &[Field]) -> String {
    let own = if fields == agent.required_fields.as_slice() {
        agent.system_prompt.clone()
    } else {
        agent
            .system_prompt
            .lines()
            .filter(|line| match field_line(line) {
                Some(name) => fields.iter().any(|f| f.name == name),
                None => true,
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "{own}\n\nReply shape (one JSON object, real content in every field): {}",
        example(fields)
    )
}

/// The field a line of an agent's prompt describes (`- "summary": string, …`).
fn field_line(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix("- \"")?;
    let end = rest.find("\":")?;
    Some(&rest[..end])
}

/// The follow-up when a reply lacked fields or had the wrong types: the task
/// and the format again, never what was wrong with the reply (a small model
/// copies such findings into its answer).
pub(crate) fn fix_fields(original: &Prompt, fields: &[Field]) -> Prompt {
    Prompt::default()
        .says(format!(
            "Answer the request below as ONE JSON object of exactly this shape, with real content in every field and nothing outside the object:\n{}\n\nThe request:\n",
            example(fields)
        ))
        .then(original)
}

/// The Researcher's request; `question` may carry quoted document excerpts (RAG).
pub fn researcher(question: impl Into<Prompt>) -> Prompt {
    Prompt::default()
        .says("Question: ")
        .then(&question.into())
        .says("\n\nResearch this question and explain the answer thoroughly.")
}

pub fn critic(query: &str) -> Prompt {
    format!("Question: {query}\n\nReview how this question is usually answered: point out the common mistakes, biases and gaps, what a good answer must get right, and what you would recommend it include.").into()
}

/// An agent's reply as plain text for another agent to read, within `max`
/// (thirds of a token, [`crate::prompt::weight`]; an ASCII byte each): one entry per field (`key facts:` then `- item` lines), each cut to
/// its share of the room (what a short field leaves goes to the others). The
/// field labels are the prompt's own words; the values are quoted material.
pub(crate) fn material(obj: &Map<String, Value>, max: usize) -> Prompt {
    let entries: Vec<(String, String)> = obj
        .iter()
        .filter_map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.trim().to_string(),
                Value::Array(items) => items
                    .iter()
                    .filter_map(|i| match i {
                        Value::String(s) => Some(format!("- {}", s.trim())),
                        Value::Number(n) => Some(format!("- {n}")),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            (!text.is_empty()).then(|| (k.replace('_', " "), text))
        })
        .collect();
    let mut order: Vec<usize> = (0..entries.len()).collect();
    let cost: Vec<usize> = entries.iter().map(|(_, t)| weight(t)).collect();
    order.sort_by_key(|i| cost[*i]);
    let mut left = max;
    let mut shares = vec![0usize; entries.len()];
    for (done, &i) in order.iter().enumerate() {
        let label = weight(&entries[i].0) + 3;
        let share = (left / (entries.len() - done)).saturating_sub(label);
        shares[i] = share;
        left = left.saturating_sub(cost[i].min(share) + label);
    }
    let mut p = Prompt::default();
    for (i, ((label, text), share)) in entries.iter().zip(shares).enumerate() {
        if share == 0 {
            continue;
        }
        let sep = if text.starts_with("- ") { "\n" } else { " " };
        if i > 0 && !p.text.is_empty() {
            p = p.quotes("\n");
        }
        p = p
            .says(format!("{label}:"))
            .quotes(sep)
            .quotes(cut(text, share));
    }
    p
}

pub(crate) fn critic_of(query: &str, research: &Map<String, Value>, room: usize) -> Prompt {
    Prompt::default()
        .says(format!("Question: {query}\n\nThe Researcher's answer:\n"))
        .then(&material(research, room))
        .says("\n\nReview this answer: list its factual issues, its biases, its strengths, and concrete recommendations to improve it.")
}

/// What the Editor is asked to do with the material: the full answer.
const EDITOR_TASK: &str = "Write the final answer for the person who asked: use the findings, fix what the review found, and fill every field.";
/// ... and for a short factual question: a short answer.
const BRIEF_TASK: &str = "This is a short factual question: answer it directly, using the findings and what the review found. The summary is the answer in one to three sentences; the key points are two to five short facts that support it.";

/// The Editor's request; a side that could not be produced is left out. The
/// sides share `room` bytes (the findings get the larger part).
pub fn editor(
    question: impl Into<Prompt>,
    research: Option<&Map<String, Value>>,
    critique: Option<&Map<String, Value>>,
    room: usize,
) -> Prompt {
    editor_with(question.into(), research, critique, room, EDITOR_TASK)
}

/// The Editor's request for a short factual question: the same material,
/// and an answer as short as the question (a summary and key points).
pub fn editor_brief(
    question: impl Into<Prompt>,
    research: Option<&Map<String, Value>>,
    critique: Option<&Map<String, Value>>,
    room: usize,
) -> Prompt {
    editor_with(question.into(), research, critique, room, BRIEF_TASK)
}

fn editor_with(
    question: Prompt,
    research: Option<&Map<String, Value>>,
    critique: Option<&Map<String, Value>>,
    room: usize,
    task: &str,
) -> Prompt {
    let research_room = match critique {
        Some(_) => room * 3 / 5,
        None => room,
    };
    let critique_room = room.saturating_sub(if research.is_some() { research_room } else { 0 });
    let mut p = Prompt::default()
        .says("Question to answer: ")
        .then(&question)
        .says("\n\n");
    p = match research {
        Some(m) => p
            .says("Researcher's findings:\n")
            .then(&material(m, research_room)),
        None => p.says("Researcher's findings: not available (they could not be produced)."),
    };
    p = p.says("\n\n");
    p = match critique {
        Some(m) => p
            .says("Critic's review:\n")
            .then(&material(m, critique_room)),
        None => p.says("Critic's review: not available (it could not be produced)."),
    };
    p.says(format!("\n\n{task}"))
}

/// The request for the outline of an answer in `total` parts (chapters, for
/// a story): their titles and focus, for this question.
pub fn outline(query: &str, total: usize, story: bool) -> Prompt {
    let unit = if story { "chapter" } else { "part" };
    Prompt::default()
        .says(format!("Plan a {total}-{unit} answer to this request: "))
        .quotes(query)
        .says(format!(
            "\n\nList the {total} {unit}s in order. Give each a short title of its own (three to eight words, no two alike) that names the subject of the request and what that {unit} covers, and a focus: one sentence saying what that {unit} must explain. The {unit}s must not overlap, and together they answer the request fully."
        ))
}

const REFINE_ANGLES: &[&str] = &[
    "Fix the most serious problems first.",
    "Fill in the gaps the review found.",
    "Make every claim more precise and accurate.",
    "Approach the question from a different angle where that helps.",
    "Expand the parts that were too thin.",
];

pub fn refine(
    query: &str,
    research: &Map<String, Value>,
    critique: &Map<String, Value>,
    variant: usize,
    room: usize,
) -> Prompt {
    Prompt::default()
        .says(format!("Question: {query}\n\nYour previous answer:\n"))
        .then(&material(research, room * 3 / 5))
        .says("\n\nThe Critic's review:\n")
        .then(&material(critique, room * 2 / 5))
        .says(format!(
            "\n\nRevise your answer to address the review. {}",
            REFINE_ANGLES[variant % REFINE_ANGLES.len()]
        ))
}

/// The Editor again after the output validation failed: the task and the
/// format the answer must have, never the validator's findings.
pub(crate) fn editor_retry(query: &str, answer: &str, room: usize) -> Prompt {
    Prompt::default()
        .says(format!("Question to answer: {query}\n\nDraft answer:\n"))
        .quotes(cut(answer, room))
        .says("\n\nRewrite the draft as the final answer to the question: between 150 and 1,200 words, each point made once, formulas in plain text. Keep everything correct in it and fill every field.")
}

pub(crate) fn voter(query: &str, answer: &str, perspective: &str, room: usize) -> Prompt {
    Prompt::default()
        .says(format!("Question: {query}\n\nAnswer to judge:\n"))
        .quotes(cut(answer, room))
        .says(format!("\n\nJudge it {perspective}."))
}

/// The Editor again after a failed quality vote: the task and the format,
/// never the voters' words.
pub(crate) fn improve(query: &str, answer: &str, room: usize) -> Prompt {
    Prompt::default()
        .says(format!("Question to answer: {query}\n\nCurrent answer:\n"))
        .quotes(cut(answer, room))
        .says("\n\nWrite an improved answer to the question: accurate, complete and clearly structured, with every field filled.")
}

/// Chunk `n` of `total` of a long-form answer, about `words` words long. The
/// first words name the part (and its planned title, if any), so each
/// chunk's request is distinct.
pub fn chunk(
    query: &str,
    ct: ContentType,
    (n, total): (usize, usize),
    title: Option<&str>,
    focus: &str,
    first_summary: Option<&str>,
    words: usize,
) -> Prompt {
    let unit = if ct == ContentType::Storytelling {
        "Chapter"
    } else {
        "Part"
    };
    let named = title
        .map(|t| format!(": {t}."))
        .unwrap_or_else(|| ".".into());
    let mut s = format!("{unit} {n} of {total}{named} Focus: {focus}\n\nRequest: {query}\n\n");
    match first_summary {
        None if ct == ContentType::Storytelling => s.push_str(&format!(
            "Open the story: introduce the setting and the characters. Write about {words} words."
        )),
        None => s.push_str(&format!(
            "Cover only the fundamental concepts and definitions, in depth. Write about {words} words."
        )),
        Some(summary) => {
            s.push_str(&format!("{unit} 1 covered (summary): {summary}\n\n"));
            if ct == ContentType::Storytelling {
                s.push_str(&format!(
                    "Continue the same story with the same characters. Write about {words} words."
                ));
            } else {
                s.push_str(&format!(
                    "Write only about this focus; do not repeat what part 1 covered. Write about {words} words."
                ));
            }
        }
    }
    s.into()
}

/// A chunk asked again after its quality check: the same task, and the form
/// the text must take; never the check's findings.
pub(crate) fn chunk_retry(prompt: &Prompt) -> Prompt {
    prompt.clone().says(
        "\n\nWrite it as connected paragraphs of complete, grammatical sentences in plain prose: no lists, no headings, no notes about these instructions.",
    )
}

/// One pass over every part: the whole answer rewritten as one text.
pub fn synthesis(query: &str, ct: ContentType, parts: &[String]) -> Prompt {
    let mut p = Prompt::default().says(format!(
        "Combine these {} parts into one coherent {} answering: {query}\n\nKeep all of their content: do not shorten or summarise; remove only repetition and add transitions.\n\n",
        parts.len(),
        if ct == ContentType::Storytelling { "story" } else { "text" }
    ));
    for (i, part) in parts.iter().enumerate() {
        p = p
            .says(format!("## Part {}\n", i + 1))
            .quotes(part)
            .quotes("\n\n");
    }
    p
}

/// First stage of a synthesis that does not fit one request: a summary of a
/// group of parts (`(number, text)`), about `words` words.
pub(crate) fn group_summary(
    query: &str,
    total: usize,
    parts: &[(usize, &str)],
    words: usize,
) -> Prompt {
    let numbers: Vec<String> = parts.iter().map(|(n, _)| n.to_string()).collect();
    let mut p = Prompt::default().says(format!(
        "Below are part(s) {} of a {total}-part answer to: {query}\n\nSummarise them in about {words} words of plain prose: the main points, in order.\n\n",
        numbers.join(", ")
    ));
    for (n, text) in parts {
        p = p.says(format!("## Part {n}\n")).quotes(text).quotes("\n\n");
    }
    p
}

/// The final stage: an overview of the whole answer from the summaries of its
/// parts (`(label, summary)`), about `words` words.
pub(crate) fn overview(query: &str, summaries: &[(String, String)], words: usize) -> Prompt {
    let mut p = Prompt::default().says(format!(
        "Summaries of the parts of an answer to: {query}\n\n"
    ));
    for (label, summary) in summaries {
        p = p
            .says(format!("## {label}\n"))
            .quotes(summary)
            .quotes("\n\n");
    }
    p.says(format!(
        "Write an overview of the whole answer in about {words} words of connected prose for the reader: what it covers, how the parts fit together and what follows from them."
    ))
}

/// A short summary of a text: its first sentences up to about `chars` characters.
pub fn summary(text: &str, chars: usize) -> String {
    let mut out = String::new();
    for sentence in text.split_inclusive(['.', '!', '?']) {
        if out.len() + sentence.len() > chars && !out.is_empty() {
            break;
        }
        out.push_str(sentence);
    }
    out.chars()
        .take(chars)
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_shapes() {
        let f = vec![
            Field::text("context"),
            Field::new("topics", FieldType::List),
            Field::new("score", FieldType::Number),
        ];
        let e = example(&f);
        let v: Value = serde_json::from_str(&e).unwrap();
        assert!(v["context"].is_string() && v["topics"].is_array() && v["score"].is_number());
    }

    #[test]
    fn a_system_prompt_describes_only_the_fields_asked_for() {
        let editor = super::super::agents::builtin_role("Editor");
        let full = system(editor, &editor.required_fields);
        assert!(full.contains("- \"examples\": list"), "{full}");
        let brief = system(
            editor,
            &crate::pipeline::schema::brief(&editor.required_fields),
        );
        assert!(brief.contains("- \"summary\": string"), "{brief}");
        assert!(brief.contains("- \"key_points\": list"), "{brief}");
        for gone in ["examples", "practical_applications", "detailed_explanation"] {
            assert!(!brief.contains(&format!("- \"{gone}\"")), "{gone}: {brief}");
        }
        assert!(
            brief.ends_with("{\"summary\": \"<text>\", \"key_points\": [\"<item>\", \"<item>\"]}")
        );
        let outline = system(editor, &crate::pipeline::schema::outline(3));
        assert!(
            outline.ends_with("{\"parts\": [{\"title\": \"<text>\", \"focus\": \"<text>\"}, …]}"),
            "{outline}"
        );
    }

    #[test]
    fn chunk_prompts_start_with_their_part() {
        let a = chunk(
            "q",
            ContentType::Research,
            (2, 5),
            None,
            "formalism",
            Some("s"),
            400,
        )
        .text;
        let b = chunk(
            "q",
            ContentType::Research,
            (3, 5),
            None,
            "evidence",
            Some("s"),
            400,
        )
        .text;
        assert!(a.starts_with("Part 2 of 5. Focus: formalism"));
        assert!(a.ends_with("Write about 400 words."));
        assert_ne!(&a[..20], &b[..20]);
        assert!(chunk(
            "q",
            ContentType::Storytelling,
            (1, 5),
            None,
            "opening",
            None,
            300
        )
        .text
        .starts_with("Chapter 1 of 5"));
        let planned = chunk(
            "q",
            ContentType::Research,
            (2, 5),
            Some("How vaccines train B cells"),
            "Antibodies and memory.",
            Some("s"),
            400,
        )
        .text;
        assert!(
            planned.starts_with("Part 2 of 5: How vaccines train B cells. Focus: Antibodies"),
            "{planned}"
        );
    }

    /// Words the quality checks and the field checks use: never in a prompt.
    const FINDINGS: &[&str] = &[
        "too short",
        "too few",
        "rejected",
        "failed",
        "missing",
        "placeholder",
        "expected list",
        "repetitive",
        "could not be used",
        "duplicates",
        "LaTeX",
    ];

    #[test]
    fn retry_prompts_restate_the_task_never_the_findings() {
        let fields = vec![Field::text("context")];
        let first = chunk(
            "Why is the sky blue?",
            ContentType::Research,
            (1, 3),
            None,
            "basics",
            None,
            300,
        );
        let research = serde_json::json!({"context": "Light scatters.", "key_facts": ["Rayleigh"]});
        let research = research.as_object().unwrap();
        let prompts = [
            chunk_retry(&first),
            fix_fields(&first, &fields),
            editor_retry("Why is the sky blue?", "## Summary\nLight scatters.", 2000),
            improve("Why is the sky blue?", "## Summary\nLight scatters.", 2000),
        ];
        for p in &prompts {
            for word in FINDINGS {
                assert!(!p.text.contains(word), "{word:?} in {}", p.text);
            }
            assert!(
                p.text.contains("Why is the sky blue?"),
                "the task: {}",
                p.text
            );
        }
        assert!(prompts[0].text.starts_with(&first.text));
        assert!(prompts[1].text.contains(&example(&fields)), "the format");
        assert!(prompts[2].text.contains("between 150 and 1,200 words"));
        // The quoted draft is material, not the prompt's own words.
        assert!(!prompts[2].own.concat().contains("Light scatters"));
        assert!(editor("q", Some(research), None, 500)
            .text
            .contains("- Rayleigh"));
        let brief = editor_brief("q", Some(research), None, 500).text;
        assert!(brief.contains("- Rayleigh") && brief.contains("short factual question"));
    }

    #[test]
    fn material_fits_its_room() {
        let long = serde_json::json!({
            "context": "A sentence of the findings. ".repeat(200),
            "key_facts": ["one", "two"],
            "sources": []
        });
        let p = material(long.as_object().unwrap(), 600);
        let m = p.text;
        assert!(m.len() <= 600, "{}", m.len());
        assert_eq!(
            p.own,
            ["context:", "key facts:"],
            "the labels are the prompt's own"
        );
        assert!(m.contains("key facts:\n- one\n- two"), "{m}");
        assert!(m.starts_with("context: A sentence of the findings."), "{m}");
    }

    #[test]
    fn summaries_are_short() {
        assert_eq!(summary("One. Two. Three.", 9), "One. Two.");
        assert!(summary(&"word ".repeat(500), 200).len() <= 200);
    }
}
