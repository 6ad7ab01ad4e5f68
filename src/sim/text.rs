//! Deterministic text for simulated replies: the prompt's head, then sentences
//! chosen by a hash of model and prompt (so two prompts give different text, and
//! the same prompt always gives the same text).

const SUBJECTS: &[&str] = &[
    "the system",
    "a node",
    "the model",
    "the network",
    "a request",
    "the cluster",
    "the result",
    "an agent",
    "the scheduler",
    "a host",
];
const VERBS: &[&str] = &[
    "depends on",
    "leads to",
    "works with",
    "runs beside",
    "reports to",
    "waits for",
    "builds on",
    "looks at",
    "points to",
    "moves through",
];
const OBJECTS: &[&str] = &[
    "the data in the queue",
    "a part of the answer",
    "the state of the host",
    "an idea from the study",
    "the edge of the subnet",
    "a chunk of the text",
    "the core of the design",
    "a view of the field",
    "the speed of the link",
    "a piece of the model",
];
const TAILS: &[&str] = &[
    "in a careful way",
    "for the user at the desk",
    "with a small delay",
    "at the end of the day",
    "from the start",
    "on the local machine",
    "by the usual rule",
    "under a steady load",
];

/// FNV-1a: small, stable across platforms and releases.
pub(crate) fn hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// The first 40 characters of the prompt, on one line.
pub fn head(prompt: &str) -> String {
    prompt
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(40)
        .collect()
}

/// One sentence of plain prose.
pub(crate) fn sentence(rng: &mut Rng) -> String {
    let s = format!(
        "{} {} {} {}.",
        rng.pick(SUBJECTS),
        rng.pick(VERBS),
        rng.pick(OBJECTS),
        rng.pick(TAILS)
    );
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => s,
    }
}

/// The numbers of the sources a prompt offers for citation (the `[n] name`
/// lines under `AVAILABLE SOURCES FOR CITATION:`), last listed first: the
/// order a simulated model cites them in.
pub(crate) fn citable(prompt: &str) -> Vec<String> {
    let Some(at) = prompt.find("AVAILABLE SOURCES FOR CITATION:") else {
        return Vec::new();
    };
    let mut out: Vec<String> = prompt[at..]
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let n = l.trim().strip_prefix('[')?.split_once(']')?.0;
            n.parse::<usize>().ok().map(|n| format!("[{n}]"))
        })
        .collect();
    out.reverse();
    out
}

/// Prose of about `words` words that begins with the prompt's head; when the
/// prompt offers sources, the first sentences cite them, one each.
pub(crate) fn prose(model: &str, prompt: &str, words: usize) -> String {
    let mut rng = Rng::new(hash(&[model, prompt]));
    let mut out = head(prompt);
    out.push_str(" — ");
    let mut count = 0;
    let mut cites = citable(prompt).into_iter();
    while count < words.max(1) {
        let mut s = sentence(&mut rng);
        if let Some(c) = cites.next() {
            s = format!("{} {c}.", s.trim_end_matches('.'));
        }
        count += s.split_whitespace().count();
        out.push_str(&s);
        out.push(' ');
    }
    out.trim_end().to_string()
}

/// Split text into "tokens" (words with their trailing space) for streaming.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in text.chars() {
        cur.push(ch);
        if ch == ' ' {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_starts_with_prompt() {
        let a = prose(
            "m",
            "Explain the history of the printing press in Europe",
            50,
        );
        assert_eq!(
            a,
            prose(
                "m",
                "Explain the history of the printing press in Europe",
                50
            )
        );
        assert!(a.starts_with("Explain the history of the printing pres"));
        assert_ne!(
            a,
            prose(
                "m2",
                "Explain the history of the printing press in Europe",
                50
            )
        );
        assert_eq!(tokens(&a).concat(), a);
    }
}
