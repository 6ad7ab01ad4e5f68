//! What a simulated model writes: prose, or — when the request's `format`
//! asks for JSON — an object. A JSON Schema gets an object that satisfies it
//! (`schema.rs`), `"json"` alone a generic `{"response": prose}`; the
//! configuration can make a host ignore the schema (`ignore_schema`: it
//! answers as if only `"json"` had been asked), ignore `format` altogether
//! (`plain_replies`), repeat the prompt (`echo_prompt`) or break its JSON
//! (`broken_json`). The reply is cut where `num_predict` or the context ends.
//! Nothing here reads the prompt's wording for the reply's shape.

use std::sync::atomic::Ordering;

use serde_json::{Map, Value};

use super::api::Refusal;
use super::config::SimConfig;
use super::host::SimHost;
use super::inference::Ask;
use super::{schema, text};

/// A reply's text, cut to the room it has.
pub(super) struct Reply {
    pub text: String,
    pub tokens: Vec<String>,
    pub prompt_tokens: u64,
    pub done_reason: &'static str,
}

impl Reply {
    /// Load the model with the context asked for, check the prompt fits, write
    /// the text and cut it where `num_predict` or the context ends.
    pub(super) fn compose(
        h: &SimHost,
        cfg: &SimConfig,
        ask: &Ask,
        model: &str,
    ) -> Result<Reply, Refusal> {
        let form = Form::of(ask.format.as_ref(), cfg)?;
        let loaded_ctx = h.load(model, ask.options.num_ctx, cfg.trained());
        let prompt_tokens = SimConfig::prompt_tokens(&[&ask.prompt, &ask.system]);
        let room = room(h, cfg, ask.options.num_predict, loaded_ctx, prompt_tokens)?;
        let text = reply_text(cfg, ask, model, &form);
        let mut tokens = text::tokens(&text);
        let fits = usize::try_from(room).is_ok_and(|room| tokens.len() <= room);
        Ok(if fits {
            Reply {
                text,
                tokens,
                prompt_tokens,
                done_reason: "stop",
            }
        } else {
            tokens.truncate(usize::try_from(room).unwrap_or(usize::MAX));
            Reply {
                text: tokens.concat(),
                tokens,
                prompt_tokens,
                done_reason: "length",
            }
        })
    }
}

impl Reply {
    /// No text at all (the `empty` fault): the reply ends where it starts.
    pub(super) fn blank(&mut self) {
        self.text.clear();
        self.tokens.clear();
        self.done_reason = "stop";
    }
}

/// Tokens the reply may have: `num_predict`, and what is left of the context.
/// A prompt that does not fit gets the HTTP 400 llama.cpp-backed Ollama sends.
fn room(
    h: &SimHost,
    cfg: &SimConfig,
    num_predict: Option<i64>,
    loaded_ctx: u64,
    prompt_tokens: u64,
) -> Result<u64, Refusal> {
    let room = num_predict
        .and_then(|n| u64::try_from(n).ok())
        .filter(|n| *n > 0)
        .unwrap_or(u64::MAX);
    if cfg.context_length.is_none() {
        return Ok(room);
    }
    if prompt_tokens >= loaded_ctx {
        h.too_large.fetch_add(1, Ordering::SeqCst);
        return Err(Refusal::bad_request(format!(
            "request ({prompt_tokens} tokens) exceeds the available context size ({loaded_ctx} tokens), try increasing it"
        )));
    }
    Ok(room.min(loaded_ctx - prompt_tokens - 1))
}

/// The form a reply takes.
enum Form<'a> {
    Prose,
    /// Any JSON object (`format: "json"`).
    Json,
    /// An object satisfying this schema.
    Schema(&'a Value),
}

impl Form<'_> {
    /// The form `format` asks for, as this host answers it (Ollama reads
    /// `null` and `""` as no format and refuses other strings).
    fn of<'a>(format: Option<&'a Value>, cfg: &SimConfig) -> Result<Form<'a>, Refusal> {
        let form = match format {
            None | Some(Value::Null) => Form::Prose,
            Some(Value::String(s)) if s.is_empty() => Form::Prose,
            Some(Value::String(s)) if s == "json" => Form::Json,
            Some(schema @ Value::Object(_)) => Form::Schema(schema),
            Some(other) => {
                return Err(Refusal::bad_request(format!(
                    "invalid format: {other}; expected \"json\" or a valid JSON Schema object"
                )))
            }
        };
        Ok(match form {
            _ if cfg.plain_replies => Form::Prose,
            Form::Schema(_) if cfg.ignore_schema => Form::Json,
            f => f,
        })
    }
}

