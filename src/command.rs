//! The shell's commands: one table (name, usage, help) that drives `help`,
//! completion and parsing, and a pure parser from a line to a `Command`.

pub use crate::config::choices::{Mode, Route, Strategy};
use crate::config::settings::{QRETRIES_MAX, REFINE_MAX, TIMEOUT_MAX_SECS, TIMEOUT_MIN_SECS};
pub use crate::pipeline::scope::Longform;

/// One row of the command table.
pub struct Spec {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub usage: &'static str,
    pub help: &'static str,
    /// Keywords completed after the command name.
    pub keywords: &'static [&'static str],
}

pub const COMMANDS: &[Spec] = &[
    Spec {
        name: "mode",
        aliases: &[],
        usage: "mode standard|distributed",
        help: "switch mode (distributed scans the subnet)",
        keywords: &["standard", "distributed"],
    },
    Spec {
        name: "distributed",
        aliases: &[],
        usage: "distributed task|model|both|off",
        help: "routing path: node pool, sharded model, both, or one node",
        keywords: &["task", "model", "both", "off"],
    },
    Spec {
        name: "nodes",
        aliases: &[],
        usage: "nodes",
        help: "Ollama nodes, coordinator and RPC backends with live status",
        keywords: &[],
    },
    Spec {
        name: "add",
        aliases: &[],
        usage: "add URL [--force]",
        help: "add an Ollama node (probes it first)",
        keywords: &["--force"],
    },
    Spec {
        name: "remove",
        aliases: &[],
        usage: "remove URL|NAME",
        help: "remove a node",
        keywords: &[],
    },
    Spec {
        name: "discover",
        aliases: &[],
        usage: "discover [CIDR] [--timeout MS]",
        help: "scan a subnet for Ollama nodes",
        keywords: &["--timeout"],
    },
    Spec {
        name: "health",
        aliases: &[],
        usage: "health",
        help: "probe every node now",
        keywords: &[],
    },
    Spec {
        name: "save",
        aliases: &[],
        usage: "save FILE",
        help: "write the node list to FILE",
        keywords: &[],
    },
    Spec {
        name: "load",
        aliases: &[],
        usage: "load FILE",
        help: "merge FILE's nodes into the node list",
        keywords: &[],
    },
    Spec {
        name: "rpc",
        aliases: &[],
        usage: "rpc discover|list|add HOST[:PORT]|remove HOST[:PORT]",
        help: "llama.cpp RPC backends for model sharding",
        keywords: &["discover", "list", "add", "remove"],
    },
    Spec {
        name: "collab",
        aliases: &[],
        usage: "collab on|off",
        help: "collaborative workflow (research, critique, refine, edit)",
        keywords: &["on", "off"],
    },
    Spec {
        name: "refine",
        aliases: &[],
        usage: "refine N (0-5)",
        help: "refinement rounds in collaborative mode",
        keywords: &[],
    },
    Spec {
        name: "synthesis",
        aliases: &[],
        usage: "synthesis MODEL|none",
        help: "model for the final synthesis",
        keywords: &["none"],
    },
    Spec {
        name: "timeout",
        aliases: &[],
        usage: "timeout SECS (30-86400)",
        help: "per-agent inference timeout",
        keywords: &[],
    },
    Spec {
        name: "ast",
        aliases: &[],
        usage: "ast on|off",
        help: "AST quality voting",
        keywords: &["on", "off"],
    },
    Spec {
        name: "quality",
        aliases: &[],
        usage: "quality X (0.0-1.0)",
        help: "quality threshold for voting",
        keywords: &[],
    },
    Spec {
        name: "qretries",
        aliases: &[],
        usage: "qretries N (0-5)",
        help: "quality retries",
        keywords: &[],
    },
    Spec {
        name: "longform",
        aliases: &[],
        usage: "longform auto|always|never",
        help: "when an answer is written in parts (auto: when the question asks for depth, breadth or a length; always: the original's rule)",
        keywords: &["auto", "always", "never"],
    },
    Spec {
        name: "strategy",
        aliases: &[],
        usage: "strategy auto|single|parallel|multi|gpu",
        help: "how work is spread over nodes",
        keywords: &["auto", "single", "parallel", "multi", "gpu"],
    },
    Spec {
        name: "model",
        aliases: &[],
        usage: "model NAME",
        help: "model used by the agents",
        keywords: &[],
    },
    Spec {
        name: "status",
        aliases: &[],
        usage: "status",
        help: "every setting and node counts",
        keywords: &[],
    },
    Spec {
        name: "metrics",
        aliases: &[],
        usage: "metrics [--json]",
        help: "the last query's metrics",
        keywords: &["--json"],
    },
    Spec {
        name: "benchmark",
        aliases: &[],
        usage: "benchmark",
        help: "measure each node (tokens/s, latency)",
        keywords: &[],
    },
    Spec {
        name: "dashboard",
        aliases: &[],
        usage: "dashboard [--port P] [--bind ADDR] | dashboard stop",
        help: "live web dashboard",
        keywords: &["stop", "--port", "--bind"],
    },
    Spec {
        name: "serve",
        aliases: &[],
        usage: "serve [--port P] [--bind ADDR] [--api-key KEY] [--no-auth] | serve stop",
        help: "serve the cluster as one Ollama- and OpenAI-compatible endpoint",
        keywords: &["stop", "--port", "--bind", "--api-key", "--no-auth"],
    },
    Spec {
        name: "rag",
        aliases: &[],
        usage: "rag on|off | rag path DIR|URL | rag model NAME | rag index PATH…",
        help: "answers from your documents (FlockParser knowledge base)",
        keywords: &["on", "off", "path", "model", "index"],
    },
    Spec {
        name: "redis",
        aliases: &[],
        usage: "redis on|off",
        help: "share host leases, node health, RPC registrations and events through Redis",
        keywords: &["on", "off"],
    },
    Spec {
        name: "verbose",
        aliases: &[],
        usage: "verbose on|off",
        help: "dashboard verbosity (setting kept)",
        keywords: &["on", "off"],
    },
    Spec {
        name: "help",
        aliases: &["?"],
        usage: "help",
        help: "this list",
        keywords: &[],
    },
    Spec {
        name: "exit",
        aliases: &["quit", "q"],
        usage: "exit",
        help: "leave",
        keywords: &[],
    },
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcCmd {
    Discover,
    List,
    Add(String),
    Remove(String),
}

/// `rag …`: retrieval over a FlockParser knowledge base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RagCmd {
    On,
    Off,
    /// A folder or an http(s) URL.
    Path(String),
    Model(String),
    /// Files and folders to add to the local knowledge base.
    Index(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Mode(Mode),
    Distributed(Route),
    Nodes,
    Add {
        url: String,
        force: bool,
    },
    Remove(String),
    Discover {
        cidr: Option<String>,
        timeout_ms: Option<u64>,
    },
    Health,
    Save(String),
    Load(String),
    Rpc(RpcCmd),
    Collab(bool),
    Refine(u32),
    Synthesis(Option<String>),
    Timeout(u64),
    Ast(bool),
    Quality(f64),
    QRetries(u32),
    Longform(Longform),
    Strategy(Strategy),
    Model(String),
    Status,
    Metrics {
        json: bool,
    },
    Benchmark,
    Dashboard {
        stop: bool,
        port: Option<u16>,
        bind: Option<String>,
    },
    Serve(ServeArgs),
    Rag(RagCmd),
    Redis(bool),
    Verbose(bool),
    Help,
    Exit,
    /// Anything that is not a command.
    Query(String),
}

/// `serve …` in the shell.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServeArgs {
    pub stop: bool,
    pub port: Option<u16>,
    pub bind: Option<String>,
    pub api_key: Option<String>,
    pub no_auth: bool,
}

