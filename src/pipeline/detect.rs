//! Content detection: decides what kind of answer a query wants and how many
//! chunks (parts) a long-form answer should have. The keyword rules are data
//! (see `RULES`); the scoring follows `research/content-detection.md`.

use regex::Regex;
use serde::Serialize;
use std::sync::OnceLock;

/// The kind of content a query asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    Research,
    Discussion,
    Storytelling,
    Explanation,
    Analysis,
    General,
}

impl ContentType {
    /// Lower-case name, as shown to the user and used in metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Research => "research",
            ContentType::Discussion => "discussion",
            ContentType::Storytelling => "storytelling",
            ContentType::Explanation => "explanation",
            ContentType::Analysis => "analysis",
            ContentType::General => "general",
        }
    }

    /// Number of chunks before the "thoroughness" bonus and the cap.
    fn base_chunks(self) -> usize {
        match self {
            ContentType::Research => 5,
            ContentType::Discussion => 3,
            ContentType::Storytelling => 6,
            ContentType::Explanation => 3,
            ContentType::Analysis => 4,
            ContentType::General => 1,
        }
    }
}

/// Result of [`detect`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Detection {
    pub content_type: ContentType,
    pub chunks: usize,
    /// Winning score divided by 10 (not clamped, as in the original).
    pub confidence: f64,
    /// Score of every scored type, in tie-break order.
    pub scores: Vec<(ContentType, u32)>,
    pub word_count: usize,
}

impl Detection {
    /// More than one chunk means the long-form pipeline is used.
    pub(crate) fn multi_turn(&self) -> bool {
        self.chunks > 1
    }
}

/// Points for each keyword pattern that matches.
const PATTERN_POINTS: u32 = 2;
/// Points for each indicator substring that occurs.
const INDICATOR_POINTS: u32 = 3;
/// Upper bound on the number of chunks.
const MAX_CHUNKS: usize = 5;
/// Words that ask for a more thorough answer (+1 chunk, once).
const THOROUGH_WORDS: &[&str] = &[
    "comprehensive",
    "detailed",
    "thorough",
    "in-depth",
    "extensive",
    "complete",
    "full",
    "entire",
];

struct Rule {
    content_type: ContentType,
    patterns: &'static [&'static str],
    indicators: &'static [&'static str],
}

/// Scoring rules, in tie-break order (earlier wins a tie).
const RULES: &[Rule] = &[
    Rule {
        content_type: ContentType::Research,
        patterns: &[
            r"\b(research|study|analyze|examine|investigate|explore)\b",
            r"\b(comprehensive|detailed|thorough|in-depth)\b",
            r"\b(history of|overview of|background on)\b",
            r"\b(what is|how does|why does|when did)\b",
            r"\b(implications|applications|impact|effects)\b",
            r"\b(explain|erxplain|expalin|expain)\b",
            r"\btell me (what|about|how|why|when)\b",
        ],
        indicators: &[
            "explain quantum",
            "erxplain quantum",
            "explain ",
            "erxplain ",
            "describe the",
            "what are the",
            "provide an overview",
            "research on",
            "tell me what",
            "tell me about",
            "tell me how",
            "tell me why",
        ],
    },
    Rule {
        content_type: ContentType::Discussion,
        patterns: &[
            r"\b(discuss|debate|argue|compare|contrast)\b",
            r"\b(perspective|viewpoint|opinion|stance)\b",
            r"\b(pros and cons|advantages and disadvantages)\b",
            r"\b(should we|is it|would it)\b",
            r"\b(ethical|moral|philosophical)\b",
        ],
        indicators: &[
            "discuss the",
            "what do you think",
            "debate whether",
            "pros and cons",
            "different perspectives",
        ],
    },
    Rule {
        content_type: ContentType::Storytelling,
        patterns: &[
            r"\b(story|tale|narrative|adventure|journey|sotry)\b",
            r"\b(character|protagonist|hero|villain)\b",
            r"\b(write|create|imagine)\b",
            r"\b(once upon|chapter|scene|plot)\b",
            r"\b(fiction|novel|short story)\b",
            r"\b(kid friendly|for kids|children)\b",
            r"\btell me a (story|tale)\b",
        ],
        indicators: &[
            "write a story",
            "tell me a tale",
            "tell me a story",
            "create a narrative",
            "fiction about",
            "adventure of",
            "story about",
            "tale about",
        ],
    },
    Rule {
        content_type: ContentType::Explanation,
        patterns: &[
            r"\b(explain|clarify|demonstrate|show how)\b",
            r"\b(step by step|how to|guide|tutorial)\b",
            r"\b(process|procedure|method|approach)\b",
            r"\b(understand|learn|grasp)\b",
        ],
        indicators: &[
            "explain how",
            "step by step",
            "how does",
            "help me understand",
        ],
    },
    Rule {
        content_type: ContentType::Analysis,
        patterns: &[
            r"\b(analyze|evaluate|assess|critique)\b",
            r"\b(breakdown|dissect|examine)\b",
            r"\b(strengths and weaknesses|pros cons)\b",
            r"\b(in detail|thoroughly)\b",
        ],
        indicators: &[
            "analyze the",
            "critical analysis",
            "in-depth look",
            "detailed examination",
        ],
    },
];

