//! Rule-based quality checks: one for long-form chunks, one for final answers.

use std::collections::HashSet;

/// Minimum characters in a chunk.
const MIN_CHUNK_CHARS: usize = 100;
/// Minimum sentences (longer than `MIN_SENTENCE_CHARS`) in a chunk.
const MIN_SENTENCES: usize = 5;
const MIN_SENTENCE_CHARS: usize = 10;
/// Minimum share of words that are articles.
const MIN_ARTICLE_RATIO: f64 = 0.05;
/// Minimum share of words that are prepositions.
const MIN_PREPOSITION_RATIO: f64 = 0.06;
/// Highest share of sentences that may repeat an earlier one.
const MAX_DUPLICATE_RATIO: f64 = 0.3;
/// Accepted length of a final answer, in words.
const ANSWER_WORDS: std::ops::RangeInclusive<usize> = 100..=1500;

const ARTICLES: &[&str] = &["the", "a", "an"];
const PREPOSITIONS: &[&str] = &[
    "about",
    "above",
    "across",
    "after",
    "against",
    "along",
    "among",
    "around",
    "at",
    "before",
    "behind",
    "below",
    "beneath",
    "beside",
    "between",
    "beyond",
    "by",
    "despite",
    "down",
    "during",
    "except",
    "for",
    "from",
    "in",
    "inside",
    "into",
    "like",
    "near",
    "of",
    "off",
    "on",
    "onto",
    "out",
    "outside",
    "over",
    "past",
    "since",
    "through",
    "throughout",
    "to",
    "toward",
    "towards",
    "under",
    "until",
    "up",
    "upon",
    "via",
    "with",
    "within",
    "without",
];

/// LaTeX commands whose backslash gets lost (e.g. `\f` eaten as a JSON escape).
const LATEX_WORDS: &[&str] = &["rac{", "sqrt{", "rangle", "langle", "cdot"];

/// Result of [`validate_output`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Validation {
    /// Checks passed divided by 3.
    pub score: f64,
    pub problems: Vec<String>,
}

