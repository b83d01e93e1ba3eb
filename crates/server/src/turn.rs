//! The built-in TURN server's I/O: the TCP listener on `turn.listen`, one task per TURN stream
//! (plain TCP here; TLS streams arrive already decrypted from the one-port demux through
//! [`TurnStreams`]), one UDP relay socket per allocation, and the credentials minted per join
//! for `joined.ice_servers`. The protocol itself is Sans-I/O in `rakor-turn`.
//!
//! Relay design: each allocation gets a UDP socket bound on the media IP (an ephemeral port).
//! The media core sees the relayed site as one more UDP peer (its ICE checks arrive from the
//! relay socket's address), so the core needs no change and every packet keeps going through
//! its normal UDP path. The session allows only the media addresses as peers.
//!
//! Per relayed packet: no allocation (the read buffer and the framing buffer are reused), no
//! lock (the quota mutex is taken on Allocate and when an allocation ends), no info log.

use crate::byte_stream::{BoxedStream, TurnStreams, TurnTransport};
use crate::config::Config;
use bytes::{Buf as _, BytesMut};
use rakor_proto::IceServer;
use rakor_turn::framing::{next_frame, Frame};
use rakor_turn::{Action, At, Quota, Session, TurnConfig};
use rtc::crypto::RTCCryptoProvider;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A stream must allocate within this time, or it is closed (half-open and idle connections).
const ALLOCATE_WITHIN: Duration = Duration::from_secs(10);
/// A write to a client that stopped reading is given up after this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most TURN streams open at once (each may hold one relay socket).
const MAX_STREAMS_FACTOR: usize = 2;
/// Receive and send buffer asked for each relay socket. The media core sends a subscriber's
/// whole fan-out (19 streams for 20 sites, ~1 300 datagrams/s, in bursts when keyframes
/// coincide) to one relay socket; the Linux default (~208 KiB, ~90 datagrams) overflowed while
/// the stream's task waited for the client's TCP window (46.8 % loss at 20 sites over
/// TURN/TLS). The kernel caps it at `net.core.rmem_max`/`wmem_max`.
const RELAY_SOCKET_BUFFER: usize = 2 << 20;
/// Datagrams from the relay socket gathered into one stream write (one TLS record run, one
/// `write` system call) at most, and the most bytes gathered.
const RELAY_BATCH_DATAGRAMS: usize = 64;
const RELAY_BATCH_BYTES: usize = 48 * 1024;
/// How often a stream reads its relay socket's kernel drop count (`SO_MEMINFO`).
const DROPS_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Counters for logs and metrics.
#[derive(Debug, Default)]
pub struct TurnStats {
    pub streams_open: AtomicU64,
    pub allocations: AtomicU64,
    pub streams_refused: AtomicU64,
    pub packets_to_media: AtomicU64,
    pub packets_to_client: AtomicU64,
    /// Stream writes carrying relayed datagrams to clients (several datagrams per write when
    /// they queue up).
    pub client_writes: AtomicU64,
    /// Datagrams the kernel dropped on relay sockets because the receive buffer was full
    /// (the media core sent faster than the stream to the client drained).
    pub relay_datagrams_dropped: AtomicU64,
    /// ChannelData from clients dropped: no bound channel, no permission, or over the
    /// allocation's rate limit (`turn.max_packets_per_second`, `turn.max_kbps`).
    pub client_packets_dropped: AtomicU64,
}

