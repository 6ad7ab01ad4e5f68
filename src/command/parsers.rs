//! One small parser per command word (the table in `COMMANDS` points here):
//! the words after the command in, a typed `Command` or a one-line reason out.

use super::args::{self, int_in, keyword, Args};
use super::{Command, RagCmd, RpcCmd, ServeArgs};
use crate::config::choices::{Longform, Mode, Route, Strategy};
use crate::config::settings::{QRETRIES_MAX, REFINE_MAX, TIMEOUT_MAX_SECS, TIMEOUT_MIN_SECS};
use crate::names::{ModelName, NameError};

use super::SettingCmd;

type Parsed = Result<Command, String>;

fn model_name(m: &str) -> Result<ModelName, String> {
    m.parse().map_err(|e: NameError| e.to_string())
}

pub(super) fn mode(a: &Args) -> Parsed {
    let words: Vec<(&str, Mode)> = Mode::ALL.iter().map(|m| (m.word(), *m)).collect();
    keyword(&a.words, "mode", &words).map(Command::Mode)
}

pub(super) fn distributed(a: &Args) -> Parsed {
    keyword(
        &a.words,
        "routing path",
        &[
            ("task", Route::Task),
            ("model", Route::Model),
            ("both", Route::Both),
            ("off", Route::Off),
        ],
    )
    .map(Command::Distributed)
}

pub(super) fn nodes(a: &Args) -> Parsed {
    a.none(Command::Nodes)
}

pub(super) fn add(a: &Args) -> Parsed {
    let force = a.words.contains(&"--force");
    let rest: Vec<&str> = a
        .words
        .iter()
        .copied()
        .filter(|w| *w != "--force")
        .collect();
    let raw = args::one(&rest, "URL")?;
    let node = args::node_addr(raw)
        .map_err(|e| format!("add: {e} (e.g. add 10.77.0.11, add http://box:11434)"))?;
    Ok(Command::Add { node, force })
}

/// A model name, then node names or URLs; `--yes` (or `-y`) when `yes_ok`.
fn model_and_nodes(a: &Args, yes_ok: bool) -> Result<(ModelName, Vec<String>, bool), String> {
    let mut yes = false;
    let mut words = Vec::new();
    for w in &a.words {
        match *w {
            "--yes" | "-y" if yes_ok => yes = true,
            o if o.starts_with('-') => return Err(format!("unknown option `{o}`")),
            w => words.push(w),
        }
    }
    let (first, nodes) = words.split_first().ok_or("missing model name")?;
    let model = model_name(first)?;
    Ok((model, nodes.iter().map(|n| n.to_string()).collect(), yes))
}

pub(super) fn pull(a: &Args) -> Parsed {
    let (model, nodes, _) = model_and_nodes(a, false)?;
    Ok(Command::Pull { model, nodes })
}

pub(super) fn rm(a: &Args) -> Parsed {
    let (model, nodes, yes) = model_and_nodes(a, true)?;
    Ok(Command::Rm { model, nodes, yes })
}

pub(super) fn remove(a: &Args) -> Parsed {
    a.one("URL or name").map(|u| Command::Remove(u.to_string()))
}

pub(super) fn discover(a: &Args) -> Parsed {
    let w = &a.words;
    let (mut cidr, mut timeout_ms) = (None, None);
    let mut i = 0;
    while i < w.len() {
        match w[i] {
            "--timeout" => {
                let v = w.get(i + 1).ok_or("--timeout needs milliseconds")?;
                let n: u64 = v.parse().map_err(|_| {
                    format!("--timeout: `{v}` is not a whole number of milliseconds")
                })?;
                if n == 0 || n > 60_000 {
                    return Err(format!("--timeout must be between 1 and 60000 ms, got {n}"));
                }
                timeout_ms = Some(n);
                i += 2;
            }
            o if o.starts_with("--") => return Err(format!("unknown option `{o}`")),
            c if cidr.is_none() => {
                cidr = Some(args::cidr(c).map_err(|e| format!("discover: {e}"))?);
                i += 1;
            }
            c => return Err(format!("unexpected `{c}` (one CIDR at most)")),
        }
    }
    Ok(Command::Discover { cidr, timeout_ms })
}