/// Whether a long-form chunk reads like real prose: at least 100 characters,
/// at least 5 sentences over 10 characters, articles at least 5% and
/// prepositions at least 6% of the words. Lists every failed rule.
pub(crate) fn chunk_check(text: &str) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let chars = text.trim().chars().count();
    if chars < MIN_CHUNK_CHARS {
        problems.push(format!(
            "too short: {chars} characters (need {MIN_CHUNK_CHARS})"
        ));
    }
    let sentences = sentences(text)
        .filter(|s| s.chars().count() > MIN_SENTENCE_CHARS)
        .count();
    if sentences < MIN_SENTENCES {
        problems.push(format!(
            "too few sentences: {sentences} (need {MIN_SENTENCES})"
        ));
    }
    let words = words(text);
    let ratio = |list: &[&str]| {
        let hits = words.iter().filter(|w| list.contains(&w.as_str())).count();
        if words.is_empty() {
            0.0
        } else {
            hits as f64 / words.len() as f64
        }
    };
    let articles = ratio(ARTICLES);
    if articles < MIN_ARTICLE_RATIO {
        problems.push(format!(
            "too few articles: {:.1}% of words (need {:.0}%)",
            articles * 100.0,
            MIN_ARTICLE_RATIO * 100.0
        ));
    }
    let prepositions = ratio(PREPOSITIONS);
    if prepositions < MIN_PREPOSITION_RATIO {
        problems.push(format!(
            "too few prepositions: {:.1}% of words (need {:.0}%)",
            prepositions * 100.0,
            MIN_PREPOSITION_RATIO * 100.0
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Scores a final answer on three checks: repetition (at most 30% duplicate
/// sentences), length (100-1500 words) and formatting (no LaTeX command that
/// lost its backslash). `score` = checks passed / 3.
pub(crate) fn validate_output(text: &str) -> Validation {
    let mut problems = Vec::new();

    let all: Vec<String> = sentences(text).map(|s| s.to_lowercase()).collect();
    let unique: HashSet<&String> = all.iter().collect();
    if !all.is_empty() {
        let dup = (all.len() - unique.len()) as f64 / all.len() as f64;
        if dup > MAX_DUPLICATE_RATIO {
            problems.push(format!(
                "repetitive: {:.0}% of sentences are duplicates",
                dup * 100.0
            ));
        }
    }

    let count = text.split_whitespace().count();
    if !ANSWER_WORDS.contains(&count) {
        problems.push(format!(
            "length: {count} words (expected {}-{})",
            ANSWER_WORDS.start(),
            ANSWER_WORDS.end()
        ));
    }

    let broken = broken_latex(text);
    if !broken.is_empty() {
        problems.push(format!("broken LaTeX: {}", broken.join(", ")));
    }

    let failed = [
        problems.iter().any(|p| p.starts_with("repetitive")),
        problems.iter().any(|p| p.starts_with("length")),
        !broken.is_empty(),
    ];
    let passed = failed.iter().filter(|f| !**f).count();
    Validation {
        score: passed as f64 / 3.0,
        problems,
    }
}

/// Trimmed, non-empty pieces between `.`, `!` and `?`.
fn sentences(text: &str) -> impl Iterator<Item = &str> {
    text.split(['.', '!', '?'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Lower-cased words with surrounding punctuation removed.
fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// LaTeX command names that appear without their backslash, plus stray
/// form-feed characters (what `\f` in `\frac` becomes in JSON).
fn broken_latex(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    if text.contains('\u{c}') {
        found.push("form-feed character".to_string());
    }
    for word in LATEX_WORDS {
        let bare = text.match_indices(word).any(|(i, _)| {
            let before = &text[..i];
            if *word == "rac{" {
                // `\frac{`, `\dfrac{`: a backslash must start the command name.
                let name_start = before.trim_end_matches(|c: char| c.is_ascii_alphabetic());
                !name_start.ends_with('\\')
            } else {
                // Inside an ordinary word (`wrangle`) is not a command.
                let glued = before.chars().next_back().is_some_and(char::is_alphabetic);
                !before.ends_with('\\') && !glued
            }
        });
        if bare {
            found.push(format!("\"{word}\" without a backslash"));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "The cat sat on the mat in the sun. A dog ran to the park with an old ball. \
        The bird flew over the house at dawn. An owl watched from the tree in the yard. \
        The children played by the river for an hour. A storm came from the west at night.";

    fn answer(sentences: usize) -> String {
        (0..sentences)
            .map(|i| format!("Sentence number {i} talks about a new idea in the field."))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn good_chunk_passes() {
        assert_eq!(chunk_check(GOOD), Ok(()));
    }

    #[test]
    fn short_chunk_fails() {
        let problems = chunk_check("Too short.").unwrap_err();
        assert!(problems.iter().any(|p| p.starts_with("too short")));
        assert!(problems.iter().any(|p| p.starts_with("too few sentences")));
    }

    #[test]
    fn telegraphic_chunk_fails_ratios() {
        let text = "Quantum bits store superposed states. Entanglement links distant qubits. \
            Measurement collapses amplitudes instantly. Decoherence destroys fragile coherence. \
            Error correction protects logical information. Algorithms exploit interference.";
        let problems = chunk_check(text).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("too few articles"));
        assert!(problems[1].starts_with("too few prepositions"));
        assert!(chunk_check("").is_err());
    }

    #[test]
    fn good_answer_scores_one() {
        let v = validate_output(&answer(20));
        assert_eq!(v.problems, Vec::<String>::new());
        assert_eq!(v.score, 1.0);
    }

    #[test]
    fn repetition_detected() {
        let text = format!("{} {}", answer(10), "This repeats itself. ".repeat(10));
        let v = validate_output(&text);
        assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
        assert!(v.problems[0].starts_with("repetitive"));
        assert!((v.score - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn length_limits() {
        let v = validate_output("Too short to count.");
        assert!(v.problems.iter().any(|p| p.starts_with("length: 4 words")));
        let v = validate_output(&answer(200));
        assert!(v.problems.iter().any(|p| p.starts_with("length")));
    }

    #[test]
    fn broken_latex_detected() {
        for bad in [
            "ratio rac{1}{2} here",
            "x = sqrt{2}",
            "state |0 rangle",
            "a \u{c}rac{1}{2}",
        ] {
            let v = validate_output(&format!("{} {bad}", answer(20)));
            assert!(
                v.problems.iter().any(|p| p.starts_with("broken LaTeX")),
                "{bad}"
            );
            assert!((v.score - 2.0 / 3.0).abs() < 1e-9);
        }
        for ok in [
            r"\frac{1}{2}",
            r"\sqrt{2}",
            r"\rangle",
            r"\dfrac{a}{b}",
            "cowboys wrangle cattle",
            "a bracket",
        ] {
            let v = validate_output(&format!("{} {ok}", answer(20)));
            assert_eq!(v.score, 1.0, "{ok}: {:?}", v.problems);
        }
    }
}
