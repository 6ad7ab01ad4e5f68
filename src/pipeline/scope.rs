//! How big an answer a question asks for: one part (the standard pipeline) or
//! a long-form answer in parts. The original split every question that scored
//! for a content type ("what is" made a five-part research report); here, under
//! the default `longform auto`, a split needs a clear ask: words about the
//! answer's depth, breadth or form, or an explicit length. The words are data
//! (`ASKS`, `BRIEF`, the length patterns); `detect.rs` still decides the kind
//! of content and the original's number of parts.
//!
//! A one-part answer also has a shape: a short factual question ("What is the
//! capital of France?": it opens like a question of fact, has at most
//! `FACTUAL_WORDS` words and no word asking for an explanation) gets a short
//! answer, a summary and key points (`brief`); other questions get the
//! Editor's five sections. `longform always` keeps the original's five.

use std::sync::OnceLock;

use regex::Regex;

use super::detect::{ContentType, Detection};
use crate::config::choices::Longform;
use crate::report::Scope;

/// A per-query override written before the question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Override {
    /// `!long …`: a long-form answer, whatever the setting and the mode.
    Long,
    /// `!short …`: one part.
    Short,
}

impl Override {
    pub fn word(self) -> &'static str {
        match self {
            Override::Long => "!long",
            Override::Short => "!short",
        }
    }
}

/// `!long QUESTION` / `!short QUESTION`: the override and the question without it.
pub(crate) fn split_override(query: &str) -> (Option<Override>, &str) {
    let q = query.trim_start();
    for (word, o) in [("!long", Override::Long), ("!short", Override::Short)] {
        if let Some(rest) = q.strip_prefix(word) {
            if rest.is_empty() || rest.starts_with(char::is_whitespace) {
                return (Some(o), rest.trim());
            }
        }
    }
    (None, query.trim())
}

/// Parts of a long-form answer to a question the original's rules give one
/// part (a general question that asks for a report, say).
const DEFAULT_PARTS: usize = 3;
/// Most parts an answer is split into (the original's cap).
const MAX_PARTS: usize = 5;
/// From this many words asked for, an answer is written in parts.
const LONG_WORDS: usize = 800;
/// About how many words one part holds (to turn "2000 words" into parts).
const WORDS_PER_PART: usize = 450;
/// Words a paragraph and a page stand for when a length is given in them.
const PARAGRAPH_WORDS: usize = 120;
const PAGE_WORDS: usize = 500;

/// Words that ask for a bigger answer, by what they ask for.
const ASKS: &[(&str, &str)] = &[
    (
        "depth",
        r"\b(comprehensive|detailed|thorough|thoroughly|in-depth|in depth|in detail|extensive|extensively|exhaustive|exhaustively|at length|deep dive|long-form|longform)\b",
    ),
    (
        "a long form",
        r"\b(report|essay|story|stories|tale|narrative|chapters?|novel|novella|tutorial|walkthrough|step[- ]by[- ]step|white paper|lesson plan)\b",
    ),
    (
        "breadth",
        r"\b(compare|comparison|contrast|pros and cons|advantages and disadvantages|strengths and weaknesses|every aspect|all aspects|from every angle|debate)\b",
    ),
];

/// Words that ask for a short answer; they win over the words above.
const BRIEF: &str = r"\b(brief|briefly|in short|short answer|short story|short poem|one sentence|one line|one word|a few words|a few sentences|in a nutshell|tl;?dr|concise|concisely|quick answer|quick question)\b";

/// "2000 words", "1,500-word".
const LENGTH_WORDS: &str = r"\b(\d{1,2},?\d{3}|\d{2,4})[ -]?words?\b";
/// "in 4 parts", "five chapters", "3 pages".
const LENGTH_UNITS: &str = r"\b(\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten)[ -](parts?|sections?|chapters?|pages?|paragraphs?)\b";

/// How a question of fact opens.
const FACTUAL: &str = r"^(what|who|whom|whose|when|where|which|how (many|much|old|long|far|tall|big|high|deep|fast|often)|is|are|was|were|does|do|did|can|could|has|have|will)\b";
/// Words that ask for an explanation: such a question keeps the five sections.
const EXPLAINS: &str = r"\b(why|explain|explains|explained|describe|how (does|do|did|is|are|was|were|can|could|would|should|to)|tell me (about|how|why)|walk me through|discuss|analy[sz]e|compare|difference|differences|history|overview|in detail)\b";
/// Most words a short factual question has.
const FACTUAL_WORDS: usize = 12;

