//! `OLLAMA_HOST`-style addresses, parsed the way Ollama itself parses them
//! (envconfig.Host): no scheme means http and port 11434, an explicit scheme
//! defaults to its own port, a path is kept.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

pub(crate) const DEFAULT_PORT: u16 = 11434;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    pub scheme: String,
    /// Host name or IP, without IPv6 brackets; empty when only a port was given.
    pub host: String,
    pub port: u16,
    /// Path prefix ("" or "/something", no trailing slash).
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError(pub String);

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HostError {}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

impl fmt::Display for HostSpec {
    /// Ollama's own rendering (`http://:1234` for a bare port).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}:{}{}",
            self.scheme,
            bracket(&self.host),
            self.port,
            self.path
        )
    }
}

/// Strip surrounding spaces and one layer of quotes, as Ollama's `Var` does.
fn unquote(raw: &str) -> &str {
    let s = raw.trim();
    let s = s.trim_matches(|c| c == '"' || c == '\'');
    s.trim()
}

/// Ollama's default address, `http://127.0.0.1:11434`.
pub(crate) fn default_spec() -> HostSpec {
    HostSpec {
        scheme: "http".into(),
        host: "127.0.0.1".into(),
        port: DEFAULT_PORT,
        path: String::new(),
    }
}

/// Parse like Ollama's `envconfig.Host`. An empty value means the default
/// `http://127.0.0.1:11434`. An out-of-range port falls back to the default
/// port (Ollama warns and does the same). Only http and https are accepted.
pub fn parse(raw: &str) -> Result<HostSpec, HostError> {
    let s = unquote(raw);
    if s.is_empty() {
        return Ok(default_spec());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        // Shown escaped: the message must stay one line and carry no terminal codes.
        return Err(HostError(format!(
            "`{}` is not a valid address (contains spaces or control characters)",
            s.escape_debug()
        )));
    }
    let (scheme, rest, default_port) = match s.split_once("://") {
        Some((scheme, rest)) => {
            let scheme = scheme.to_ascii_lowercase();
            let port = match scheme.as_str() {
                "http" => 80,
                "https" => 443,
                other => {
                    return Err(HostError(format!(
                        "`{s}`: scheme `{other}` is not supported (use http or https)"
                    )))
                }
            };
            (scheme, rest, port)
        }
        None => ("http".to_string(), s, DEFAULT_PORT),
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if path.contains(['"', '\'']) {
        // The quotes would be taken for quoting when the URL is read back.
        return Err(HostError(format!(
            "`{s}`: quotes are not allowed in the address"
        )));
    }
    if hostport.contains('@') {
        return Err(HostError(format!(
            "`{s}`: credentials in the address are not supported"
        )));
    }
    let (host, port_text) =
        split_host_port(hostport).map_err(|m| HostError(format!("`{s}`: {m}")))?;
    let port = match port_text {
        None => default_port,
        Some(p) => match p.parse::<i64>() {
            Ok(n) if (0..=65535).contains(&n) => n as u16,
            Ok(_) => DEFAULT_PORT,
            Err(_) => return Err(HostError(format!("`{s}`: port `{p}` is not a number"))),
        },
    };
    if !host.is_empty() && !valid_host(&host) {
        return Err(HostError(format!(
            "`{s}`: `{host}` is not a valid host name or IP address"
        )));
    }
    Ok(HostSpec {
        scheme,
        host,
        port,
        path: path.to_string(),
    })
}

fn split_host_port(hp: &str) -> Result<(String, Option<&str>), &'static str> {
    if let Some(rest) = hp.strip_prefix('[') {
        let end = rest.find(']').ok_or("unclosed `[` in IPv6 address")?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        return match after.strip_prefix(':') {
            Some(p) => Ok((host.to_string(), Some(p))),
            None if after.is_empty() => Ok((host.to_string(), None)),
            None => Err("unexpected text after `]`"),
        };
    }
    if hp.matches(':').count() > 1 {
        // A bare IPv6 address such as ::1.
        return Ok((hp.to_string(), None));
    }
    match hp.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_string(), Some(p))),
        None => Ok((hp.to_string(), None)),
    }
}

fn valid_host(h: &str) -> bool {
    if h.parse::<IpAddr>().is_ok() {
        return true;
    }
    h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !label.starts_with('-')
        })
}

impl HostSpec {
    /// The address a client should connect to: bind-all and empty hosts mean
    /// loopback; an IP address in its one standard spelling (`0:0::1` is `::1`).
    pub(crate) fn connectable(&self) -> HostSpec {
        let host = match self.host.as_str() {
            "" | "0.0.0.0" => "127.0.0.1".to_string(),
            "::" => "::1".to_string(),
            h => match h.parse::<IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => h.to_ascii_lowercase(),
            },
        };
        HostSpec {
            host,
            ..self.clone()
        }
    }

    /// The canonical base URL used as a node's identity in the registry.
    pub fn base_url(&self) -> String {
        self.connectable().to_string()
    }

    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The default node name: `ollama-10-77-0-11`, with `-PORT` when not 11434.
    /// An IPv6 address keeps all its eight groups as an IPv4 one keeps its four
    /// octets (`::1` is `ollama-0-0-0-0-0-0-0-1`), so the port stays readable.
    pub fn default_name(&self) -> String {
        let c = self.connectable();
        let host: String = match c.host.parse::<Ipv6Addr>() {
            Ok(v6) => v6
                .segments()
                .iter()
                .map(|g| format!("{g:x}"))
                .collect::<Vec<_>>()
                .join("-"),
            Err(_) => c
                .host
                .chars()
                .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '-' })
                .collect(),
        };
        let host = host.trim_matches('-');
        if c.port == DEFAULT_PORT {
            format!("ollama-{host}")
        } else {
            format!("ollama-{host}-{}", c.port)
        }
    }
}

