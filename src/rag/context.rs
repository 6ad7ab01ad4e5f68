//! The original's retrieval rules and prompt layout, kept: cosine similarity
//! with a floor of 0.5, the top 15 excerpts (10 for one part of a long answer),
//! no RAG when the mean similarity of the top 5 is under 0.55, a budget of
//! 2,000 estimated tokens (1,000 per part) at 3.5 characters a token (here
//! in the one estimate every budget uses, `prompt::tokens`: see [`BUDGET`]), excerpts
//! headed `[Source: name, Relevance: 0.xx]`, a numbered source list, inline
//! `[n]` citations, and a `## 📚 Source Documents` list after the answer.
//!
//! Unlike the original, sources are numbered once per query (the main
//! retrieval first, then each part's), so a number means the same document in
//! every part, and the final list is in the order the answer first cites them.

use std::sync::OnceLock;

use regex::Regex;

use crate::prompt::{cut, Prompt};
use serde::Serialize;

pub const MIN_SIMILARITY: f32 = 0.5;
pub(crate) const TOP_K: usize = 15;
pub(crate) const TOP_K_PART: usize = 10;
/// RAG is skipped when the mean similarity of the best 5 excerpts is below this.
pub(crate) const GATE: f32 = 0.55;
pub(crate) const GATE_OVER: usize = 5;
/// The original's budget, 2,000 tokens at 3.5 characters a token, in the
/// estimate the prompts are measured with (`prompt::tokens`, 3 bytes a token
/// for ASCII): 7,000 characters of English excerpts, as in the original;
/// text in other scripts counts for what it costs, so excerpts in Japanese
/// or full of emoji no longer overflow the context the prompt must fit.
pub(crate) const BUDGET: usize = 2000 * 7 / 6;
/// The original's 1,000 per part, in the same units.
pub(crate) const BUDGET_PART: usize = 1000 * 7 / 6;

/// One retrieved chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Excerpt {
    pub doc_id: String,
    pub doc_name: String,
    pub similarity: f32,
    pub text: String,
}

/// The tokens of an excerpt: the one estimate every budget uses.
fn estimate_tokens(s: &str) -> usize {
    crate::prompt::tokens(s) as usize
}

fn formatted(e: &Excerpt) -> String {
    format!(
        "[Source: {}, Relevance: {:.2}]\n{}",
        e.doc_name, e.similarity, e.text
    )
}

/// What the gate decided about a retrieval (excerpts best first).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// The excerpts that fit the budget, in order.
    Use(Vec<Excerpt>),
    /// Nothing reached the similarity floor.
    NoMatch,
    /// The best excerpts were not relevant enough on average.
    TooWeak {
        mean: f32,
        best: String,
        best_sim: f32,
    },
}

/// The mean similarity of the best `GATE_OVER` excerpts.
pub(crate) fn mean_top(excerpts: &[Excerpt]) -> f32 {
    let top = &excerpts[..excerpts.len().min(GATE_OVER)];
    if top.is_empty() {
        return 0.0;
    }
    top.iter().map(|e| e.similarity).sum::<f32>() / top.len() as f32
}

/// Gate, then take excerpts while their estimated tokens fit `budget`
/// (stopping at the first that does not, as the original does).
pub(crate) fn judge(excerpts: Vec<Excerpt>, budget: usize) -> Verdict {
    let Some(first) = excerpts.first() else {
        return Verdict::NoMatch;
    };
    let mean = mean_top(&excerpts);
    if mean < GATE {
        return Verdict::TooWeak {
            mean,
            best: first.doc_name.clone(),
            best_sim: first.similarity,
        };
    }
    let mut used = 0;
    let mut out = Vec::new();
    for mut e in excerpts {
        let t = estimate_tokens(&formatted(&e));
        if used + t > budget {
            if out.is_empty() {
                // The best excerpt alone is over the budget (a long chunk in a
                // script that costs more tokens a character): its beginning.
                let header = estimate_tokens(&formatted(&Excerpt {
                    text: String::new(),
                    ..e.clone()
                }));
                e.text = cut(&e.text, budget.saturating_sub(header) * 3);
                out.push(e);
            }
            break;
        }
        used += t;
        out.push(e);
    }
    if out.is_empty() {
        Verdict::NoMatch
    } else {
        Verdict::Use(out)
    }
}

