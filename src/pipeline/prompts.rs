//! The text the agents are sent. Written for this port; the agents' own role
//! descriptions live in `agents/*.json`.

use serde_json::{Map, Value};

use super::agents::Agent;
use super::detect::ContentType;
use super::repair::FieldType;

/// `{"context": "<string>", "key_facts": ["<string>"]}`: the reply's shape, shown
/// to the model (and recognised by the simulator).
pub fn example(fields: &[(String, FieldType)]) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|(name, ty)| {
            let v = match ty {
                FieldType::String => "\"<text>\"",
                FieldType::List => "[\"<item>\", \"<item>\"]",
                FieldType::Object => "{}",
                FieldType::Number => "0.0",
            };
            format!("\"{name}\": {v}")
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// The system message: the agent's own prompt plus the exact reply shape.
pub fn system(agent: &Agent, fields: &[(String, FieldType)]) -> String {
    format!(
        "{}\n\nReply shape (one JSON object, real content in every field): {}",
        agent.system_prompt,
        example(fields)
    )
}

/// The follow-up when a reply lacked fields or had the wrong types.
pub fn fix_fields(original: &str, problems: &[String], fields: &[(String, FieldType)]) -> String {
    format!(
        "Your previous reply could not be used: {}.\nAnswer the same request again as ONE JSON object of exactly this shape, with real content in every field and nothing outside the object:\n{}\n\nThe request was:\n{}",
        problems.join("; "),
        example(fields),
        original
    )
}

pub fn researcher(query: &str) -> String {
    format!("Question: {query}\n\nResearch this question and explain the answer thoroughly.")
}

pub fn critic(query: &str) -> String {
    format!("Question: {query}\n\nReview how this question is usually answered: point out the common mistakes, biases and gaps, what a good answer must get right, and what you would recommend it include.")
}

pub fn critic_of(query: &str, research: &Map<String, Value>) -> String {
    format!(
        "Question: {query}\n\nThe Researcher's answer (JSON):\n{}\n\nReview this answer: list its factual issues, its biases, its strengths, and concrete recommendations to improve it.",
        Value::Object(research.clone())
    )
}

/// The Editor's request; a side that could not be produced is left out.
pub fn editor(
    query: &str,
    research: Option<&Map<String, Value>>,
    critique: Option<&Map<String, Value>>,
) -> String {
    let side = |name: &str, v: Option<&Map<String, Value>>| match v {
        Some(m) => format!("{name} (JSON):\n{}", Value::Object(m.clone())),
        None => format!("{name}: not available (it could not be produced)."),
    };
    format!(
        "Question to answer: {query}\n\n{}\n\n{}\n\nWrite the final answer for the person who asked: use the findings, fix what the review found, and fill every field.",
        side("Researcher's findings", research),
        side("Critic's review", critique)
    )
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
) -> String {
    format!(
        "Question: {query}\n\nYour previous answer (JSON):\n{}\n\nThe Critic's review (JSON):\n{}\n\nRevise your answer to address the review. {}",
        Value::Object(research.clone()),
        Value::Object(critique.clone()),
        REFINE_ANGLES[variant % REFINE_ANGLES.len()]
    )
}

pub fn editor_retry(query: &str, answer: &str, problems: &[String]) -> String {
    format!(
        "Question to answer: {query}\n\nA draft answer failed these checks: {}.\n\nDraft:\n{answer}\n\nRewrite the answer so that it passes, keeping everything correct in it.",
        problems.join("; ")
    )
}

pub fn voter(query: &str, answer: &str, perspective: &str) -> String {
    format!("Question: {query}\n\nAnswer to judge:\n{answer}\n\nJudge it {perspective}.")
}

pub fn improve(query: &str, answer: &str, feedback: &[(f64, String)], issues: &[String]) -> String {
    let votes: Vec<String> = feedback
        .iter()
        .map(|(s, r)| format!("- {s:.2}: {r}"))
        .collect();
    format!(
        "Question to answer: {query}\n\nReviewers scored the current answer:\n{}\n\nProblems they found:\n{}\n\nCurrent answer:\n{answer}\n\nWrite an improved answer that fixes these problems.",
        votes.join("\n"),
        issues.iter().map(|i| format!("- {i}")).collect::<Vec<_>>().join("\n")
    )
}

/// Chunk `n` of `total` of a long-form answer. The first words name the part,
/// so each chunk's request is distinct.
pub fn chunk(
    query: &str,
    ct: ContentType,
    n: usize,
    total: usize,
    focus: &str,
    first_summary: Option<&str>,
) -> String {
    let unit = if ct == ContentType::Storytelling {
        "Chapter"
    } else {
        "Part"
    };
    let mut s = format!("{unit} {n} of {total}. Focus: {focus}\n\nRequest: {query}\n\n");
    match first_summary {
        None if ct == ContentType::Storytelling => s.push_str("Open the story: introduce the setting and the characters. Write at least 300 words."),
        None => s.push_str("Cover only the fundamental concepts and definitions, in depth. Write at least 500 words."),
        Some(summary) => {
            s.push_str(&format!("{unit} 1 covered (summary): {summary}\n\n"));
            if ct == ContentType::Storytelling {
                s.push_str("Continue the same story with the same characters. Write at least 300 words.");
            } else {
                s.push_str("Write only about this focus; do not repeat what part 1 covered. Write at least 400 words.");
            }
        }
    }
    s
}

pub fn chunk_retry(prompt: &str, problems: &[String]) -> String {
    format!(
        "{prompt}\n\nAn earlier attempt was rejected ({}). Write complete, grammatical sentences in connected paragraphs.",
        problems.join("; ")
    )
}

pub fn synthesis(query: &str, ct: ContentType, parts: &[String]) -> String {
    let mut s = format!(
        "Combine these {} parts into one coherent {} answering: {query}\n\nKeep all of their content: do not shorten or summarise; remove only repetition and add transitions.\n\n",
        parts.len(),
        if ct == ContentType::Storytelling { "story" } else { "text" }
    );
    for (i, p) in parts.iter().enumerate() {
        s.push_str(&format!("## Part {}\n{p}\n\n", i + 1));
    }
    s
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
            ("context".to_string(), FieldType::String),
            ("topics".to_string(), FieldType::List),
            ("score".to_string(), FieldType::Number),
        ];
        let e = example(&f);
        let v: Value = serde_json::from_str(&e).unwrap();
        assert!(v["context"].is_string() && v["topics"].is_array() && v["score"].is_number());
    }

    #[test]
    fn chunk_prompts_start_with_their_part() {
        let a = chunk("q", ContentType::Research, 2, 5, "formalism", Some("s"));
        let b = chunk("q", ContentType::Research, 3, 5, "evidence", Some("s"));
        assert!(a.starts_with("Part 2 of 5. Focus: formalism"));
        assert_ne!(&a[..20], &b[..20]);
        assert!(chunk("q", ContentType::Storytelling, 1, 5, "opening", None)
            .starts_with("Chapter 1 of 5"));
    }

    #[test]
    fn summaries_are_short() {
        assert_eq!(summary("One. Two. Three.", 9), "One. Two.");
        assert!(summary(&"word ".repeat(500), 200).len() <= 200);
    }
}
