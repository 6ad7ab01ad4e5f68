//! The words after a command, and the typed values they parse to. Every check
//! of a typed argument is here, once; a failure is a one-line message (shown
//! with the command's usage by the caller).

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use super::Spec;
use crate::config::settings::RpcBackendEntry;
use crate::ollama::host::{self, HostSpec};
use crate::rag::Location;

/// One command line, split: the command word as typed and the words after it.
pub(super) struct Args<'a> {
    /// The whole line, trimmed.
    line: &'a str,
    /// The command word as typed.
    first: &'a str,
    pub words: Vec<&'a str>,
    pub spec: &'static Spec,
}

impl<'a> Args<'a> {
    pub fn new(line: &'a str, first: &'a str, words: Vec<&'a str>, spec: &'static Spec) -> Self {
        Args {
            line,
            first,
            words,
            spec,
        }
    }

    /// The text after the command word, as typed (paths may hold spaces).
    pub fn rest(&self) -> &'a str {
        self.line[self.first.len()..].trim()
    }

    /// The text after the command word and its first argument.
    pub(crate) fn rest_after_sub(&self) -> &'a str {
        let after = self.line[self.first.len()..].trim_start();
        self.words
            .first()
            .map_or("", |sub| after[sub.len()..].trim())
    }

    /// `cmd` when nothing follows the command word.
    pub fn none<T>(&self, cmd: T) -> Result<T, String> {
        if self.words.is_empty() {
            Ok(cmd)
        } else {
            Err(format!("`{}` takes no arguments", self.spec.name))
        }
    }

    pub(crate) fn on_off(&self) -> Result<bool, String> {
        on_off(&self.words)
    }

    pub fn one(&self, what: &str) -> Result<&'a str, String> {
        one(&self.words, what)
    }
}

pub(super) fn on_off(args: &[&str]) -> Result<bool, String> {
    match args {
        [a] if a.eq_ignore_ascii_case("on") => Ok(true),
        [a] if a.eq_ignore_ascii_case("off") => Ok(false),
        [] => Err("expected on or off".into()),
        _ => Err(format!("expected on or off, got `{}`", args.join(" "))),
    }
}

pub(super) fn one<'a>(args: &[&'a str], what: &str) -> Result<&'a str, String> {
    match args {
        [a] => Ok(a),
        [] => Err(format!("missing {what}")),
        _ => Err(format!("expected one {what}, got `{}`", args.join(" "))),
    }
}

/// A whole number from `lo` to `hi` (a leading `+` allowed).
pub(super) fn int_in(a: &str, what: &str, lo: u64, hi: u64) -> Result<u64, String> {
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

/// A fraction from 0.0 to 1.0 (`-0.0` is zero).
pub(super) fn fraction(a: &str) -> Result<f64, String> {
    let x: f64 = a.parse().map_err(|_| format!("`{a}` is not a number"))?;
    if x.is_nan() || !(0.0..=1.0).contains(&x) {
        return Err(format!(
            "quality threshold must be between 0.0 and 1.0, got `{a}`"
        ));
    }
    Ok(x + 0.0)
}

/// One word of `table` (any ASCII case).
pub(super) fn keyword<T: Copy>(
    args: &[&str],
    what: &str,
    table: &[(&str, T)],
) -> Result<T, String> {
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

/// The value after an option (`--port 8080`).
pub(super) fn option_value<'a>(args: &[&'a str], i: usize) -> Result<&'a str, String> {
    args.get(i + 1)
        .copied()
        .ok_or_else(|| format!("{} needs a value", args[i]))
}

pub(super) fn port(option: &str, v: &str) -> Result<u16, String> {
    v.parse::<u16>()
        .map_err(|_| format!("{option}: `{v}` is not a port number"))
}

/// An IP address to listen on (`[v6]` brackets allowed).
pub fn bind_addr(v: &str) -> Result<IpAddr, String> {
    v.trim_matches(|c| c == '[' || c == ']')
        .parse()
        .map_err(|_| format!("`{v}` is not an IP address"))
}