/// The patterns of every rule, compiled once, in `RULES` order.
fn compiled() -> &'static [Vec<Regex>] {
    static COMPILED: OnceLock<Vec<Vec<Regex>>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        RULES
            .iter()
            .map(|rule| {
                rule.patterns
                    .iter()
                    .map(|p| Regex::new(p).expect("built-in detection pattern is valid"))
                    .collect()
            })
            .collect()
    })
}

/// Classifies `query` and estimates how many chunks the answer needs.
pub fn detect(query: &str) -> Detection {
    let lower = query.to_lowercase();
    let scores: Vec<(ContentType, u32)> = RULES
        .iter()
        .zip(compiled())
        .map(|(rule, regexes)| {
            let pattern_hits = regexes.iter().filter(|re| re.is_match(&lower)).count() as u32;
            let indicator_hits = rule
                .indicators
                .iter()
                .filter(|ind| lower.contains(*ind))
                .count() as u32;
            (
                rule.content_type,
                pattern_hits * PATTERN_POINTS + indicator_hits * INDICATOR_POINTS,
            )
        })
        .collect();

    // Strictly greater keeps the earlier type on a tie.
    let mut best = (ContentType::General, 0u32);
    for &(ct, score) in &scores {
        if score > best.1 {
            best = (ct, score);
        }
    }

    let chunks = if best.0 == ContentType::General {
        1
    } else {
        let bonus = THOROUGH_WORDS.iter().any(|w| lower.contains(w)) as usize;
        (best.0.base_chunks() + bonus).min(MAX_CHUNKS)
    };

    Detection {
        content_type: best.0,
        chunks,
        confidence: f64::from(best.1) / 10.0,
        scores,
        word_count: query.split_whitespace().count(),
    }
}

/// Focus description for chunk `chunk` (1-based) of `total`. Chunk numbers
/// outside 1..=5 are clamped into that range (stories use `total` instead).
pub(crate) fn focus_area(ct: ContentType, chunk: usize, total: usize) -> String {
    if ct == ContentType::Storytelling {
        return chapter_focus(chunk, total).to_string();
    }
    let list: [&str; 5] = match ct {
        ContentType::Research => [
            "Fundamental concepts and definitions only: what the subject is and the core \
             ideas behind it. Leave equations, experiments, applications and open problems \
             to later parts.",
            "Mathematical formalism, key equations and the theoretical mechanisms that make \
             it work. Do not repeat the basic definitions, and leave experiments and \
             applications to other parts.",
            "Experimental evidence and empirical studies: what has been measured, tested or \
             observed, and what the results showed. Do not restate theory or definitions.",
            "Real-world applications and adoption: where and how it is used in practice, by \
             whom, and with what results. Do not restate theory or experiments.",
            "Research frontiers, open problems and future directions: what is still unknown \
             or unsolved and where the field is heading. Do not restate earlier material.",
        ],
        ContentType::Analysis => [
            "Overview and initial assessment of the subject.",
            "Strengths: what works well and why.",
            "Weaknesses and limitations: what falls short and why.",
            "Comparison with alternatives: how it stacks up against other options.",
            "Implications and conclusions drawn from the analysis.",
        ],
        ContentType::Explanation => [
            "Overview and introduction: what it is and why it matters.",
            "The process step by step, in order.",
            "Common pitfalls and troubleshooting.",
            "Advanced techniques and best practices.",
            "Practical, worked examples.",
        ],
        ContentType::Discussion => [
            "The main arguments on the question.",
            "Alternative viewpoints and counter-arguments.",
            "The evidence that supports or undermines each position.",
            "Synthesis: a balanced weighing of the positions.",
            "Conclusions and their implications.",
        ],
        _ => [
            "Introduction to the topic.",
            "The core concepts.",
            "Concrete examples.",
            "Advanced topics.",
            "Summary of the key takeaways.",
        ],
    };
    list[chunk.clamp(1, 5) - 1].to_string()
}

