//! A FlockParser knowledge base served by FlockParser's API server
//! (`flockparser_api_server.py`, port 8765, no authentication): `GET /health`,
//! `GET /stats`, and `POST /query` with an embedding computed here.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::context::Excerpt;

pub(crate) const DEFAULT_PORT: u16 = 8765;
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum RemoteError {
    #[error("{url}: no answer ({reason})")]
    Unreachable { url: String, reason: String },
    #[error("{url}: HTTP {status}")]
    Http { url: String, status: u16 },
    #[error("{url}: unexpected reply ({message})")]
    Protocol { url: String, message: String },
    #[error("{url}: the server says its document index is not available")]
    Unavailable { url: String },
}

/// A `rag path` URL that cannot be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum UrlError {
    #[error("`{text}` is not a URL ({source})")]
    NotAUrl {
        text: String,
        source: url::ParseError,
    },
    #[error("`{0}`: only http:// and https:// are supported")]
    Scheme(String),
    #[error("`{0}` names no host")]
    NoHost(String),
}

/// `/stats`, as FlockParser sends it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Stats {
    #[serde(default)]
    pub available: bool,
    #[serde(default)]
    pub documents: usize,
    #[serde(default)]
    pub chunks: usize,
    #[serde(default)]
    pub document_names: Vec<String>,
}

#[derive(Deserialize)]
struct Health {
    #[serde(default)]
    available: bool,
}

#[derive(Deserialize)]
struct QueryReply {
    chunks: Vec<ReplyChunk>,
}

#[derive(Deserialize)]
struct ReplyChunk {
    text: String,
    doc_name: String,
    similarity: f32,
    #[serde(default)]
    doc_id: Option<serde_json::Value>,
}

#[derive(Clone)]
pub struct Remote {
    base: String,
    http: reqwest::Client,
}

/// `http(s)://host[:port][/path]`, with FlockParser's port when none is given.
pub fn base_url(text: &str) -> Result<String, UrlError> {
    let mut url = reqwest::Url::parse(text.trim()).map_err(|source| UrlError::NotAUrl {
        text: text.to_string(),
        source,
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme(text.to_string()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost(text.to_string()));
    }
    if url.port().is_none() {
        let _ = url.set_port(Some(DEFAULT_PORT));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

impl Remote {
    /// `base` as returned by [`base_url`].
    pub fn new(base: &str) -> Remote {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        Remote {
            base: base.trim_end_matches('/').to_string(),
            http,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<T, RemoteError> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| RemoteError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        decode(url, resp).await
    }

    /// The server answers and says its index is available.
    pub async fn health(&self) -> Result<(), RemoteError> {
        let h: Health = self.get("/health", HEALTH_TIMEOUT).await?;
        if h.available {
            Ok(())
        } else {
            Err(RemoteError::Unavailable {
                url: format!("{}/health", self.base),
            })
        }
    }

    pub async fn stats(&self) -> Result<Stats, RemoteError> {
        self.get("/stats", HEALTH_TIMEOUT).await
    }

    /// The server's best `top_k` chunks with a similarity of at least `min`.
    pub async fn query(
        &self,
        query: &str,
        embedding: &[f32],
        top_k: usize,
        min: f32,
    ) -> Result<Vec<Excerpt>, RemoteError> {
        let url = format!("{}/query", self.base);
        let body = json!({
            "query": query, "query_embedding": embedding,
            "top_k": top_k, "min_similarity": min
        });
        let resp = self
            .http
            .post(&url)
            .timeout(QUERY_TIMEOUT)
            .json(&body)
            .send()
            .await
            .map_err(|e| RemoteError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let reply: QueryReply = decode(url, resp).await?;
        let mut out: Vec<Excerpt> = reply
            .chunks
            .into_iter()
            .filter(|c| c.similarity.is_finite())
            .map(|c| Excerpt {
                doc_id: match c.doc_id {
                    Some(serde_json::Value::String(s)) => s,
                    Some(v) => v.to_string(),
                    None => String::new(),
                },
                doc_name: c.doc_name,
                similarity: c.similarity,
                text: c.text,
            })
            .collect();
        // Trust nothing: best first, the floor and the limit applied here too.
        out.retain(|e| e.similarity >= min);
        out.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        out.truncate(top_k);
        Ok(out)
    }
}

async fn decode<T: serde::de::DeserializeOwned>(
    url: String,
    resp: reqwest::Response,
) -> Result<T, RemoteError> {
    let status = resp.status().as_u16();
    if !resp.status().is_success() {
        return Err(RemoteError::Http { url, status });
    }
    let bytes = resp.bytes().await.map_err(|e| RemoteError::Unreachable {
        url: url.clone(),
        reason: e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| RemoteError::Protocol {
        url,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_flockparsers_port() {
        assert_eq!(base_url("http://10.0.0.5").unwrap(), "http://10.0.0.5:8765");
        assert_eq!(base_url("http://h:9000/").unwrap(), "http://h:9000");
        assert!(base_url("ftp://h").is_err());
        assert!(base_url("not a url").is_err());
    }
}
