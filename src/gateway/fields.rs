//! The JSON types of a request's fields, checked before anything is done with
//! it: `"prompt": 5`, `"options": "x"` or `"stream": "yes"` is a 400 naming the
//! field (in the client's API), not a request passed on for a node to refuse.
//! Absent and `null` fields are left to the handlers.

use serde_json::{Map, Value};

use super::errors::ApiError;

/// What a field may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Str,
    Number,
    /// A whole number.
    Integer,
    Object,
    Array,
    StrOrArray,
    StrOrObject,
    BoolOrStr,
    StrOrNumber,
}

impl Kind {
    fn accepts(self, v: &Value) -> bool {
        match self {
            Kind::Bool => v.is_boolean(),
            Kind::Str => v.is_string(),
            Kind::Number => v.is_number(),
            Kind::Integer => v.is_i64() || v.is_u64(),
            Kind::Object => v.is_object(),
            Kind::Array => v.is_array(),
            Kind::StrOrArray => v.is_string() || v.is_array(),
            Kind::StrOrObject => v.is_string() || v.is_object(),
            Kind::BoolOrStr => v.is_boolean() || v.is_string(),
            Kind::StrOrNumber => v.is_string() || v.is_number(),
        }
    }

    fn words(self) -> &'static str {
        match self {
            Kind::Bool => "true or false",
            Kind::Str => "a string",
            Kind::Number => "a number",
            Kind::Integer => "a whole number",
            Kind::Object => "an object",
            Kind::Array => "a list",
            Kind::StrOrArray => "a string or a list",
            Kind::StrOrObject => "a string or an object",
            Kind::BoolOrStr => "true, false or a string",
            Kind::StrOrNumber => "a string or a number",
        }
    }
}

/// A JSON value's type in words.
fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Every field of `req` named in `fields` that is present (and not null) has its kind.
pub(crate) fn check(
    req: &Map<String, Value>,
    fields: &[(&'static str, Kind)],
) -> Result<(), ApiError> {
    for &(name, kind) in fields {
        match req.get(name) {
            None | Some(Value::Null) => {}
            Some(v) if kind.accepts(v) => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "{name} must be {}, not {}",
                    kind.words(),
                    type_of(v)
                ))
                .with_param(name))
            }
        }
    }
    Ok(())
}

use Kind::*;

/// Ollama's `/api/chat`.
pub(crate) const OLLAMA_CHAT: &[(&str, Kind)] = &[
    ("model", Str),
    ("messages", Array),
    ("stream", Bool),
    ("options", Object),
    ("format", StrOrObject),
    ("keep_alive", StrOrNumber),
    ("think", BoolOrStr),
    ("tools", Array),
    ("logprobs", Bool),
    ("top_logprobs", Integer),
];

/// Ollama's `/api/generate`.
pub(crate) const OLLAMA_GENERATE: &[(&str, Kind)] = &[
    ("model", Str),
    ("prompt", Str),
    ("suffix", Str),
    ("system", Str),
    ("template", Str),
    ("raw", Bool),
    ("images", Array),
    ("context", Array),
    ("stream", Bool),
    ("options", Object),
    ("format", StrOrObject),
    ("keep_alive", StrOrNumber),
    ("think", BoolOrStr),
    ("logprobs", Bool),
    ("top_logprobs", Integer),
];

/// Ollama's `/api/embed` and `/api/embeddings`.
pub(crate) const OLLAMA_EMBED: &[(&str, Kind)] = &[
    ("model", Str),
    ("input", StrOrArray),
    ("prompt", Str),
    ("truncate", Bool),
    ("options", Object),
    ("keep_alive", StrOrNumber),
    ("dimensions", Integer),
];

/// Ollama's `/api/show`.
pub(crate) const OLLAMA_SHOW: &[(&str, Kind)] = &[("model", Str), ("verbose", Bool)];

/// Sampling fields OpenAI's chat and text completions share.
const OPENAI_COMMON: &[(&str, Kind)] = &[
    ("model", Str),
    ("stream", Bool),
    ("stream_options", Object),
    ("temperature", Number),
    ("top_p", Number),
    ("max_tokens", Integer),
    ("n", Integer),
    ("seed", Integer),
    ("stop", StrOrArray),
    ("frequency_penalty", Number),
    ("presence_penalty", Number),
];

/// OpenAI's `/v1/chat/completions` (beside `OPENAI_COMMON`).
pub(crate) const OPENAI_CHAT: &[(&str, Kind)] = &[
    ("messages", Array),
    ("max_completion_tokens", Integer),
    ("tools", Array),
    ("tool_choice", StrOrObject),
    ("response_format", Object),
    ("logprobs", Bool),
    ("top_logprobs", Integer),
    ("reasoning_effort", Str),
];

/// OpenAI's `/v1/completions` (beside `OPENAI_COMMON`).
pub(crate) const OPENAI_TEXT: &[(&str, Kind)] = &[("prompt", StrOrArray), ("suffix", Str)];

/// OpenAI's chat or text completions: the common fields and `own`.
pub(crate) fn check_openai(
    req: &Map<String, Value>,
    own: &[(&'static str, Kind)],
) -> Result<(), ApiError> {
    check(req, OPENAI_COMMON)?;
    check(req, own)
}

/// OpenAI's `/v1/embeddings`.
pub(crate) const OPENAI_EMBEDDINGS: &[(&str, Kind)] = &[
    ("model", Str),
    ("input", StrOrArray),
    ("encoding_format", Str),
    ("dimensions", Integer),
];

/// OpenAI's `/v1/responses`.
pub(crate) const RESPONSES: &[(&str, Kind)] = &[
    ("model", Str),
    ("input", StrOrArray),
    ("instructions", Str),
    ("stream", Bool),
    ("max_output_tokens", Integer),
    ("temperature", Number),
    ("top_p", Number),
    ("tools", Array),
    ("tool_choice", StrOrObject),
    ("reasoning", Object),
    ("text", Object),
    ("parallel_tool_calls", Bool),
    ("store", Bool),
    ("metadata", Object),
    ("previous_response_id", Str),
];

/// Anthropic's `/v1/messages`.
pub(crate) const ANTHROPIC: &[(&str, Kind)] = &[
    ("model", Str),
    ("messages", Array),
    ("system", StrOrArray),
    ("max_tokens", Integer),
    ("temperature", Number),
    ("top_p", Number),
    ("top_k", Integer),
    ("stop_sequences", Array),
    ("stream", Bool),
    ("tools", Array),
    ("tool_choice", Object),
    ("thinking", Object),
    ("metadata", Object),
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn wrong_types_are_named_and_right_ones_pass() {
        let e = check(&obj(json!({"prompt": 5})), OLLAMA_GENERATE).unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.message, "prompt must be a string, not a number");
        assert_eq!(e.param, Some("prompt"));
        let e = check(&obj(json!({"options": "x"})), OLLAMA_CHAT).unwrap_err();
        assert_eq!(e.message, "options must be an object, not a string");
        let e = check(&obj(json!({"stream": "yes"})), OLLAMA_CHAT).unwrap_err();
        assert_eq!(e.message, "stream must be true or false, not a string");
        let e = check_openai(&obj(json!({"max_tokens": 1.5})), OPENAI_CHAT).unwrap_err();
        assert_eq!(
            e.message,
            "max_tokens must be a whole number, not a fractional number"
        );
        check(
            &obj(
                json!({"model": "m", "stream": false, "options": {"temperature": 0},
                        "format": {"type": "object"}, "keep_alive": 300, "think": "high",
                        "images": null}),
            ),
            OLLAMA_GENERATE,
        )
        .unwrap();
    }
}
