//! LAN discovery: subnet enumeration and a bounded-concurrency TCP port scan.
//!
//! The scan only does a TCP connect (dropped immediately); whether an open port
//! really is an Ollama server is decided by the caller's `verify` callback.

use futures_util::stream::{self, StreamExt};
use ipnet::Ipv4Net;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Smallest prefix length (largest subnet) `hosts` will enumerate.
pub(crate) const MIN_PREFIX: u8 = 16;

/// Parse a CIDR like `"10.77.0.0/24"`; a bare IPv4 address means `/32`.
///
/// Host bits are allowed and normalized away: `"10.0.0.1/24"` yields `10.0.0.0/24`.
/// IPv6 input is rejected (IPv6 subnets are not scanned). Errors are one line
/// and name the input.
pub fn parse_cidr(s: &str) -> Result<Ipv4Net, CidrError> {
    let t = s.trim();
    let (addr, prefix) = match t.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (t, None),
    };
    let ip = match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip,
        Ok(IpAddr::V6(_)) => return Err(CidrError::Ipv6(t.to_string())),
        Err(_) => return Err(CidrError::NotIpv4(t.to_string())),
    };
    let len = match prefix {
        None => 32,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= 32)
            .ok_or_else(|| CidrError::Prefix(t.to_string()))?,
    };
    let net = Ipv4Net::new(ip, len).map_err(|_| CidrError::Prefix(t.to_string()))?;
    Ok(net.trunc())
}

/// Why a subnet does not parse (each names the input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not a valid CIDR (expected an IPv4 address such as 10.0.0.0/24)")]
    NotIpv4(String),
    #[error("`{0}` is an IPv6 subnet; IPv6 subnets are not scanned")]
    Ipv6(String),
    #[error("`{0}` is not a valid CIDR (prefix length must be 0-32)")]
    Prefix(String),
}

/// A subnet larger than [`hosts`] enumerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("`{net}` is larger than a /{MIN_PREFIX} ({size} addresses); scan smaller subnets", net = .0, size = 1u64 << (32 - .0.prefix_len()))]
pub struct TooLarge(pub Ipv4Net);

/// The addresses to probe in `net`: for prefixes up to /30 the usable hosts
/// (network and broadcast addresses excluded), for /31 both addresses, for /32
/// the single address. Subnets larger than a /16 are refused.
pub fn hosts(net: &Ipv4Net) -> Result<Vec<Ipv4Addr>, TooLarge> {
    let net = net.trunc();
    let len = net.prefix_len();
    if len < MIN_PREFIX {
        return Err(TooLarge(net));
    }
    let (first, last) = (u32::from(net.network()), u32::from(net.broadcast()));
    let (lo, hi) = if len <= 30 {
        (first + 1, last - 1)
    } else {
        (first, last)
    };
    Ok((lo..=hi).map(Ipv4Addr::from).collect())
}

/// Parse a comma-separated CIDR list (`SYNAPTICLLAMAS_SUBNETS` style): entries
/// are trimmed, empty entries skipped; the first invalid entry is the error.
pub(crate) fn parse_cidr_list(s: &str) -> Result<Vec<Ipv4Net>, CidrError> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(parse_cidr)
        .collect()
}

/// The /24 around the source address the kernel would use to reach
/// 10.255.255.255. Found by `connect`ing a UDP socket, which is only a route
/// lookup: no packet is sent. `None` if there is no route or the source
/// address is unspecified or loopback.
pub(crate) fn local_subnet() -> Option<Ipv4Net> {
    let sock = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    // Needed only if 10.255.255.255 is a local broadcast address (a 10/8 LAN).
    let _ = sock.set_broadcast(true);
    sock.connect((Ipv4Addr::new(10, 255, 255, 255), 9)).ok()?;
    match sock.local_addr().ok()?.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() && !ip.is_loopback() => {
            Some(Ipv4Net::new(ip, 24).ok()?.trunc())
        }
        _ => None,
    }
}

