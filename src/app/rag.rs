//! `rag on|off`, `rag path DIR|URL`, `rag model NAME`, `rag index PATH…`, the
//! RAG line of `status`, and the retriever a query gets when RAG is on.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use indicatif::ProgressBar;
use tokio::sync::mpsc;

use super::{App, CommandError, Handled, Line, Outcome, Sink};
use crate::blocking;
use crate::command::RagCmd;
use crate::config::settings::Key;
use crate::nodes::Node;
use crate::rag::embed::Embedder;
use crate::rag::index::Index;
use crate::rag::prepare::{self, Said, SHOWN_PROBLEMS};
use crate::rag::remote::Remote;
use crate::rag::writer::Writer;
use crate::rag::{self, documents, indexer, Location, LocationError, Retriever};
use crate::ui;

/// Longest wait for one batch of `rag index`.
const INDEX_EMBED_TIMEOUT: Duration = Duration::from_secs(300);

/// A progress callback for loading a knowledge base, and the bar it makes on
/// its first call (none when the index was already loaded).
fn load_bar() -> (prepare::Progress, Arc<OnceLock<ProgressBar>>) {
    let bar: Arc<OnceLock<ProgressBar>> = Arc::default();
    let b = bar.clone();
    let progress: prepare::Progress = Arc::new(move |done: usize, total: usize| {
        let pb = b.get_or_init(|| ui::progress::bar(total as u64, "📚 Loading the knowledge base"));
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    });
    (progress, bar)
}

fn on_off(b: bool) -> &'static str {
    if b {
        "ENABLED"
    } else {
        "DISABLED"
    }
}

struct IndexProgress {
    tx: mpsc::UnboundedSender<(Line, String)>,
    bar: ProgressBar,
}

impl indexer::Progress for IndexProgress {
    fn line(&self, line: String) {
        let _ = self.tx.send((Line::Result, line));
    }
    fn problem(&self, line: String) {
        let _ = self.tx.send((Line::Failure, line));
    }
    fn notice(&self, line: String) {
        let _ = self.tx.send((Line::Notice, line));
    }
    fn planned(&self, chunks: usize) {
        self.bar.set_length(chunks as u64);
    }
    fn embedded(&self, n: usize) {
        self.bar.inc(n as u64);
    }
}

impl App {
    pub(super) async fn rag_cmd(&mut self, cmd: RagCmd, sink: &mut dyn Sink) -> Handled {
        match cmd {
            RagCmd::On | RagCmd::Off => {
                let on = cmd == RagCmd::On;
                self.cfg.settings_mut().flockparser_enabled = on;
                let saved = self.save_settings(&[Key::FlockparserEnabled], sink).await;
                super::confirm(
                    sink,
                    saved,
                    &format!(
                        "FlockParser RAG {}{}",
                        on_off(on),
                        if saved { " (saved)" } else { "" }
                    ),
                );
                if on {
                    self.rag_describe(sink).await;
                }
                Ok(Outcome::from(saved))
            }
            RagCmd::Path(loc) => {
                if let Location::Local(p) = &loc {
                    if !tokio::fs::try_exists(p).await.unwrap_or(false) {
                        sink.err(&format!(
                            "ℹ️  {} does not exist yet; `rag index PATH…` will create it",
                            p.display()
                        ));
                    }
                }
                self.cfg.settings_mut().rag_path = Some(loc.describe());
                self.rag.clear().await;
                let saved = self.save_settings(&[Key::RagPath], sink).await;
                super::confirm(
                    sink,
                    saved,
                    &format!(
                        "RAG knowledge base: {}{}",
                        loc.describe(),
                        if saved { " (saved)" } else { "" }
                    ),
                );
                Ok(Outcome::from(saved))
            }
            RagCmd::Model(m) => {
                self.cfg.settings_mut().rag_model = Some(m.clone());
                let saved = self.save_settings(&[Key::RagModel], sink).await;
                super::confirm(
                    sink,
                    saved,
                    &format!(
                        "RAG embedding model set to: {m}{}",
                        if saved { " (saved)" } else { "" }
                    ),
                );
                Ok(Outcome::from(saved))
            }
            RagCmd::Index(paths) => self.rag_index(&paths, sink).await,
        }
    }

