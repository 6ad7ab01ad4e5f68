//! Token arithmetic for requests that must fit a node's context window: a
//! conservative estimate of a prompt's tokens, the room left for the reply,
//! and how much quoted material or how many words of reply fit.

/// Bytes of text per token assumed when estimating. Llama-style tokenizers
/// give about 4 bytes a token for English prose and about 3 for JSON, code and
/// numbers (measured with SmolLM2's tokenizer on this project's prompts: 4.2-4.4
/// for the agents' prompts, 3.5 for Markdown, 3.1 for JSON); 3 keeps the
/// estimate on the safe side. Non-ASCII text counts by its UTF-8 bytes.
pub(crate) const BYTES_PER_TOKEN: f64 = 3.0;
/// Tokens a chat template adds per message, and once per request.
const PER_MESSAGE: u64 = 8;
const PER_REQUEST: u64 = 16;
/// The fewest reply tokens worth asking for: with less room, a request does not fit.
pub(crate) const MIN_REPLY: u64 = 128;
/// Tokens kept free between the end of the reply and the end of the context.
pub(crate) const MARGIN: u64 = 16;
/// The context used for a node and model whose context could not be learned:
/// the `num_ctx` this program then sends Ollama.
pub(crate) const DEFAULT_CONTEXT: u64 = 8192;

/// About how many tokens `text` is (rounded up).
pub fn tokens(text: &str) -> u64 {
    (text.len() as f64 / BYTES_PER_TOKEN).ceil() as u64
}

/// Tokens of a chat request with a system and a user message.
pub fn prompt_tokens(system: &str, user: &str) -> u64 {
    tokens(system) + tokens(user) + 2 * PER_MESSAGE + PER_REQUEST
}

/// Tokens left for the reply in a context of `context` tokens after a prompt of
/// `prompt` tokens; None when that is fewer than `MIN_REPLY`.
pub(crate) fn reply_room(context: u64, prompt: u64) -> Option<u64> {
    context
        .checked_sub(prompt + MARGIN)
        .filter(|r| *r >= MIN_REPLY)
}

/// The reply a request that quotes material should leave room for: half the
/// context, at least `MIN_REPLY`, at most `num_predict`.
pub(crate) fn reply_reserve(context: u64, num_predict: u64) -> u64 {
    (context / 2).max(MIN_REPLY).min(num_predict.max(MIN_REPLY))
}

/// Bytes of quoted material that fit beside `fixed` bytes of prompt text (the
/// system prompt and the instructions) and a reply of `reply` tokens.
pub(crate) fn material_room(context: u64, fixed: &str, reply: u64) -> usize {
    let used = tokens(fixed) + 2 * PER_MESSAGE + PER_REQUEST + MARGIN + reply;
    bytes_for(context.saturating_sub(used))
}

/// Bytes of text that make about `tokens` tokens.
pub(crate) fn bytes_for(tokens: u64) -> usize {
    (tokens as f64 * BYTES_PER_TOKEN) as usize
}

/// Words of prose a reply of `tokens` tokens holds inside a JSON object:
/// about 0.75 words a token, less the object's own syntax and some slack for
/// a model that overshoots the length it is given.
pub(crate) fn words_for(tokens: u64) -> usize {
    (tokens.saturating_sub(32) as f64 * 0.55) as usize
}

/// `text` cut to at most `max` bytes: at the end of its last whole sentence
/// within the limit, else at a space, with "…" to show the cut. Text that fits
/// is returned as it is.
pub fn cut(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = &text[..end];
    let at_sentence = head
        .rfind(['.', '!', '?'])
        .filter(|i| *i >= head.len() / 2)
        .map(|i| i + 1);
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
    fn estimates_are_conservative_for_prose() {
        // 44 bytes of English is about 10 real tokens; the estimate says 15.
        assert_eq!(tokens("The cat sat on the mat in the afternoon sun."), 15);
        assert_eq!(prompt_tokens("", ""), 32);
    }

    #[test]
    fn reply_room_needs_a_minimum() {
        assert_eq!(reply_room(1024, 500), Some(508));
        assert_eq!(reply_room(1024, 900), None);
        assert_eq!(reply_room(100, 500), None);
        assert_eq!(reply_reserve(1024, 4096), 512);
        assert_eq!(reply_reserve(8192, 300), 300);
        assert_eq!(reply_reserve(100, 50), MIN_REPLY);
    }

    #[test]
    fn material_room_shrinks_with_the_context() {
        let fixed = "x".repeat(300);
        assert!(material_room(8192, &fixed, 4096) > 10_000);
        let small = material_room(1024, &fixed, 512);
        assert!(small > 900 && small < 1_300, "{small}");
        assert_eq!(material_room(256, &fixed, 512), 0);
    }

    #[test]
    fn cuts_at_a_sentence_or_a_space() {
        assert_eq!(cut("Short.", 100), "Short.");
        assert_eq!(cut("One two three. Four five six.", 20), "One two three.");
        assert_eq!(cut("One two. Three four five six.", 20), "One two. Three…");
        assert_eq!(cut("alpha beta gamma delta epsilon", 16), "alpha beta…");
        assert!(cut(&"é".repeat(50), 11).len() <= 11);
    }
}