/// The whole text of the reply in its form; `echo_prompt` puts the prompt
/// before the prose, `broken_json` cuts a JSON reply short.
fn reply_text(cfg: &SimConfig, ask: &Ask, model: &str, form: &Form) -> String {
    let prose = text::prose(model, &ask.prompt, cfg.reply_words);
    let main = match cfg.echo_prompt {
        true => format!("{}\n\n{prose}", ask.prompt),
        false => prose,
    };
    let mut reply = match form {
        Form::Prose => return main,
        Form::Json => {
            let mut obj = Map::new();
            obj.insert("response".into(), Value::String(main));
            Value::Object(obj).to_string()
        }
        Form::Schema(s) => {
            let mut rng = text::Rng::new(text::hash(&[model, &ask.prompt, "json"]));
            schema::fill(s, main, &mut rng).to_string()
        }
    };
    if cfg.broken_json {
        // Stop before the end (its last quarter, at most 80 bytes), as a length limit would.
        let mut at = reply.len() - (reply.len() / 4).min(80);
        while !reply.is_char_boundary(at) {
            at -= 1;
        }
        reply.truncate(at);
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> SimConfig {
        SimConfig {
            reply_words: 30,
            ..SimConfig::default()
        }
    }

    fn ask(format: Option<Value>) -> Ask {
        Ask::for_test("What is a tide", format)
    }

    fn text_for(cfg: &SimConfig, format: Option<Value>) -> String {
        let a = ask(format);
        let form = Form::of(a.format.as_ref(), cfg).unwrap();
        reply_text(cfg, &a, "m", &form)
    }

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "context": {"type": "string", "minLength": 1},
            "key_facts": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "score": {"type": "number", "minimum": 0, "maximum": 1}
        }, "required": ["context", "key_facts", "score"], "additionalProperties": false})
    }

    #[test]
    fn the_reply_follows_the_format_not_the_prompt() {
        let c = cfg();
        let v: Value = serde_json::from_str(&text_for(&c, Some(schema()))).unwrap();
        assert!(v["context"].as_str().unwrap().starts_with("What is a tide"));
        assert_eq!(v["key_facts"].as_array().unwrap().len(), 3);
        assert!(v["score"].is_number());
        let v: Value = serde_json::from_str(&text_for(&c, Some(json!("json")))).unwrap();
        assert_eq!(
            v.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["response"]
        );
        assert!(text_for(&c, None).starts_with("What is a tide"));
        assert!(serde_json::from_str::<Value>(&text_for(&c, None)).is_err());
    }

    #[test]
    fn knobs_change_the_form() {
        let ignoring = SimConfig {
            ignore_schema: true,
            ..cfg()
        };
        let v: Value = serde_json::from_str(&text_for(&ignoring, Some(schema()))).unwrap();
        assert!(
            v["response"].is_string() && v.get("context").is_none(),
            "{v}"
        );
        let plain = SimConfig {
            plain_replies: true,
            ..cfg()
        };
        assert!(text_for(&plain, Some(schema())).starts_with("What is a tide"));
        let broken = SimConfig {
            broken_json: true,
            echo_prompt: true,
            ..cfg()
        };
        let t = text_for(&broken, Some(schema()));
        assert!(
            t.starts_with(r#"{"context":"What is a tide\n\nWhat is a tide"#),
            "{t}"
        );
        assert!(serde_json::from_str::<Value>(&t).is_err(), "cut short: {t}");
        let refused = Form::of(Some(&json!("xml")), &cfg()).err().unwrap();
        assert!(matches!(refused, Refusal::Error(_, m) if m.contains("invalid format")));
        assert!(matches!(
            Form::of(Some(&json!("")), &cfg()),
            Ok(Form::Prose)
        ));
    }
}