    async fn rag_location(&self) -> Option<Result<Location, LocationError>> {
        rag::configured(self.cfg.effective().rag_path.as_deref()).await
    }

    fn rag_model(&self) -> String {
        self.cfg.effective().rag_model.clone()
    }

    /// Nodes that may embed: every registered node (whatever the mode), else
    /// the one a query uses when there are none (OLLAMA_HOST or the default).
    fn embed_candidates(&mut self) -> Vec<Arc<Node>> {
        let all = self.cluster.registry.nodes().to_vec();
        if all.is_empty() {
            vec![self.fallback_node()]
        } else {
            all
        }
    }

    /// An embedder over the nodes that have the RAG model, on the process-wide
    /// scheduler (with the hosts' capacities applied).
    async fn embedder(
        &mut self,
        total: Duration,
    ) -> Result<Embedder, crate::rag::embed::NoEmbedder> {
        self.apply_capacities();
        let candidates = self.embed_candidates();
        let model = self.rag_model();
        Embedder::new(
            &self.cluster.client,
            self.cluster.sched.clone(),
            &candidates,
            &model,
            total,
        )
        .await
    }

    /// The local index of `root`, loaded (with a bar on a terminal) if needed;
    /// what was skipped while loading is said once.
    async fn rag_load(&mut self, root: &std::path::Path, sink: &mut dyn Sink) -> Arc<Index> {
        let (progress, bar) = load_bar();
        let (idx, problems) = self.rag.get(root, progress).await;
        if let Some(b) = bar.get() {
            b.finish_and_clear();
        }
        for p in rag::summarise(&problems, SHOWN_PROBLEMS) {
            sink.warn(&format!("⚠️  {p}"));
        }
        idx
    }