/// A line that names a command but whose arguments are wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub message: String,
    pub usage: &'static str,
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The message quotes what was typed: control characters are shown escaped
        // so a line cannot move the cursor, clear the screen or add lines.
        let message: String = self
            .message
            .chars()
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_default().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect();
        write!(f, "{message}\n   Usage: {}", self.usage)
    }
}

pub fn lookup(word: &str) -> Option<&'static Spec> {
    let w = word.to_ascii_lowercase();
    COMMANDS
        .iter()
        .find(|s| s.name == w || s.aliases.contains(&w.as_str()))
}

fn on_off(args: &[&str]) -> Result<bool, String> {
    match args {
        [a] if a.eq_ignore_ascii_case("on") => Ok(true),
        [a] if a.eq_ignore_ascii_case("off") => Ok(false),
        [] => Err("expected on or off".into()),
        _ => Err(format!("expected on or off, got `{}`", args.join(" "))),
    }
}

fn one<'a>(args: &[&'a str], what: &str) -> Result<&'a str, String> {
    match args {
        [a] => Ok(a),
        [] => Err(format!("missing {what}")),
        _ => Err(format!("expected one {what}, got `{}`", args.join(" "))),
    }
}

fn int_in(args: &[&str], what: &str, lo: u64, hi: u64) -> Result<u64, String> {
    let a = one(args, what)?;
    let out_of_range = || format!("{what} must be between {lo} and {hi}, got {a}");
    let digits = a.strip_prefix('+').unwrap_or(a);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: a number, maybe one too large for any counter.
        let n: u64 = digits.parse().map_err(|_| out_of_range())?;
        if n < lo || n > hi {
            return Err(out_of_range());
        }
        return Ok(n);
    }
    if a.starts_with('-') && a[1..].bytes().all(|b| b.is_ascii_digit()) && a.len() > 1 {
        return Err(out_of_range());
    }
    Err(format!("`{a}` is not a whole number"))
}

