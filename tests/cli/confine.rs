//! Confinement of the subnet scanner, observed on the wire.
//!
//! Method: the lab's LAN namespace (where the shell runs) gets 10.77.0.1/16 on
//! br0 instead of /24, so that for the kernel every address of 10.77.0.0/16 —
//! including 10.77.0.0 and 10.77.0.255 — is an ordinary on-link unicast address,
//! and everything else leaves through br0 by the default route. Any connection
//! attempt the scanner makes to an address other than its own therefore shows on
//! br0 as an ARP request (or, once resolved, a TCP SYN), and one to its own
//! address as a SYN on lo. `tcpdump -i any -nn` inside the LAN namespace records
//! every packet while `discover CIDR` runs; the addresses the shell sent an ARP
//! request for or a SYN to are "touched". The test asserts that the touched set
//! is exactly the usable hosts of the requested subnet (never its network or
//! broadcast address, nothing outside) and that tcpdump dropped no packet.
//! Needs root, iproute2 and tcpdump (.ci/run installs it).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::lab::{self, Lab};
use crate::support::*;

/// Everything the shell in the LAN namespace touched while running `script`.
struct Capture {
    touched: BTreeSet<Ipv4Addr>,
    /// Packets from the LAN namespace to an address that is neither a SYN nor an ARP request.
    other: Vec<String>,
    packets: usize,
    dropped: String,
    run: Run,
}