    /// After `rag on`: what the knowledge base holds.
    async fn rag_describe(&mut self, sink: &mut dyn Sink) {
        match self.rag_location().await {
            None => sink.err(&format!(
                "ℹ️  No knowledge base yet: `rag path DIR|URL` names one (a FlockParser folder or its API server), `rag index PATH…` builds one in {}",
                rag::default_folder()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|| "~/FlockParser".into())
            )),
            Some(Err(e)) => sink.warn(&format!("⚠️  rag_path: {e}")),
            Some(Ok(loc)) => {
                let line = self.rag_counts(&loc, sink).await;
                sink.out(&format!("📚 Knowledge base {}: {line}", loc.describe()));
            }
        }
    }

    /// "D documents, C chunks", "no documents" or why it cannot be read.
    async fn rag_counts(&mut self, loc: &Location, sink: &mut dyn Sink) -> String {
        let (docs, chunks) = match loc {
            Location::Local(root) => {
                let idx = self.rag_load(root, sink).await;
                (idx.documents(), idx.chunks())
            }
            Location::Remote(url) => match Remote::new(url).stats().await {
                Ok(s) => (s.documents, s.chunks),
                Err(e) => return format!("unreachable ({e})"),
            },
        };
        if chunks == 0 {
            "no documents".to_string()
        } else {
            format!("{docs} docs, {chunks} chunks")
        }
    }

    /// The value of `status`'s RAG line.
    pub(super) async fn rag_status(&mut self, sink: &mut dyn Sink) -> String {
        if !self.cfg.effective().rag_enabled {
            return "OFF".into();
        }
        match self.rag_location().await {
            None => "ON (no documents)".into(),
            Some(Err(e)) => format!("ON ({e})"),
            Some(Ok(loc)) => format!("ON ({})", self.rag_counts(&loc, sink).await),
        }
    }

    /// What `status` shows about where the documents are and the model.
    pub(super) async fn rag_where(&self) -> (String, String) {
        let place = match self.rag_location().await {
            None => "none (rag path DIR|URL)".to_string(),
            Some(Ok(l)) => l.describe(),
            Some(Err(e)) => e.to_string(),
        };
        (place, self.rag_model())
    }

    /// The retriever for a query, or None (said once) when RAG is off or
    /// cannot run: no knowledge base, no documents, no node with the model.
    pub(super) async fn rag_retriever(&mut self, sink: &mut dyn Sink) -> Option<Retriever> {
        self.apply_capacities();
        let candidates = self.embed_candidates();
        let model = self.rag_model();
        let (progress, bar) = load_bar();
        let setup = prepare::Setup {
            enabled: self.cfg.effective().rag_enabled,
            path: self.cfg.effective().rag_path.as_deref(),
            model: &model,
            cache: &self.rag,
            client: &self.cluster.client,
            sched: self.cluster.sched.clone(),
            candidates: &candidates,
        };
        let r = prepare::retriever(setup, progress, |said| match said {
            Said::Info(l) => sink.err(&l),
            Said::Warning(l) => sink.warn(&l),
        })
        .await;
        if let Some(b) = bar.get() {
            b.finish_and_clear();
        }
        r
    }

    /// `rag index PATH…` into the configured local knowledge base (the
    /// FlockParser folder in the home directory when none is set).
    async fn rag_index(&mut self, paths: &[PathBuf], sink: &mut dyn Sink) -> Handled {
        let root = self.index_root().await?;
        let paths = paths.to_vec();
        let (files, problems) = blocking::run(move || documents::collect(&paths))
            .await
            .map_err(|e| CommandError::Rag(format!("rag index: {e}")))?;
        for p in &problems {
            sink.fail(&format!("❌ {p}"));
        }
        if files.is_empty() {
            return Err(CommandError::Rag(
                "nothing to index (.txt, .md and .pdf files, or folders of them)".into(),
            ));
        }
        let writer = blocking::try_run(move || Writer::open(&root))
            .await
            .map_err(|e| CommandError::File(e.to_string()))?;
        let model = self.rag_model();
        let embedder = self
            .embedder(INDEX_EMBED_TIMEOUT)
            .await
            .map_err(|e| CommandError::Rag(format!("rag index: {e}; nothing was written")))?;
        sink.err(&format!(
            "📚 Indexing {} file(s) into {} with {model} on {} host(s)",
            files.len(),
            writer.root().display(),
            embedder.hosts()
        ));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let bar = ui::progress::eta_bar(0, "📚 Embedding chunks");
        let progress = IndexProgress {
            tx,
            bar: bar.clone(),
        };
        let emit = |sink: &mut dyn Sink, (kind, line): (Line, String)| {
            if bar.is_hidden() {
                sink.line(kind, &line);
            } else {
                bar.suspend(|| sink.line(kind, &line));
            }
        };
        let summary = {
            let fut = indexer::run(writer, &files, &embedder, &progress);
            tokio::pin!(fut);
            loop {
                tokio::select! {
                    s = &mut fut => break s,
                    Some(line) = rx.recv() => emit(sink, line),
                }
            }
        };
        while let Ok(line) = rx.try_recv() {
            emit(sink, line);
        }
        bar.finish_and_clear();
        self.rag.clear().await;
        let failed = summary.failed + problems.len();
        // The mark says how it went: nothing indexed and some failed, some
        // failed, nothing to index at all, or every document in.
        let mark = match (summary.added, failed, summary.skipped) {
            (0, f, _) if f > 0 => "❌",
            (_, f, _) if f > 0 => "⚠️ ",
            (0, 0, 0) => "⚠️ ",
            _ => "✅",
        };
        sink.out(&format!(
            "{mark} Indexed {} document(s), {} chunk(s) in {:.1}s over {} host(s); {} already indexed, {failed} failed",
            summary.added,
            summary.chunks,
            summary.seconds,
            embedder.hosts(),
            summary.skipped,
        ));
        Ok(Outcome::from(failed == 0))
    }

    /// The local knowledge base `rag index` writes into.
    async fn index_root(&self) -> Result<PathBuf, CommandError> {
        match self.rag_location().await {
            Some(Ok(Location::Local(r))) => Ok(r),
            Some(Ok(Location::Remote(u))) => Err(CommandError::Rag(format!(
                "rag index writes a local knowledge base, but `rag path` is the server {u}; set `rag path DIR` first"
            ))),
            Some(Err(e)) => Err(CommandError::Rag(format!("rag_path: {e}"))),
            None => rag::default_folder().ok_or_else(|| {
                CommandError::Rag(
                    "no home directory to put a knowledge base in; set `rag path DIR` first"
                        .into(),
                )
            }),
        }
    }
}