/// Maximum number of concurrent probes, from the `RLIMIT_NOFILE` soft limit:
/// `(soft - 64) / 2` clamped to `[16, 4096]` (each probe may hold its connect
/// socket or the verifier's connection). The soft limit is first raised to the
/// hard limit when possible, and the raised value is used.
pub(crate) fn concurrency_limit() -> usize {
    // SAFETY: rlimit is plain integers; all-zero is a valid value.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        lim.rlim_cur = 1024;
    } else {
        // macOS refuses RLIM_INFINITY for NOFILE, hence the 10240 fallback.
        for target in [lim.rlim_max, lim.rlim_max.min(10240)] {
            let raised = libc::rlimit {
                rlim_cur: target,
                rlim_max: lim.rlim_max,
            };
            // SAFETY: `raised` is a valid rlimit that does not exceed the hard limit.
            if target > lim.rlim_cur
                && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0
            {
                lim.rlim_cur = target;
                break;
            }
        }
    }
    let soft = usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX);
    (soft.saturating_sub(64) / 2).clamp(16, 4096)
}

/// Scan parameters.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    pub port: u16,
    pub connect_timeout: Duration,
    /// Probes (connect + verification) in flight at once; 0 is treated as 1.
    pub concurrency: usize,
}

/// Outcome of [`scan`].
#[derive(Debug)]
pub struct ScanReport<T> {
    /// Addresses probed.
    pub probed: usize,
    /// Addresses that accepted the TCP connection.
    pub open: usize,
    /// Verified endpoints, sorted by address.
    pub found: Vec<(SocketAddr, T)>,
    pub elapsed: Duration,
}