/// The most characters a name (model, synthesis model, node) may have.
pub const NAME_MAX: usize = 200;

/// What a name names: model names also keep to the characters model tags use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Model,
    Node,
    Agent,
}

/// The one check for every name a user types or saves: not empty, no control
/// characters, at most `NAME_MAX` characters (and a model name's characters).
pub fn check_name(kind: NameKind, s: &str) -> Result<(), String> {
    let what = match kind {
        NameKind::Model => "model name",
        NameKind::Node => "node name",
        NameKind::Agent => "agent name",
    };
    if s.trim().is_empty() {
        return Err(format!("the {what} is empty"));
    }
    let len = s.chars().count();
    if len > NAME_MAX {
        return Err(format!(
            "the {what} is {len} characters long (at most {NAME_MAX})"
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(format!(
            "`{}` is not a valid {what} (control characters)",
            s.escape_debug()
        ));
    }
    if kind == NameKind::Model
        && !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
    {
        return Err(format!(
            "`{}` is not a valid model name (letters, digits and - _ . : / only)",
            s.escape_debug()
        ));
    }
    Ok(())
}

fn keyword<T: Copy>(args: &[&str], what: &str, table: &[(&str, T)]) -> Result<T, String> {
    let a = one(args, what)?;
    table
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(a))
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let words: Vec<&str> = table.iter().map(|(k, _)| *k).collect();
            format!("unknown {what} `{a}` (use {})", words.join(", "))
        })
}

