//! Test harness for the end-to-end suites: starts the real `rakor` binary on loopback with a
//! fresh data directory and ephemeral ports, mints tokens with the real `rakor token`, and
//! stops the server with a real signal.

pub mod session;

use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub mod cluster;
pub mod netns;
pub mod tls;

/// Path of the `rakor` binary under test: `$RAKOR_BIN`, else `target/release/rakor`, else
/// `target/debug/rakor`.
pub fn rakor_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RAKOR_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let release = root.join("target/release/rakor");
    if release.exists() {
        return release;
    }
    root.join("target/debug/rakor")
}

/// A running `rakor serve`, killed on drop.
pub struct Server {
    child: Option<Child>,
    pub data_dir: tempfile::TempDir,
    pub http: SocketAddr,
    pub media: SocketAddr,
    /// Server stdout+stderr lines, as they come.
    pub output: mpsc::Receiver<String>,
}

impl Server {
    /// Start on 127.0.0.1 with OS-chosen HTTP and media ports; returns once it is ready.
    pub fn start() -> Result<Server> {
        Self::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> Result<Server> {
        Self::start_with_env(extra_args, &[])
    }

    /// Start with extra flags and environment variables (e.g. `RAKOR_SERVER_RESUME_GRACE`).
    pub fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> Result<Server> {
        Self::spawn(extra_args, env, None)
    }

    /// Start with the soft open-file limit (RLIMIT_NOFILE) lowered to `soft`, as systemd
    /// starts services (soft 1024, hard higher).
    pub fn start_with_nofile(
        extra_args: &[&str],
        env: &[(&str, &str)],
        soft: u64,
    ) -> Result<Server> {
        Self::spawn(extra_args, env, Some(soft))
    }

    fn spawn(extra_args: &[&str], env: &[(&str, &str)], nofile: Option<u64>) -> Result<Server> {
        use std::os::unix::process::CommandExt as _;
        let data_dir = tempfile::tempdir()?;
        let mut cmd = Command::new(rakor_bin());
        if let Some(soft) = nofile {
            // SAFETY: only async-signal-safe calls (getrlimit/setrlimit) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let mut lim = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    lim.rlim_cur = soft.min(lim.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .envs(env.iter().copied())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--media-port",
                "0",
                "--data-dir",
            ])
            .arg(data_dir.path())
            .args(extra_args)
            .env(
                "RUST_LOG",
                // The product's default filter (`server.log`): at `info` the WebRTC core logs a
                // warning per duplicated SRTP packet from the media thread, which under load
                // starves the very worker the tests measure.
                std::env::var("RAKOR_TEST_LOG")
                    .unwrap_or_else(|_| "info,rtc=error,rtc_ice=warn,rtc_dtls=error".into()),
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", rakor_bin().display()))?;
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
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var_os("RAKOR_TEST_ECHO").is_some() {
                        eprintln!("[rakor] {line}");
                    }
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut http = None;
        let mut media = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while http.is_none() || media.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx
                .recv_timeout(left)
                .map_err(|_| anyhow!("rakor serve did not print its addresses in 20 s"))?;
            let l = line.trim();
            if let Some(rest) = l
                .strip_prefix("HTTP + WebSocket")
                .or_else(|| l.strip_prefix("HTTPS + WSS"))
            {
                let url = rest.split_whitespace().next().unwrap_or_default();
                http = url
                    .trim_start_matches("http://")
                    .trim_start_matches("https://")
                    .parse()
                    .ok();
            } else if let Some(rest) = l.strip_prefix("Media (UDP)") {
                media = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            }
        }
        let (Some(http), Some(media)) = (http, media) else {
            bail!("addresses not found")
        };
        Ok(Server {
            child: Some(child),
            data_dir,
            http,
            media,
            output: rx,
        })
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/rtc", self.http)
    }

    /// Mint a token with the real CLI.
    pub fn token(&self, room: &str, identity: &str, role: &str) -> Result<String> {
        self.token_with(room, identity, role, "2h")
    }

    pub fn token_with(&self, room: &str, identity: &str, role: &str, ttl: &str) -> Result<String> {
        let out = Command::new(rakor_bin())
            .args([
                "token",
                "--room",
                room,
                "--identity",
                identity,
                "--name",
                identity,
                "--role",
                role,
                "--ttl",
                ttl,
            ])
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .output()?;
        if !out.status.success() {
            bail!(
                "rakor token failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stdout = String::from_utf8(out.stdout)?;
        let mut lines = stdout.lines();
        let token = lines
            .next()
            .ok_or_else(|| anyhow!("no token line"))?
            .trim()
            .to_owned();
        let url = lines.next().unwrap_or_default();
        if !url.contains("/join?token=") {
            bail!("second line is not a join URL: {url}");
        }
        Ok(token)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Send a signal (e.g. `libc::SIGHUP`) without waiting for anything.
    pub fn signal(&mut self, sig: i32) -> Result<()> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("already stopped"))?;
        let pid = libc::pid_t::try_from(child.id())?;
        // SAFETY: plain kill(2) on our own child.
        if unsafe { libc::kill(pid, sig) } != 0 {
            bail!("kill: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Send a signal (e.g. `libc::SIGTERM`) and wait for the exit, at most `timeout`.
    pub fn signal_and_wait(
        &mut self,
        sig: i32,
        timeout: Duration,
    ) -> Result<std::process::ExitStatus> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("already stopped"))?;
        let pid = libc::pid_t::try_from(child.id())?;
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid, sig) };
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait()? {
                self.child = None;
                return Ok(st);
            }
            if std::time::Instant::now() > deadline {
                bail!("rakor did not exit within {timeout:?} after signal {sig}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// CPU time (user+system) the server process has used so far, from /proc.
    pub fn cpu_time(&self) -> Result<Duration> {
        proc_cpu_time(self.pid().ok_or_else(|| anyhow!("stopped"))?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failing test: show what the server said.
            eprintln!("---- rakor server output ----");
            while let Ok(line) = self.output.try_recv() {
                eprintln!("{line}");
            }
            eprintln!("---- end of server output ----");
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// utime+stime of a process, from /proc/PID/stat.
pub fn proc_cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("bad stat"))?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the comm: state is index 0, utime 11, stime 12.
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(ticks * 1_000_000 / hz))
}

/// Read the server's generated signing key (for tests that forge tokens: expired ones with the
/// real key, forged ones with another key).
pub fn signing_key_bytes(data_dir: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(data_dir.join("signing.key"))?;
    rakor_server::signing_key::decode_key(text.trim()).map_err(|e| anyhow!(e))
}

/// Sign arbitrary claims with HS256 and `key`.
pub fn sign_claims(key: &[u8], claims: &serde_json::Value) -> Result<String> {
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    Ok(jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )?)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A raw signalling WebSocket, for sending what a well-behaved client never would.
pub type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn raw_ws(url: &str) -> Result<RawWs> {
    let (ws, _) = tokio_tungstenite::connect_async(url).await?;
    Ok(ws)
}

/// Next JSON text message from a raw socket (None when closed), at most `timeout`.
pub async fn raw_next_json(ws: &mut RawWs, timeout: Duration) -> Result<Option<serde_json::Value>> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => bail!("no message within {timeout:?}"),
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return Ok(None),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(Some(serde_json::from_str(t.as_str())?)),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// HTTP GET on loopback without a client library: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("no status line in {resp:?}"))?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