/// The TURN server: shared by the listeners (as [`TurnStreams`]) and the signalling (to mint
/// credentials).
pub struct TurnService {
    cfg: Arc<TurnConfig>,
    crypto: Arc<dyn RTCCryptoProvider>,
    quota: Arc<Mutex<Quota>>,
    /// IP the relay sockets bind to.
    relay_bind: IpAddr,
    /// IP reported as the relayed address when `relay_bind` is unspecified.
    relay_public: IpAddr,
    ttl: Duration,
    urls: Vec<String>,
    max_streams: usize,
    /// Most TURN streams open at once from one source IP (`turn.max_streams_per_ip`).
    max_streams_per_ip: usize,
    /// Streams open per source IP (taken when a stream opens and ends, never per packet).
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Streams holding an allocation: id → (username, the token that ends the stream), so a
    /// revoked credential's allocations can be torn down.
    live: Arc<Mutex<HashMap<u64, (String, CancellationToken)>>>,
    next_stream: AtomicU64,
    /// The latest expiry minted per identity (usernames unique per mint).
    last_minted: Mutex<HashMap<String, u64>>,
    tracker: TaskTracker,
    stop: CancellationToken,
    pub stats: Arc<TurnStats>,
}

impl TurnService {
    /// Build from the configuration once the media sockets (one per media worker) are bound
    /// at `media` and the TURN listener at `listen`. `secret` is the minting secret. The
    /// relays may reach every worker's port on every advertised IP, and nothing else.
    pub fn new(
        config: &Config,
        media: &[SocketAddr],
        listen: SocketAddr,
        secret: Vec<u8>,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let crypto = rtc::crypto::default_provider()
            .map_err(|e| anyhow::anyhow!("no crypto provider for TURN: {e}"))?;
        let t = &config.turn;
        let advertised = config.effective_advertise_ips();
        let bind_ip = config.media.bind_ip;
        // Where a relay socket reaches each media socket.
        let local_ip = if bind_ip.is_unspecified() {
            loopback_like(bind_ip)
        } else {
            bind_ip
        };
        let peers = media
            .iter()
            .flat_map(|m| {
                let local_target = SocketAddr::new(local_ip, m.port());
                advertised
                    .iter()
                    .map(move |ip| (SocketAddr::new(*ip, m.port()), local_target))
            })
            .collect();
        let cfg = TurnConfig {
            realm: t.realm.clone(),
            secret,
            peers,
            max_lifetime: t.max_lifetime,
            max_packets_per_second: t.max_packets_per_second,
            max_bytes_per_second: u64::from(t.max_kbps) * 1000 / 8,
            ..TurnConfig::default()
        };
        let host = turn_host(config);
        let port = if t.public_port != 0 {
            t.public_port
        } else {
            listen.port()
        };
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]") // IPv6 literal
        } else {
            host
        };
        let mut urls = vec![format!("turn:{host}:{port}?transport=tcp")];
        if !t.tls_url.trim().is_empty() {
            urls.push(t.tls_url.trim().to_owned());
        } else if config.server.tls_enabled()
            && (!config.server.public_url.trim().is_empty() || config.server.listen.port() != 0)
        {
            // Built-in HTTPS: the one-port listener also takes TURN over TLS, so offer it there.
            let (h, p) = config.public_host_port(config.server.listen);
            let h = if h.contains(':') && !h.starts_with('[') {
                format!("[{h}]")
            } else {
                h
            };
            urls.push(format!("turns:{h}:{p}?transport=tcp"));
        }
        Ok(Self {
            cfg: Arc::new(cfg),
            crypto,
            quota: Arc::new(Mutex::new(Quota::new(
                t.max_allocations,
                t.max_allocations_per_identity,
            ))),
            relay_bind: bind_ip,
            relay_public: advertised
                .first()
                .copied()
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ttl: t.credential_ttl,
            urls,
            max_streams: t.max_allocations.saturating_mul(MAX_STREAMS_FACTOR).max(16),
            max_streams_per_ip: t.max_streams_per_ip,
            per_ip: Arc::default(),
            live: Arc::default(),
            next_stream: AtomicU64::new(0),
            last_minted: Mutex::default(),
            tracker: TaskTracker::new(),
            stop,
            stats: Arc::new(TurnStats::default()),
        })
    }

    /// The URLs put in `ice_servers`.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// How long minted credentials open new allocations.
    pub fn credential_ttl(&self) -> Duration {
        self.ttl
    }

    /// `ice_servers` for `identity`, minted now. Usernames are never handed out twice (two
    /// sessions of one identity minted in the same second get different expiries), so revoking
    /// one session's credentials never touches another's.
    pub fn ice_servers(&self, identity: &str) -> Vec<IceServer> {
        let now = unix_now();
        let mut expires_at = now.saturating_add(self.ttl.as_secs());
        {
            let mut last = lock(&self.last_minted);
            if last.len() > 10_000 {
                last.retain(|_, exp| *exp >= now);
            }
            let entry = last.entry(identity.to_owned()).or_insert(0);
            if expires_at <= *entry {
                expires_at = *entry + 1;
            }
            *entry = expires_at;
        }
        match rakor_turn::credentials::mint(
            self.crypto.crypto(),
            &self.cfg.secret,
            identity,
            expires_at,
        ) {
            Ok(c) => vec![IceServer {
                urls: self.urls.clone(),
                username: c.username,
                credential: c.credential,
                expires_at: c.expires_at,
            }],
            Err(e) => {
                tracing::warn!(error = %e, "cannot mint TURN credentials");
                Vec::new()
            }
        }
    }

    /// Revoke the credentials in `servers` (what this service minted for one participant that
    /// left or was removed): they open no new allocation, and the allocations made with them
    /// end now (their streams are closed). Returns how many allocations ended.
    pub fn revoke(&self, servers: &[IceServer]) -> usize {
        let now = unix_now();
        {
            let mut q = lock(&self.quota);
            for s in servers {
                q.revoke(&s.username, s.expires_at, now);
            }
        }
        let live = lock(&self.live);
        let mut ended = 0;
        for (username, token) in live.values() {
            if servers.iter().any(|s| &s.username == username) {
                token.cancel();
                ended += 1;
            }
        }
        ended
    }

    /// Allocations held now.
    pub fn allocations(&self) -> usize {
        lock(&self.quota).total()
    }

    /// Accept TURN over TCP on `listener` until stopped.
    pub async fn run_listener(self: Arc<Self>, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                () = self.stop.cancelled() => break,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    self.serve(Box::new(stream), peer, TurnTransport::Tcp);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "TURN accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl TurnStreams for TurnService {
    fn serve(&self, stream: BoxedStream, peer: SocketAddr, transport: TurnTransport) {
        let open = self.stats.streams_open.load(Ordering::Relaxed);
        if usize::try_from(open).unwrap_or(usize::MAX) >= self.max_streams {
            self.stats.streams_refused.fetch_add(1, Ordering::Relaxed);
            return; // dropping the stream closes it
        }
        {
            let mut per_ip = lock(&self.per_ip);
            let n = per_ip.entry(peer.ip()).or_insert(0);
            if *n >= self.max_streams_per_ip {
                drop(per_ip);
                self.stats.streams_refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, "TURN stream refused: turn.max_streams_per_ip reached");
                return;
            }
            *n += 1;
        }
        self.stats.streams_open.fetch_add(1, Ordering::Relaxed);
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let ctx = StreamCtx {
            session: Session::new(Arc::clone(&self.cfg), Arc::clone(&self.crypto), peer, true),
            quota: Arc::clone(&self.quota),
            relay_bind: self.relay_bind,
            relay_public: self.relay_public,
            stats: Arc::clone(&self.stats),
            peer,
            transport,
            id,
            per_ip: Arc::clone(&self.per_ip),
            live: Arc::clone(&self.live),
        };
        let stop = self.stop.child_token();
        self.tracker.spawn(async move {
            ctx.run(stream, stop).await;
        });
    }
}