/// An Ollama node's address, parsed as Ollama parses `OLLAMA_HOST`; its
/// canonical URL ([`HostSpec::base_url`]) is the node's identity.
pub(crate) fn node_addr(v: &str) -> Result<HostSpec, String> {
    let spec = host::parse(v).map_err(|e| e.to_string())?;
    if spec.port == 0 {
        // Ollama reads `:0` as "any free port" for a server to bind; no server
        // is reached there.
        return Err(format!(
            "`{}`: port 0 is not a port a server can be reached on",
            v.escape_debug()
        ));
    }
    Ok(spec)
}

/// An IPv4 subnet to scan (IPv6 subnets are refused, saying so).
pub(super) fn cidr(v: &str) -> Result<Ipv4Net, String> {
    crate::nodes::scan::parse_cidr(v).map_err(|e| e.to_string())
}

/// An llama.cpp RPC backend, `HOST[:PORT]`.
pub(super) fn backend(v: &str) -> Result<RpcBackendEntry, String> {
    crate::sharding::backends::parse(v).map_err(|e| e.to_string())
}

/// A file path: the rest of the line (spaces allowed, one layer of double
/// quotes removed), `~` expanded.
pub(super) fn file_path(rest: &str) -> Result<PathBuf, String> {
    let rest = rest
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(rest);
    if rest.is_empty() {
        Err("missing file path".into())
    } else {
        Ok(crate::config::expand_tilde(rest))
    }
}

/// A knowledge base: a folder or an http(s) URL.
pub(super) fn location(rest: &str) -> Result<Location, String> {
    let p = rest
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(rest);
    if p.is_empty() {
        return Err("`rag path` needs a folder or an http(s) URL".into());
    }
    Location::parse(p).map_err(|e| format!("rag path: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_or_one_line_saying_why() {
        assert_eq!(
            node_addr("10.77.0.11").unwrap().base_url(),
            "http://10.77.0.11:11434"
        );
        assert!(node_addr("ftp://h")
            .unwrap_err()
            .contains("scheme `ftp` is not supported"));
        assert_eq!(cidr("10.77.0.9/24").unwrap().to_string(), "10.77.0.0/24");
        assert!(cidr("10.77.0.0/33")
            .unwrap_err()
            .contains("not a valid CIDR"));
        assert!(cidr("fd00::/64").unwrap_err().contains("IPv6"));
        assert_eq!(
            bind_addr("[::1]").unwrap(),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
        );
        assert_eq!(
            bind_addr("nowhere").unwrap_err(),
            "`nowhere` is not an IP address"
        );
        let b = backend("10.77.0.5").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("10.77.0.5", 50052));
        assert!(backend("a b").is_err());
        assert_eq!(port("--port", "8080"), Ok(8080));
        assert_eq!(
            port("--port", "70000").unwrap_err(),
            "--port: `70000` is not a port number"
        );
    }

    #[test]
    fn numbers_keep_to_their_range() {
        assert_eq!(int_in("+3", "n", 0, 5), Ok(3));
        assert!(int_in("6", "n", 0, 5)
            .unwrap_err()
            .contains("between 0 and 5"));
        assert!(int_in("-1", "n", 0, 5)
            .unwrap_err()
            .contains("between 0 and 5"));
        assert!(int_in("3.0", "n", 0, 5)
            .unwrap_err()
            .contains("not a whole number"));
        assert_eq!(fraction("-0.0").map(f64::is_sign_positive), Ok(true));
        assert!(fraction("NaN").is_err() && fraction("1.5").is_err());
    }

    #[test]
    fn paths_are_the_rest_of_the_line() {
        assert_eq!(
            file_path("\"/tmp/a b.json\""),
            Ok(PathBuf::from("/tmp/a b.json"))
        );
        assert!(file_path("").is_err());
        assert!(location("ftp://x")
            .unwrap_err()
            .contains("only http:// and https:// URLs are supported"));
        assert!(matches!(location("/srv/kb"), Ok(Location::Local(_))));
    }
}