struct Compiled {
    asks: Vec<(&'static str, Regex)>,
    brief: Regex,
    factual: Regex,
    explains: Regex,
    words: Regex,
    units: Regex,
}

fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| Compiled {
        asks: ASKS
            .iter()
            .map(|(what, p)| (*what, Regex::new(p).expect("built-in pattern is valid")))
            .collect(),
        brief: Regex::new(BRIEF).expect("built-in pattern is valid"),
        factual: Regex::new(FACTUAL).expect("built-in pattern is valid"),
        explains: Regex::new(EXPLAINS).expect("built-in pattern is valid"),
        words: Regex::new(LENGTH_WORDS).expect("built-in pattern is valid"),
        units: Regex::new(LENGTH_UNITS).expect("built-in pattern is valid"),
    })
}

fn number(word: &str) -> Option<usize> {
    const NAMES: &[&str] = &[
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ];
    word.replace(',', "")
        .parse()
        .ok()
        .or_else(|| NAMES.iter().position(|n| *n == word).map(|i| i + 1))
}

/// An explicit length in the question: (parts it calls for, the words that said so).
fn explicit_length(lower: &str) -> Option<(usize, String)> {
    let c = compiled();
    if let Some(m) = c.units.captures(lower) {
        let n = number(&m[1])?;
        let unit = &m[2];
        let parts = if unit.starts_with("page") {
            parts_for_words(n * PAGE_WORDS)
        } else if unit.starts_with("paragraph") {
            parts_for_words(n * PARAGRAPH_WORDS)
        } else {
            n.clamp(1, MAX_PARTS)
        };
        return Some((parts, m[0].to_string()));
    }
    let m = c.words.captures(lower)?;
    let n = number(&m[1])?;
    Some((parts_for_words(n), m[0].to_string()))
}

fn parts_for_words(words: usize) -> usize {
    if words < LONG_WORDS {
        1
    } else {
        ((words + WORDS_PER_PART / 2) / WORDS_PER_PART).clamp(2, MAX_PARTS)
    }
}

/// The words of the question that ask for depth, breadth or a long form.
fn asks(lower: &str) -> Vec<(&'static str, String)> {
    compiled()
        .asks
        .iter()
        .flat_map(|(what, re)| re.find_iter(lower).map(|m| (*what, m.as_str().to_string())))
        .collect()
}

/// Parts for a long-form answer of this content: the original's count, or
/// `DEFAULT_PARTS` for a question its rules give one part.
fn parts_of(d: &Detection) -> usize {
    if d.chunks > 1 {
        d.chunks
    } else {
        DEFAULT_PARTS
    }
}

fn one(rule: &str, reason: String, asks: Vec<String>) -> Scope {
    Scope {
        longform: false,
        parts: 1,
        rule: rule.to_string(),
        reason,
        asks,
        brief: false,
        outline: None,
    }
}

fn long(rule: &str, parts: usize, reason: String, asks: Vec<String>) -> Scope {
    Scope {
        longform: parts > 1,
        parts,
        rule: rule.to_string(),
        reason,
        asks,
        brief: false,
        outline: None,
    }
}

/// A short question of fact (see the module's notes), asking for no depth,
/// breadth, form or length.
fn factual(lower: &str, asks: &[String]) -> bool {
    let c = compiled();
    asks.is_empty()
        && lower.split_whitespace().count() <= FACTUAL_WORDS
        && c.factual.is_match(lower.trim_start())
        && !c.explains.is_match(lower)
        && !c.brief.is_match(lower)
}

/// Decide how `query` (without its override) is answered. `distributed`: the
/// shell is in distributed mode (the setting's rules apply there only; an
/// override applies in both modes).
pub(crate) fn decide(
    query: &str,
    d: &Detection,
    setting: Longform,
    over: Option<Override>,
    distributed: bool,
) -> Scope {
    let mut s = size(query, d, setting, over, distributed);
    s.brief = !s.longform && setting != Longform::Always && factual(&query.to_lowercase(), &s.asks);
    s
}