/// One TURN stream's task state.
struct StreamCtx {
    session: Session,
    quota: Arc<Mutex<Quota>>,
    relay_bind: IpAddr,
    relay_public: IpAddr,
    stats: Arc<TurnStats>,
    peer: SocketAddr,
    transport: TurnTransport,
    id: u64,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    live: Arc<Mutex<HashMap<u64, (String, CancellationToken)>>>,
}

/// Why a stream ended (read through `Debug` in the log).
#[derive(Debug)]
#[allow(dead_code)]
enum End {
    ClientClosed,
    Framing(String),
    Io(io::Error),
    NoAllocation,
    Stopped,
    Expired,
    WriteTimeout,
}

impl StreamCtx {
    /// Add the relay socket's kernel drops since the last look to the counters.
    fn count_drops(&self, relay: Option<&UdpSocket>, seen: &mut u64) {
        if let Some(total) = relay.and_then(rakor_sfu::sockopt::receive_drops) {
            let new = total.saturating_sub(*seen);
            *seen = total;
            if new > 0 {
                self.stats
                    .relay_datagrams_dropped
                    .fetch_add(new, Ordering::Relaxed);
                tracing::debug!(peer = %self.peer, dropped = new, "TURN relay socket overflowed");
            }
        }
    }

    async fn run(mut self, stream: BoxedStream, stop: CancellationToken) {
        let end = self.serve(stream, stop).await;
        self.session.close(&self.quota);
        lock(&self.live).remove(&self.id);
        {
            let mut per_ip = lock(&self.per_ip);
            if let Some(n) = per_ip.get_mut(&self.peer.ip()) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_ip.remove(&self.peer.ip());
                }
            }
        }
        self.stats.streams_open.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(peer = %self.peer, transport = ?self.transport, end = ?end, "TURN stream ended");
    }

    async fn serve(&mut self, stream: BoxedStream, stop: CancellationToken) -> End {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut inbuf = BytesMut::with_capacity(16 * 1024);
        let mut out: Vec<u8> = Vec::with_capacity(RELAY_BATCH_BYTES + 2048);
        let mut rbuf = vec![0u8; 65_536];
        let mut relay: Option<UdpSocket> = None;
        // Kernel drops on the relay socket already counted, and when they were last read.
        let mut drops_seen: u64 = 0;
        let mut drops_checked = tokio::time::Instant::now();
        let allocate_by = tokio::time::Instant::now() + ALLOCATE_WITHIN;
        let end = async {
            loop {
                let deadline = match (self.session.poll_timeout(), relay.is_some()) {
                    (Some(t), true) => tokio::time::Instant::from_std(t),
                    _ => allocate_by,
                };
                tokio::select! {
                    r = rd.read_buf(&mut inbuf) => {
                        match r {
                            Ok(0) => return End::ClientClosed,
                            Ok(_) => {}
                            Err(e) => return End::Io(e),
                        }
                        // Every whole frame in the buffer.
                        loop {
                            let frame = match next_frame(&inbuf) {
                                Ok(Some(f)) => f,
                                Ok(None) => break,
                                Err(e) => return End::Framing(e.to_string()),
                            };
                            match frame {
                                Frame::Stun { len } => {
                                    let allocated = relay.is_some();
                                    let actions = self.session.handle_stun(&inbuf[..len], at(), &self.quota);
                                    inbuf.advance(len);
                                    if let Some(end) = self.apply(actions, &mut wr, &mut relay).await {
                                        return end;
                                    }
                                    if !allocated && relay.is_some() {
                                        // Now revocable: `TurnService::revoke` cancels `stop`.
                                        if let Some(u) = self.session.username() {
                                            lock(&self.live).insert(self.id, (u.to_owned(), stop.clone()));
                                        }
                                    }
                                }
                                Frame::ChannelData { channel, data_len, len } => {
                                    if self.session.relay_addr().is_none() {
                                        return End::Framing("ChannelData before any allocation".into());
                                    }
                                    let payload = &inbuf[4..4 + data_len];
                                    let now = std::time::Instant::now();
                                    if let (Some(to), Some(sock)) = (self.session.channel_target(channel, data_len, now), relay.as_ref()) {
                                        if sock.send_to(payload, to).await.is_ok() {
                                            self.stats.packets_to_media.fetch_add(1, Ordering::Relaxed);
                                        }
                                    } else {
                                        self.stats.client_packets_dropped.fetch_add(1, Ordering::Relaxed);
                                    }
                                    inbuf.advance(len);
                                }
                            }
                        }
                    }
                    r = recv(relay.as_ref(), &mut rbuf) => {
                        let Ok((n, from)) = r else { continue };
                        let Some(sock) = relay.as_ref() else { continue };
                        // This datagram and every one already queued on the socket (up to a batch)
                        // go out in one stream write: one TLS record run and one system call for a
                        // burst instead of one per datagram, so the stream keeps up with a
                        // subscriber's whole fan-out.
                        out.clear();
                        let now = std::time::Instant::now();
                        let mut batched = u64::from(self.session.from_peer(from, &rbuf[..n], now, &mut out));
                        for _ in 1..RELAY_BATCH_DATAGRAMS {
                            if out.len() >= RELAY_BATCH_BYTES {
                                break;
                            }
                            match sock.try_recv_from(&mut rbuf) {
                                Ok((n, from)) => {
                                    batched += u64::from(self.session.from_peer(from, &rbuf[..n], now, &mut out));
                                }
                                Err(_) => break, // WouldBlock: the socket is drained
                            }
                        }
                        if !out.is_empty() {
                            match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&out)).await {
                                Ok(Ok(())) => {
                                    self.stats.packets_to_client.fetch_add(batched, Ordering::Relaxed);
                                    self.stats.client_writes.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(Err(e)) => return End::Io(e),
                                Err(_) => return End::WriteTimeout,
                            }
                        }
                        if drops_checked.elapsed() >= DROPS_CHECK_EVERY {
                            drops_checked = tokio::time::Instant::now();
                            self.count_drops(relay.as_ref(), &mut drops_seen);
                        }
                    }
                    () = tokio::time::sleep_until(deadline) => {
                        if relay.is_none() {
                            return End::NoAllocation;
                        }
                        let actions = self.session.handle_timeout(std::time::Instant::now(), &self.quota);
                        if !actions.is_empty() {
                            self.apply(actions, &mut wr, &mut relay).await;
                            return End::Expired;
                        }
                    }
                    () = stop.cancelled() => return End::Stopped,
                }
            }
        }
        .await;
        // The last drops on the relay socket, before it closes with the stream.
        self.count_drops(relay.as_ref(), &mut drops_seen);
        end
    }

    /// Carry out the session's actions; `Some` ends the stream.
    async fn apply(
        &mut self,
        actions: Vec<Action>,
        wr: &mut tokio::io::WriteHalf<BoxedStream>,
        relay: &mut Option<UdpSocket>,
    ) -> Option<End> {
        let mut queue = std::collections::VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Reply(bytes) => {
                    match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&bytes)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Some(End::Io(e)),
                        Err(_) => return Some(End::WriteTimeout),
                    }
                }
                Action::OpenRelay => {
                    let more = match UdpSocket::bind(SocketAddr::new(self.relay_bind, 0)).await {
                        Ok(sock) => match sock.local_addr() {
                            Ok(mut addr) => {
                                if !rakor_sfu::sockopt::set_buffers(&sock, RELAY_SOCKET_BUFFER)
                                    .is_some_and(|g| g.hold(RELAY_SOCKET_BUFFER))
                                {
                                    tracing::debug!(relay = %addr, "cannot size a TURN relay socket's buffers");
                                }
                                if addr.ip().is_unspecified() {
                                    addr.set_ip(self.relay_public);
                                }
                                *relay = Some(sock);
                                self.stats.allocations.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(peer = %self.peer, relay = %addr, "TURN allocation");
                                self.session.relay_opened(addr, at())
                            }
                            Err(_) => self.session.relay_failed(&self.quota),
                        },
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot bind a TURN relay socket");
                            self.session.relay_failed(&self.quota)
                        }
                    };
                    queue.extend(more);
                }
                Action::SendToPeer { to, data } => {
                    if let Some(sock) = relay.as_ref() {
                        if sock.send_to(&data, to).await.is_ok() {
                            self.stats.packets_to_media.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Action::CloseRelay => *relay = None,
                Action::Close => return Some(End::Framing("malformed STUN message".into())),
            }
        }
        None
    }
}

