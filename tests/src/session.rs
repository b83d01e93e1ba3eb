//! Helpers for the session-manager suites: a tiny HTTP/1.1 client with a cookie jar (no client
//! library), `rakor operator add`, and WIB times relative to now.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A response: status, headers (lower-case names), body.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// The `error.code` of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// One request (Connection: close). `body` with its content type.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Result<Resp> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(request_head(addr, method, path, headers, body).as_bytes())?;
    if let Some((_, b)) = body {
        s.write_all(b)?;
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// One request from a chosen loopback source address (e.g. `127.0.0.7`): per-address limits
/// see a different client for each.
pub async fn request_from(
    src: std::net::IpAddr,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Result<Resp> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src, 0))?;
    let mut s = tokio::time::timeout(Duration::from_secs(5), sock.connect(addr)).await??;
    s.write_all(request_head(addr, method, path, headers, body).as_bytes())
        .await?;
    if let Some((_, b)) = body {
        s.write_all(b).await?;
    }
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut raw)).await??;
    parse_response(&raw)
}

/// The request line and header of a `Connection: close` request. A `Host` in `headers`
/// replaces the default (a client may send any).
fn request_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some((ct, b)) = body {
        head.push_str(&format!(
            "Content-Type: {ct}\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    head
}

/// Status line, headers and (de-chunked) body of a raw HTTP/1.1 response.
pub fn parse_response(raw: &[u8]) -> Result<Resp> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no header end in {text:?}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// An API client: a base address and (after `login`) the session cookie or a bearer token.
#[derive(Debug, Clone)]
pub struct Api {
    pub addr: SocketAddr,
    pub auth: Option<(String, String)>,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, auth: None }
    }

    pub fn call(&self, method: &str, path: &str, json: Option<&serde_json::Value>) -> Result<Resp> {
        let body = json.map(|j| j.to_string());
        self.raw(
            method,
            path,
            body.as_deref().map(|b| ("application/json", b.as_bytes())),
        )
    }

    pub fn raw(&self, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Result<Resp> {
        let mut headers = Vec::new();
        if let Some((k, v)) = &self.auth {
            headers.push((k.as_str(), v.as_str()));
        }
        request(self.addr, method, path, &headers, body)
    }

    pub fn get(&self, path: &str) -> Result<Resp> {
        self.call("GET", path, None)
    }
    pub fn post(&self, path: &str, json: serde_json::Value) -> Result<Resp> {
        self.call("POST", path, Some(&json))
    }

    /// Log in; keeps the cookie. Fails unless 200.
    pub fn login(&mut self, username: &str, password: &str) -> Result<Resp> {
        let r = self.post(
            "/api/v1/auth/login",
            serde_json::json!({"username": username, "password": password}),
        )?;
        if r.status != 200 {
            bail!("login: {} {}", r.status, r.body);
        }
        let cookie = r
            .header("set-cookie")
            .ok_or_else(|| anyhow!("no set-cookie"))?;
        let pair = cookie.split(';').next().unwrap_or_default().to_owned();
        self.auth = Some(("Cookie".into(), pair));
        Ok(r)
    }

    /// Post and expect `want`; the JSON body.
    pub fn expect(
        &self,
        method: &str,
        path: &str,
        json: Option<serde_json::Value>,
        want: u16,
    ) -> Result<serde_json::Value> {
        let r = self.call(method, path, json.as_ref())?;
        if r.status != want {
            bail!(
                "{method} {path}: expected {want}, got {} {}",
                r.status,
                r.body
            );
        }
        if r.body.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        r.json()
    }
}

/// `rakor operator add --username U --password-stdin --data-dir DIR`.
pub fn add_operator(
    data_dir: &Path,
    username: &str,
    password: &str,
) -> Result<std::process::Output> {
    let mut child = Command::new(crate::rakor_bin())
        .args([
            "operator",
            "add",
            "--username",
            username,
            "--password-stdin",
            "--data-dir",
        ])
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{password}")?;
    }
    Ok(child.wait_with_output()?)
}

