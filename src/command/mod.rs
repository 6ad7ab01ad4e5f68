//! The shell's commands: one table (name, usage, help) that drives `help`,
//! completion and parsing (each row names its small parser in `parsers.rs`),
//! and `parse`: a line to a `Command` whose arguments are already typed and
//! checked (`args.rs`), so a handler never re-validates them.

mod args;
mod parsers;

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::config::choices::{Longform, Mode, Route, Strategy};
use crate::config::settings::{Key, RpcBackendEntry};
use crate::names::ModelName;
use crate::ollama::host::HostSpec;
use crate::rag::Location;
pub use args::bind_addr;
pub(crate) use args::node_addr;
use args::Args;

/// One row of the command table.
pub struct Spec {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub usage: &'static str,
    pub help: &'static str,
    /// Keywords completed after the command name.
    pub keywords: &'static [&'static str],
    /// The words after the command name to a `Command`.
    parse: fn(&Args) -> Result<Command, String>,
}

pub const COMMANDS: &[Spec] = &[
    Spec {
        name: "mode",
        aliases: &[],
        usage: "mode standard|distributed",
        help: "switch mode (distributed scans the subnet)",
        keywords: &["standard", "distributed"],
        parse: parsers::mode,
    },
    Spec {
        name: "distributed",
        aliases: &[],
        usage: "distributed task|model|both|off",
        help: "routing path: node pool, sharded model, both, or one node",
        keywords: &["task", "model", "both", "off"],
        parse: parsers::distributed,
    },
    Spec {
        name: "nodes",
        aliases: &[],
        usage: "nodes",
        help: "Ollama nodes, coordinator and RPC backends with live status",
        keywords: &[],
        parse: parsers::nodes,
    },
    Spec {
        name: "add",
        aliases: &[],
        usage: "add URL [--force]",
        help: "add an Ollama node (probes it first)",
        keywords: &["--force"],
        parse: parsers::add,
    },
    Spec {
        name: "remove",
        aliases: &[],
        usage: "remove URL|NAME",
        help: "remove a node",
        keywords: &[],
        parse: parsers::remove,
    },
    Spec {
        name: "discover",
        aliases: &[],
        usage: "discover [CIDR] [--timeout MS]",
        help: "scan a subnet for Ollama nodes",
        keywords: &["--timeout"],
        parse: parsers::discover,
    },
    Spec {
        name: "health",
        aliases: &[],
        usage: "health",
        help: "probe every node now",
        keywords: &[],
        parse: parsers::health,
    },
    Spec {
        name: "save",
        aliases: &[],
        usage: "save FILE",
        help: "write the node list to FILE",
        keywords: &[],
        parse: parsers::save,
    },
    Spec {
        name: "load",
        aliases: &[],
        usage: "load FILE",
        help: "merge FILE's nodes into the node list",
        keywords: &[],
        parse: parsers::load,
    },
    Spec {
        name: "rpc",
        aliases: &[],
        usage: "rpc discover|list|add HOST[:PORT]|remove HOST[:PORT]",
        help: "llama.cpp RPC backends for model sharding",
        keywords: &["discover", "list", "add", "remove"],
        parse: parsers::rpc,
    },
    Spec {
        name: "pull",
        aliases: &[],
        usage: "pull MODEL [NODE…]",
        help: "pull a model onto every node that lacks it (or onto the nodes named)",
        keywords: &[],
        parse: parsers::pull,
    },
    Spec {
        name: "rm",
        aliases: &[],
        usage: "rm MODEL [NODE…] [--yes]",
        help: "delete a model from every node that has it (or from the nodes named)",
        keywords: &["--yes"],
        parse: parsers::rm,
    },
    Spec {
        name: "collab",
        aliases: &[],
        usage: "collab on|off",
        help: "collaborative workflow (research, critique, refine, edit)",
        keywords: &["on", "off"],
        parse: parsers::collab,
    },
    Spec {
        name: "refine",
        aliases: &[],
        usage: "refine N (0-5)",
        help: "refinement rounds in collaborative mode",
        keywords: &[],
        parse: parsers::refine,
    },
    Spec {
        name: "synthesis",
        aliases: &[],
        usage: "synthesis MODEL|none",
        help: "model for the final synthesis",
        keywords: &["none"],
        parse: parsers::synthesis,
    },
    Spec {
        name: "timeout",
        aliases: &[],
        usage: "timeout SECS (30-86400)",
        help: "per-agent inference timeout",
        keywords: &[],
        parse: parsers::timeout,
    },
    Spec {
        name: "ast",
        aliases: &[],
        usage: "ast on|off",
        help: "AST quality voting",
        keywords: &["on", "off"],
        parse: parsers::ast,
    },
    Spec {
        name: "quality",
        aliases: &[],
        usage: "quality X (0.0-1.0)",
        help: "quality threshold for voting",
        keywords: &[],
        parse: parsers::quality,
    },
    Spec {
        name: "qretries",
        aliases: &[],
        usage: "qretries N (0-5)",
        help: "quality retries",
        keywords: &[],
        parse: parsers::qretries,
    },
    Spec {
        name: "longform",
        aliases: &[],
        usage: "longform auto|always|never",
        help: "when an answer is written in parts (auto: when the question asks for depth, breadth or a length; always: the original's rule)",
        keywords: &["auto", "always", "never"],
        parse: parsers::longform,
    },
    Spec {
        name: "strategy",
        aliases: &[],
        usage: "strategy auto|single|parallel|multi|gpu",
        help: "how work is spread over nodes",
        keywords: &["auto", "single", "parallel", "multi", "gpu"],
        parse: parsers::strategy,
    },
    Spec {
        name: "model",
        aliases: &[],
        usage: "model NAME",
        help: "model used by the agents",
        keywords: &[],
        parse: parsers::model,
    },
    Spec {
        name: "status",
        aliases: &[],
        usage: "status",
        help: "every setting and node counts",
        keywords: &[],
        parse: parsers::status,
    },
    Spec {
        name: "metrics",
        aliases: &[],
        usage: "metrics [--json]",
        help: "the last query's metrics",
        keywords: &["--json"],
        parse: parsers::metrics,
    },
    Spec {
        name: "benchmark",
        aliases: &[],
        usage: "benchmark",
        help: "measure each node (tokens/s, latency)",
        keywords: &[],
        parse: parsers::benchmark,
    },
    Spec {
        name: "dashboard",
        aliases: &[],
        usage: "dashboard [--port P] [--bind ADDR] | dashboard stop",
        help: "live web dashboard",
        keywords: &["stop", "--port", "--bind"],
        parse: parsers::dashboard,
    },
    Spec {
        name: "serve",
        aliases: &[],
        usage: "serve [--port P] [--bind ADDR] [--api-key KEY] [--no-auth] | serve stop",
        help: "serve the cluster as one Ollama- and OpenAI-compatible endpoint",
        keywords: &["stop", "--port", "--bind", "--api-key", "--no-auth"],
        parse: parsers::serve,
    },
    Spec {
        name: "rag",
        aliases: &[],
        usage: "rag on|off | rag path DIR|URL | rag model NAME | rag index PATH…",
        help: "answers from your documents (FlockParser knowledge base)",
        keywords: &["on", "off", "path", "model", "index"],
        parse: parsers::rag,
    },
    Spec {
        name: "redis",
        aliases: &[],
        usage: "redis on|off",
        help: "share host leases, node health, RPC registrations and events through Redis",
        keywords: &["on", "off"],
        parse: parsers::redis,
    },
    Spec {
        name: "verbose",
        aliases: &[],
        usage: "verbose on|off",
        help: "dashboard verbosity (setting kept)",
        keywords: &["on", "off"],
        parse: parsers::verbose,
    },
    Spec {
        name: "help",
        aliases: &["?"],
        usage: "help",
        help: "this list",
        keywords: &[],
        parse: parsers::help,
    },
    Spec {
        name: "exit",
        aliases: &["quit", "q"],
        usage: "exit",
        help: "leave",
        keywords: &[],
        parse: parsers::exit,
    },
];