/// Parse and canonicalise a node URL in one go.
pub fn canonical_url(raw: &str) -> Result<String, HostError> {
    parse(raw).map(|h| h.base_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ollama's own table (envconfig/config_test.go, TestHost).
    #[test]
    fn ollama_host_cases() {
        let cases = [
            ("", "http://127.0.0.1:11434"),
            ("1.2.3.4", "http://1.2.3.4:11434"),
            (":1234", "http://:1234"),
            ("1.2.3.4:1234", "http://1.2.3.4:1234"),
            ("example.com", "http://example.com:11434"),
            ("example.com:1234", "http://example.com:1234"),
            (":0", "http://:0"),
            (":66000", "http://:11434"),
            (":-1", "http://:11434"),
            ("[::1]", "http://[::1]:11434"),
            ("[::]", "http://[::]:11434"),
            ("::1", "http://[::1]:11434"),
            ("[::1]:1337", "http://[::1]:1337"),
            (" 1.2.3.4 ", "http://1.2.3.4:11434"),
            ("\"1.2.3.4\"", "http://1.2.3.4:11434"),
            (" \" 1.2.3.4 \" ", "http://1.2.3.4:11434"),
            ("'1.2.3.4'", "http://1.2.3.4:11434"),
            ("http://1.2.3.4", "http://1.2.3.4:80"),
            ("http://1.2.3.4:4321", "http://1.2.3.4:4321"),
            ("https://1.2.3.4", "https://1.2.3.4:443"),
            ("https://1.2.3.4:4321", "https://1.2.3.4:4321"),
            (
                "https://example.com/ollama",
                "https://example.com:443/ollama",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).unwrap().to_string(), want, "input {input:?}");
        }
    }

    #[test]
    fn client_side_loopback() {
        assert_eq!(canonical_url("0.0.0.0").unwrap(), "http://127.0.0.1:11434");
        assert_eq!(canonical_url("::").unwrap(), "http://[::1]:11434");
        assert_eq!(canonical_url(":1234").unwrap(), "http://127.0.0.1:1234");
        assert_eq!(
            canonical_url("LOCALHOST").unwrap(),
            "http://localhost:11434"
        );
        assert_eq!(canonical_url("http://h/x/").unwrap(), "http://h:80/x");
    }

    #[test]
    fn bad_addresses() {
        assert!(parse("ftp://1.2.3.4").unwrap_err().0.contains("ftp"));
        assert!(parse("file:///etc/passwd").is_err());
        assert!(parse("1.2.3.4:abc").unwrap_err().0.contains("abc"));
        assert!(parse("bad host").is_err());
        let e = parse("a\nhttp://h\u{1b}[2J").unwrap_err().0;
        assert!(!e.contains('\n') && !e.contains('\u{1b}'), "{e:?}");
        assert!(e.contains("a\\nhttp://h\\u{1b}[2J"), "{e:?}");
        assert!(parse("exa$mple.com").is_err());
        assert!(parse("[::1").is_err());
        assert!(parse("http://u:p@h").is_err());
        assert!(
            parse("/'/").is_err(),
            "its URL would read back without the quote"
        );
        assert!(parse("http://h/a\"b").is_err());
    }

    #[test]
    fn names() {
        assert_eq!(
            parse("10.77.0.11").unwrap().default_name(),
            "ollama-10-77-0-11"
        );
        assert_eq!(
            parse("10.77.0.11:11435").unwrap().default_name(),
            "ollama-10-77-0-11-11435"
        );
        assert_eq!(parse("box.lan").unwrap().default_name(), "ollama-box-lan");
        assert_eq!(
            parse("[::1]").unwrap().default_name(),
            "ollama-0-0-0-0-0-0-0-1"
        );
        assert_eq!(
            parse("http://[FE80::A:1]:47105").unwrap().default_name(),
            "ollama-fe80-0-0-0-0-0-a-1-47105"
        );
    }

    #[test]
    fn an_ip_address_has_one_spelling() {
        for (input, want) in [
            ("[0:0::1]", "http://[::1]:11434"),
            ("http://[FE80:0000::0A:1]:8080", "http://[fe80::a:1]:8080"),
            ("[::ffff:7f00:1]", "http://[::ffff:127.0.0.1]:11434"),
        ] {
            assert_eq!(canonical_url(input).unwrap(), want, "input {input:?}");
        }
    }
}
