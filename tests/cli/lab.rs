//! Isolated network lab built from Linux network namespaces (test support).
//!
//! Topology (nothing is ever attached to the root namespace):
//!
//! ```text
//!   <prefix>-lan : lo up, br0 10.77.0.1/24 (bridge), default route dev br0,
//!                  vh1..vhN = bridge ports
//!   <prefix>-hI  : lo up, eth0 10.77.0.(10+I)/24, default via 10.77.0.1
//!                  (eth0 <-veth-> vhI in the lan namespace)
//! ```
//!
//! `<prefix>` is `sl<pid>x<counter>`, unique per `Lab` in this process.
//! Every namespace also gets `/etc/netns/<ns>/resolv.conf` with
//! `nameserver 127.0.0.1`, so DNS lookups made by processes started through
//! `ip netns exec` stay inside the namespace.
//!
//! Requires root and iproute2 (`ip`); `wait_port` additionally needs `python3`.
//! Everything created is torn down in `Drop` (which also runs on panic unwind).
//! If the test process is SIGKILLed, leftovers can be found by the `sl<pid>x`
//! prefix and removed by hand (`ip netns del NAME; rm -r /etc/netns/NAME`).

#![allow(dead_code)]

use anyhow::{anyhow, bail, Context, Result};
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);
/// `ip netns add` sets up the /run/netns mount on first use; concurrent first
/// uses can race, so namespace creation is serialised within the process.
static NETNS_ADD_LOCK: Mutex<()> = Mutex::new(());

/// Held by every test that builds a lab: labs must not run concurrently (scans
/// and fault timings would depend on load, and the kernel's neighbour table is
/// shared by all namespaces).
static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Take the lab lock (poisoning from an earlier failed test is ignored).
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