/// Parse one line. Blank lines and comments are the caller's business; a line
/// whose first word is not a command is a query.
pub fn parse(line: &str) -> Result<Command, Usage> {
    let line = line.trim();
    let mut words = line.split_whitespace();
    let first = words.next().unwrap_or("");
    let Some(spec) = lookup(first) else {
        return Ok(Command::Query(line.to_string()));
    };
    let args: Vec<&str> = words.collect();
    let fail = |message: String| Usage {
        message,
        usage: spec.usage,
    };
    let no_args = |cmd: Command| {
        if args.is_empty() {
            Ok(cmd)
        } else {
            Err(format!("`{}` takes no arguments", spec.name))
        }
    };
    let r: Result<Command, String> = match spec.name {
        "mode" => keyword(
            &args,
            "mode",
            &[
                ("standard", Mode::Standard),
                ("distributed", Mode::Distributed),
            ],
        )
        .map(Command::Mode),
        "distributed" => keyword(
            &args,
            "routing path",
            &[
                ("task", Route::Task),
                ("model", Route::Model),
                ("both", Route::Both),
                ("off", Route::Off),
            ],
        )
        .map(Command::Distributed),
        "nodes" => no_args(Command::Nodes),
        "add" => {
            let force = args.contains(&"--force");
            let rest: Vec<&str> = args.iter().copied().filter(|a| *a != "--force").collect();
            one(&rest, "URL").map(|u| Command::Add {
                url: u.to_string(),
                force,
            })
        }
        "remove" => one(&args, "URL or name").map(|u| Command::Remove(u.to_string())),
        "discover" => parse_discover(&args),
        "health" => no_args(Command::Health),
        "save" => path_arg(line, first).map(Command::Save),
        "load" => path_arg(line, first).map(Command::Load),
        "rpc" => parse_rpc(&args),
        "collab" => on_off(&args).map(Command::Collab),
        "refine" => int_in(&args, "refinement rounds", 0, REFINE_MAX.into())
            .map(|n| Command::Refine(n as u32)),
        "synthesis" => one(&args, "model name").and_then(|m| {
            if m.eq_ignore_ascii_case("none") {
                Ok(Command::Synthesis(None))
            } else {
                check_name(NameKind::Model, m)?;
                Ok(Command::Synthesis(Some(m.to_string())))
            }
        }),
        "timeout" => int_in(
            &args,
            "timeout in seconds",
            TIMEOUT_MIN_SECS,
            TIMEOUT_MAX_SECS,
        )
        .map(Command::Timeout),
        "ast" => on_off(&args).map(Command::Ast),
        "quality" => one(&args, "threshold").and_then(|a| {
            let x: f64 = a.parse().map_err(|_| format!("`{a}` is not a number"))?;
            if x.is_nan() || !(0.0..=1.0).contains(&x) {
                Err(format!(
                    "quality threshold must be between 0.0 and 1.0, got `{a}`"
                ))
            } else {
                // `-0.0` is zero: stored and shown as 0.
                Ok(Command::Quality(x + 0.0))
            }
        }),
        "qretries" => int_in(&args, "quality retries", 0, QRETRIES_MAX.into())
            .map(|n| Command::QRetries(n as u32)),
        "longform" => keyword(
            &args,
            "long-form rule",
            &[
                ("auto", Longform::Auto),
                ("always", Longform::Always),
                ("never", Longform::Never),
            ],
        )
        .map(Command::Longform),
        "strategy" => keyword(
            &args,
            "strategy",
            &[
                ("auto", Strategy::Auto),
                ("single", Strategy::Single),
                ("parallel", Strategy::Parallel),
                ("multi", Strategy::Multi),
                ("gpu", Strategy::Gpu),
            ],
        )
        .map(Command::Strategy),
        "model" => one(&args, "model name").and_then(|m| {
            check_name(NameKind::Model, m)?;
            Ok(Command::Model(m.to_string()))
        }),
        "status" => no_args(Command::Status),
        "metrics" => match args.as_slice() {
            [] => Ok(Command::Metrics { json: false }),
            ["--json"] => Ok(Command::Metrics { json: true }),
            _ => Err(format!("unexpected `{}`", args.join(" "))),
        },
        "benchmark" => no_args(Command::Benchmark),
        "dashboard" => parse_dashboard(&args),
        "serve" => parse_serve(&args),
        "rag" => parse_rag(line, first, &args).map(Command::Rag),
        "redis" => on_off(&args).map(Command::Redis),
        "verbose" => on_off(&args).map(Command::Verbose),
        "help" => Ok(Command::Help),
        "exit" => Ok(Command::Exit),
        _ => unreachable!("every table entry is handled"),
    };
    r.map_err(fail)
}

/// A file argument: the rest of the line, so paths may contain spaces.
fn path_arg(line: &str, first: &str) -> Result<String, String> {
    let rest = line[first.len()..].trim();
    let rest = rest
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(rest);
    if rest.is_empty() {
        Err("missing file path".into())
    } else {
        Ok(rest.to_string())
    }
}

