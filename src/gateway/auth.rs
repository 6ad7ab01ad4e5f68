//! Who may use the gateway. With API keys (`--api-key`, repeatable, or
//! `SYNAPTICLLAMAS_API_KEY`, comma-separated) every request but `GET /` needs
//! `Authorization: Bearer KEY` (or `x-api-key: KEY`, as Anthropic's clients
//! send it), and each key is its own client for fair turns
//! in the queue. Without keys the gateway must listen on loopback (or the
//! user said `--no-auth`), and there a request whose `Host` names something
//! other than this machine is refused, a guard against DNS rebinding, as
//! Ollama does.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::errors::ApiError;
use super::state::Shared;

/// Anthropic's clients send the key in this header.
const X_API_KEY: &str = "x-api-key";

/// The client a request comes from, for turns in the queue (`None`: no keys).
#[derive(Debug, Clone, Default)]
pub(crate) struct Caller(pub Option<Arc<str>>);

/// The index of the key a `Authorization` header carries, if any matches.
pub(crate) fn key_index(keys: &[String], authorization: Option<&str>) -> Option<usize> {
    let given = authorization?.trim();
    let (scheme, token) = given.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    matching_key(keys, token.trim())
}

/// The index of `token` among the keys.
fn matching_key(keys: &[String], token: &str) -> Option<usize> {
    let token = token.as_bytes();
    // Every key is compared, in constant time each.
    let mut found = None;
    for (i, k) in keys.iter().enumerate() {
        if bool::from(k.as_bytes().ct_eq(token)) && found.is_none() {
            found = Some(i);
        }
    }
    found
}

/// A `Host` header that names this machine (or none at all).
pub(crate) fn local_host(host: Option<&str>) -> bool {
    let Some(h) = host else { return true };
    let name = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        h.rsplit_once(':').map_or(h, |(n, _)| n)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost"
        || [".localhost", ".local", ".internal"]
            .iter()
            .any(|s| name.ends_with(s))
    {
        return true;
    }
    match name.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback() || ip.is_private() || ip.is_unspecified(),
        Ok(IpAddr::V6(ip)) => ip.is_loopback() || ip.is_unspecified(),
        Err(_) => false,
    }
}

/// Keys from the flag and the environment (comma-separated), blanks dropped.
pub fn keys(flag: &[String], env: Option<&str>) -> Vec<String> {
    flag.iter()
        .map(String::as_str)
        .chain(env.into_iter().flat_map(|e| e.split(',')))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(String::from)
        .collect()
}

fn reject(path: &str, e: ApiError) -> Response {
    e.for_path(path)
}

/// Middleware: the host guard and the key check; tells handlers the caller.
pub async fn guard(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let keys = &shared.config.keys;
    if keys.is_empty() && shared.config.bind.is_loopback() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        if !local_host(host) {
            return reject(
                &path,
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "this gateway only answers requests addressed to this machine",
                ),
            );
        }
    }
    let mut caller = Caller(None);
    if !keys.is_empty() && path != "/" {
        let get = |name| req.headers().get(name).and_then(|h| h.to_str().ok());
        let auth = get(header::AUTHORIZATION.as_str());
        let api_key = get(X_API_KEY);
        let found = key_index(keys, auth).or_else(|| matching_key(keys, api_key?.trim()));
        match found {
            Some(i) => caller = Caller(Some(Arc::from(format!("key-{}", i + 1)))),
            None => {
                let why = if auth.is_some() || api_key.is_some() {
                    "unauthorized: the API key is not one of this gateway's keys"
                } else {
                    "unauthorized: send an API key as `Authorization: Bearer KEY` or `x-api-key: KEY`"
                };
                return reject(&path, ApiError::new(StatusCode::UNAUTHORIZED, why));
            }
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_keys() {
        let keys = vec!["alpha".to_string(), "beta".to_string()];
        assert_eq!(key_index(&keys, Some("Bearer beta")), Some(1));
        assert_eq!(key_index(&keys, Some("bearer alpha")), Some(0));
        assert_eq!(key_index(&keys, Some("Bearer gamma")), None);
        assert_eq!(key_index(&keys, Some("Basic alpha")), None);
        assert_eq!(key_index(&keys, Some("Bearer alph")), None);
        assert_eq!(key_index(&keys, None), None);
    }

    #[test]
    fn hosts_that_name_this_machine() {
        for ok in [
            None,
            Some("127.0.0.1:11434"),
            Some("localhost:11434"),
            Some("[::1]:11434"),
            Some("host.docker.internal:11434"),
            Some("box.local"),
            Some("192.168.1.20:11434"),
        ] {
            assert!(local_host(ok), "{ok:?}");
        }
        for bad in [
            Some("evil.example:11434"),
            Some("8.8.8.8"),
            Some("example.com"),
        ] {
            assert!(!local_host(bad), "{bad:?}");
        }
    }

    #[test]
    fn keys_from_flag_and_environment() {
        assert_eq!(
            keys(&["a".into()], Some(" b, ,c ")),
            vec!["a".to_string(), "b".into(), "c".into()]
        );
        assert!(keys(&[], Some("")).is_empty());
    }
}