fn capture(lab: &Lab, home: &Home, script: &str) -> Capture {
    // Forget earlier neighbour lookups: an address still being resolved gets no
    // new ARP request, so a probe to it would not show on the wire.
    let st = lab
        .command_in(lab.lan_ns(), "ip")
        .args(["neigh", "flush", "all"])
        .status()
        .unwrap();
    assert!(st.success());
    let mut td = lab.command_in(lab.lan_ns(), "tcpdump");
    td.args(["-i", "any", "-nn", "-l"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut tcpdump = td
        .spawn()
        .expect("tcpdump runs (apt-get install tcpdump; .ci/run installs it)");
    let mut err = BufReader::new(tcpdump.stderr.take().unwrap());
    // Wait until it captures ("data link type ..." may come first).
    let mut said = String::new();
    while !said.contains("listening on") {
        let mut l = String::new();
        if err.read_line(&mut l).unwrap() == 0 {
            panic!("tcpdump did not start: {said}");
        }
        said.push_str(&l);
    }
    let out = tcpdump.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(out).read_to_string(&mut s);
        s
    });

    let mut c = lab.command_in(lab.lan_ns(), BIN);
    scrub_env(&mut c, home);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = run_with(c, script);
    // Let the last packets reach the capture, then stop it (SIGTERM: it flushes
    // and prints its counters).
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child (`ip netns exec` exec'ed tcpdump: same pid).
    unsafe { libc::kill(tcpdump.id() as i32, libc::SIGTERM) };
    let _ = tcpdump.wait();
    let mut counters = String::new();
    let _ = err.read_to_string(&mut counters);
    let text = reader.join().unwrap();

    let me = lab.lan_ip().to_string();
    let arp =
        regex::Regex::new(r"ARP, Request who-has (\d+\.\d+\.\d+\.\d+) tell (\d+\.\d+\.\d+\.\d+)")
            .unwrap();
    let ip =
        regex::Regex::new(r"IP (\d+\.\d+\.\d+\.\d+)(?:\.\d+)? > (\d+\.\d+\.\d+\.\d+)(?:\.\d+)?: ")
            .unwrap();
    let syn = regex::Regex::new(r"Flags \[S\]").unwrap();
    let mut touched = BTreeSet::new();
    let mut other = Vec::new();
    let mut packets = 0;
    for l in text.lines() {
        packets += 1;
        if let Some(m) = arp.captures(l) {
            if m[2] == *me {
                touched.insert(m[1].parse().unwrap());
            }
        } else if let Some(m) = ip.captures(l) {
            // Only what the shell's namespace sends (not the hosts' replies).
            if m[1] != *me && !m[1].starts_with("127.") {
                continue;
            }
            let dst: Ipv4Addr = m[2].parse().unwrap();
            if dst.is_multicast() {
                // The kernel's own IGMP reports; no TCP connect can go there.
                continue;
            }
            if syn.is_match(l) || !l.contains("Flags [") {
                // A connection attempt, or a packet that is not TCP at all.
                touched.insert(dst);
                if !syn.is_match(l) {
                    other.push(l.to_string());
                }
            }
        }
    }
    let dropped = counters
        .lines()
        .find(|l| l.contains("dropped by kernel"))
        .unwrap_or("")
        .to_string();
    Capture {
        touched,
        other,
        packets,
        dropped,
        run,
    }
}

fn range(a: [u8; 4], b: [u8; 4]) -> BTreeSet<Ipv4Addr> {
    (u32::from(Ipv4Addr::from(a))..=u32::from(Ipv4Addr::from(b)))
        .map(Ipv4Addr::from)
        .collect()
}

#[test]
fn discover_touches_only_the_requested_subnet() {
    let _one = lab::one_at_a_time();
    let mut lab = Lab::new(3).expect("the network lab needs root and `ip netns` (iproute2)");
    // Simulated Ollama on hosts 1 and 2, so the scan also verifies and finds nodes.
    for i in [1, 2] {
        let ns = lab.host_ns(i).to_string();
        let ip = lab.host_ip(i);
        let mut c = lab.command_in(&ns, BIN);
        c.args(["sim-serve", "--bind", &ip.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        lab.spawn_in(&ns, c).unwrap();
        lab.wait_port(&ns, ip, 11434).unwrap();
    }
    // The LAN namespace's address becomes a /16 (see the module docs).
    let lan = lab.lan_ns().to_string();
    for args in [
        &["addr", "del", "10.77.0.1/24", "dev", "br0"][..],
        &["addr", "add", "10.77.0.1/16", "dev", "br0"],
        &["route", "replace", "default", "dev", "br0"],
    ] {
        let st = lab.command_in(&lan, "ip").args(args).status().unwrap();
        assert!(st.success(), "ip {args:?}");
    }

    let started = Instant::now();
    let home = Home::new();
    let cap = capture(&lab, &home, "discover 10.77.0.0/24\n");
    cap.run.ok().out_has("found 2 Ollama nodes");
    let want = range([10, 77, 0, 1], [10, 77, 0, 254]);
    let outside: Vec<_> = cap.touched.difference(&want).collect();
    let missed: Vec<_> = want.difference(&cap.touched).collect();
    eprintln!(
        "confinement: discover 10.77.0.0/24 touched {} addresses ({}..{}), {} outside the subnet, \
         {} usable addresses not seen; {} packets captured, tcpdump: {}",
        cap.touched.len(),
        cap.touched.first().unwrap(),
        cap.touched.last().unwrap(),
        outside.len(),
        missed.len(),
        cap.packets,
        cap.dropped
    );
    assert!(
        outside.is_empty(),
        "touched outside 10.77.0.1-254: {outside:?}"
    );
    assert!(!cap.touched.contains(&Ipv4Addr::new(10, 77, 0, 0)));
    assert!(!cap.touched.contains(&Ipv4Addr::new(10, 77, 0, 255)));
    assert!(missed.is_empty(), "the capture missed probes: {missed:?}");
    assert!(cap.other.is_empty(), "non-TCP traffic: {:?}", cap.other);
    assert!(
        cap.dropped.starts_with("0 packets dropped"),
        "{}",
        cap.dropped
    );

    // A subnet that does not start on a /24 boundary: 10.77.0.16/28 is .17-.30.
    let home = Home::new();
    let cap = capture(&lab, &home, "discover 10.77.0.16/28\n");
    cap.run.ok();
    let want = range([10, 77, 0, 17], [10, 77, 0, 30]);
    eprintln!(
        "confinement: discover 10.77.0.16/28 touched {} addresses {:?}..{:?} ({:.1}s for both scans)",
        cap.touched.len(),
        cap.touched.first(),
        cap.touched.last(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(cap.touched, want, "touched {:?}", cap.touched);
    assert!(
        cap.dropped.starts_with("0 packets dropped"),
        "{}",
        cap.dropped
    );
    // Leave the kernel's shared neighbour table clean for the next lab.
    let _ = lab
        .command_in(lab.lan_ns(), "ip")
        .args(["neigh", "flush", "all"])
        .status();
}