/// Probe `addrs` on `opts.port` with at most `opts.concurrency` probes in
/// flight. Each probe is a TCP connect bounded by `opts.connect_timeout`; the
/// socket is dropped straight away and, if it connected, `verify` runs at once
/// in the same slot (the verifier opens its own connection and applies its own
/// timeout). `on_progress` is called once per address after its connect attempt.
pub async fn scan<T, F, Fut>(
    addrs: Vec<Ipv4Addr>,
    opts: &ScanOptions,
    verify: F,
    on_progress: impl Fn() + Send + Sync,
) -> ScanReport<T>
where
    F: Fn(SocketAddr) -> Fut + Send + Sync,
    Fut: Future<Output = Option<T>> + Send,
    T: Send,
{
    let start = Instant::now();
    let probed = addrs.len();
    let (port, timeout) = (opts.port, opts.connect_timeout);
    let (verify, on_progress) = (&verify, &on_progress);
    let mut probes = stream::iter(addrs)
        .map(|ip| async move {
            let addr = SocketAddr::from((ip, port));
            // The stream (if any) is dropped at the end of this statement.
            let open = matches!(
                tokio::time::timeout(timeout, TcpStream::connect(addr)).await,
                Ok(Ok(_))
            );
            on_progress();
            if !open {
                return (false, None);
            }
            (true, verify(addr).await.map(|t| (addr, t)))
        })
        .buffer_unordered(opts.concurrency.max(1));
    let (mut open, mut found) = (0, Vec::new());
    while let Some((was_open, hit)) = probes.next().await {
        open += usize::from(was_open);
        found.extend(hit);
    }
    found.sort_by_key(|(addr, _)| *addr);
    ScanReport {
        probed,
        open,
        found,
        elapsed: start.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    use tokio::net::TcpListener;

    fn n(s: &str) -> Ipv4Net {
        parse_cidr(s).unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn h(s: &str) -> Vec<Ipv4Addr> {
        hosts(&n(s)).unwrap()
    }
    fn err(s: &str) -> String {
        parse_cidr(s).unwrap_err().to_string()
    }

    #[test]
    fn enumerates_hosts() {
        assert_eq!(h("10.1.2.3"), [ip("10.1.2.3")]);
        assert_eq!(h("10.1.2.3/32"), [ip("10.1.2.3")]);
        assert_eq!(h("10.1.2.2/31"), [ip("10.1.2.2"), ip("10.1.2.3")]);
        assert_eq!(h("10.1.2.0/30"), [ip("10.1.2.1"), ip("10.1.2.2")]);
        let h24 = h("10.77.0.0/24");
        assert_eq!(h24.len(), 254);
        assert_eq!((h24[0], h24[253]), (ip("10.77.0.1"), ip("10.77.0.254")));
        assert_eq!(h("10.77.0.0/16").len(), 65534);
        let e = hosts(&n("10.0.0.0/8")).unwrap_err().to_string();
        assert!(e.contains("larger than a /16 (16777216 addresses)"), "{e}");
    }

    #[test]
    fn parses_and_rejects() {
        // Host bits are accepted and normalized to the network address.
        assert_eq!(n(" 10.0.0.1/24 ").to_string(), "10.0.0.0/24");
        let e = "`10.0.0.0/33` is not a valid CIDR (prefix length must be 0-32)";
        assert_eq!(err("10.0.0.0/33"), e);
        assert!(err("abc").contains("`abc` is not a valid CIDR"));
        assert!(err("10.0.0.0/x").contains("prefix length") && !err("").is_empty());
        assert!(err("::1/128").contains("IPv6 subnets are not scanned"));
        assert!(err("fe80::1").contains("IPv6"));
        let list = parse_cidr_list(" 10.0.0.0/24, ,192.168.1.7 ,").unwrap();
        assert_eq!(list, [n("10.0.0.0/24"), n("192.168.1.7/32")]);
        assert!(parse_cidr_list("").unwrap().is_empty());
        let e = parse_cidr_list("10.0.0.0/24, 1.2.3.4/40, nope")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`1.2.3.4/40`"), "{e}");
    }

    #[test]
    fn limits_and_local_subnet() {
        assert!((16..=4096).contains(&concurrency_limit()));
        // Route lookup only; nothing is sent.
        assert!(local_subnet().is_none_or(|net| net.prefix_len() == 24));
    }

    fn opts(port: u16) -> ScanOptions {
        let (connect_timeout, concurrency) = (Duration::from_millis(100), concurrency_limit());
        ScanOptions {
            port,
            connect_timeout,
            concurrency,
        }
    }

    #[tokio::test]
    async fn scan_finds_only_verified_listener() {
        let (a, b) = (ip("127.77.0.3"), ip("127.77.0.9"));
        let mut held = None;
        for _ in 0..50 {
            let l1 = TcpListener::bind((a, 0)).await.unwrap();
            let port = l1.local_addr().unwrap().port();
            if let Ok(l2) = TcpListener::bind((b, port)).await {
                held = Some((l1, l2, port));
                break;
            }
        }
        let (_l1, _l2, port) = held.expect("no common free port on .3 and .9");
        let (opts, addrs) = (opts(port), hosts(&n("127.77.0.0/28")).unwrap());
        let (progress, verified) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (p, v) = (progress.clone(), verified.clone());
        // Spawning also checks that the scan future is Send.
        let report = tokio::spawn(async move {
            let verify = move |sa: SocketAddr| {
                v.fetch_add(1, SeqCst);
                async move { (sa.ip() == IpAddr::V4(b)).then_some(()) }
            };
            scan(addrs, &opts, verify, move || _ = p.fetch_add(1, SeqCst)).await
        })
        .await
        .unwrap();
        println!("/28 loopback scan: {:?}", report.elapsed);
        assert_eq!((report.probed, report.open, report.found.len()), (14, 2, 1));
        assert_eq!(report.found[0].0, SocketAddr::from((b, port)));
        assert_eq!((progress.load(SeqCst), verified.load(SeqCst)), (14, 2));
    }

    #[tokio::test]
    async fn scan_of_a_slash_20_completes() {
        // Hold the port on the (unscanned) network address so no wildcard
        // listener can take it during the test.
        let guard = TcpListener::bind((ip("127.78.0.0"), 0)).await.unwrap();
        let opts = opts(guard.local_addr().unwrap().port());
        let addrs = hosts(&n("127.78.0.0/20")).unwrap();
        let progress = AtomicUsize::new(0);
        let on_progress = || _ = progress.fetch_add(1, SeqCst);
        let report = scan(addrs, &opts, |_| async { Some(()) }, on_progress).await;
        let (c, t) = (opts.concurrency, report.elapsed);
        println!("/20 loopback scan (concurrency {c}): {t:?}");
        assert_eq!((report.probed, report.open), (4094, 0));
        assert!(report.found.is_empty());
        assert_eq!(progress.load(SeqCst), 4094);
    }
}