fn parse_rag(line: &str, first: &str, args: &[&str]) -> Result<RagCmd, String> {
    let sub = args.first().map(|s| s.to_ascii_lowercase());
    // What follows the sub-command, as typed (paths may hold spaces).
    let rest = || {
        let after = line[first.len()..].trim_start();
        after[args[0].len()..].trim().to_string()
    };
    match sub.as_deref() {
        Some("on") | Some("off") => {
            on_off(args).map(|on| if on { RagCmd::On } else { RagCmd::Off })
        }
        Some("path") => {
            let p = rest();
            let p = p
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .unwrap_or(&p)
                .to_string();
            if p.is_empty() {
                Err("`rag path` needs a folder or an http(s) URL".into())
            } else {
                Ok(RagCmd::Path(p))
            }
        }
        Some("model") => match &args[1..] {
            [m] if embedding_model_name_ok(m) => Ok(RagCmd::Model(m.to_string())),
            [m] => Err(format!("`{m}` is not a valid model name")),
            [] => Err("`rag model` needs a model name".into()),
            more => Err(format!("expected one model name, got `{}`", more.join(" "))),
        },
        Some("index") => match shlex::split(&rest()) {
            None => Err("unbalanced quotes in the paths".into()),
            Some(paths) if paths.is_empty() => {
                Err("`rag index` needs files or folders (.txt, .md, .pdf)".into())
            }
            Some(paths) => Ok(RagCmd::Index(paths)),
        },
        None => Err("expected on, off, path, model or index".into()),
        Some(_) => Err(format!(
            "unknown sub-command `{}` (use on, off, path, model or index)",
            args[0]
        )),
    }
}

fn embedding_model_name_ok(m: &str) -> bool {
    m.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
}

fn parse_discover(args: &[&str]) -> Result<Command, String> {
    let mut cidr = None;
    let mut timeout_ms = None;
    let mut i = 0;
    while i < args.len() {
        match args[i] {
            "--timeout" => {
                let v = args.get(i + 1).ok_or("--timeout needs milliseconds")?;
                let n: u64 = v.parse().map_err(|_| {
                    format!("--timeout: `{v}` is not a whole number of milliseconds")
                })?;
                if n == 0 || n > 60_000 {
                    return Err(format!("--timeout must be between 1 and 60000 ms, got {n}"));
                }
                timeout_ms = Some(n);
                i += 2;
            }
            a if a.starts_with("--") => return Err(format!("unknown option `{a}`")),
            a if cidr.is_none() => {
                cidr = Some(a.to_string());
                i += 1;
            }
            a => return Err(format!("unexpected `{a}` (one CIDR at most)")),
        }
    }
    Ok(Command::Discover { cidr, timeout_ms })
}

fn parse_rpc(args: &[&str]) -> Result<Command, String> {
    match args {
        [] => Err("missing sub-command".into()),
        [s] if s.eq_ignore_ascii_case("discover") => Ok(Command::Rpc(RpcCmd::Discover)),
        [s] if s.eq_ignore_ascii_case("list") => Ok(Command::Rpc(RpcCmd::List)),
        [s, a] if s.eq_ignore_ascii_case("add") => Ok(Command::Rpc(RpcCmd::Add(a.to_string()))),
        [s, a] if s.eq_ignore_ascii_case("remove") => {
            Ok(Command::Rpc(RpcCmd::Remove(a.to_string())))
        }
        [s] if s.eq_ignore_ascii_case("add") || s.eq_ignore_ascii_case("remove") => {
            Err(format!("`rpc {s}` needs HOST[:PORT]"))
        }
        [s, ..] if ["add", "remove"].iter().any(|k| s.eq_ignore_ascii_case(k)) => Err(format!(
            "`rpc {s}` takes one HOST[:PORT], got `{}`",
            args[1..].join(" ")
        )),
        [s, ..]
            if ["list", "discover"]
                .iter()
                .any(|k| s.eq_ignore_ascii_case(k)) =>
        {
            Err(format!("`rpc {s}` takes no arguments"))
        }
        [s, ..] => Err(format!("unknown sub-command `{s}`")),
    }
}

fn parse_dashboard(args: &[&str]) -> Result<Command, String> {
    if args == ["stop"] {
        return Ok(Command::Dashboard {
            stop: true,
            port: None,
            bind: None,
        });
    }
    let (mut port, mut bind) = (None, None);
    let mut i = 0;
    while i < args.len() {
        let v = args
            .get(i + 1)
            .ok_or_else(|| format!("{} needs a value", args[i]))?;
        match args[i] {
            "--port" => {
                port = Some(
                    v.parse::<u16>()
                        .map_err(|_| format!("--port: `{v}` is not a port number"))?,
                )
            }
            "--bind" => bind = Some(v.to_string()),
            a => return Err(format!("unknown option `{a}`")),
        }
        i += 2;
    }
    Ok(Command::Dashboard {
        stop: false,
        port,
        bind,
    })
}