/// A source document of this query, numbered in first-retrieved order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Source {
    pub name: String,
    /// The best similarity of its excerpts that went into a prompt.
    pub similarity: f32,
    /// The retrievals it came from: 1 for the question itself, n for part n.
    pub parts: Vec<usize>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sources(pub Vec<Source>);

impl Sources {
    /// The number of `name` (1-based), adding it if new.
    fn number(&mut self, name: &str, similarity: f32, part: usize) -> usize {
        if let Some(i) = self.0.iter().position(|s| s.name == name) {
            let s = &mut self.0[i];
            s.similarity = s.similarity.max(similarity);
            if !s.parts.contains(&part) {
                s.parts.push(part);
            }
            return i + 1;
        }
        self.0.push(Source {
            name: name.to_string(),
            similarity,
            parts: vec![part],
        });
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The two prompt blocks for one retrieval.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// `[Source: …]` excerpts separated by `---` lines.
    pub excerpts: String,
    /// `[n] name` lines, by number.
    pub list: String,
    pub count: usize,
}

/// Number the excerpts' sources (for retrieval `part`) and lay out the blocks.
pub fn block(excerpts: &[Excerpt], sources: &mut Sources, part: usize) -> Block {
    let mut numbers: Vec<usize> = excerpts
        .iter()
        .map(|e| sources.number(&e.doc_name, e.similarity, part))
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    let list = numbers
        .iter()
        .map(|n| format!("[{n}] {}", sources.0[n - 1].name))
        .collect::<Vec<_>>()
        .join("\n");
    Block {
        excerpts: excerpts
            .iter()
            .map(formatted)
            .collect::<Vec<_>>()
            .join("\n\n---\n\n"),
        list,
        count: excerpts.len(),
    }
}

const CITATION_RULES: &str = "CITATION FORMAT REQUIREMENTS:
- When a statement uses information from the excerpts, put the source's number in brackets right after it, like [1] or [2].
- The numbers are the ones in AVAILABLE SOURCES FOR CITATION; use no others.
- Cite a source only where you actually use it, and do not cite every sentence.
- Cover the topic fully even where the excerpts say nothing about a part of it.

IMPORTANT:
- Weave what the excerpts say into your explanation where it is relevant.
- Explain beyond the excerpts: add the context a reader needs.
- Use inline citations [1], [2] for specific information taken from the excerpts.
- Do not let the excerpts narrow the answer to what they happen to cover.";

/// The question with the retrieved excerpts and the citation rules, in the
/// original's layout: what the Researcher, the Editor and part 1 are given.
pub(crate) fn research_prompt(query: &str, b: &Block) -> Prompt {
    Prompt::default()
        .says(format!(
            "Research topic: {query}\n\nRELEVANT DOCUMENT EXCERPTS:\n"
        ))
        .quotes(&b.excerpts)
        .says("\n\nAVAILABLE SOURCES FOR CITATION:\n")
        .quotes(&b.list)
        .says(format!(
            "\n\n---\n\nUsing the excerpts above together with what you know, explain in depth: {query}\n\n{CITATION_RULES}"
        ))
}

/// The excerpts for one part of a long answer, added below that part's prompt.
/// The excerpts are quoted material: a reply may repeat them.
pub(crate) fn part_context(b: &Block) -> Prompt {
    Prompt::default()
        .says("📚 Relevant Knowledge Base Context:\n\nRELEVANT DOCUMENT EXCERPTS:\n")
        .quotes(&b.excerpts)
        .says("\n\nAVAILABLE SOURCES FOR CITATION:\n")
        .quotes(&b.list)
        .says(
            "\n\nWhere you use these excerpts, cite them inline with the numbers above, like [1].",
        )
}

/// A source in the final list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listed {
    /// Its number in the final answer.
    pub number: usize,
    pub name: String,
    pub similarity: f32,
    /// Whether the answer cites it.
    pub cited: bool,
    pub parts: Vec<usize>,
}

