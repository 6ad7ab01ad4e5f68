//! A pull on several nodes as one progress: each node's lines for a layer
//! (its `digest`, `total`, `completed`) are kept, and the cluster's line for
//! that layer is their sum, so a client that draws one bar per digest (the
//! `ollama` CLI, Open WebUI) draws the whole cluster's download.

use std::collections::BTreeMap;

use crate::ollama::types::ProgressLine;

/// What each node has said of each layer: (total, completed) by (node, digest).
#[derive(Debug, Default, Clone)]
pub struct Board {
    layers: BTreeMap<(String, String), (u64, u64)>,
}

impl Board {
    pub fn new() -> Board {
        Board::default()
    }

    /// Note `node`'s `line`. For a layer's progress, the cluster's line for
    /// that layer (the same status and digest, `total` and `completed`
    /// summed over every node that has reported the layer); None for any
    /// other line.
    pub fn add(&mut self, node: &str, line: &ProgressLine) -> Option<ProgressLine> {
        let digest = line.digest.as_deref().filter(|d| !d.is_empty())?;
        let total = line.total.unwrap_or(0);
        let completed = line.completed.unwrap_or(0).min(total);
        let slot = self
            .layers
            .entry((node.to_string(), digest.to_string()))
            .or_default();
        // A layer's count never goes back (a node that restarts a layer says 0 again).
        *slot = (
            total.max(slot.0),
            completed.max(slot.1).min(total.max(slot.0)),
        );
        let (total, completed) = self.layer(digest);
        Some(ProgressLine {
            status: line.status.clone(),
            digest: Some(digest.to_string()),
            total: Some(total),
            completed: Some(completed),
            error: None,
        })
    }

    /// A layer's (total, completed) summed over the nodes that reported it.
    pub fn layer(&self, digest: &str) -> (u64, u64) {
        self.layers
            .iter()
            .filter(|((_, d), _)| d == digest)
            .fold((0, 0), |(t, c), (_, (lt, lc))| (t + lt, c + lc))
    }

    /// One node's (total, completed) over every layer it reported.
    pub fn node(&self, node: &str) -> (u64, u64) {
        self.layers
            .iter()
            .filter(|((n, _), _)| n == node)
            .fold((0, 0), |(t, c), (_, (lt, lc))| (t + lt, c + lc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(digest: &str, total: u64, completed: u64) -> ProgressLine {
        ProgressLine {
            status: format!("pulling {digest}"),
            digest: Some(digest.into()),
            total: Some(total),
            completed: Some(completed),
            error: None,
        }
    }

    #[test]
    fn a_layers_progress_is_summed_over_the_nodes() {
        let mut b = Board::new();
        let first = b.add("alpha", &line("sha256:aa", 100, 10)).unwrap();
        assert_eq!((first.total, first.completed), (Some(100), Some(10)));
        assert_eq!(first.status, "pulling sha256:aa");
        let both = b.add("beta", &line("sha256:aa", 100, 30)).unwrap();
        assert_eq!((both.total, both.completed), (Some(200), Some(40)));
        // Another layer is its own sum.
        let other = b.add("alpha", &line("sha256:bb", 5, 5)).unwrap();
        assert_eq!((other.total, other.completed), (Some(5), Some(5)));
        assert_eq!(b.layer("sha256:aa"), (200, 40));
        assert_eq!(b.node("alpha"), (105, 15));
        assert_eq!(b.node("beta"), (100, 30));
        assert_eq!(b.node("gamma"), (0, 0));
    }

    #[test]
    fn counts_never_go_back_nor_past_the_total() {
        let mut b = Board::new();
        b.add("alpha", &line("d", 100, 60));
        let again = b.add("alpha", &line("d", 100, 0)).unwrap();
        assert_eq!(again.completed, Some(60));
        let over = b.add("alpha", &line("d", 100, 250)).unwrap();
        assert_eq!(over.completed, Some(100));
    }

    #[test]
    fn lines_without_a_layer_are_not_summed() {
        let mut b = Board::new();
        for s in ["pulling manifest", "verifying sha256 digest", "success"] {
            assert_eq!(b.add("alpha", &ProgressLine::status(s)), None);
        }
        let empty = ProgressLine {
            digest: Some(String::new()),
            ..ProgressLine::status("pulling")
        };
        assert_eq!(b.add("alpha", &empty), None);
        assert_eq!(b.node("alpha"), (0, 0));
    }
}