/// One part or parts, and why.
fn size(
    query: &str,
    d: &Detection,
    setting: Longform,
    over: Option<Override>,
    distributed: bool,
) -> Scope {
    let lower = query.to_lowercase();
    let length = explicit_length(&lower);
    let found = asks(&lower);
    let words: Vec<String> = length
        .iter()
        .map(|(_, w)| w.clone())
        .chain(found.iter().map(|(_, w)| w.clone()))
        .collect();
    match over {
        Some(Override::Short) => return one("!short", "`!short` asks for one part".into(), words),
        Some(Override::Long) => {
            let parts = match &length {
                Some((p, _)) if *p > 1 => *p,
                _ => parts_of(d),
            };
            return long("!long", parts, "`!long` asks for parts".into(), words);
        }
        None => {}
    }
    if !distributed {
        return one(
            setting.word(),
            "standard mode answers in one part (long-form is for distributed mode; `!long` asks for it)"
                .into(),
            words,
        );
    }
    match setting {
        Longform::Never => one(
            "never",
            "`longform never`: every answer is one part (`!long` asks for parts)".into(),
            words,
        ),
        Longform::Always if d.chunks > 1 => long(
            "always",
            d.chunks,
            format!(
                "`longform always` (the original's rule): the question scores as {}",
                d.content_type.as_str()
            ),
            words,
        ),
        Longform::Always => one(
            "always",
            "`longform always` (the original's rule): the question scores for no content type"
                .into(),
            words,
        ),
        Longform::Auto => auto(&lower, d, length, found, words),
    }
}