fn marker() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // [3] or [1, 2]; not a Markdown link ([1](…)) — checked by the caller.
    RE.get_or_init(|| {
        Regex::new(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]").expect("a valid regex literal")
    })
}

fn numbers_in(inner: &str) -> Vec<usize> {
    inner
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// Renumber the answer's `[n]` citations in the order they first appear, and
/// append the source list: cited sources first in that order, then the ones
/// the prompts offered but the answer did not cite.
pub(crate) fn cite(answer: &str, sources: &Sources) -> (String, Vec<Listed>) {
    let count = sources.0.len();
    if count == 0 {
        return (answer.to_string(), Vec::new());
    }
    let is_link = |end: usize| answer[end..].starts_with('(');
    let mut order: Vec<usize> = Vec::new();
    for m in marker().find_iter(answer) {
        if is_link(m.end()) {
            continue;
        }
        let inner = &answer[m.start() + 1..m.end() - 1];
        for n in numbers_in(inner) {
            if (1..=count).contains(&n) && !order.contains(&n) {
                order.push(n);
            }
        }
    }
    let cited = order.len();
    let rest: Vec<usize> = (1..=count).filter(|n| !order.contains(n)).collect();
    order.extend(rest);
    let new_number = |old: usize| order.iter().position(|&o| o == old).map(|i| i + 1);
    let text = marker()
        .replace_all(answer, |c: &regex::Captures| {
            let m = c
                .get(0)
                .expect("group 0 is the whole match, always present");
            if is_link(m.end()) {
                return m.as_str().to_string();
            }
            let nums = numbers_in(&c[1]);
            if nums.iter().all(|&n| (1..=count).contains(&n)) {
                let renamed: Vec<String> = nums
                    .iter()
                    .filter_map(|&n| new_number(n).map(|x| x.to_string()))
                    .collect();
                format!("[{}]", renamed.join(", "))
            } else {
                m.as_str().to_string()
            }
        })
        .into_owned();
    let listed: Vec<Listed> = order
        .iter()
        .enumerate()
        .map(|(i, &old)| {
            let s = &sources.0[old - 1];
            Listed {
                number: i + 1,
                name: s.name.clone(),
                similarity: s.similarity,
                cited: i < cited,
                parts: s.parts.clone(),
            }
        })
        .collect();
    let list = listed
        .iter()
        .map(|l| format!("{}. {}", l.number, l.name))
        .collect::<Vec<_>>()
        .join("\n");
    (
        format!("{}\n\n## 📚 Source Documents\n{list}", text.trim_end()),
        listed,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(name: &str, sim: f32, text: &str) -> Excerpt {
        Excerpt {
            doc_id: "d".into(),
            doc_name: name.into(),
            similarity: sim,
            text: text.into(),
        }
    }

    #[test]
    fn the_gate_uses_the_mean_of_the_top_five() {
        assert_eq!(judge(vec![], BUDGET), Verdict::NoMatch);
        let weak: Vec<Excerpt> = [0.9, 0.5, 0.5, 0.5, 0.5, 0.9]
            .iter()
            .map(|&s| ex("a.pdf", s, "x"))
            .collect();
        // (0.9 + 4 × 0.5) / 5 = 0.58: passes; drop the first and it does not.
        assert!(matches!(judge(weak.clone(), BUDGET), Verdict::Use(v) if v.len() == 6));
        assert!(matches!(
            judge(weak[1..5].to_vec(), BUDGET),
            Verdict::TooWeak { best_sim, .. } if best_sim == 0.5
        ));
    }

    #[test]
    fn the_budget_stops_at_the_first_excerpt_that_does_not_fit() {
        let big = "x".repeat(3500); // ~1,170 tokens with its header
        let small = "y".repeat(35);
        let v = vec![
            ex("a", 0.9, &small),
            ex("b", 0.8, &big),
            ex("c", 0.7, &small),
        ];
        match judge(v, BUDGET_PART) {
            Verdict::Use(used) => assert_eq!(used.len(), 1, "stops at b, never reaches c"),
            other => panic!("{other:?}"),
        }
        assert_eq!(estimate_tokens("abcdefg"), 3);
        assert_eq!(estimate_tokens("ééé"), 3);
        // English excerpts fit as in the original (7,000 characters)…
        let english = "x".repeat(3300);
        let v = vec![ex("a", 0.9, &english), ex("b", 0.8, &english)];
        assert!(matches!(judge(v, BUDGET), Verdict::Use(u) if u.len() == 2));
        // …and Japanese for what it costs: 2 tokens a character, not 1/3.5.
        let japanese = "潮の満ち引き。".repeat(100);
        let v: Vec<Excerpt> = (0..4)
            .map(|i| ex("j", 0.9 - i as f32 / 100.0, &japanese))
            .collect();
        assert!(matches!(judge(v, BUDGET), Verdict::Use(u) if u.len() == 1));
        // The best excerpt alone over the budget: its beginning, within it.
        let long = "潮の満ち引き。".repeat(300);
        let v = vec![ex("j", 0.9, &long), ex("k", 0.8, "short")];
        let Verdict::Use(u) = judge(v, BUDGET_PART) else {
            panic!("nothing used")
        };
        assert_eq!(u.len(), 1);
        assert!(u[0].text.len() < long.len() && u[0].text.ends_with('。'));
        assert!(estimate_tokens(&formatted(&u[0])) <= BUDGET_PART);
    }

    #[test]
    fn blocks_number_sources_once_per_query() {
        let mut s = Sources::default();
        let main = block(
            &[
                ex("a.pdf", 0.9, "A"),
                ex("b.pdf", 0.7, "B"),
                ex("a.pdf", 0.6, "A2"),
            ],
            &mut s,
            1,
        );
        assert_eq!(main.list, "[1] a.pdf\n[2] b.pdf");
        assert_eq!(main.excerpts, "[Source: a.pdf, Relevance: 0.90]\nA\n\n---\n\n[Source: b.pdf, Relevance: 0.70]\nB\n\n---\n\n[Source: a.pdf, Relevance: 0.60]\nA2");
        let part = block(&[ex("c.pdf", 0.8, "C"), ex("b.pdf", 0.75, "B")], &mut s, 3);
        assert_eq!(part.list, "[2] b.pdf\n[3] c.pdf");
        assert_eq!(s.0[1].parts, vec![1, 3]);
        assert_eq!(s.0[1].similarity, 0.75);
        let p = research_prompt("Why tides?", &main);
        // The excerpts and the list are quoted material, not this program's words.
        assert!(!p.own.iter().any(|o| o.contains("[Source: a.pdf")));
        let p = p.text;
        assert!(p.starts_with(
            "Research topic: Why tides?\n\nRELEVANT DOCUMENT EXCERPTS:\n[Source: a.pdf"
        ));
        assert!(p.contains("\n\nAVAILABLE SOURCES FOR CITATION:\n[1] a.pdf\n[2] b.pdf\n\n---\n\n"));
        assert!(part_context(&part)
            .text
            .starts_with("📚 Relevant Knowledge Base Context:"));
    }

    #[test]
    fn citations_are_renumbered_in_first_cited_order() {
        let mut s = Sources::default();
        block(
            &[
                ex("a.pdf", 0.9, "A"),
                ex("b.pdf", 0.8, "B"),
                ex("c.pdf", 0.7, "C"),
            ],
            &mut s,
            1,
        );
        let (text, listed) = cite(
            "Tides rise [3]. The moon pulls [1, 3]. See [link](http://x) and [9] and [2](u).",
            &s,
        );
        assert_eq!(
            text,
            "Tides rise [1]. The moon pulls [2, 1]. See [link](http://x) and [9] and [2](u).\n\n## 📚 Source Documents\n1. c.pdf\n2. a.pdf\n3. b.pdf"
        );
        let cited: Vec<bool> = listed.iter().map(|l| l.cited).collect();
        assert_eq!(cited, [true, true, false]);
        assert_eq!(listed[0].similarity, 0.7);
        let (plain, none) = cite("no sources", &Sources::default());
        assert_eq!(plain, "no sources");
        assert!(none.is_empty());
    }
}