/// A datagram on the relay socket, or never when there is none.
async fn recv(sock: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

fn at() -> At {
    At {
        now: std::time::Instant::now(),
        unix: unix_now(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(q: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    q.lock().unwrap_or_else(|e| e.into_inner())
}

/// The loopback address of `ip`'s family (reaches a socket bound on the unspecified address).
fn loopback_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    }
}

/// Host for the `turn:` URLs: `turn.public_host`, else `server.public_url`'s host, else the
/// first advertised media IP.
pub fn turn_host(config: &Config) -> String {
    let t = config.turn.public_host.trim();
    if !t.is_empty() {
        return t.to_owned();
    }
    let url = config.server.public_url.trim();
    if let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    {
        let authority = rest.split('/').next().unwrap_or("");
        let host = if let Some(v6) = authority.strip_prefix('[') {
            v6.split(']').next().unwrap_or("")
        } else {
            authority.split(':').next().unwrap_or("")
        };
        if !host.is_empty() {
            return host.to_owned();
        }
    }
    config
        .effective_advertise_ips()
        .first()
        .map_or_else(|| "127.0.0.1".to_owned(), IpAddr::to_string)
}

/// The minting secret: `turn.secret`, or `<data_dir>/turn.secret` (32 random bytes, base64,
/// mode 0600), created when missing.
pub fn load_or_create_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if !config.turn.secret.is_empty() {
        return Ok(config.turn.secret.expose().trim().as_bytes().to_vec());
    }
    let path = config.turn_secret_path();
    if let Some(s) = read_secret(&path)? {
        return Ok(s);
    }
    use base64::Engine as _;
    use rand::RngCore as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            f.write_all(format!("{text}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "TURN secret created");
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(anyhow::anyhow!("cannot create {}: {e}", path.display())),
    }
    read_secret(&path)?.ok_or_else(|| anyhow::anyhow!("{} is empty", path.display()))
}

fn read_secret(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().len() >= 16 => Ok(Some(s.trim().as_bytes().to_vec())),
        Ok(_) => Err(anyhow::anyhow!(
            "{} holds fewer than 16 characters; delete it to generate a new one",
            path.display()
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn the_turn_host_comes_from_the_config() {
        let mut c = Config::default();
        assert_eq!(turn_host(&c), "127.0.0.1");
        c.server.public_url = "https://rakor.example.org:8443/x".into();
        assert_eq!(turn_host(&c), "rakor.example.org");
        c.server.public_url = "http://[2001:db8::1]:80".into();
        assert_eq!(turn_host(&c), "2001:db8::1");
        c.turn.public_host = "turn.example.org".into();
        assert_eq!(turn_host(&c), "turn.example.org");
    }

    #[test]
    fn minted_ice_servers_name_the_listener_and_expire_after_the_ttl() {
        let mut c = Config::default();
        c.turn.tls_url = "turns:rakor.example.org:443?transport=tcp".into();
        let svc = TurnService::new(
            &c,
            &["127.0.0.1:7882".parse().unwrap()],
            "0.0.0.0:3478".parse().unwrap(),
            b"0123456789abcdef".to_vec(),
            CancellationToken::new(),
        )
        .unwrap();
        let s = svc.ice_servers("site-1");
        assert_eq!(s.len(), 1);
        assert_eq!(
            s[0].urls,
            [
                "turn:127.0.0.1:3478?transport=tcp",
                "turns:rakor.example.org:443?transport=tcp"
            ]
        );
        let now = unix_now();
        assert!((now + 599..=now + 601).contains(&s[0].expires_at));
        assert_eq!(s[0].username, format!("{}:site-1", s[0].expires_at));
        let p = rtc::crypto::default_provider().unwrap();
        assert_eq!(
            s[0].credential,
            rakor_turn::credentials::password(p.crypto(), b"0123456789abcdef", &s[0].username)
                .unwrap()
        );
    }
}