pub(super) fn health(a: &Args) -> Parsed {
    a.none(Command::Health)
}

pub(super) fn save(a: &Args) -> Parsed {
    args::file_path(a.rest()).map(Command::Save)
}

pub(super) fn load(a: &Args) -> Parsed {
    args::file_path(a.rest()).map(Command::Load)
}

pub(super) fn rpc(a: &Args) -> Parsed {
    let w = &a.words;
    let is = |s: &str, k: &str| s.eq_ignore_ascii_case(k);
    match w.as_slice() {
        [] => Err("missing sub-command".into()),
        [s] if is(s, "discover") => Ok(Command::Rpc(RpcCmd::Discover)),
        [s] if is(s, "list") => Ok(Command::Rpc(RpcCmd::List)),
        [s, b] if is(s, "add") => args::backend(b)
            .map(|b| Command::Rpc(RpcCmd::Add(b)))
            .map_err(|e| format!("rpc add: {e} (port 50052 by default)")),
        [s, b] if is(s, "remove") => args::backend(b)
            .map(|b| Command::Rpc(RpcCmd::Remove(b)))
            .map_err(|_| format!("rpc remove: `{b}` is not HOST[:PORT]")),
        [s] if is(s, "add") || is(s, "remove") => Err(format!("`rpc {s}` needs HOST[:PORT]")),
        [s, ..] if is(s, "add") || is(s, "remove") => Err(format!(
            "`rpc {s}` takes one HOST[:PORT], got `{}`",
            w[1..].join(" ")
        )),
        [s, ..] if is(s, "list") || is(s, "discover") => {
            Err(format!("`rpc {s}` takes no arguments"))
        }
        [s, ..] => Err(format!("unknown sub-command `{s}`")),
    }
}

pub(super) fn collab(a: &Args) -> Parsed {
    a.on_off().map(SettingCmd::Collab).map(Command::Set)
}

pub(super) fn refine(a: &Args) -> Parsed {
    let n = int_in(
        a.one("refinement rounds")?,
        "refinement rounds",
        0,
        REFINE_MAX.into(),
    )?;
    Ok(Command::Set(SettingCmd::Refine(n as u32)))
}

pub(super) fn synthesis(a: &Args) -> Parsed {
    let m = a.one("model name")?;
    if m.eq_ignore_ascii_case("none") {
        return Ok(Command::Set(SettingCmd::Synthesis(None)));
    }
    Ok(Command::Set(SettingCmd::Synthesis(Some(model_name(m)?))))
}

pub(super) fn timeout(a: &Args) -> Parsed {
    let what = "timeout in seconds";
    int_in(a.one(what)?, what, TIMEOUT_MIN_SECS, TIMEOUT_MAX_SECS)
        .map(SettingCmd::Timeout)
        .map(Command::Set)
}

pub(super) fn ast(a: &Args) -> Parsed {
    a.on_off().map(SettingCmd::Ast).map(Command::Set)
}

pub(super) fn quality(a: &Args) -> Parsed {
    args::fraction(a.one("threshold")?)
        .map(SettingCmd::Quality)
        .map(Command::Set)
}

pub(super) fn qretries(a: &Args) -> Parsed {
    let n = int_in(
        a.one("quality retries")?,
        "quality retries",
        0,
        QRETRIES_MAX.into(),
    )?;
    Ok(Command::Set(SettingCmd::QRetries(n as u32)))
}

pub(super) fn longform(a: &Args) -> Parsed {
    keyword(
        &a.words,
        "long-form rule",
        &[
            ("auto", Longform::Auto),
            ("always", Longform::Always),
            ("never", Longform::Never),
        ],
    )
    .map(SettingCmd::Longform)
    .map(Command::Set)
}

pub(super) fn strategy(a: &Args) -> Parsed {
    let words: Vec<(&str, Strategy)> = Strategy::ALL.iter().map(|s| (s.word(), *s)).collect();
    keyword(&a.words, "strategy", &words)
        .map(SettingCmd::Strategy)
        .map(Command::Set)
}

pub(super) fn model(a: &Args) -> Parsed {
    let m = a.one("model name")?;
    Ok(Command::Set(SettingCmd::Model(model_name(m)?)))
}