const LAN_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const PREFIX_LEN: u8 = 24;
const BRIDGE_MAC: &str = "02:77:00:00:00:01";
/// host i gets 10.77.0.(10+i); keep below .255.
const MAX_HOSTS: usize = 244;
const WAIT_PORT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Lab {
    prefix: String,
    lan: String,
    hosts: Vec<String>,
    /// Namespaces successfully created by this lab (only these are deleted).
    created_ns: Vec<String>,
    /// /etc/netns/<ns> directories created by this lab.
    etc_dirs: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Lab {
    /// Build a lab with `hosts` host namespaces (see module docs).
    ///
    /// The struct is built incrementally, so an error (or panic) half-way
    /// through tears down whatever was already created.
    pub fn new(hosts: usize) -> Result<Lab> {
        if hosts > MAX_HOSTS {
            bail!("Lab::new: at most {MAX_HOSTS} hosts supported, got {hosts}");
        }
        check_root()?;
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("sl{}x{}", std::process::id(), n);
        let mut lab = Lab {
            lan: format!("{prefix}-lan"),
            hosts: (1..=hosts).map(|i| format!("{prefix}-h{i}")).collect(),
            prefix,
            created_ns: Vec::new(),
            etc_dirs: Vec::new(),
            children: Vec::new(),
        };
        lab.setup()?; // on Err, `lab` is dropped here and cleans up.
        Ok(lab)
    }

    fn setup(&mut self) -> Result<()> {
        // --- lan namespace with the bridge ---
        let lan = self.lan.clone();
        self.add_ns(&lan)?;
        ip(&["-n", &lan, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &lan,
            "link",
            "add",
            "br0",
            "address",
            BRIDGE_MAC,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        ip(&[
            "-n",
            &lan,
            "addr",
            "add",
            &format!("{LAN_IP}/{PREFIX_LEN}"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &lan, "link", "set", "br0", "up"])?;
        ip(&["-n", &lan, "route", "add", "default", "dev", "br0"])?;

        // --- hosts ---
        for i in 1..=self.hosts.len() {
            let host = self.hosts[i - 1].clone();
            let vh = format!("vh{i}");
            self.add_ns(&host)?;
            ip(&["-n", &host, "link", "set", "lo", "up"])?;
            // Created directly inside the target namespaces: no interface
            // ever exists in the root namespace.
            ip(&[
                "link", "add", "eth0", "netns", &host, "type", "veth", "peer", "name", &vh,
                "netns", &lan,
            ])?;
            ip(&["-n", &lan, "link", "set", &vh, "master", "br0"])?;
            ip(&["-n", &lan, "link", "set", &vh, "up"])?;
            ip(&[
                "-n",
                &host,
                "addr",
                "add",
                &format!("{}/{PREFIX_LEN}", self.host_ip(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &host, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &host,
                "route",
                "add",
                "default",
                "via",
                &LAN_IP.to_string(),
                "dev",
                "eth0",
            ])?;
        }
        Ok(())
    }

    fn add_ns(&mut self, ns: &str) -> Result<()> {
        {
            let _g = NETNS_ADD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            ip(&["netns", "add", ns]).with_context(|| {
                format!(
                    "creating namespace {ns} (if it already exists it is a leftover \
                     of an earlier process with the same pid; remove it by hand)"
                )
            })?;
        }
        self.created_ns.push(ns.to_string());
        let dir = PathBuf::from("/etc/netns").join(ns);
        std::fs::create_dir_all("/etc/netns").context("mkdir -p /etc/netns")?;
        // create_dir (not _all): refuse to adopt a directory we did not create.
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        self.etc_dirs.push(dir.clone());
        let f = dir.join("resolv.conf");
        std::fs::write(&f, "nameserver 127.0.0.1\n")
            .with_context(|| format!("writing {}", f.display()))?;
        Ok(())
    }

    /// Unique prefix of every namespace name of this lab (`sl<pid>x<n>`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn lan_ns(&self) -> &str {
        &self.lan
    }

    /// Host namespace name, 1-based. Panics if `i` is out of range.
    pub fn host_ns(&self, i: usize) -> &str {
        assert!(
            (1..=self.hosts.len()).contains(&i),
            "host index {i} out of range 1..={}",
            self.hosts.len()
        );
        &self.hosts[i - 1]
    }

    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// All namespace names of this lab (lan first, then hosts).
    pub fn namespaces(&self) -> Vec<String> {
        std::iter::once(self.lan.clone())
            .chain(self.hosts.iter().cloned())
            .collect()
    }

    /// 10.77.0.(10+i)
    pub fn host_ip(&self, i: usize) -> Ipv4Addr {
        assert!((1..=MAX_HOSTS).contains(&i), "host index {i} out of range");
        Ipv4Addr::new(10, 77, 0, (10 + i) as u8)
    }

    /// The lan namespace's address on br0 (10.77.0.1).
    pub fn lan_ip(&self) -> Ipv4Addr {
        LAN_IP
    }

    /// Add `cidr` (e.g. "10.88.0.5/24") to host i's eth0. For prefixes up to
    /// /30, the first address of that subnet ("10.88.0.1/24") is also added to
    /// the lan namespace's br0 (if not already there), so the lan namespace
    /// gets an interface address in the new subnet. `cidr` must not be that
    /// first address itself.
    pub fn add_host_addr(&self, i: usize, cidr: &str) -> Result<()> {
        let (addr, len) = parse_cidr(cidr)?;
        let host = self.host_ns(i).to_string();
        let gw = if len <= 30 {
            let mask = u32::MAX << (32 - len);
            let gw = Ipv4Addr::from((u32::from(addr) & mask) + 1);
            if gw == addr {
                bail!(
                    "add_host_addr({i}, {cidr}): {addr} is the first address of the subnet, \
                     which is reserved for the lan namespace's br0"
                );
            }
            Some(gw)
        } else {
            None
        };
        ip(&[
            "-n",
            &host,
            "addr",
            "add",
            &format!("{addr}/{len}"),
            "dev",
            "eth0",
        ])?;
        if let Some(gw) = gw {
            let out = ip(&["-n", &self.lan, "-4", "-o", "addr", "show", "dev", "br0"])?;
            let needle = format!("inet {gw}/");
            if !out.contains(&needle) {
                self.add_lan_addr(&format!("{gw}/{len}"))?;
            }
        }
        Ok(())
    }

    /// Add `cidr` to the lan namespace's br0.
    pub fn add_lan_addr(&self, cidr: &str) -> Result<()> {
        let (addr, len) = parse_cidr(cidr)?;
        ip(&[
            "-n",
            &self.lan,
            "addr",
            "add",
            &format!("{addr}/{len}"),
            "dev",
            "br0",
        ])?;
        Ok(())
    }

    /// `ip netns exec <ns> <program>`; add arguments/env/stdio as usual.
    /// Panics if `ns` is not one of this lab's namespaces (guard against
    /// accidentally running something in a foreign namespace).
    pub fn command_in(&self, ns: &str, program: impl AsRef<OsStr>) -> Command {
        self.assert_own_ns(ns);
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }

    /// Spawn a long-running child in namespace `ns`; the lab kills it
    /// (SIGKILL + wait) on drop. Returns its pid (`ip netns exec` execs the
    /// program, so this is the program's own pid).
    ///
    /// If `cmd` came from `command_in(ns, ..)` it is spawned as is (its stdio
    /// settings are kept). Any other command is re-wrapped into
    /// `ip netns exec ns ...`, keeping program, args, env changes and
    /// current_dir, but NOT stdio (std offers no getters): stdin is then
    /// null and stdout/stderr are inherited. Prefer `command_in`.
    pub fn spawn_in(&mut self, ns: &str, cmd: Command) -> Result<u32> {
        self.assert_own_ns(ns);
        let mut cmd = match wrapped_ns(&cmd) {
            Some(inner) if inner == ns => cmd,
            Some(inner) => bail!("spawn_in({ns}): command already targets namespace {inner}"),
            None => {
                let mut c = self.command_in(ns, cmd.get_program());
                c.args(cmd.get_args());
                for (k, v) in cmd.get_envs() {
                    match v {
                        Some(v) => c.env(k, v),
                        None => c.env_remove(k),
                    };
                }
                if let Some(d) = cmd.get_current_dir() {
                    c.current_dir(d);
                }
                c.stdin(Stdio::null());
                c
            }
        };
        let desc = describe(&cmd);
        let mut child = cmd.spawn().with_context(|| format!("spawning `{desc}`"))?;
        let pid = child.id();
        // `spawn` returns before `ip` has entered the namespace and exec'ed the
        // program; wait for that so the caller gets a pid that really is the
        // program, running in `ns` (and an error if the exec failed).
        let program = cmd.get_args().nth(3).unwrap_or_default().to_os_string();
        let entered = wait_entered(&mut child, &program);
        self.children.push(child);
        entered.with_context(|| format!("spawn_in({ns}): `{desc}`"))?;
        Ok(pid)
    }

    /// SIGKILL + reap one spawned child. No-op for unknown pids.
    pub fn kill(&mut self, pid: u32) {
        if let Some(pos) = self.children.iter().position(|c| c.id() == pid) {
            let mut child = self.children.swap_remove(pos);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Poll (inside `ns`, via one python3 subprocess) until `addr:port`
    /// accepts TCP connections; error after ~10 s.
    pub fn wait_port(&self, ns: &str, addr: Ipv4Addr, port: u16) -> Result<()> {
        const SCRIPT: &str = r#"
import socket, sys, time
a, p, t = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + t
while True:
    try:
        socket.create_connection((a, p), timeout=0.5).close()
        sys.exit(0)
    except OSError as e:
        last = e
    if time.monotonic() > deadline:
        sys.stderr.write("last error: %r\n" % (last,))
        sys.exit(1)
    time.sleep(0.02)
"#;
        let mut cmd = self.command_in(ns, "python3");
        cmd.args(["-c", SCRIPT])
            .arg(addr.to_string())
            .arg(port.to_string())
            .arg(WAIT_PORT_TIMEOUT.as_secs_f64().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("wait_port: spawning `{}`", describe(&cmd)))?;
        // Hard bound in case python itself hangs.
        let hard = Instant::now() + WAIT_PORT_TIMEOUT + Duration::from_secs(5);
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if Instant::now() > hard {
                let _ = child.kill();
                let _ = child.wait();
                bail!("wait_port({ns}, {addr}:{port}): poller did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if status.success() {
            return Ok(());
        }
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        Err(anyhow!(
            "wait_port({ns}, {addr}:{port}): not accepting connections after {:?} ({status}): {}",
            WAIT_PORT_TIMEOUT,
            err.trim()
        ))
    }

    /// Run `f` on a new thread that has joined network namespace `ns` (only that
    /// thread moves; sockets it opens live in `ns`). Lets the test process talk
    /// to the lab's hosts without spawning a helper process.
    pub fn in_ns<T: Send + 'static>(
        &self,
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        use std::os::fd::AsRawFd;
        self.assert_own_ns(ns);
        let path = PathBuf::from("/run/netns").join(ns);
        let file =
            std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
        std::thread::spawn(move || {
            // SAFETY: setns on a valid namespace fd; it changes this thread only.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(anyhow!("setns: {}", std::io::Error::last_os_error()));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow!("in_ns({ns}): the thread panicked"))?
    }

    /// `GET path` from `addr:port` inside namespace `ns`; the response body.
    pub fn http_get(&self, ns: &str, addr: Ipv4Addr, port: u16, path: &str) -> Result<String> {
        let path = path.to_string();
        self.in_ns(ns, move || -> Result<String> {
            use std::io::Write;
            let sa = std::net::SocketAddr::from((addr, port));
            let mut s = std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
        })?
    }

    fn assert_own_ns(&self, ns: &str) {
        assert!(
            ns == self.lan || self.hosts.iter().any(|h| h == ns),
            "namespace {ns:?} does not belong to lab {}",
            self.prefix
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Hosts first, lan last (deleting a namespace destroys its veth ends).
        for ns in self.created_ns.drain(..).rev() {
            for attempt in 1..=3 {
                match ip(&["netns", "del", &ns]) {
                    Ok(_) => break,
                    Err(e) if attempt == 3 => eprintln!("lab: failed to delete netns {ns}: {e:#}"),
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        for dir in self.etc_dirs.drain(..) {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    eprintln!("lab: failed to remove {}: {e}", dir.display())
                }
                _ => {}
            }
        }
    }
}

/// Run `ip <args>`; Ok(stdout) on success, Err with command line + stderr.
fn ip(args: &[&str]) -> Result<String> {
    let cmdline = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow!("`{cmdline}` failed: `ip` (iproute2) not found in PATH")
            } else {
                anyhow!("`{cmdline}` failed to start: {e}")
            }
        })?;
    if !out.status.success() {
        bail!(
            "`{cmdline}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check_root() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("Lab: reading /proc/self/status to check for root")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .ok_or_else(|| anyhow!("Lab: no Uid line in /proc/self/status"))?;
    if euid != "0" {
        bail!("Lab: network namespaces need root (effective uid is {euid})");
    }
    Ok(())
}

fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u8)> {
    let (a, l) = cidr
        .split_once('/')
        .ok_or_else(|| anyhow!("bad CIDR {cidr:?}: expected a.b.c.d/len"))?;
    let addr: Ipv4Addr = a.parse().with_context(|| format!("bad CIDR {cidr:?}"))?;
    let len: u8 = l.parse().with_context(|| format!("bad CIDR {cidr:?}"))?;
    if !(1..=32).contains(&len) {
        bail!("bad CIDR {cidr:?}: prefix length must be 1..=32");
    }
    Ok((addr, len))
}

/// Wait (bounded) until `child` (an `ip netns exec` process) has switched
/// network namespace and exec'ed `program`.
fn wait_entered(child: &mut Child, program: &OsStr) -> Result<()> {
    let pid = child.id();
    let own_ns = std::fs::read_link("/proc/self/ns/net").context("readlink /proc/self/ns/net")?;
    let base = std::path::Path::new(program)
        .file_name()
        .unwrap_or(program)
        .to_string_lossy()
        .into_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(st) = child.try_wait()? {
            bail!("child {pid} exited right away ({st})");
        }
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let comm = comm.trim_end();
        // After exec, comm is no longer "ip" (unless the program is called ip).
        let execed = base == "ip" || (!comm.is_empty() && comm != "ip");
        if ns.is_some_and(|n| n != own_ns) && execed {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("child {pid} did not enter the namespace / exec within 5s (comm {comm:?})");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// If `cmd` is `ip netns exec <ns> ...`, return `<ns>`.
fn wrapped_ns(cmd: &Command) -> Option<String> {
    if cmd.get_program() != "ip" {
        return None;
    }
    let args: Vec<&OsStr> = cmd.get_args().take(3).collect();
    match args.as_slice() {
        [a, b, ns] if *a == "netns" && *b == "exec" => Some(ns.to_string_lossy().into_owned()),
        _ => None,
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = OsString::from(cmd.get_program());
    for a in cmd.get_args() {
        s.push(" ");
        s.push(a);
    }
    s.to_string_lossy().into_owned()
}
