//! Deterministic embeddings for simulated hosts, where texts about the same
//! thing are near: a hashed bag of lower-cased word stems (and their letter
//! trigrams, weighted lower), L2-normalised, mixed with one direction every
//! text shares — as real embedding models do, which is why unrelated texts
//! still score about 0.4 and related ones 0.6 and more.

use std::collections::HashMap;

use super::text::hash;

/// Share of every vector's squared length that lies on the common direction.
const COMMON: f32 = 0.4;
const TRIGRAM_WEIGHT: f32 = 0.3;

const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "does", "for", "from", "how", "in",
    "is", "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "what", "when",
    "which", "who", "why", "with", "explain", "tell", "me", "about", "describe",
];

/// A crude stemmer: enough that "tides" and "tide", "orbiting" and "orbit" meet.
fn stem(word: &str) -> &str {
    for suffix in ["ing", "ed", "es", "ly", "s"] {
        if let Some(s) = word.strip_suffix(suffix) {
            if s.len() >= 3 {
                return s;
            }
        }
    }
    word
}

fn add(v: &mut [f32], feature: &str, weight: f32) {
    let h = hash(&[feature]);
    let i = (h % v.len() as u64) as usize;
    let sign = if (h >> 63) & 1 == 1 { -1.0 } else { 1.0 };
    v[i] += sign * weight;
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// The direction every text shares.
fn common(dims: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dims)
        .map(|i| {
            let h = hash(&["common direction", &i.to_string()]);
            (h % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    normalise(&mut v);
    v
}

/// The embedding of `text` with `dims` dimensions (at least 1), unit length.
pub fn embed(text: &str, dims: usize) -> Vec<f32> {
    let dims = dims.max(1);
    let lower = text.to_lowercase();
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for w in lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !STOPWORDS.contains(w))
    {
        *counts.entry(stem(w)).or_insert(0) += 1;
    }
    let mut bag = vec![0.0f32; dims];
    for (s, n) in &counts {
        let weight = 1.0 + (*n as f32).ln();
        add(&mut bag, s, weight);
        let padded: Vec<char> = format!("^{s}$").chars().collect();
        for t in padded.windows(3) {
            let t: String = t.iter().collect();
            add(&mut bag, &format!("#{t}"), weight * TRIGRAM_WEIGHT);
        }
    }
    normalise(&mut bag);
    let mut v: Vec<f32> = common(dims)
        .iter()
        .zip(&bag)
        .map(|(c, b)| COMMON.sqrt() * c + (1.0 - COMMON).sqrt() * b)
        .collect();
    normalise(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn related_texts_are_near_and_unrelated_ones_are_not() {
        let tides = embed(
            "Tides are the rise and fall of the ocean caused by the moon's gravity. \
             The moon pulls the ocean; spring tides come with the full moon.",
            1024,
        );
        let q = embed("How does the moon cause ocean tides?", 1024);
        let off = embed("Best sourdough bread baking temperature", 1024);
        assert!(cos(&tides, &q) > 0.6, "{}", cos(&tides, &q));
        assert!(cos(&off, &q) < 0.5, "{}", cos(&off, &q));
        assert_eq!(embed("same text", 64), embed("same text", 64));
        let n: f32 = embed("x", 16).iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-5);
    }
}