pub(super) fn status(a: &Args) -> Parsed {
    a.none(Command::Status)
}

pub(super) fn metrics(a: &Args) -> Parsed {
    match a.words.as_slice() {
        [] => Ok(Command::Metrics { json: false }),
        ["--json"] => Ok(Command::Metrics { json: true }),
        w => Err(format!("unexpected `{}`", w.join(" "))),
    }
}

pub(super) fn benchmark(a: &Args) -> Parsed {
    a.none(Command::Benchmark)
}

pub(super) fn dashboard(a: &Args) -> Parsed {
    let w = &a.words;
    if w.as_slice() == ["stop"] {
        return Ok(Command::Dashboard {
            stop: true,
            port: None,
            bind: None,
        });
    }
    let (mut port, mut bind) = (None, None);
    let mut i = 0;
    while i < w.len() {
        let v = args::option_value(w, i)?;
        match w[i] {
            "--port" => port = Some(args::port("--port", v)?),
            "--bind" => bind = Some(args::bind_addr(v).map_err(|e| format!("dashboard: {e}"))?),
            o => return Err(format!("unknown option `{o}`")),
        }
        i += 2;
    }
    Ok(Command::Dashboard {
        stop: false,
        port,
        bind,
    })
}

pub(super) fn serve(a: &Args) -> Parsed {
    let w = &a.words;
    let mut s = ServeArgs::default();
    if w.as_slice() == ["stop"] {
        s.stop = true;
        return Ok(Command::Serve(s));
    }
    let mut i = 0;
    while i < w.len() {
        if w[i] == "--no-auth" {
            s.no_auth = true;
            i += 1;
            continue;
        }
        let v = args::option_value(w, i)?;
        match w[i] {
            "--port" => s.port = Some(args::port("--port", v)?),
            "--bind" => {
                s.bind = Some(
                    args::bind_addr(v)
                        .map_err(|_| format!("serve: --bind `{v}` is not an IP address"))?,
                )
            }
            "--api-key" => s.api_key = Some(v.to_string()),
            o => return Err(format!("unknown option `{o}`")),
        }
        i += 2;
    }
    Ok(Command::Serve(s))
}

pub(super) fn rag(a: &Args) -> Parsed {
    let sub = a.words.first().map(|s| s.to_ascii_lowercase());
    let cmd = match sub.as_deref() {
        Some("on") | Some("off") => {
            if a.on_off()? {
                RagCmd::On
            } else {
                RagCmd::Off
            }
        }
        Some("path") => RagCmd::Path(args::location(a.rest_after_sub())?),
        Some("model") => match &a.words[1..] {
            [m] if embedding_model_name_ok(m) => RagCmd::Model(m.to_string()),
            [m] => return Err(format!("`{m}` is not a valid model name")),
            [] => return Err("`rag model` needs a model name".into()),
            more => return Err(format!("expected one model name, got `{}`", more.join(" "))),
        },
        Some("index") => match shlex::split(a.rest_after_sub()) {
            None => return Err("unbalanced quotes in the paths".into()),
            Some(paths) if paths.is_empty() => {
                return Err("`rag index` needs files or folders (.txt, .md, .pdf)".into())
            }
            Some(paths) => RagCmd::Index(
                paths
                    .iter()
                    .map(|p| crate::rag::documents::expand_home(p))
                    .collect(),
            ),
        },
        None => return Err("expected on, off, path, model or index".into()),
        Some(_) => {
            return Err(format!(
                "unknown sub-command `{}` (use on, off, path, model or index)",
                a.words[0]
            ))
        }
    };
    Ok(Command::Rag(cmd))
}

fn embedding_model_name_ok(m: &str) -> bool {
    m.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
}

pub(super) fn redis(a: &Args) -> Parsed {
    a.on_off().map(Command::Redis)
}

pub(super) fn verbose(a: &Args) -> Parsed {
    a.on_off().map(SettingCmd::Verbose).map(Command::Set)
}

pub(super) fn help(_: &Args) -> Parsed {
    Ok(Command::Help)
}

pub(super) fn exit(_: &Args) -> Parsed {
    Ok(Command::Exit)
}
