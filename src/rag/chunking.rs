//! FlockParser's chunking rules (`chunk_text`), so a knowledge base built here
//! has chunks like the ones FlockParser makes:
//!
//! - the text is split into paragraphs at blank lines;
//! - paragraphs are packed into one chunk while their summed length stays within
//!   2,048 characters (512 "tokens" of 4 characters);
//! - a paragraph over 1,920 characters (the embedding model's 480-token limit) is
//!   split on its own: at sentence ends (`. `, `! `, `? `), and a sentence that is
//!   still too long into groups of words;
//! - the next chunk starts with the previous chunk's last paragraph when that
//!   paragraph is shorter than 100 characters (the overlap);
//! - no chunk is longer than 1,920 characters.
//!
//! Lengths are counted in characters, as Python does. Two slips of the original
//! are not kept: its sentence splitter also split at every `|` in the text, and
//! after an overlap it counted the new paragraph twice.

/// The most characters a chunk may have (480 tokens × 4).
pub(crate) const MAX_CHARS: usize = 1920;
/// Paragraphs are packed up to this many characters (512 tokens × 4).
pub(crate) const TARGET_CHARS: usize = 2048;
/// A last paragraph shorter than this is repeated at the start of the next chunk.
pub(crate) const OVERLAP: usize = 100;
/// Word groups of an over-long sentence have at least this many words.
const MIN_WORDS: usize = 50;

fn len(s: &str) -> usize {
    s.chars().count()
}

/// Split `text` into chunks by FlockParser's rules.
pub(crate) fn chunk_text(text: &str) -> Vec<String> {
    let text = text.replace("\r\n", "\n");
    let paragraphs: Vec<&str> = text
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let mut chunks: Vec<String> = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut current_len = 0;
    for para in paragraphs {
        let para_len = len(para);
        if para_len > MAX_CHARS {
            if !current.is_empty() {
                chunks.push(current.join("\n\n"));
                current.clear();
                current_len = 0;
            }
            chunks.extend(split_large(para, MAX_CHARS));
            continue;
        }
        if current_len + para_len > TARGET_CHARS && !current.is_empty() {
            chunks.push(current.join("\n\n"));
            let last = current[current.len() - 1];
            if len(last) < OVERLAP {
                current = vec![last, para];
                current_len = len(last) + para_len;
            } else {
                current = vec![para];
                current_len = para_len;
            }
        } else {
            current.push(para);
            current_len += para_len;
        }
    }
    if !current.is_empty() {
        chunks.push(current.join("\n\n"));
    }
    // Packing counts paragraphs, not the blank lines between them: re-split
    // anything that ended up over the limit.
    chunks
        .into_iter()
        .flat_map(|c| {
            if len(&c) > MAX_CHARS {
                split_large(&c, MAX_CHARS)
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Sentences of `text`, each keeping its end mark; a sentence ends at `.`, `!`
/// or `?` followed by a space.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for i in 0..bytes.len().saturating_sub(1) {
        if matches!(bytes[i], b'.' | b'!' | b'?') && bytes[i + 1] == b' ' {
            out.push(&text[start..=i]);
            start = i + 1;
        }
    }
    out.push(&text[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Split a text longer than `max` at sentence ends, and over-long sentences
/// into word groups; no piece is longer than `max` (unless one word is).
fn split_large(text: &str, max: usize) -> Vec<String> {
    if len(text) <= max {
        return vec![text.to_string()];
    }
    let mut out = Vec::new();
    let mut current = String::new();
    for sent in sentences(text) {
        let sent_len = len(sent);
        if sent_len > max {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            out.extend(split_words(sent, max));
            continue;
        }
        let joined = if current.is_empty() {
            sent_len
        } else {
            len(&current) + 1 + sent_len
        };
        if joined > max {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(sent);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Groups of words: FlockParser's estimate of how many fit (90 % of the
/// proportional share, at least 50), then shrunk until each group fits.
fn split_words(sentence: &str, max: usize) -> Vec<String> {
    let words: Vec<&str> = sentence.split_whitespace().collect();
    let estimate = (max as f64 / len(sentence) as f64 * words.len() as f64 * 0.9) as usize;
    let per_group = estimate.max(MIN_WORDS);
    let mut out = Vec::new();
    for group in words.chunks(per_group) {
        let mut piece = String::new();
        for w in group {
            if !piece.is_empty() && len(&piece) + 1 + len(w) > max {
                out.push(std::mem::take(&mut piece));
            }
            if !piece.is_empty() {
                piece.push(' ');
            }
            piece.push_str(w);
        }
        if !piece.is_empty() {
            out.push(piece);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn para(words: usize, word: &str) -> String {
        vec![word; words].join(" ")
    }

    #[test]
    fn small_paragraphs_are_packed_into_one_chunk() {
        let text = "First paragraph.\n\nSecond one.\n\n\n\nThird.";
        assert_eq!(
            chunk_text(text),
            vec!["First paragraph.\n\nSecond one.\n\nThird."]
        );
        assert!(chunk_text("  \n\n ").is_empty());
    }

    #[test]
    fn packing_stops_at_the_target_and_short_last_paragraphs_overlap() {
        let long = para(150, "abcdefghi"); // 1,499 characters
        let short = "A short closing line.";
        let text = format!("{long}\n\n{short}\n\n{long}");
        let chunks = chunk_text(&text);
        assert_eq!(chunks.len(), 2, "{chunks:?}");
        assert_eq!(chunks[0], format!("{long}\n\n{short}"));
        // The short paragraph (< 100 chars) starts the next chunk too.
        assert_eq!(chunks[1], format!("{short}\n\n{long}"));
        // A long last paragraph is not repeated.
        let text = format!("{long}\n\n{long}");
        assert_eq!(chunk_text(&text), vec![long.clone(), long]);
    }

    #[test]
    fn over_long_paragraphs_split_at_sentences_then_words() {
        let sentence = format!("{}.", para(30, "word"));
        let big = vec![sentence.as_str(); 20].join(" ");
        let chunks = chunk_text(&big);
        assert!(chunks.len() >= 2);
        for c in &chunks {
            assert!(len(c) <= MAX_CHARS, "{}", len(c));
            assert!(c.ends_with('.'), "split at a sentence end: {c:?}");
        }
        assert_eq!(chunks.concat().matches("word").count(), 600);
        let one_sentence = para(800, "wordy");
        let chunks = chunk_text(&one_sentence);
        assert!(chunks.len() >= 3);
        assert!(chunks.iter().all(|c| len(c) <= MAX_CHARS));
        assert_eq!(chunks.join(" "), one_sentence);
    }

    #[test]
    fn lengths_are_characters_not_bytes() {
        let p = "é".repeat(900); // 1,800 bytes but 900 characters
        let text = format!("{p}\n\n{p}");
        assert_eq!(chunk_text(&text).len(), 1);
        // A pipe is text, not a sentence end.
        assert_eq!(chunk_text("a | b"), vec!["a | b"]);
    }
}
