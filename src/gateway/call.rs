//! What every model request's handler takes, as one extractor: the shared
//! state, the request's `Tally` (from `observe`) and `Caller` (from `guard`),
//! and its body, a body that could not be read kept as the error to answer.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};

use super::auth::Caller;
use super::observe::Tally;
use super::state::Shared;

/// A request's body as read, or why it could not be.
pub(crate) type Body = Result<Bytes, BytesRejection>;

/// `Call(shared, tally, caller, body)`.
pub(crate) struct Call(pub Arc<Shared>, pub Tally, pub Caller, pub Body);

impl FromRequest<Arc<Shared>> for Call {
    type Rejection = Response;

    async fn from_request(req: Request, shared: &Arc<Shared>) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let Extension(tally) = Extension::<Tally>::from_request_parts(&mut parts, shared)
            .await
            .map_err(IntoResponse::into_response)?;
        let Extension(caller) = Extension::<Caller>::from_request_parts(&mut parts, shared)
            .await
            .map_err(IntoResponse::into_response)?;
        let body = Bytes::from_request(Request::from_parts(parts, body), shared).await;
        Ok(Call(shared.clone(), tally, caller, body))
    }
}