fn auto(
    lower: &str,
    d: &Detection,
    length: Option<(usize, String)>,
    found: Vec<(&'static str, String)>,
    words: Vec<String>,
) -> Scope {
    if let Some((parts, said)) = length {
        return if parts > 1 {
            long(
                "auto",
                parts,
                format!("asks for a length: \"{said}\" ({parts} parts)"),
                words,
            )
        } else {
            one(
                "auto",
                format!("asks for a length that fits one part: \"{said}\""),
                words,
            )
        };
    }
    if let Some(m) = compiled().brief.find(lower) {
        return one(
            "auto",
            format!("asks for a short answer: \"{}\"", m.as_str()),
            words,
        );
    }
    if !found.is_empty() {
        let mut kinds: Vec<&str> = found.iter().map(|(k, _)| *k).collect();
        kinds.dedup();
        let said: Vec<String> = found.iter().map(|(_, w)| format!("\"{w}\"")).collect();
        return long(
            "auto",
            parts_of(d),
            format!("asks for {}: {}", kinds.join(" and "), said.join(", ")),
            words,
        );
    }
    let tail = if d.chunks > 1 {
        format!(
            " (scores as {}; `!long` writes it in {} parts)",
            d.content_type.as_str(),
            d.chunks
        )
    } else {
        String::new()
    };
    let what = if d.content_type == ContentType::General || d.word_count <= 12 {
        "a short question"
    } else {
        "the question"
    };
    one(
        "auto",
        format!("{what} with no ask for depth, breadth, a long form or a length{tail}"),
        words,
    )
}

#[cfg(test)]
mod tests {
    use super::super::detect::detect;
    use super::*;

    fn auto(q: &str) -> Scope {
        decide(q, &detect(q), Longform::Auto, None, true)
    }

    #[test]
    fn short_factual_questions_are_one_part() {
        for q in [
            "What is the capital of France?",
            "How does a bicycle stay upright?",
            "Explain the history of the printing press in Europe",
            "What are the effects of caffeine?",
            "hello there",
        ] {
            let s = auto(q);
            assert!(!s.longform, "{q}: {s:?}");
            assert_eq!(s.parts, 1);
            assert!(s.reason.contains("no ask"), "{q}: {}", s.reason);
        }
        assert!(auto("What is the capital of France?")
            .reason
            .contains("`!long` writes it in 5 parts"));
    }

    #[test]
    fn a_clear_ask_splits() {
        let s = auto("Write a comprehensive report on the printing press");
        assert!(s.longform && s.parts == 5, "{s:?}");
        assert!(s.reason.contains("depth") && s.reason.contains("\"comprehensive\""));
        assert!(s.asks.contains(&"report".to_string()));
        assert_eq!(auto("Compare tabs and spaces for indentation").parts, 3);
        assert!(auto("Tell me a story about a dragon").longform);
        assert!(auto("An essay on tides").longform, "general: default parts");
        assert_eq!(auto("An essay on tides").parts, DEFAULT_PARTS);
    }

    #[test]
    fn explicit_lengths() {
        let s = auto("Explain photosynthesis in 2000 words");
        assert!(s.longform && s.parts == 4, "{s:?}");
        assert!(s.reason.contains("\"2000 words\""));
        assert_eq!(auto("Describe Rome in 3 parts").parts, 3);
        assert_eq!(auto("Describe Rome in five chapters").parts, 5);
        assert_eq!(auto("Describe Rome in 9 sections").parts, 5);
        assert!(!auto("A detailed summary of Rome in 200 words").longform);
        assert!(!auto("Describe Rome in 2 paragraphs").longform);
        assert_eq!(auto("A 1,500-word essay on Rome").parts, 3);
    }

    #[test]
    fn brief_wins_over_asks() {
        let s = auto("Write a short story about a cat");
        assert!(!s.longform && s.reason.contains("short story"), "{s:?}");
        assert!(!auto("Briefly compare tabs and spaces").longform);
    }

    #[test]
    fn settings_and_overrides() {
        let q = "What is the capital of France?";
        let d = detect(q);
        let always = decide(q, &d, Longform::Always, None, true);
        assert!(always.longform && always.parts == 5 && always.rule == "always");
        assert!(!decide(q, &d, Longform::Always, None, false).longform);
        let never = "A comprehensive report on Rome";
        assert!(!decide(never, &detect(never), Longform::Never, None, true).longform);
        let l = decide(q, &d, Longform::Never, Some(Override::Long), false);
        assert!(l.longform && l.parts == 5 && l.rule == "!long");
        let s = decide(
            never,
            &detect(never),
            Longform::Always,
            Some(Override::Short),
            true,
        );
        assert!(!s.longform && s.rule == "!short");
        let hi = "hello there";
        assert_eq!(
            decide(hi, &detect(hi), Longform::Auto, Some(Override::Long), true).parts,
            DEFAULT_PARTS
        );
    }

    #[test]
    fn short_factual_questions_get_a_brief_answer() {
        for q in [
            "What is the capital of France?",
            "Who wrote Hamlet?",
            "How many moons does Mars have?",
            "When did the Berlin Wall fall?",
            "Is a tomato a fruit?",
        ] {
            assert!(auto(q).brief, "{q}");
        }
        for q in [
            "How does a bicycle stay upright?",
            "Why is the sky blue?",
            "Explain the history of the printing press in Europe",
            "What is the difference between TCP and UDP?",
            "hello there",
            "Tell me about tides",
            "What is the capital of France? Give a detailed report",
            "Write a short story about a cat",
            "What were the main causes and consequences of the fall of the Western Roman Empire?",
        ] {
            assert!(!auto(q).brief, "{q}");
        }
        let q = "What is the capital of France?";
        let d = detect(q);
        assert!(decide(q, &d, Longform::Never, None, true).brief);
        assert!(
            decide(q, &d, Longform::Auto, None, false).brief,
            "standard mode too"
        );
        assert!(decide(q, &d, Longform::Auto, Some(Override::Short), true).brief);
        assert!(
            !decide(q, &d, Longform::Always, None, false).brief,
            "the original's five sections"
        );
        assert!(!decide(q, &d, Longform::Auto, Some(Override::Long), true).brief);
    }

    #[test]
    fn overrides_are_read_off_the_front() {
        assert_eq!(
            split_override("  !long  Explain tides "),
            (Some(Override::Long), "Explain tides")
        );
        assert_eq!(split_override("!short x"), (Some(Override::Short), "x"));
        assert_eq!(split_override("!longer x"), (None, "!longer x"));
        assert_eq!(split_override("why !long"), (None, "why !long"));
        assert_eq!(split_override("!long"), (Some(Override::Long), ""));
    }

    #[test]
    fn setting_words() {
        assert_eq!(Longform::parse("ALWAYS"), Some(Longform::Always));
        assert_eq!(Longform::parse("sometimes"), None);
        assert_eq!(Longform::default(), Longform::Auto);
    }
}
