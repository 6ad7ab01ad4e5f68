//! Embeddings: Ollama's `POST /api/embed` (a batch of inputs in one request),
//! with the older `POST /api/embeddings` (one `prompt` per request) as a
//! fallback for servers that predate `/api/embed`.

use tokio::time::Instant;

use super::types::{
    EmbedInput, EmbedRequest, EmbedResponse, EmbeddingsRequest, EmbeddingsResponse,
};
use super::{Client, ClientError, ErrorKind, Timeouts};

fn bad_reply(url: &str, message: String) -> ClientError {
    ClientError::new(url, ErrorKind::BadReply { message })
}

impl Client {
    /// One vector per input, in input order, all of the same length. A reply
    /// that does not say that is a `Protocol` error naming what was wrong.
    pub async fn embed(
        &self,
        base: &str,
        model: &str,
        inputs: &[String],
        t: Timeouts,
    ) -> Result<Vec<Vec<f32>>, ClientError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let url = format!("{}/api/embed", base.trim_end_matches('/'));
        let deadline = Instant::now() + t.total;
        let body = EmbedRequest {
            model: model.to_string(),
            input: Some(EmbedInput::Many(inputs.to_vec())),
            truncate: Some(true),
        };
        let vectors = match self.send_json(&url, &body, &t, deadline).await {
            Ok(resp) => {
                let bytes = Client::body(resp, &url, &t, deadline).await?;
                let reply: EmbedResponse = serde_json::from_slice(&bytes)
                    .map_err(|e| bad_reply(&url, format!("not an /api/embed reply ({e})")))?;
                reply.embeddings
            }
            // A server without /api/embed answers a bare 404 (a missing model says so).
            Err(ClientError {
                kind:
                    ErrorKind::Http {
                        status: 404,
                        message,
                    },
                ..
            }) if !message.to_ascii_lowercase().contains("model") => {
                self.embed_legacy(base, model, inputs, &t, deadline).await?
            }
            Err(e) => return Err(e),
        };
        check(&url, inputs.len(), vectors)
    }

    /// `/api/embeddings`, one request per input.
    async fn embed_legacy(
        &self,
        base: &str,
        model: &str,
        inputs: &[String],
        t: &Timeouts,
        deadline: Instant,
    ) -> Result<Vec<Vec<f32>>, ClientError> {
        let url = format!("{}/api/embeddings", base.trim_end_matches('/'));
        let mut out = Vec::with_capacity(inputs.len());
        for input in inputs {
            let body = EmbeddingsRequest {
                model: model.to_string(),
                prompt: Some(input.clone()),
            };
            let resp = self.send_json(&url, &body, t, deadline).await?;
            let bytes = Client::body(resp, &url, t, deadline).await?;
            let reply: EmbeddingsResponse = serde_json::from_slice(&bytes)
                .map_err(|e| bad_reply(&url, format!("not an /api/embeddings reply ({e})")))?;
            out.push(reply.embedding);
        }
        Ok(out)
    }
}

fn check(url: &str, wanted: usize, vectors: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>, ClientError> {
    let bad = |message: String| bad_reply(url, message);
    if vectors.len() != wanted {
        return Err(bad(format!(
            "{} embedding(s) for {wanted} input(s)",
            vectors.len()
        )));
    }
    let dims = vectors.first().map_or(0, Vec::len);
    if dims == 0 {
        return Err(bad("an empty embedding".into()));
    }
    if let Some(i) = vectors.iter().position(|v| v.len() != dims) {
        return Err(bad(format!(
            "embedding {} has {} dimensions, the first has {dims}",
            i + 1,
            vectors[i].len()
        )));
    }
    if vectors.iter().flatten().any(|x| !x.is_finite()) {
        return Err(bad(
            "an embedding holds a value that is not a finite number".into(),
        ));
    }
    Ok(vectors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use axum::{Json, Router};
    use serde_json::{json, Value};

    async fn serve(app: Router) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        url
    }

    #[tokio::test]
    async fn batch_and_legacy_endpoints() {
        let batch = Router::new().route(
            "/api/embed",
            post(|Json(v): Json<Value>| async move {
                let n = v["input"].as_array().map_or(0, Vec::len);
                Json(json!({"embeddings": vec![vec![0.5_f32, 0.5]; n]}))
            }),
        );
        let legacy = Router::new().route(
            "/api/embeddings",
            post(|Json(v): Json<Value>| async move {
                let len = v["prompt"].as_str().unwrap_or("").len() as f32;
                Json(json!({"embedding": [len, 1.0]}))
            }),
        );
        let c = Client::default();
        let t = Timeouts::generation(std::time::Duration::from_secs(5));
        let inputs = vec!["a".to_string(), "bcd".to_string()];
        let v = c.embed(&serve(batch).await, "m", &inputs, t).await.unwrap();
        assert_eq!(v, vec![vec![0.5, 0.5], vec![0.5, 0.5]]);
        let v = c
            .embed(&serve(legacy).await, "m", &inputs, t)
            .await
            .unwrap();
        assert_eq!(v, vec![vec![1.0, 1.0], vec![3.0, 1.0]]);
    }

    #[test]
    fn replies_that_do_not_fit_are_protocol_errors() {
        assert!(check("u", 2, vec![vec![1.0]]).is_err());
        assert!(check("u", 2, vec![vec![1.0], vec![1.0, 2.0]]).is_err());
        assert!(check("u", 1, vec![vec![]]).is_err());
        assert!(check("u", 1, vec![vec![1.0, 2.0]]).is_ok());
    }
}