/// Chapter goal for a story chunk. The last chapter always concludes.
fn chapter_focus(chunk: usize, total: usize) -> &'static str {
    if chunk <= 1 {
        "Chapter 1: the opening. Introduce the setting and the main characters and set \
         the story in motion."
    } else if chunk >= total {
        "The final chapter: resolve the conflict and bring the story to a satisfying \
         conclusion."
    } else if chunk == 2 {
        "Develop the plot: deepen the characters and move the story forward from the \
         opening."
    } else {
        "Build tension: raise the stakes and complicate the characters' situation, \
         without resolving it yet."
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(d: &Detection, ct: ContentType) -> u32 {
        d.scores.iter().find(|(c, _)| *c == ct).unwrap().1
    }

    #[test]
    fn names_and_serialization() {
        assert_eq!(ContentType::Storytelling.as_str(), "storytelling");
        assert_eq!(ContentType::General.as_str(), "general");
        assert_eq!(
            serde_json::to_string(&ContentType::Research).unwrap(),
            "\"research\""
        );
    }

    #[test]
    fn what_is_is_research() {
        let d = detect("what is 2+2");
        assert_eq!(d.content_type, ContentType::Research);
        assert_eq!(d.chunks, 5);
        assert_eq!(score(&d, ContentType::Research), 2);
        assert!((d.confidence - 0.2).abs() < 1e-9);
        assert_eq!(d.word_count, 3);
        assert!(d.multi_turn());
    }

    #[test]
    fn write_is_storytelling_capped() {
        let d = detect("write a python function");
        assert_eq!(d.content_type, ContentType::Storytelling);
        assert_eq!(d.chunks, 5);
    }

    #[test]
    fn is_it_is_discussion() {
        let d = detect("is it raining");
        assert_eq!(d.content_type, ContentType::Discussion);
        assert_eq!(d.chunks, 3);
    }

    #[test]
    fn no_hits_is_general() {
        for q in ["hello", "define entropy", "", "the full moon"] {
            let d = detect(q);
            assert_eq!(d.content_type, ContentType::General, "{q}");
            assert_eq!(d.chunks, 1, "{q}");
            assert_eq!(d.confidence, 0.0);
            assert!(!d.multi_turn());
            assert_eq!(d.scores.len(), 5);
        }
    }

    #[test]
    fn tie_goes_to_earlier_type() {
        // research: "analyze" pattern; analysis: "analyze" pattern -> 2 vs 2.
        let d = detect("analyze it");
        assert_eq!(score(&d, ContentType::Research), 2);
        assert_eq!(score(&d, ContentType::Analysis), 2);
        assert_eq!(d.content_type, ContentType::Research);
        // discussion "compare" vs explanation "method": 2 vs 2.
        let d = detect("compare this method");
        assert_eq!(score(&d, ContentType::Discussion), 2);
        assert_eq!(score(&d, ContentType::Explanation), 2);
        assert_eq!(d.content_type, ContentType::Discussion);
    }

    #[test]
    fn indicators_add_three() {
        // "step by step": explanation pattern (2) + indicator (3).
        let d = detect("step by step");
        assert_eq!(score(&d, ContentType::Explanation), 5);
        assert_eq!(d.content_type, ContentType::Explanation);
        assert_eq!(d.chunks, 3);
        // "tell me a story" beats research's "tell me" rules? research gets none.
        let d = detect("tell me a story about dragons");
        assert_eq!(d.content_type, ContentType::Storytelling);
        assert_eq!(score(&d, ContentType::Storytelling), 2 + 2 + 3 + 3);
    }

    #[test]
    fn thoroughness_bonus_once() {
        let d = detect("compare cats and dogs");
        assert_eq!((d.content_type, d.chunks), (ContentType::Discussion, 3));
        let d = detect("compare cats and dogs, full and complete and entire");
        assert_eq!((d.content_type, d.chunks), (ContentType::Discussion, 4));
        let d = detect("evaluate the whole extensive system");
        assert_eq!((d.content_type, d.chunks), (ContentType::Analysis, 5));
        // Research is already at the cap.
        let d = detect("a comprehensive study");
        assert_eq!((d.content_type, d.chunks), (ContentType::Research, 5));
    }

    #[test]
    fn case_insensitive() {
        assert_eq!(detect("WHAT IS Rust").content_type, ContentType::Research);
    }

    #[test]
    fn focus_areas() {
        assert!(focus_area(ContentType::Research, 1, 5).contains("definitions only"));
        assert!(focus_area(ContentType::Research, 2, 5).contains("formalism"));
        assert!(focus_area(ContentType::Research, 5, 5).contains("open problems"));
        assert!(focus_area(ContentType::Analysis, 2, 4).starts_with("Strengths"));
        assert!(focus_area(ContentType::Explanation, 3, 3).contains("pitfalls"));
        assert!(focus_area(ContentType::Discussion, 2, 3).contains("counter-arguments"));
        assert!(focus_area(ContentType::General, 3, 5).contains("examples"));
        // Out-of-range chunk numbers are clamped.
        assert_eq!(
            focus_area(ContentType::Analysis, 9, 9),
            focus_area(ContentType::Analysis, 5, 5)
        );
        assert_eq!(
            focus_area(ContentType::Analysis, 0, 5),
            focus_area(ContentType::Analysis, 1, 5)
        );
    }

    #[test]
    fn story_chapters() {
        assert!(focus_area(ContentType::Storytelling, 1, 5).contains("opening"));
        assert!(focus_area(ContentType::Storytelling, 2, 5).contains("Develop the plot"));
        assert!(focus_area(ContentType::Storytelling, 3, 5).contains("tension"));
        assert!(focus_area(ContentType::Storytelling, 4, 5).contains("tension"));
        assert!(focus_area(ContentType::Storytelling, 5, 5).contains("conclusion"));
        assert!(focus_area(ContentType::Storytelling, 2, 2).contains("conclusion"));
    }
}