fn parse_serve(args: &[&str]) -> Result<Command, String> {
    if args == ["stop"] {
        return Ok(Command::Serve(ServeArgs {
            stop: true,
            ..Default::default()
        }));
    }
    let mut a = ServeArgs::default();
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--no-auth" {
            a.no_auth = true;
            i += 1;
            continue;
        }
        let v = args
            .get(i + 1)
            .ok_or_else(|| format!("{} needs a value", args[i]))?;
        match args[i] {
            "--port" => {
                a.port = Some(
                    v.parse::<u16>()
                        .map_err(|_| format!("--port: `{v}` is not a port number"))?,
                )
            }
            "--bind" => a.bind = Some(v.to_string()),
            "--api-key" => a.api_key = Some(v.to_string()),
            other => return Err(format!("unknown option `{other}`")),
        }
        i += 2;
    }
    Ok(Command::Serve(a))
}

/// Completion candidates for what has been typed so far.
pub fn complete(line: &str) -> Vec<String> {
    let ends_with_space = line.ends_with(' ');
    let words: Vec<&str> = line.split_whitespace().collect();
    match (words.as_slice(), ends_with_space) {
        ([], _) => COMMANDS.iter().map(|s| s.name.to_string()).collect(),
        ([w], false) => COMMANDS
            .iter()
            .flat_map(|s| std::iter::once(s.name).chain(s.aliases.iter().copied()))
            .filter(|n| n.starts_with(&w.to_ascii_lowercase()))
            .map(String::from)
            .collect(),
        ([cmd], true) => lookup(cmd)
            .map(|s| s.keywords.iter().map(|k| k.to_string()).collect())
            .unwrap_or_default(),
        ([cmd, arg], false) => lookup(cmd)
            .map(|s| {
                s.keywords
                    .iter()
                    .filter(|k| k.starts_with(arg))
                    .map(|k| k.to_string())
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_queries() {
        assert_eq!(parse("NODES").unwrap(), Command::Nodes);
        assert_eq!(parse("q").unwrap(), Command::Exit);
        assert_eq!(parse("help").unwrap(), Command::Help);
        assert_eq!(
            parse("what is rust").unwrap(),
            Command::Query("what is rust".into())
        );
        assert_eq!(
            parse("mode distributed").unwrap(),
            Command::Mode(Mode::Distributed)
        );
        assert_eq!(
            parse("distributed both").unwrap(),
            Command::Distributed(Route::Both)
        );
        assert_eq!(
            parse("rpc add 10.77.0.5:50052").unwrap(),
            Command::Rpc(RpcCmd::Add("10.77.0.5:50052".into()))
        );
        assert_eq!(
            parse("add http://h:1 --force").unwrap(),
            Command::Add {
                url: "http://h:1".into(),
                force: true
            }
        );
        assert_eq!(
            parse("save /tmp/a b.json").unwrap(),
            Command::Save("/tmp/a b.json".into())
        );
        assert_eq!(parse("synthesis none").unwrap(), Command::Synthesis(None));
        assert_eq!(parse("rag ON").unwrap(), Command::Rag(RagCmd::On));
        assert_eq!(
            parse("rag path ~/My Papers").unwrap(),
            Command::Rag(RagCmd::Path("~/My Papers".into()))
        );
        assert_eq!(
            parse("rag model nomic-embed-text").unwrap(),
            Command::Rag(RagCmd::Model("nomic-embed-text".into()))
        );
        assert_eq!(
            parse("rag index a.pdf \"b c.md\" dir").unwrap(),
            Command::Rag(RagCmd::Index(vec![
                "a.pdf".into(),
                "b c.md".into(),
                "dir".into()
            ]))
        );
        assert_eq!(
            parse("discover 10.77.0.0/24 --timeout 50").unwrap(),
            Command::Discover {
                cidr: Some("10.77.0.0/24".into()),
                timeout_ms: Some(50)
            }
        );
    }

    #[test]
    fn argument_errors_carry_the_usage() {
        for bad in [
            "quality nan",
            "quality 1.5",
            "quality x",
            "refine 6",
            "refine -1",
            "timeout 29",
            "qretries 9",
            "collab maybe",
            "mode",
            "mode dask",
            "strategy fast",
            "rpc",
            "rpc add",
            "nodes extra",
            "add",
            "discover --timeout 0",
            "model a;b",
            "metrics --yaml",
            "rag",
            "rag maybe",
            "rag path",
            "rag model",
            "rag model a;b",
            "rag index",
            "rag index \"unclosed",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(!e.usage.is_empty(), "{bad}");
        }
        assert!(parse("quality nan")
            .unwrap_err()
            .message
            .contains("between 0.0 and 1.0"));
    }

    #[test]
    fn typed_control_characters_are_shown_escaped() {
        let e = parse("refine \u{1b}[2J5\u{7}").unwrap_err().to_string();
        assert!(!e.contains('\u{1b}') && !e.contains('\u{7}'), "{e:?}");
        assert!(e.contains("\\u{1b}[2J5\\u{7}"), "{e:?}");
        assert_eq!(e.lines().count(), 2);
    }

    #[test]
    fn one_name_check_for_every_name() {
        assert!(check_name(NameKind::Model, "hf.co/User/Repo-GGUF:Q4_K_M").is_ok());
        assert!(check_name(NameKind::Node, "Kitchen box (GPU)").is_ok());
        for kind in [NameKind::Model, NameKind::Node, NameKind::Agent] {
            assert!(check_name(kind, "").is_err());
            assert!(check_name(kind, "a\u{7}b")
                .unwrap_err()
                .contains("control characters"));
            let e = check_name(kind, &"x".repeat(NAME_MAX + 1)).unwrap_err();
            assert!(e.contains("at most 200") && e.len() < 100, "{e}");
            assert!(check_name(kind, &"x".repeat(NAME_MAX)).is_ok());
        }
        assert!(check_name(NameKind::Model, "a;b").is_err());
        for line in ["synthesis a\u{7}b", "model a\u{7}b"] {
            let e = parse(line).unwrap_err().to_string();
            assert!(
                !e.contains('\u{7}') && e.contains("control characters"),
                "{e}"
            );
        }
    }

    #[test]
    fn numbers_out_of_range_say_so() {
        let e = parse("timeout 99999999999999999999").unwrap_err();
        assert!(e.message.contains("between 30 and 86400"), "{}", e.message);
        assert!(parse("refine -1")
            .unwrap_err()
            .message
            .contains("between 0 and 5"));
        assert!(parse("refine +3").is_ok());
        assert!(parse("refine 3.0")
            .unwrap_err()
            .message
            .contains("not a whole number"));
        assert_eq!(parse("quality -0.0").unwrap(), Command::Quality(0.0));
        let Command::Quality(q) = parse("quality -0.0").unwrap() else {
            unreachable!()
        };
        assert!(q.is_sign_positive());
    }

    #[test]
    fn serve_and_its_options() {
        assert_eq!(
            parse("serve").unwrap(),
            Command::Serve(ServeArgs::default())
        );
        assert_eq!(
            parse("serve --port 11500 --bind 0.0.0.0 --api-key k --no-auth").unwrap(),
            Command::Serve(ServeArgs {
                stop: false,
                port: Some(11500),
                bind: Some("0.0.0.0".into()),
                api_key: Some("k".into()),
                no_auth: true,
            })
        );
        assert!(matches!(
            parse("serve stop").unwrap(),
            Command::Serve(ServeArgs { stop: true, .. })
        ));
        for bad in ["serve --port x", "serve --port", "serve --tls"] {
            let e = parse(bad).unwrap_err();
            assert!(e.usage.starts_with("serve [--port P]"), "{bad}: {e}");
        }
    }

    #[test]
    fn completion() {
        assert!(complete("no").contains(&"nodes".to_string()));
        assert_eq!(
            complete("distributed "),
            vec!["task", "model", "both", "off"]
        );
        assert_eq!(complete("collab o"), vec!["on", "off"]);
        assert_eq!(complete("longform a"), vec!["auto", "always"]);
        assert_eq!(
            parse("longform NEVER").unwrap(),
            Command::Longform(Longform::Never)
        );
        assert!(parse("longform sometimes")
            .unwrap_err()
            .message
            .contains("use auto, always, never"));
    }

    #[test]
    fn strategy_values_match_the_original() {
        assert_eq!(Strategy::Single.setting(), Some("single_node"));
        assert_eq!(Strategy::from_setting(Some("gpu_routing")), Strategy::Gpu);
        assert_eq!(Strategy::from_setting(Some("bogus")), Strategy::Auto);
    }
}
