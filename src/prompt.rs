//! A prompt as this program builds it: the text sent, and which pieces of it
//! this program wrote. The pipeline's agents and retrieval's excerpts both
//! build their messages from it. And the one estimate of how many tokens a
//! text is ([`tokens`]), which every budget uses: the room a request leaves
//! for its reply, the material quoted to an agent, the excerpts of retrieval.

/// A user message: its text, and the pieces of it this program wrote
/// (instructions, labels, the question) as opposed to the material it quotes
/// (findings, drafts, parts). A reply that repeats its own pieces is echoing
/// the prompt (see `pipeline::clean`); one that repeats material may be doing its job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompt {
    pub text: String,
    pub own: Vec<String>,
}

impl Prompt {
    /// Text this program wrote.
    pub fn says(mut self, s: impl Into<String>) -> Prompt {
        let s = s.into();
        self.text.push_str(&s);
        self.own.push(s);
        self
    }

    /// Material the prompt quotes.
    pub fn quotes(mut self, s: impl AsRef<str>) -> Prompt {
        self.text.push_str(s.as_ref());
        self
    }

    /// Another prompt after this one, its pieces as they were.
    pub fn then(mut self, other: &Prompt) -> Prompt {
        self.text.push_str(&other.text);
        self.own.extend(other.own.iter().cloned());
        self
    }
}

impl From<String> for Prompt {
    fn from(text: String) -> Prompt {
        Prompt::default().says(text)
    }
}

impl From<&str> for Prompt {
    fn from(text: &str) -> Prompt {
        Prompt::default().says(text)
    }
}

/// What a text costs, in thirds of a token: the unit of every budget. An
/// ASCII byte is one (3 bytes a token: Llama-style tokenizers give about 4
/// for English prose and 3 for JSON, code and numbers, so 3 is on the safe
/// side); every other character counts by its class, at least as much as its
/// UTF-8 bytes did at 3 a token, and more where tokenizers spend more:
///
/// | characters | tokens each |
/// |---|---|
/// | ASCII | 1/3 |
/// | 2-byte UTF-8: accented Latin, Greek, Cyrillic, Hebrew, Arabic | 1 |
/// | general punctuation (U+2000–U+206F: dashes, curly quotes, …) | 1 |
/// | the rest of the BMP: CJK, kana, Hangul, Indic, Thai, symbols | 2 |
/// | beyond the BMP: emoji, rare CJK | 3 |
///
/// Measured with SmolLM2's tokenizer (an English-centric one, the worst
/// case among the models the tests use): accented letters and Cyrillic about
/// 1 token a character, kana 1, CJK ideographs and Hangul up to 3, emoji 3;
/// multilingual tokenizers (Llama 3, Qwen) give CJK about 1. So English
/// costs what it did (3 bytes a token), and text in other scripts is never
/// estimated lower than before.
pub fn weight(text: &str) -> usize {
    text.chars().map(char_weight).sum()
}

/// One character's cost, in thirds of a token (see [`weight`]).
pub fn char_weight(c: char) -> usize {
    match c as u32 {
        0..=0x7F => 1,
        0x80..=0x7FF => 3,
        0x2000..=0x206F => 3,
        0x800..=0xFFFF => 6,
        _ => 9,
    }
}

/// About how many tokens `text` is (rounded up): the estimate every budget
/// uses (see [`weight`]).
pub fn tokens(text: &str) -> u64 {
    weight(text).div_ceil(3) as u64
}

/// `text` cut to at most `max` of room (thirds of a token, [`weight`]; as
/// many bytes for ASCII): at the end of its last whole sentence within the
/// limit, else at a space, with "…" to show the cut. Text that fits is
/// returned as it is.
pub fn cut(text: &str, max: usize) -> String {
    let text = text.trim();
    if weight(text) <= max {
        return text.to_string();
    }
    let within = max.saturating_sub(char_weight('…'));
    let mut used = 0;
    let mut end = 0;
    for (i, c) in text.char_indices() {
        used += char_weight(c);
        if used > within {
            break;
        }
        end = i + c.len_utf8();
    }
    let head = &text[..end];
    let at_sentence = head
        .char_indices()
        .rev()
        .find(|(_, c)| matches!(c, '.' | '!' | '?' | '。' | '！' | '？'))
        .filter(|(i, _)| *i >= head.len() / 2)
        .map(|(i, c)| i + c.len_utf8());
    match at_sentence {
        Some(i) => head[..i].to_string(),
        None => {
            let at_space = head.rfind(char::is_whitespace).unwrap_or(head.len());
            format!("{}…", head[..at_space].trim_end())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_costs_three_bytes_a_token_as_before() {
        let s = "The cat sat on the mat in the afternoon sun.";
        assert_eq!(tokens(s), (s.len() as u64).div_ceil(3));
        assert_eq!(tokens(""), 0);
        // Typographic punctuation in English prose: one token, as its 3 bytes were.
        assert_eq!(tokens("\u{2014}\u{2019}\u{201C}\u{2026}"), 4);
    }

    #[test]
    fn other_scripts_count_at_least_their_bytes_and_more_for_cjk_and_emoji() {
        assert_eq!(tokens("é"), 1);
        assert_eq!(tokens("жук"), 3);
        assert_eq!(tokens("日本語"), 6);
        assert_eq!(tokens("のハ"), 4);
        assert_eq!(tokens("한국어"), 6);
        assert_eq!(tokens("🌊"), 3);
        // Never under the old estimate (bytes / 3), whatever the text.
        for s in [
            "Les marées de printemps 🌊 日本語",
            "Приливы и отливы",
            "ज्वार-भाटा",
            "👨\u{200D}👩\u{200D}👧",
            "a\u{0301}",
        ] {
            assert!(tokens(s) >= (s.len() as u64).div_ceil(3), "{s}");
        }
        // The question: 24 ASCII bytes, an accented letter, an emoji,
        // 3 kanji: 8 + 1 + 3 + 6 tokens (the old estimate: 38 bytes, 13).
        assert_eq!(tokens("Les marées de printemps 🌊 日本語"), 18);
    }
}
