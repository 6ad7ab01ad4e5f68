//! Token arithmetic for requests that must fit a node's context window: a
//! conservative estimate of a prompt's tokens, the room left for the reply,
//! and how much quoted material or how many words of reply fit.
//!
//! Tokens are estimated by [`crate::prompt::tokens`] (3 bytes a token for
//! ASCII, more for other scripts), the one estimate every budget uses. Room
//! for material is counted in its unit, thirds of a token
//! ([`crate::prompt::weight`]: one per ASCII byte), and [`cut`] cuts to it.

/// Text cut to a room: [`crate::prompt::cut`].
pub use crate::prompt::cut;

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

/// About how many tokens `text` is (rounded up): [`crate::prompt::tokens`].
pub fn tokens(text: &str) -> u64 {
    crate::prompt::tokens(text)
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

/// Room for quoted material (in thirds of a token, [`crate::prompt::weight`]:
/// an ASCII byte each) beside `fixed` prompt text (the system prompt and the
/// instructions) and a reply of `reply` tokens.
pub(crate) fn material_room(context: u64, fixed: &str, reply: u64) -> usize {
    let used = tokens(fixed) + 2 * PER_MESSAGE + PER_REQUEST + MARGIN + reply;
    room_for(context.saturating_sub(used))
}

/// The room (in thirds of a token: as many ASCII bytes) that makes about
/// `tokens` tokens.
pub(crate) fn room_for(tokens: u64) -> usize {
    (tokens as usize).saturating_mul(3)
}

/// Words of prose a reply of `tokens` tokens holds inside a JSON object:
/// about 0.75 words a token, less the object's own syntax and some slack for
/// a model that overshoots the length it is given.
pub(crate) fn words_for(tokens: u64) -> usize {
    (tokens.saturating_sub(32) as f64 * 0.55) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::weight;

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
        assert!(weight(&cut(&"é".repeat(50), 11)) <= 11);
        // Cut by what the text costs, not its bytes: CJK costs 2 tokens a character.
        let ja = "日本語の文。".repeat(20);
        let c = cut(&ja, 60);
        assert_eq!(c, "日本語の文。", "the last sentence end within 20 tokens");
    }
}
