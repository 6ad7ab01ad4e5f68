//! A node's latency model: time to first token (recent samples, for a mean and
//! a p95), tokens per second, prompt tokens per second, model load time and
//! reply length, each as an exponentially weighted average. The scheduler
//! derives its deadlines and hedging decisions from it; with no samples yet it
//! falls back to the rest of the cluster, then to the priors below.

use std::collections::VecDeque;
use std::time::Duration;

/// Before anything is measured: a first token within this is normal.
pub(crate) const PRIOR_TTFT: Duration = Duration::from_secs(1);
/// Before anything is measured: tokens per second of a modest CPU node.
pub(crate) const PRIOR_TOKENS_PER_SEC: f64 = 8.0;
/// Before anything is measured: how long loading a model into memory takes.
pub(crate) const PRIOR_LOAD: Duration = Duration::from_secs(30);
/// Before anything is measured: tokens in a reply.
pub(crate) const PRIOR_REPLY_TOKENS: f64 = 400.0;

const SAMPLES: usize = 32;
const WEIGHT: f64 = 0.3;

/// An exponentially weighted moving average.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ewma(Option<f64>);

impl Ewma {
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.0 = Some(match self.0 {
            Some(prev) => prev * (1.0 - WEIGHT) + x * WEIGHT,
            None => x,
        });
    }

    pub fn get(&self) -> Option<f64> {
        self.0
    }
}

#[derive(Debug, Clone, Default)]
pub struct Latency {
    ttft_ms: VecDeque<f64>,
    ttft_ewma: Ewma,
    pub tokens_per_sec: Ewma,
    pub prompt_tokens_per_sec: Ewma,
    pub load_ms: Ewma,
    pub reply_tokens: Ewma,
}

/// What one finished request measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub first_token_ms: Option<f64>,
    pub tokens_per_sec: Option<f64>,
    pub prompt_tokens_per_sec: Option<f64>,
    pub load_ms: Option<f64>,
    pub reply_tokens: Option<u64>,
}

impl Latency {
    /// A first token arrived `ms` after the request was sent.
    pub(crate) fn record_ttft(&mut self, ms: f64) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        if self.ttft_ms.len() == SAMPLES {
            self.ttft_ms.pop_front();
        }
        self.ttft_ms.push_back(ms);
        self.ttft_ewma.add(ms);
    }

    pub(crate) fn record(&mut self, s: &Sample) {
        if let Some(t) = s.first_token_ms {
            self.record_ttft(t);
        }
        if let Some(x) = s.tokens_per_sec.filter(|x| *x > 0.0) {
            self.tokens_per_sec.add(x);
        }
        if let Some(x) = s.prompt_tokens_per_sec.filter(|x| *x > 0.0) {
            self.prompt_tokens_per_sec.add(x);
        }
        // A load of a few milliseconds means the model was already in memory.
        if let Some(x) = s.load_ms.filter(|x| *x > 50.0) {
            self.load_ms.add(x);
        }
        if let Some(n) = s.reply_tokens.filter(|n| *n > 0) {
            self.reply_tokens.add(n as f64);
        }
    }

    /// The 95th percentile of the recent times to first token.
    pub(crate) fn ttft_p95_ms(&self) -> Option<f64> {
        if self.ttft_ms.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = self.ttft_ms.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let i = ((v.len() as f64 * 0.95).ceil() as usize).clamp(1, v.len()) - 1;
        Some(v[i])
    }
}

/// The median of what some nodes report (the cluster's view of a quantity).
pub fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    Some(xs[xs.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_and_averages() {
        let mut l = Latency::default();
        assert_eq!(l.ttft_p95_ms(), None);
        for i in 1..=20 {
            l.record(&Sample {
                first_token_ms: Some(i as f64 * 10.0),
                tokens_per_sec: Some(50.0),
                load_ms: Some(2.0),
                ..Default::default()
            });
        }
        assert_eq!(l.ttft_p95_ms(), Some(190.0));
        assert_eq!(l.tokens_per_sec.get(), Some(50.0));
        assert_eq!(l.load_ms.get(), None, "a 2 ms load is no load");
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![]), None);
    }
}