/// WIB wall-clock time `secs` from now, as typed in the console (`2030-05-01T09:00:00`).
pub fn wib_in(secs: i64) -> String {
    let t = crate::unix_now() as i64 + secs + 7 * 3600;
    let days = t.div_euclid(86_400);
    let rem = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The token in an invitation link (`…/join?token=T`).
pub fn token_of(link: &str) -> Result<String> {
    link.split_once("token=")
        .map(|(_, t)| t.to_owned())
        .ok_or_else(|| anyhow!("no token in {link}"))
}

/// A data set that outlives one server process: the SQLite file and the signing key live in a
/// directory of their own (given by a config file), so a restarted server sees the same data.
pub struct Persistent {
    pub dir: tempfile::TempDir,
    pub config: std::path::PathBuf,
    /// The HS256 signing key (raw bytes), to forge tokens in tests.
    pub key: Vec<u8>,
}

impl Persistent {
    pub fn new() -> Result<Self> {
        Self::with_extra("")
    }

    /// `extra` is appended to the `[session]` section of the config file.
    pub fn with_extra(extra_session: &str) -> Result<Self> {
        use base64::Engine as _;
        let dir = tempfile::tempdir()?;
        let mut key = vec![0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&key);
        let config = dir.path().join("rakor.toml");
        std::fs::write(
            &config,
            format!(
                "[auth]\nsigning_key = \"{b64}\"\n\n[session]\ndatabase = \"{}\"\n{extra_session}\n",
                dir.path().join("rakor.sqlite3").display()
            ),
        )?;
        Ok(Self { dir, config, key })
    }

    /// The same, with the session storage on PostgreSQL (`storage.database_url`).
    pub fn on_postgres(database_url: &str) -> Result<Self> {
        let p = Self::new()?;
        let mut cfg = std::fs::read_to_string(&p.config)?;
        cfg.push_str(&format!("\n[storage]\ndatabase_url = \"{database_url}\"\n"));
        std::fs::write(&p.config, cfg)?;
        Ok(p)
    }

    pub fn start(&self) -> Result<crate::Server> {
        self.start_with_env(&[])
    }

    /// Start with extra `RAKOR_*` environment variables.
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Result<crate::Server> {
        let cfg = self.config.display().to_string();
        crate::Server::start_with_env(&["--config", &cfg], env)
    }

    /// `rakor operator add` against this data set.
    pub fn add_operator(&self, username: &str, password: &str) -> Result<std::process::Output> {
        let mut child = Command::new(crate::rakor_bin())
            .args([
                "operator",
                "add",
                "--username",
                username,
                "--password-stdin",
                "--config",
            ])
            .arg(&self.config)
            .arg("--data-dir")
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            writeln!(stdin, "{password}")?;
        }
        Ok(child.wait_with_output()?)
    }

    /// Start, add an operator, log in: the usual beginning of a test.
    pub fn start_logged_in(&self) -> Result<(crate::Server, Api)> {
        let out = self.add_operator("operator", PASSWORD)?;
        if !out.status.success() {
            bail!("operator add: {}", String::from_utf8_lossy(&out.stderr));
        }
        let server = self.start()?;
        let mut api = Api::new(server.http);
        api.login("operator", PASSWORD)?;
        Ok((server, api))
    }
}

/// The operator password the helpers use.
pub const PASSWORD: &str = "kominfo-rahasia-2030";

/// Decode a JWT's payload without checking it.
pub fn jwt_payload(token: &str) -> Result<serde_json::Value> {
    use base64::Engine as _;
    let part = token
        .split('.')
        .nth(1)
        .ok_or_else(|| anyhow!("not a JWT"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part)?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Add a site; its id.
pub fn add_site(api: &Api, name: &str, kind: &str) -> Result<i64> {
    let v = api.expect(
        "POST",
        "/api/v1/sites",
        Some(serde_json::json!({"name": name, "kind": kind, "contact_person": "Bapak Kepala", "phone": "0811-3373-119"})),
        201,
    )?;
    v["id"].as_i64().ok_or_else(|| anyhow!("no id in {v}"))
}

/// Schedule a rakor starting `start_in` seconds from now for `minutes`; the JSON view.
pub fn add_rakor(
    api: &Api,
    title: &str,
    host: i64,
    invited: &[i64],
    start_in: i64,
    minutes: i64,
) -> Result<serde_json::Value> {
    api.expect(
        "POST",
        "/api/v1/rakor",
        Some(serde_json::json!({
            "title": title, "agenda": "Penanganan COVID-19",
            "start": wib_in(start_in), "end": wib_in(start_in + minutes * 60),
            "host_site_id": host, "invited_site_ids": invited,
        })),
        201,
    )
}

/// The PostgreSQL server of the tests (`RAKOR_TEST_POSTGRES_URL`, set by tests/run.sh), if any.
pub fn test_postgres_url() -> Option<String> {
    std::env::var("RAKOR_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// A fresh database on the tests' PostgreSQL server (made with `psql`); its URL.
pub fn fresh_postgres_database(server_url: &str) -> Result<String> {
    let name = format!("e2e_{:016x}", {
        let mut b = [0u8; 8];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
        u64::from_le_bytes(b)
    });
    psql(server_url, &format!("CREATE DATABASE {name}"))?;
    let base = server_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .ok_or_else(|| anyhow!("no database in {server_url}"))?;
    Ok(format!("{base}/{name}"))
}

/// Run one SQL statement with `psql`; its unaligned, tuples-only output.
pub fn psql(url: &str, sql: &str) -> Result<String> {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-Atc", sql])
        .output()?;
    if !out.status.success() {
        bail!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
