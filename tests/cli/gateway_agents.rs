//! The APIs agent tools speak, through `synapticllamas serve` in front of
//! simulated hosts, driven by the official Python clients: OpenAI's Responses
//! API (`openai`, as Codex CLI uses it) and Anthropic's Messages API
//! (`anthropic`, as Claude Code uses it) — whole replies, streams (the clients
//! parse every event), a tool round trip sent back to the model, the
//! gateway's headers and errors in each API's own shape.
//!
//! The simulated hosts never ask for a tool themselves, so the replies' tool
//! calls (`function_call` items, `tool_use` blocks) are covered by the unit
//! tests of `gateway::responses_out` and `gateway::anthropic_out`.

use synapticllamas::sim::Fault;

use crate::gateway_support::*;

#[test]
fn the_official_openai_client_speaks_the_responses_api_through_the_gateway() {
    let a = quick_sim(12);
    let home = home_with(&[(&a, "alpha", "box-a")]);
    let g = Served::start(&home, &["--api-key", "sesame"]);
    let script = r#"
import sys, openai, ollama
gw, node = sys.argv[1], sys.argv[2]
c = openai.OpenAI(base_url=gw + "/v1", api_key="sesame")
q = "Why is the sky blue?"
want = ollama.Client(host=node).chat(model="llama3.2", messages=[{"role": "user", "content": q}]).message.content
raw = c.responses.with_raw_response.create(model="llama3.2", input=q, instructions="Be brief.",
                                           max_output_tokens=500, temperature=0.2)
assert raw.headers.get("x-synapticllamas-node") == "alpha", raw.headers
r = raw.parse()
assert r.object == "response" and r.status == "completed" and r.model == "llama3.2", r
assert r.instructions == "Be brief." and r.max_output_tokens == 500, r
assert r.output[0].type == "message" and r.output[0].role == "assistant", r.output
assert r.output_text == want, (r.output_text, want)
u = r.usage
assert u.output_tokens > 3 and u.total_tokens == u.input_tokens + u.output_tokens, u

# Streamed: every event parses, in order, numbered from 0.
items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": q}]}]
events = list(c.responses.create(model="llama3.2", input=items, stream=True))
types = [e.type for e in events]
assert types[:4] == ["response.created", "response.in_progress",
                     "response.output_item.added", "response.content_part.added"], types
assert types[-4:] == ["response.output_text.done", "response.content_part.done",
                      "response.output_item.done", "response.completed"], types
assert [e.sequence_number for e in events] == list(range(len(events)))
deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
assert len(deltas) > 3 and "".join(deltas) == want
assert events[-1].response.output_text == want and events[-1].response.usage.output_tokens > 3

# The client's own stream helper builds the same final response.
with c.responses.stream(model="llama3.2", input=q) as s:
    final = s.get_final_response()
assert final.output_text == want, final

# A tool round trip: the model's call and the tool's output go back to it.
tools = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]}}]
r2 = c.responses.create(model="llama3.2", tools=tools, input=[
    {"role": "user", "content": q},
    {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"},
    {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21 C"}])
assert r2.status == "completed" and r2.output_text == want, r2

try:
    c.responses.create(model="llama9", input=q)
    raise SystemExit("no error for an unknown model")
except openai.NotFoundError as ex:
    assert ex.body["message"] == "model 'llama9' not found", ex.body
try:
    c.responses.create(model="llama3.2", input=q, previous_response_id="resp_1")
    raise SystemExit("no error for previous_response_id")
except openai.BadRequestError as ex:
    assert "keeps no responses" in ex.body["message"], ex.body
try:
    openai.OpenAI(base_url=gw + "/v1", api_key="wrong").responses.create(model="llama3.2", input=q)
    raise SystemExit("a wrong key, yet answered")
except openai.AuthenticationError:
    pass
print("ok")
"#;
    python_ok(script, &[&g.url, &a.url()]);
    assert_eq!(a.stats().max_in_flight, 1);
}

#[test]
fn the_official_anthropic_client_speaks_the_messages_api_through_the_gateway() {
    let a = quick_sim(12);
    let home = home_with(&[(&a, "alpha", "box-a")]);
    let g = Served::start(&home, &["--api-key", "sesame"]);
    let script = r#"
import sys, anthropic, ollama
gw, node = sys.argv[1], sys.argv[2]
# Anthropic's client sends its key as `x-api-key`.
c = anthropic.Anthropic(base_url=gw, api_key="sesame")
q = "Why is the sky blue?"
want = ollama.Client(host=node).chat(model="llama3.2", messages=[{"role": "user", "content": q}]).message.content
raw = c.messages.with_raw_response.create(model="llama3.2", max_tokens=500, system="Be brief.",
                                          messages=[{"role": "user", "content": q}])
assert raw.headers.get("x-synapticllamas-node") == "alpha", raw.headers
m = raw.parse()
assert m.type == "message" and m.role == "assistant" and m.model == "llama3.2", m
assert m.stop_reason == "end_turn" and m.stop_sequence is None, m
assert [b.type for b in m.content] == ["text"] and m.content[0].text == want, m.content
assert m.usage.output_tokens > 3 and m.usage.input_tokens > 0, m.usage

# Streamed through the client's helper, and as raw events.
with c.messages.stream(model="llama3.2", max_tokens=500,
                       messages=[{"role": "user", "content": [{"type": "text", "text": q}]}]) as s:
    text = "".join(s.text_stream)
    final = s.get_final_message()
assert text == want and final.content[0].text == want, (text, want)
assert final.stop_reason == "end_turn" and final.usage.output_tokens == m.usage.output_tokens, final
events = list(c.messages.create(model="llama3.2", max_tokens=500, stream=True,
                                messages=[{"role": "user", "content": q}]))
types = [e.type for e in events]
assert types[0] == "message_start" and types[1] == "content_block_start", types
assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"], types
assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == want

# A tool round trip: the model's tool_use and the tool's result go back to it.
tools = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
m2 = c.messages.create(model="llama3.2", max_tokens=300, tools=tools, messages=[
    {"role": "user", "content": q},
    {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny, 21 C"}]}])
assert m2.content[0].type == "text" and m2.content[0].text, m2

try:
    c.messages.create(model="llama9", max_tokens=10, messages=[{"role": "user", "content": q}])
    raise SystemExit("no error for an unknown model")
except anthropic.NotFoundError as ex:
    assert ex.body == {"type": "error", "error": {"type": "not_found_error",
                       "message": "model 'llama9' not found"}}, ex.body
try:
    c.messages.create(model="llama3.2", max_tokens=10, extra_body={"temperature": "hot"},
                      messages=[{"role": "user", "content": q}])
    raise SystemExit("no error for a wrong type")
except anthropic.BadRequestError as ex:
    assert ex.body["error"]["type"] == "invalid_request_error", ex.body
    assert ex.body["error"]["message"] == "temperature must be a number, not a string", ex.body
try:
    anthropic.Anthropic(base_url=gw, api_key="wrong").messages.create(
        model="llama3.2", max_tokens=10, messages=[{"role": "user", "content": q}])
    raise SystemExit("a wrong key, yet answered")
except anthropic.AuthenticationError as ex:
    assert ex.body["error"]["type"] == "authentication_error", ex.body
print("ok")
"#;
    python_ok(script, &[&g.url, &a.url()]);
    assert_eq!(a.stats().max_in_flight, 1);
}

#[test]
fn a_reply_that_breaks_after_it_began_ends_with_each_apis_error_event() {
    let flaky = quick_sim(40);
    flaky.set_fault(Fault::Drop, 0);
    let home = home_with(&[(&flaky, "flaky", "box-a")]);
    let g = Served::start(&home, &[]);
    let script = r#"
import sys, anthropic, openai
gw = sys.argv[1]
events = list(openai.OpenAI(base_url=gw + "/v1", api_key="x").responses.create(
    model="llama3.2", input="hi", stream=True))
types = [e.type for e in events]
assert "response.output_text.delta" in types, types
assert types[-2:] == ["error", "response.failed"], types
assert "flaky failed after the reply began" in events[-2].message, events[-2]
assert events[-1].response.status == "failed", events[-1]
assert "response.completed" not in types
got = []
try:
    with anthropic.Anthropic(base_url=gw, api_key="x").messages.stream(
            model="llama3.2", max_tokens=100, messages=[{"role": "user", "content": "hi"}]) as s:
        for t in s.text_stream:
            got.append(t)
    raise SystemExit("the Anthropic stream ended without an error")
except anthropic.APIStatusError as e:
    assert got and "failed after the reply began" in str(e.body), (got, e.body)
print("ok")
"#;
    python_ok(script, &[&g.url]);
}

/// The clients build their objects leniently; here every event and object is
/// validated strictly against the clients' own models (each required field
/// there, of its type).
#[test]
fn every_event_and_object_validates_strictly_against_the_clients_models() {
    let a = quick_sim(12);
    let home = home_with(&[(&a, "alpha", "box-a")]);
    let g = Served::start(&home, &[]);
    let script = r#"
import sys, json, typing, httpx, pydantic
from openai.types.responses import ResponseStreamEvent, Response
from anthropic.types import RawMessageStreamEvent, Message
gw = sys.argv[1]
def by_type(union):
    args = typing.get_args(union)
    if typing.get_origin(union) is typing.Annotated:
        return by_type(args[0])
    return {typing.get_args(c.model_fields["type"].annotation)[0]: c for c in args}
def events(path, body):
    out, name = [], None
    with httpx.stream("POST", gw + path, json=body, timeout=60) as r:
        assert r.status_code == 200, r.status_code
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                out.append((name, json.loads(line[len("data: "):])))
    return out
def strict(cls, data):
    try:
        cls.model_validate(data)
    except pydantic.ValidationError as e:
        raise SystemExit(f"{cls.__name__}: {e}\n{json.dumps(data)[:2000]}")
ask = {"model": "llama3.2", "instructions": "Be brief.", "input": "Why is the sky blue?",
       "max_output_tokens": 300, "temperature": 0.5}
kinds = by_type(ResponseStreamEvent)
seen = events("/v1/responses", dict(ask, stream=True))
for name, data in seen:
    assert name == data["type"], (name, data["type"])
    strict(kinds[data["type"]], data)
assert seen[-1][0] == "response.completed"
strict(Response, httpx.post(gw + "/v1/responses", json=ask, timeout=60).json())
ask = {"model": "llama3.2", "max_tokens": 300, "system": [{"type": "text", "text": "Be brief."}],
       "messages": [{"role": "user", "content": "Why is the sky blue?"}]}
kinds = by_type(RawMessageStreamEvent)
seen = events("/v1/messages", dict(ask, stream=True))
for name, data in seen:
    assert name == data["type"], (name, data["type"])
    if name != "ping":
        strict(kinds[data["type"]], data)
assert [n for n, _ in seen][:2] == ["message_start", "ping"] and seen[-1][0] == "message_stop"
strict(Message, httpx.post(gw + "/v1/messages", json=ask, timeout=60).json())
print("ok")
"#;
    python_ok(script, &[&g.url]);
}
