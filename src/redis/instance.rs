//! Who this process is, as SOLLOL names its instances: `hostname_pid_8hex`.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// This machine's host name ("unknown" if it has none).
pub fn hostname() -> String {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
        // when the name fits, and we stop at the first NUL either way.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        match (rc, std::str::from_utf8(&buf[..end])) {
            (0, Ok(s)) if !s.is_empty() => s.to_string(),
            _ => "unknown".to_string(),
        }
    })
    .clone()
}

/// A random 64-bit value (the standard library's per-process hash keys).
pub(crate) fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// This process's instance id, the same for its whole life.
pub fn id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        format!(
            "{}_{}_{:08x}",
            hostname(),
            std::process::id(),
            random_u64() as u32
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn shape() {
        let id = super::id();
        let parts: Vec<&str> = id.rsplitn(3, '_').collect();
        assert_eq!(parts.len(), 3, "{id}");
        assert_eq!(parts[0].len(), 8);
        assert_eq!(parts[1], std::process::id().to_string());
        assert_eq!(super::id(), id);
    }
}