#[derive(Debug, Clone, PartialEq)]
pub enum RpcCmd {
    Discover,
    List,
    Add(RpcBackendEntry),
    Remove(RpcBackendEntry),
}

/// `rag …`: retrieval over a FlockParser knowledge base.
#[derive(Debug, Clone, PartialEq)]
pub enum RagCmd {
    On,
    Off,
    /// A folder or an http(s) URL.
    Path(Location),
    Model(String),
    /// Files and folders to add to the local knowledge base (`~/` expanded).
    Index(Vec<PathBuf>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Mode(Mode),
    Distributed(Route),
    Nodes,
    Add {
        /// The node's address; its canonical URL is `node.base_url()`.
        node: HostSpec,
        force: bool,
    },
    Remove(String),
    Discover {
        cidr: Option<Ipv4Net>,
        timeout_ms: Option<u64>,
    },
    Health,
    /// The file, `~` expanded.
    Save(PathBuf),
    Load(PathBuf),
    Rpc(RpcCmd),
    /// `pull MODEL [NODE…]`: onto the nodes named (by name or URL), else every
    /// node that lacks it.
    Pull {
        model: ModelName,
        nodes: Vec<String>,
    },
    /// `rm MODEL [NODE…] [--yes]`: from the nodes named, else every node that
    /// has it; `yes` skips the question.
    Rm {
        model: ModelName,
        nodes: Vec<String>,
        yes: bool,
    },
    /// A command that sets one setting.
    Set(SettingCmd),
    Status,
    Metrics {
        json: bool,
    },
    Benchmark,
    Dashboard {
        stop: bool,
        port: Option<u16>,
        bind: Option<IpAddr>,
    },
    Serve(ServeArgs),
    Rag(RagCmd),
    Redis(bool),
    Help,
    Exit,
    /// Anything that is not a command.
    Query(String),
}

/// A command that sets one setting and saves it: the value, typed and checked.
#[derive(Debug, Clone, PartialEq)]
pub enum SettingCmd {
    Collab(bool),
    Refine(u32),
    Synthesis(Option<ModelName>),
    Timeout(u64),
    Ast(bool),
    Quality(f64),
    QRetries(u32),
    Longform(Longform),
    Strategy(Strategy),
    Model(ModelName),
    Verbose(bool),
}

impl SettingCmd {
    /// The settings-file key the command sets (a new command must say which).
    pub fn key(&self) -> Key {
        match self {
            SettingCmd::Collab(_) => Key::CollaborativeMode,
            SettingCmd::Refine(_) => Key::RefinementRounds,
            SettingCmd::Synthesis(_) => Key::SynthesisModel,
            SettingCmd::Timeout(_) => Key::AgentTimeout,
            SettingCmd::Ast(_) => Key::AstVotingEnabled,
            SettingCmd::Quality(_) => Key::QualityThreshold,
            SettingCmd::QRetries(_) => Key::MaxQualityRetries,
            SettingCmd::Longform(_) => Key::Longform,
            SettingCmd::Strategy(_) => Key::Strategy,
            SettingCmd::Model(_) => Key::Model,
            SettingCmd::Verbose(_) => Key::DashboardVerbose,
        }
    }
}

/// `serve …` in the shell.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServeArgs {
    pub stop: bool,
    pub port: Option<u16>,
    pub bind: Option<IpAddr>,
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

impl std::error::Error for Usage {}

pub fn lookup(word: &str) -> Option<&'static Spec> {
    let w = word.to_ascii_lowercase();
    COMMANDS
        .iter()
        .find(|s| s.name == w || s.aliases.contains(&w.as_str()))
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
    let args = Args::new(line, first, words.collect(), spec);
    (spec.parse)(&args).map_err(|message| Usage {
        message,
        usage: spec.usage,
    })
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
            Command::Rpc(RpcCmd::Add(RpcBackendEntry {
                host: "10.77.0.5".into(),
                port: 50052,
                extra: Default::default()
            }))
        );
        assert_eq!(
            parse("add http://h:1 --force").unwrap(),
            Command::Add {
                node: crate::ollama::host::parse("http://h:1").unwrap(),
                force: true
            }
        );
        assert_eq!(
            parse("save /tmp/a b.json").unwrap(),
            Command::Save("/tmp/a b.json".into())
        );
        assert_eq!(
            parse("synthesis none").unwrap(),
            Command::Set(SettingCmd::Synthesis(None))
        );
        assert_eq!(parse("rag ON").unwrap(), Command::Rag(RagCmd::On));
        assert_eq!(
            parse("rag path ~/My Papers").unwrap(),
            Command::Rag(RagCmd::Path(Location::parse("~/My Papers").unwrap()))
        );
        assert_eq!(
            parse("rag model nomic-embed-text").unwrap(),
            Command::Rag(RagCmd::Model("nomic-embed-text".into()))
        );
        assert_eq!(
            parse("rag index a.pdf \"b c.md\" dir").unwrap(),
            Command::Rag(RagCmd::Index(vec![
                PathBuf::from("a.pdf"),
                PathBuf::from("b c.md"),
                PathBuf::from("dir")
            ]))
        );
        assert_eq!(
            parse("discover 10.77.0.0/24 --timeout 50").unwrap(),
            Command::Discover {
                cidr: Some("10.77.0.0/24".parse().unwrap()),
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
    fn model_names_are_checked_by_the_one_rule() {
        // The rule itself is tested in `names`; here, that both commands use it.
        assert_eq!(
            parse("model hf.co/User/Repo-GGUF:Q4_K_M").unwrap(),
            Command::Set(SettingCmd::Model(
                "hf.co/User/Repo-GGUF:Q4_K_M".parse().unwrap()
            ))
        );
        assert!(parse("synthesis a;b")
            .unwrap_err()
            .to_string()
            .contains("not a valid model name"));
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
        assert_eq!(
            parse("quality -0.0").unwrap(),
            Command::Set(SettingCmd::Quality(0.0))
        );
        let Command::Set(SettingCmd::Quality(q)) = parse("quality -0.0").unwrap() else {
            unreachable!()
        };
        assert!(q.is_sign_positive());
    }

    #[test]
    fn arguments_arrive_typed_or_not_at_all() {
        let Command::Add { node, force } = parse("add 10.77.0.11:11500").unwrap() else {
            unreachable!()
        };
        assert!(!force);
        assert_eq!(node.base_url(), "http://10.77.0.11:11500");
        let e = parse("add ftp://h --force").unwrap_err();
        assert!(e.message.starts_with("add: `ftp://h`: scheme `ftp`"), "{e}");
        assert_eq!(e.usage, "add URL [--force]");
        let e = parse("discover 10.77.0.0/33").unwrap_err();
        assert!(
            e.message.contains("`10.77.0.0/33` is not a valid CIDR"),
            "{e}"
        );
        assert_eq!(
            parse("dashboard --bind nowhere").unwrap_err().message,
            "dashboard: `nowhere` is not an IP address"
        );
        assert_eq!(
            parse("dashboard --bind [::1] --port 8080").unwrap(),
            Command::Dashboard {
                stop: false,
                port: Some(8080),
                bind: Some("::1".parse().unwrap())
            }
        );
        assert!(parse("serve --bind 10.0.0.300")
            .unwrap_err()
            .message
            .contains("--bind `10.0.0.300` is not an IP address"));
        let Command::Rpc(RpcCmd::Remove(b)) = parse("rpc remove [::1]:50060").unwrap() else {
            unreachable!()
        };
        assert_eq!((b.host.as_str(), b.port), ("::1", 50060));
        assert!(parse("rpc add h:0")
            .unwrap_err()
            .message
            .starts_with("rpc add: "));
        assert!(matches!(
            parse("rag path ftp://x").unwrap_err().message.as_str(),
            m if m.contains("only http:// and https://")
        ));
    }

    #[test]
    fn pull_and_rm_take_a_model_and_nodes() {
        assert_eq!(
            parse("pull tinyllama").unwrap(),
            Command::Pull {
                model: "tinyllama".parse().unwrap(),
                nodes: vec![]
            }
        );
        assert_eq!(
            parse("rm llama3.2:1b alpha http://b:11434 --yes").unwrap(),
            Command::Rm {
                model: "llama3.2:1b".parse().unwrap(),
                nodes: vec!["alpha".into(), "http://b:11434".into()],
                yes: true
            }
        );
        assert!(matches!(
            parse("rm -y tinyllama").unwrap(),
            Command::Rm { yes: true, .. }
        ));
        for (bad, says) in [
            ("pull", "missing model name"),
            ("pull a;b", "not a valid model name"),
            ("pull m --force", "unknown option `--force`"),
            ("rm", "missing model name"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.message.contains(says), "{bad}: {e}");
        }
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
                bind: Some(IpAddr::from([0, 0, 0, 0])),
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
            Command::Set(SettingCmd::Longform(Longform::Never))
        );
        assert!(parse("longform sometimes")
            .unwrap_err()
            .message
            .contains("use auto, always, never"));
    }

    #[test]
    fn strategy_values_match_the_original() {
        assert_eq!(Strategy::Single.setting(), Some("single_node"));
        let read = |w: &str| serde_json::from_value::<Strategy>(serde_json::Value::from(w)).ok();
        assert_eq!(read("gpu_routing"), Some(Strategy::Gpu));
        assert_eq!(read("bogus"), None);
    }

    #[test]
    fn each_setting_command_sets_its_own_key_within_the_tables_rule() {
        use crate::config::settings::{
            QRETRIES_MAX, REFINE_MAX, TIMEOUT_MAX_SECS, TIMEOUT_MIN_SECS,
        };
        use serde_json::{json, Value};
        // A line, and the value its handler stores in the file.
        let cases = [
            ("collab on", json!(true)),
            ("refine 0", json!(0)),
            (&format!("refine {REFINE_MAX}"), json!(REFINE_MAX)),
            ("synthesis none", Value::Null),
            ("synthesis qwen2.5:7b", json!("qwen2.5:7b")),
            (
                &format!("timeout {TIMEOUT_MIN_SECS}"),
                json!(TIMEOUT_MIN_SECS),
            ),
            (
                &format!("timeout {TIMEOUT_MAX_SECS}"),
                json!(TIMEOUT_MAX_SECS),
            ),
            ("ast off", json!(false)),
            ("quality 1.0", json!(1.0)),
            (&format!("qretries {QRETRIES_MAX}"), json!(QRETRIES_MAX)),
            ("longform never", json!("never")),
            ("strategy multi", json!("parallel_multi")),
            ("strategy auto", Value::Null),
            ("model llama3.2:1b", json!("llama3.2:1b")),
            ("verbose on", json!(true)),
        ];
        let mut keys = std::collections::HashSet::new();
        for (line, stored) in cases {
            let Ok(Command::Set(c)) = parse(line) else {
                panic!("{line}: not a setting command");
            };
            assert!(
                c.key().accepts(&stored),
                "{line}: {stored} for {}",
                c.key().name()
            );
            keys.insert(c.key());
        }
        assert_eq!(keys.len(), 11, "one key per setting command");
        // The ranges `help` shows are the table's.
        let usage = |name: &str| lookup(name).unwrap().usage;
        assert!(usage("refine").ends_with(&format!("(0-{REFINE_MAX})")));
        assert!(usage("qretries").ends_with(&format!("(0-{QRETRIES_MAX})")));
        assert!(usage("timeout").ends_with(&format!("({TIMEOUT_MIN_SECS}-{TIMEOUT_MAX_SECS})")));
        assert!(Key::QualityThreshold.rule().ends_with("0.0 to 1.0"));
        assert!(usage("quality").ends_with("(0.0-1.0)"));
    }
}
