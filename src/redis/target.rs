//! Which Redis to use: `SYNAPTICLLAMAS_REDIS_URL`, else `SOLLOL_REDIS_URL`, else
//! `REDIS_URL`, else the settings (`redis_host`, `redis_port`, `redis_db`,
//! `redis_password`). The password is used, never shown.

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use crate::config::effective::{Effective, Flags, RedisAt};
use crate::config::env::Env;
use crate::config::settings::Settings;

/// Where the connection details came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Env(&'static str),
    Settings,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Env(name) => write!(f, "from {name}"),
            Source::Settings => write!(f, "from the settings"),
        }
    }
}

/// A Redis server to connect to.
#[derive(Clone)]
pub struct Target {
    pub info: ConnectionInfo,
    pub source: Source,
    /// `redis://host:port/db`, with no user name or password.
    pub shown: String,
    pub has_password: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("shown", &self.shown)
            .field("source", &self.source)
            .field("has_password", &self.has_password)
            .finish()
    }
}

impl Target {
    /// `redis://127.0.0.1:6379/0 (from SOLLOL_REDIS_URL, password set)`.
    pub fn describe(&self) -> String {
        let pw = if self.has_password {
            ", password set"
        } else {
            ""
        };
        format!("{} ({}{pw})", self.shown, self.source)
    }
}

/// A URL variable that cannot be used (its value is not repeated: it may hold a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: not a usable Redis URL ({why}); expected redis://[:PASSWORD@]HOST[:PORT][/DB]")]
pub struct TargetError {
    pub var: &'static str,
    pub why: String,
}

/// The Redis to use, looking up variables with `env` (empty values count as
/// unset); the precedence is [`Effective`]'s.
pub fn resolve(
    settings: &Settings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Target, TargetError> {
    let env = Env::from_vars(|k| env(k).map(Into::into));
    of(&Effective::resolve(settings, &Flags::default(), &env).redis)
}

/// The Redis the settings in force name.
pub fn of(at: &RedisAt) -> Result<Target, TargetError> {
    match at {
        RedisAt::Url { var, url } => from_url(var, url.trim()),
        RedisAt::Settings {
            host,
            port,
            db,
            password,
        } => Ok(from_settings(host, *port, *db, password.as_deref())),
    }
}

fn from_url(var: &'static str, url: &str) -> Result<Target, TargetError> {
    let bad = |why: String| TargetError { var, why };
    // The URL parser's reason ("invalid port number") says more than the
    // library's ("invalid client config"), and never repeats the URL.
    if let Err(e) = url::Url::parse(url) {
        return Err(bad(e.to_string()));
    }
    let info = url.into_connection_info().map_err(|e| {
        // The library's message never includes the URL; keep only its kind and detail.
        bad(e.detail().unwrap_or(e.category()).to_string())
    })?;
    let shown = shown(&info).ok_or_else(|| bad("only redis:// (TCP) URLs are supported".into()))?;
    Ok(Target {
        has_password: info.redis_settings().password().is_some(),
        info,
        source: Source::Env(var),
        shown,
    })
}

fn from_settings(host: &str, port: u16, db: u32, password: Option<&str>) -> Target {
    let mut redis = RedisConnectionInfo::default().set_db(i64::from(db));
    let password = password.filter(|p| !p.is_empty());
    if let Some(pw) = password {
        redis = redis.set_password(pw);
    }
    let host = if host.trim().is_empty() {
        "localhost".to_string()
    } else {
        host.trim().to_string()
    };
    let info = ConnectionAddr::Tcp(host, port)
        .into_connection_info()
        .expect("a TCP address converts whatever its host (redis does not check it)")
        .set_redis_settings(redis);
    let shown = shown(&info).unwrap_or_default();
    Target {
        info,
        source: Source::Settings,
        shown,
        has_password: password.is_some(),
    }
}

fn shown(info: &ConnectionInfo) -> Option<String> {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => {
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            Some(format!(
                "redis://{host}:{port}/{}",
                info.redis_settings().db()
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn settings_when_no_variable_is_set() {
        let s = Settings {
            redis_host: "10.77.0.9".into(),
            redis_port: 6380,
            redis_db: 2,
            redis_password: Some("hunter2".into()),
            ..Settings::default()
        };
        let t = resolve(&s, env(&[("REDIS_URL", "  ")])).unwrap();
        assert_eq!(t.source, Source::Settings);
        assert_eq!(t.shown, "redis://10.77.0.9:6380/2");
        assert!(t.has_password);
        assert_eq!(t.info.redis_settings().password(), Some("hunter2"));
        assert!(!t.describe().contains("hunter2"));
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[test]
    fn variables_in_order_of_strength() {
        let s = Settings::default();
        let t = resolve(
            &s,
            env(&[
                ("REDIS_URL", "redis://127.0.0.3:3"),
                ("SOLLOL_REDIS_URL", "redis://127.0.0.2:2"),
            ]),
        )
        .unwrap();
        assert_eq!(t.source, Source::Env("SOLLOL_REDIS_URL"));
        assert_eq!(t.shown, "redis://127.0.0.2:2/0");
        let t = resolve(
            &s,
            env(&[
                ("SOLLOL_REDIS_URL", "redis://127.0.0.2:2"),
                ("SYNAPTICLLAMAS_REDIS_URL", "redis://:pw@127.0.0.1:1/3"),
            ]),
        )
        .unwrap();
        assert_eq!(t.source, Source::Env("SYNAPTICLLAMAS_REDIS_URL"));
        assert_eq!(t.shown, "redis://127.0.0.1:1/3");
        assert!(t.has_password);
        assert_eq!(
            t.describe(),
            "redis://127.0.0.1:1/3 (from SYNAPTICLLAMAS_REDIS_URL, password set)"
        );
    }

    #[test]
    fn a_bad_url_names_the_variable_and_not_its_value() {
        let e = resolve(
            &Settings::default(),
            env(&[("REDIS_URL", "http://user:s3cret@host/")]),
        )
        .unwrap_err();
        assert_eq!(e.var, "REDIS_URL");
        assert!(e
            .to_string()
            .starts_with("REDIS_URL: not a usable Redis URL"));
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = resolve(
            &Settings::default(),
            env(&[("REDIS_URL", "redis://:s3cret@127.0.0.1:99999/0")]),
        )
        .unwrap_err();
        assert_eq!(e.why, "invalid port number");
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    #[test]
    fn an_empty_password_is_no_password() {
        let s = Settings {
            redis_password: Some(String::new()),
            ..Settings::default()
        };
        let t = resolve(&s, env(&[])).unwrap();
        assert!(!t.has_password);
        assert_eq!(t.shown, "redis://localhost:6379/0");
    }
}
