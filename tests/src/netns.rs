//! Network namespaces for the fault tests (../shared/recipes/network-faults.md): a server
//! namespace and "site" namespaces joined to it by veth pairs with private 10.77.x.y addresses,
//! processes started inside them with `ip netns exec`, and the faults (link down, nftables loss,
//! tbf bandwidth caps). Traffic stays inside the namespaces the test made.
//!
//! Everything is cleaned up by `Drop` guards, also when a test panics: [`Proc`] kills its
//! process, [`Netns`] deletes its namespace (declare processes *after* the namespaces they run
//! in, so they are dropped first). Namespaces left behind by a killed test run (named
//! `rk<pid>-…` after a process that no longer exists) are deleted when the next one starts.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Run a command to completion; error with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `Err(reason)` when this machine cannot make network namespaces (not root, no `ip`).
pub fn available() -> std::result::Result<(), String> {
    let name = format!(
        "rk{}-probe{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    match run("ip", &["netns", "add", &name]) {
        Ok(_) => {
            let _ = run("ip", &["netns", "del", &name]);
            Ok(())
        }
        Err(e) => Err(format!("`ip netns add` refused ({e})")),
    }
}

/// Whether `nft` is installed.
pub fn have_nft() -> bool {
    Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Delete namespaces `rk<pid>-…` whose creating process is gone.
fn delete_stale() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix("rk")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Result<Netns> {
        delete_stale();
        let name = format!(
            "rk{}-{}{}",
            std::process::id(),
            tag,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS…`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Run a program inside the namespace to completion.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut a = vec!["netns", "exec", self.name.as_str(), program];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// A `Command` that runs `program` inside the namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Join `self` and `other` with a veth pair: `self_if`/`self_ip` here, `other_if`/`other_ip`
    /// there (addresses with prefix, e.g. "10.77.1.1/24").
    pub fn veth(
        &self,
        self_if: &str,
        self_ip: &str,
        other: &Netns,
        other_if: &str,
        other_ip: &str,
    ) -> Result<()> {
        run(
            "ip",
            &[
                "link",
                "add",
                self_if,
                "netns",
                &self.name,
                "type",
                "veth",
                "peer",
                "name",
                other_if,
                "netns",
                &other.name,
            ],
        )?;
        self.ip(&["addr", "add", self_ip, "dev", self_if])?;
        other.ip(&["addr", "add", other_ip, "dev", other_if])?;
        self.ip(&["link", "set", self_if, "up"])?;
        other.ip(&["link", "set", other_if, "up"])?;
        Ok(())
    }

    /// Put an interface down (an outage without FIN: nothing leaves or arrives) or up.
    pub fn link(&self, ifname: &str, up: bool) -> Result<()> {
        self.ip(&["link", "set", ifname, if up { "up" } else { "down" }])
            .map(drop)
    }

    /// Drop `percent`% of arriving UDP at random (nftables on the input hook).
    pub fn udp_loss(&self, percent: u32) -> Result<()> {
        self.exec("nft", &["add", "table", "inet", "rkfault"])?;
        self.exec(
            "nft",
            &[
                "add",
                "chain",
                "inet",
                "rkfault",
                "in",
                "{ type filter hook input priority 0; }",
            ],
        )?;
        let cond = format!("{percent}");
        self.exec(
            "nft",
            &[
                "add", "rule", "inet", "rkfault", "in", "meta", "l4proto", "udp", "numgen",
                "random", "mod", "100", "<", &cond, "drop",
            ],
        )
        .map(drop)
    }

    /// A firewall that drops UDP: every arriving UDP packet (from `from` only, if given) is
    /// dropped on the input hook, and counted (see [`Netns::nft_counters`]). TCP passes.
    pub fn drop_udp(&self, from: Option<&str>) -> Result<()> {
        self.exec("nft", &["add", "table", "inet", "rkudp"])?;
        self.exec(
            "nft",
            &[
                "add",
                "chain",
                "inet",
                "rkudp",
                "in",
                "{ type filter hook input priority 0; }",
            ],
        )?;
        let mut rule = vec!["add", "rule", "inet", "rkudp", "in"];
        if let Some(ip) = from {
            rule.extend_from_slice(&["ip", "saddr", ip]);
        }
        rule.extend_from_slice(&["meta", "l4proto", "udp", "counter", "drop"]);
        self.exec("nft", &rule).map(drop)
    }

    /// A firewall that lets `from` reach this namespace by TCP to `port` only: those packets
    /// are accepted (counted first), everything else from `from` — UDP, TCP to other ports —
    /// is dropped (counted second; see [`Netns::nft_counters`]).
    pub fn allow_only_tcp_port_from(&self, from: &str, port: u16) -> Result<()> {
        self.exec("nft", &["add", "table", "inet", "rkonly"])?;
        self.exec(
            "nft",
            &[
                "add",
                "chain",
                "inet",
                "rkonly",
                "in",
                "{ type filter hook input priority 0; }",
            ],
        )?;
        let port = port.to_string();
        self.exec(
            "nft",
            &[
                "add", "rule", "inet", "rkonly", "in", "ip", "saddr", from, "tcp", "dport", &port,
                "counter", "accept",
            ],
        )?;
        self.exec(
            "nft",
            &[
                "add", "rule", "inet", "rkonly", "in", "ip", "saddr", from, "counter", "drop",
            ],
        )
        .map(drop)
    }

    /// Count arriving TCP packets to `port` (nftables, [`Netns::nft_counters`]).
    pub fn count_tcp_to(&self, port: u16) -> Result<()> {
        self.exec("nft", &["add", "table", "inet", "rkcount"])?;
        self.exec(
            "nft",
            &[
                "add",
                "chain",
                "inet",
                "rkcount",
                "in",
                "{ type filter hook input priority -10; }",
            ],
        )?;
        let port = port.to_string();
        self.exec(
            "nft",
            &[
                "add", "rule", "inet", "rkcount", "in", "tcp", "dport", &port, "counter",
            ],
        )
        .map(drop)
    }

    /// A firewall that lets the namespace open TCP connections to `ports` only: everything
    /// else leaving it (all UDP, TCP to other ports) is dropped on the output hook and counted
    /// (the first [`Netns::nft_counters`] value). Loopback (the namespace's own addresses) and
    /// packets of connections already open pass.
    pub fn allow_only_tcp_to(&self, ports: &[u16]) -> Result<()> {
        self.exec("nft", &["add", "table", "inet", "rkonly"])?;
        self.exec(
            "nft",
            &[
                "add",
                "chain",
                "inet",
                "rkonly",
                "out",
                "{ type filter hook output priority 0; }",
            ],
        )?;
        let rule = |r: &[&str]| {
            let mut args = vec!["add", "rule", "inet", "rkonly", "out"];
            args.extend_from_slice(r);
            self.exec("nft", &args).map(drop)
        };
        rule(&["oifname", "lo", "accept"])?;
        rule(&["ct", "state", "established,related", "accept"])?;
        let set = format!(
            "{{ {} }}",
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        rule(&["tcp", "dport", &set, "accept"])?;
        rule(&["counter", "drop"])
    }

    /// The packet counts of the namespace's nftables `counter` rules, in ruleset order.
    pub fn nft_counters(&self) -> Result<Vec<u64>> {
        let rules = self.exec("nft", &["list", "ruleset"])?;
        Ok(rules
            .lines()
            .filter_map(|l| {
                let rest = l.split("counter packets ").nth(1)?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .collect())
    }

    /// Cap what leaves `ifname` at `rate` (e.g. "300kbit") with a token bucket filter.
    pub fn rate_cap(&self, ifname: &str, rate: &str) -> Result<()> {
        self.exec(
            "tc",
            &[
                "qdisc", "add", "dev", ifname, "root", "tbf", "rate", rate, "burst", "16kbit",
                "latency", "100ms",
            ],
        )
        .map(drop)
    }
}

impl Netns {
    /// Remove a [`Netns::rate_cap`] from `ifname`.
    pub fn rate_uncap(&self, ifname: &str) -> Result<()> {
        self.exec("tc", &["qdisc", "del", "dev", ifname, "root"])
            .map(drop)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// A child process whose stdout/stderr lines arrive on a channel; killed on drop.
pub struct Proc {
    child: Option<Child>,
    pub lines: mpsc::Receiver<String>,
    pub label: String,
}

impl Proc {
    pub fn spawn(mut cmd: Command, label: &str) -> Result<Proc> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {label}"))?;
        let (tx, rx) = mpsc::channel();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            let echo = std::env::var_os("RAKOR_TEST_ECHO").is_some();
            let label = label.to_owned();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if echo {
                        eprintln!("[{label}] {line}");
                    }
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Proc {
            child: Some(child),
            lines: rx,
            label: label.to_owned(),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The next line that `f` accepts, within `timeout`.
    pub fn wait_line<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&str) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .map_err(|_| anyhow!("{}: no matching line within {timeout:?}", self.label))?;
            if let Some(v) = f(&line) {
                return Ok(v);
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `rakor serve` on `ip` (ports chosen by the OS), inside `ns` or, without one, here.
pub struct ServerProc {
    pub proc: Proc,
    pub http: SocketAddr,
    pub media: SocketAddr,
    /// The TURN listener, when the server was started with `RAKOR_TURN_ENABLED=true`.
    pub turn: Option<SocketAddr>,
}

impl ServerProc {
    pub fn start(
        ns: Option<&Netns>,
        ip: &str,
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> Result<ServerProc> {
        Self::start_on(ns, ip, 0, data_dir, env)
    }

    /// [`ServerProc::start`] with `server.listen` on `port` (0: chosen by the OS). A fixed port
    /// (443 in a namespace of the test's own) makes the server offer `turns:` on it.
    pub fn start_on(
        ns: Option<&Netns>,
        ip: &str,
        port: u16,
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> Result<ServerProc> {
        let bin = crate::rakor_bin();
        let mut cmd = match ns {
            Some(ns) => ns.command(&bin),
            None => Command::new(&bin),
        };
        cmd.args([
            "serve",
            "--listen",
            &format!("{ip}:{port}"),
            "--media-port",
            "0",
        ])
        .args(["--media-bind-ip", ip, "--data-dir"])
        .arg(data_dir)
        .env(
            "RUST_LOG",
            std::env::var("RAKOR_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn(cmd, "rakor")?;
        let mut http = None;
        let mut media = None;
        let mut turn = None;
        let want_turn = env
            .iter()
            .any(|(k, v)| *k == "RAKOR_TURN_ENABLED" && *v == "true");
        while http.is_none() || media.is_none() || (want_turn && turn.is_none()) {
            proc.wait_line(Duration::from_secs(20), |l| {
                let l = l.trim();
                if let Some(rest) = l.strip_prefix("TURN (TCP)") {
                    turn = rest.split_whitespace().next().and_then(|a| a.parse().ok());
                    Some(())
                } else if let Some(rest) = l
                    .strip_prefix("HTTP + WebSocket")
                    .or_else(|| l.strip_prefix("HTTPS + WSS"))
                {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    http = url
                        .trim_start_matches("http://")
                        .trim_start_matches("https://")
                        .parse()
                        .ok();
                    Some(())
                } else if let Some(rest) = l.strip_prefix("Media (UDP)") {
                    media = rest.split_whitespace().next().and_then(|a| a.parse().ok());
                    Some(())
                } else {
                    None
                }
            })?;
        }
        let (Some(http), Some(media)) = (http, media) else {
            bail!("addresses not found")
        };
        Ok(ServerProc {
            proc,
            http,
            media,
            turn,
        })
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/rtc", self.http)
    }
}

/// Mint a token with the real CLI against `data_dir`'s signing key.
pub fn mint_token(data_dir: &Path, room: &str, identity: &str, role: &str) -> Result<String> {
    let out = Command::new(crate::rakor_bin())
        .args([
            "token",
            "--room",
            room,
            "--identity",
            identity,
            "--role",
            role,
            "--data-dir",
        ])
        .arg(data_dir)
        .output()?;
    if !out.status.success() {
        bail!("rakor token: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8(out.stdout)?
        .lines()
        .next()
        .map(|t| t.trim().to_owned())
        .ok_or_else(|| anyhow!("no token"))
}

/// One line of `probe-client` output.
#[derive(Debug, Clone)]
pub enum ProbeLine {
    Joined(String),
    Event(serde_json::Value),
    Report(rakor_client::Report),
    Closed(String),
}

/// `probe-client` (built with this crate) as a process, in `ns` or here.
pub struct Probe {
    pub proc: Proc,
    pub participant_id: String,
    /// Every line seen so far, with its Unix-ms timestamp.
    pub seen: Vec<(u64, ProbeLine)>,
}

impl Probe {
    pub fn start(
        ns: Option<&Netns>,
        bin: &Path,
        url: &str,
        token: &str,
        bind_ip: &str,
        publish: &[&str],
        label: &str,
    ) -> Result<Probe> {
        let mut cmd = match ns {
            Some(ns) => ns.command(bin),
            None => Command::new(bin),
        };
        cmd.args([url, token, bind_ip]).args(publish);
        cmd.env("RUST_LOG", "warn");
        let proc = Proc::spawn(cmd, label)?;
        let mut p = Probe {
            proc,
            participant_id: String::new(),
            seen: Vec::new(),
        };
        let id = p.wait(Duration::from_secs(25), |l| match l {
            ProbeLine::Joined(id) => Some(id.clone()),
            _ => None,
        })?;
        p.participant_id = id;
        Ok(p)
    }

    fn parse(line: &str) -> Option<(u64, ProbeLine)> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let t = v.get("t_ms")?.as_u64()?;
        if let Some(id) = v.get("joined").and_then(|j| j.as_str()) {
            return Some((t, ProbeLine::Joined(id.to_owned())));
        }
        if let Some(e) = v.get("event") {
            return Some((t, ProbeLine::Event(e.clone())));
        }
        if let Some(r) = v.get("report") {
            return serde_json::from_value(r.clone())
                .ok()
                .map(|r| (t, ProbeLine::Report(r)));
        }
        if let Some(c) = v.get("closed") {
            return Some((t, ProbeLine::Closed(c.to_string())));
        }
        None
    }

    /// Read lines until `f` accepts one (returning its value), within `timeout`.
    pub fn wait<T>(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&ProbeLine) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line =
                self.proc.lines.recv_timeout(left).map_err(|_| {
                    anyhow!("{}: nothing matching within {timeout:?}", self.proc.label)
                })?;
            let Some((t, pl)) = Self::parse(&line) else {
                continue;
            };
            let r = f(&pl);
            self.seen.push((t, pl));
            if let Some(v) = r {
                return Ok(v);
            }
        }
    }

    /// Wait for `participant_left` of `who`; returns (Unix ms it was printed, reason).
    pub fn wait_left(&mut self, who: &str, timeout: Duration) -> Result<(u64, String)> {
        // Already seen?
        for (t, l) in &self.seen {
            if let ProbeLine::Event(e) = l {
                if e["type"] == "participant_left" && e["participant_id"] == who {
                    return Ok((*t, e["reason"].as_str().unwrap_or_default().to_owned()));
                }
            }
        }
        let mut at = 0;
        let reason = self.wait(timeout, |l| match l {
            ProbeLine::Event(e)
                if e["type"] == "participant_left" && e["participant_id"] == who =>
            {
                Some(e["reason"].as_str().unwrap_or_default().to_owned())
            }
            _ => None,
        })?;
        if let Some((t, _)) = self.seen.last() {
            at = *t;
        }
        Ok((at, reason))
    }

    /// The newest report: everything already printed is read, then (if none was) the next one.
    pub fn latest_report(&mut self, timeout: Duration) -> Result<rakor_client::Report> {
        let mut latest = None;
        while let Ok(line) = self.proc.lines.try_recv() {
            if let Some((t, pl)) = Self::parse(&line) {
                if let ProbeLine::Report(r) = &pl {
                    latest = Some(r.clone());
                }
                self.seen.push((t, pl));
            }
        }
        match latest {
            Some(r) => Ok(r),
            None => self.wait(timeout, |l| match l {
                ProbeLine::Report(r) => Some(r.clone()),
                _ => None,
            }),
        }
    }
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RTP packets of `kind` a probe's report counts from participant `from`.
pub fn received_packets(r: &rakor_client::Report, from: &str, kind: rakor_proto::TrackKind) -> u64 {
    r.received_packets(&rakor_proto::ParticipantId(from.to_owned()), kind)
}

/// Video frames a probe's report counts as decoded from participant `from`.
pub fn decoded_frames(r: &rakor_client::Report, from: &str) -> u64 {
    r.received_track(
        &rakor_proto::ParticipantId(from.to_owned()),
        rakor_proto::TrackKind::Video,
    )
    .map_or(0, |t| t.frames)
}

/// Read `p`'s reports (it writes one every 500 ms) until `from`'s audio and video both reached
/// `min` packets and a video frame was decoded; the report and when the first decoded frame
/// was seen (Unix ms). Panics with the last report when `timeout` passes first: an assertion
/// helper for the suites.
#[allow(clippy::panic)]
pub fn wait_media(
    p: &mut Probe,
    from: &str,
    min: u64,
    timeout: Duration,
) -> (rakor_client::Report, u64) {
    use rakor_proto::TrackKind;
    let deadline = Instant::now() + timeout;
    let mut first_frame_ms = None;
    loop {
        let r = match p.latest_report(Duration::from_secs(5)) {
            Ok(r) => r,
            Err(e) => panic!("{}: no report: {e}", p.proc.label),
        };
        if first_frame_ms.is_none() && decoded_frames(&r, from) > 0 {
            first_frame_ms = Some(unix_ms());
        }
        if received_packets(&r, from, TrackKind::Video) >= min
            && received_packets(&r, from, TrackKind::Audio) >= min
            && decoded_frames(&r, from) > 0
        {
            return (r, first_frame_ms.unwrap_or_else(unix_ms));
        }
        assert!(
            Instant::now() < deadline,
            "{}: media from {from} stuck (audio {} video {} packets): {}",
            p.proc.label,
            received_packets(&r, from, TrackKind::Audio),
            received_packets(&r, from, TrackKind::Video),
            r.to_json()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
