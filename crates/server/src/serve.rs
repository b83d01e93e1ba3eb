//! Serving HTTP on the listener: our own accept loop instead of `axum::serve`, so that no
//! stranger can hold the server's file descriptors.
//!
//! - **Connection caps**: at most `limits.max_http_connections` TCP connections at once and
//!   `limits.max_http_connections_per_ip` from one client address (IPv6: per /64; trusted
//!   proxies are exempt). A connection over a cap gets a `503` written without waiting and is
//!   closed at once. A connection's permit lives as long as its socket, WebSockets included.
//! - **Header-read timeout**: a request's header must arrive within
//!   `limits.http_header_read_timeout` (hyper's timer); this also closes keep-alive
//!   connections that stay idle between requests.
//! - **Idle timeout**: an HTTP connection that moves no byte in either direction for
//!   `limits.http_idle_timeout` is closed (a trickled body, a stalled reader). Upgraded
//!   connections (WebSocket signalling) leave this loop and keep their own liveness checks.
//! - **Client address**: each request's `ConnectInfo<SocketAddr>` is the client address
//!   resolved through [`crate::client_addr::TrustedProxies`]; the TCP peer and the local
//!   address are the [`PeerAddr`] and [`LocalAddr`] extensions.
//! - **Shutdown**: when `stop` is cancelled the loop stops accepting and asks every open HTTP
//!   connection to finish its request and close; the caller bounds the wait.
//!
//! [`raise_nofile_limit`] lifts the soft open-file limit to the hard one at start.

use crate::client_addr::{canonical, ForwardedHttps, LocalAddr, PeerAddr, TrustedProxies};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// Written (best effort, without waiting) to a connection refused by a cap.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: 33\r\n\r\ntoo many connections; try again\r\n";

/// File descriptors kept for everything that is not an HTTP connection (database, media
/// socket, log files, the listener itself).
const RESERVED_FDS: u64 = 256;

/// How the listener serves.
#[derive(Clone)]
pub struct ServeSettings {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub proxies: TrustedProxies,
    /// Built-in HTTPS (`server.tls_cert_file`): connections that start with a TLS ClientHello
    /// are decrypted, then served as HTTPS/WSS or handed to `turn`. `None`: plain HTTP.
    pub tls: Option<crate::tls::Tls>,
    /// ICE-TCP on this port (`media.ice_tcp_on_http_port`): RFC 4571-framed STUN connections
    /// go to the media worker as they are.
    pub ice_tcp: Option<IceTcpHandoff>,
    /// The TURN server, for TURN over TLS on this port (`None`: TURN is off; such connections
    /// are closed).
    pub turn: Option<crate::byte_stream::SharedTurnStreams>,
}

/// Where ICE-TCP connections on the HTTP(S) port go: the media worker, which knows them by
/// the passive candidate on `candidate_port` (the public port).
#[derive(Clone)]
pub struct IceTcpHandoff {
    pub sfu: rakor_sfu::SfuHandle,
    pub candidate_port: u16,
}

impl std::fmt::Debug for ServeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeSettings")
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("proxies", &self.proxies)
            .field("tls", &self.tls.is_some())
            .field(
                "ice_tcp_candidate_port",
                &self.ice_tcp.as_ref().map(|h| h.candidate_port),
            )
            .field("turn", &self.turn.is_some())
            .finish()
    }
}

impl ServeSettings {
    /// From the configuration, with the connection cap lowered to fit `fd_limit` (the open
    /// file limit in force) if needed.
    pub fn new(config: &crate::config::Config, fd_limit: Option<u64>) -> Self {
        let l = &config.limits;
        let mut max = l.max_http_connections;
        if let Some(fds) = fd_limit {
            let fit = usize::try_from(fds.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
            if fit < max {
                tracing::warn!(
                    open_file_limit = fds,
                    configured = max,
                    using = fit.max(16),
                    "limits.max_http_connections does not fit the open-file limit; lowered (raise LimitNOFILE)"
                );
                max = fit.max(16);
            }
        }
        Self {
            max_connections: max,
            max_connections_per_ip: l.max_http_connections_per_ip.min(max),
            header_read_timeout: l.http_header_read_timeout,
            idle_timeout: l.http_idle_timeout,
            proxies: TrustedProxies::new(&config.server.trusted_proxies),
            tls: None,
            ice_tcp: None,
            turn: None,
        }
    }
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit (systemd starts services with a soft
/// limit of 1024). Returns the limit in force afterwards.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let old = lim.rlim_cur;
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        tracing::info!(from = old, to = lim.rlim_max, "raised the open-file limit");
        lim.rlim_cur = lim.rlim_max;
    }
    Ok(lim.rlim_cur)
}

/// Accept and serve until `stop` is cancelled and every HTTP connection has finished.
pub async fn run(
    listener: TcpListener,
    app: Router,
    settings: ServeSettings,
    stop: CancellationToken,
) -> io::Result<()> {
    let caps = Arc::new(ConnectionCaps::new(
        settings.max_connections,
        settings.max_connections_per_ip,
    ));
    let settings = Arc::new(settings);
    let connections = TaskTracker::new();
    let mut refused_logged = Instant::now() - Duration::from_secs(60);
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                if !is_transient(&e) {
                    // Out of file descriptors (EMFILE/ENFILE) or memory: back off briefly
                    // instead of spinning; connections that close free them.
                    tracing::warn!(error = %e, "accept failed; pausing 50 ms");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        let ip = canonical(peer.ip());
        let Some(permit) = caps.admit(ip, settings.proxies.is_trusted(ip)) else {
            let _ = stream.try_write(BUSY_RESPONSE);
            if refused_logged.elapsed() >= Duration::from_secs(10) {
                refused_logged = Instant::now();
                tracing::warn!(%peer, open = caps.open(), "HTTP connection refused: connection cap reached");
            }
            continue;
        };
        let local = stream
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(
            stream,
            peer,
            local,
            permit,
            app.clone(),
            Arc::clone(&settings),
            stop.clone(),
        ));
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Errors of one connection attempt, not of the listener.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// One accepted connection: tell what it is by its first bytes (within the header-read
/// timeout), then serve it as HTTP, or finish the TLS handshake (within the same timeout) and
/// serve HTTPS or hand it to TURN, or hand it to the media worker (ICE-TCP). Garbage, silence
/// and slow handshakes close only this connection.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    permit: ConnectionPermit,
    app: Router,
    settings: Arc<ServeSettings>,
    stop: CancellationToken,
) {
    use crate::one_port::{AfterTls, FirstBytes};
    let deadline = settings.header_read_timeout;
    let first = tokio::select! {
        r = tokio::time::timeout(deadline, crate::one_port::peek_first_bytes(&stream)) => r,
        () = stop.cancelled() => return,
    };
    let first = match first {
        Ok(Ok(kind)) => kind,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection failed before its first bytes");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "closing a connection that sent nothing usable in time");
            return;
        }
    };
    match (first, &settings.tls) {
        (FirstBytes::Tls, Some(tls)) => {
            let handshake = tokio::select! {
                r = tokio::time::timeout(deadline, tls.acceptor.accept(stream)) => r,
                () = stop.cancelled() => return,
            };
            let mut tls_stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let after = tokio::select! {
                r = tokio::time::timeout(deadline, crate::one_port::read_after_tls(&mut tls_stream)) => r,
                () = stop.cancelled() => return,
            };
            let (kind, prefix) = match after {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS connection failed before a request");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "closing a TLS connection that sent nothing in time");
                    return;
                }
            };
            if kind == AfterTls::Stun {
                // TURN frames are small and latency-bound: no Nagle delay (as on turn.listen).
                let _ = tls_stream.get_ref().0.set_nodelay(true);
            }
            let io = crate::one_port::PrefixedStream::new(prefix, tls_stream);
            match kind {
                AfterTls::Http => {
                    serve_http(io, true, peer, local, permit, app, settings, stop).await;
                }
                AfterTls::Stun => match &settings.turn {
                    Some(turn) => {
                        let tracked = TrackedIo {
                            inner: io,
                            activity: Arc::new(Activity::new()),
                            _permit: permit,
                        };
                        turn.serve(
                            Box::new(tracked),
                            peer,
                            crate::byte_stream::TurnTransport::Tls,
                        );
                    }
                    None => tracing::debug!(%peer, "STUN over TLS but TURN is off; closing"),
                },
                AfterTls::Garbage => {
                    tracing::debug!(%peer, "closing a TLS connection that is neither HTTP nor STUN");
                }
            }
        }
        (FirstBytes::IceTcp, _) => match &settings.ice_tcp {
            Some(handoff) => {
                // Several media workers: the first frame's STUN USERNAME names the owner.
                let first_stun = if handoff.sfu.workers() > 1 {
                    let peeked = tokio::select! {
                        r = tokio::time::timeout(deadline, crate::one_port::peek_first_frame(&stream)) => r,
                        () = stop.cancelled() => return,
                    };
                    match peeked {
                        Ok(Ok(frame)) => frame,
                        _ => {
                            tracing::debug!(%peer, "ICE-TCP: no whole first frame in time; closing");
                            return;
                        }
                    }
                } else {
                    Vec::new()
                };
                drop(permit); // the media worker's own stream limits apply from here
                match stream.into_std() {
                    Ok(sock) => {
                        if let Err(e) = handoff.sfu.adopt_tcp_stream_framed(
                            sock,
                            peer,
                            handoff.candidate_port,
                            &first_stun,
                        ) {
                            tracing::debug!(%peer, error = %e, "ICE-TCP hand-off failed");
                        }
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "ICE-TCP hand-off failed"),
                }
            }
            None => tracing::debug!(%peer, "ICE-TCP on the HTTP port is off; closing"),
        },
        (FirstBytes::Http, Some(_)) => {
            // Plain HTTP on the HTTPS port: say so, then close.
            let mut stream = stream;
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::io::AsyncWriteExt::write_all(&mut stream, PLAIN_HTTP_ON_TLS_RESPONSE),
            )
            .await;
        }
        (FirstBytes::Http | FirstBytes::Garbage, None) => {
            // Plain HTTP port: hyper answers a malformed request with 400 and closes.
            serve_http(stream, false, peer, local, permit, app, settings, stop).await;
        }
        (FirstBytes::Tls, None) => {
            tracing::debug!(%peer, "TLS ClientHello on a plain-HTTP listener; closing");
        }
        (FirstBytes::Garbage, Some(_)) => tracing::debug!(%peer, "closing a garbage connection"),
        (FirstBytes::Closed, _) => {}
    }
}

/// Written to a plain HTTP request on the HTTPS listener.
const PLAIN_HTTP_ON_TLS_RESPONSE: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 42\r\n\r\nThis port speaks HTTPS: use https:// here\n";

/// Serve HTTP/1.1 (WebSocket upgrades included) on `io` until it closes, idles out, or
/// `stop` asks it to finish.
#[allow(clippy::too_many_arguments)]
async fn serve_http<S>(
    stream: S,
    over_tls: bool,
    peer: SocketAddr,
    local: SocketAddr,
    permit: ConnectionPermit,
    app: Router,
    settings: Arc<ServeSettings>,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(TrackedIo {
        inner: stream,
        activity: Arc::clone(&activity),
        _permit: permit,
    });
    let proxies = settings.proxies.clone();
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let (client, https) = proxies.resolve(peer, req.headers());
            let ext = req.extensions_mut();
            ext.insert(ConnectInfo(client));
            ext.insert(PeerAddr(peer));
            ext.insert(LocalAddr(local));
            ext.insert(ForwardedHttps(https || over_tls));
            app.clone().oneshot(req)
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let idle = settings.idle_timeout;
    let mut stopping = false;
    loop {
        let deadline = activity.last() + idle;
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                if activity.last() + idle <= Instant::now() {
                    tracing::debug!(%peer, "closing an idle HTTP connection");
                    return;
                }
            }
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// When a connection last moved a byte.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// The stream (TCP, or TLS over it) with its activity clock and its connection permit
/// (released when the socket closes, also after a WebSocket upgrade).
struct TrackedIo<S> {
    inner: S,
    activity: Arc<Activity>,
    _permit: ConnectionPermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Open connections in total and per client address.
#[derive(Debug)]
struct ConnectionCaps {
    total: Arc<Semaphore>,
    max_per_ip: usize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection's place under the caps; returned on drop.
#[derive(Debug)]
struct ConnectionPermit {
    _total: OwnedSemaphorePermit,
    ip: Option<IpAddr>,
    caps: Arc<ConnectionCaps>,
}

impl ConnectionCaps {
    fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(max_total)),
            max_per_ip,
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_ip.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&self) -> usize {
        self.lock().values().sum()
    }

    /// A place for a connection from `ip`, unless a cap is reached. `exempt`: a trusted
    /// proxy, counted only against the total.
    fn admit(self: &Arc<Self>, ip: IpAddr, exempt: bool) -> Option<ConnectionPermit> {
        let total = Arc::clone(&self.total).try_acquire_owned().ok()?;
        if exempt {
            return Some(ConnectionPermit {
                _total: total,
                ip: None,
                caps: Arc::clone(self),
            });
        }
        let key = crate::limits::address_key(ip);
        let mut map = self.lock();
        let n = map.entry(key).or_insert(0);
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(ConnectionPermit {
            _total: total,
            ip: Some(key),
            caps: Arc::clone(self),
        })
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut map = self.caps.lock();
        if let Some(n) = map.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn caps_count_per_address_and_in_total_and_return_on_drop() {
        let caps = Arc::new(ConnectionCaps::new(4, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2::99".parse().unwrap();
        let a1 = caps.admit(a, false).unwrap();
        let _a2 = caps.admit(a, false).unwrap();
        assert!(caps.admit(a, false).is_none(), "third from one address");
        let _b1 = caps.admit(b, false).unwrap();
        let _v1 = caps.admit(v6a, false).unwrap();
        assert!(caps.admit(v6b, false).is_none(), "total of 4 reached");
        drop(a1);
        assert_eq!(caps.open(), 3);
        let p = caps.admit(v6b, false).unwrap();
        assert!(caps.admit(v6a, false).is_none(), "one /64 is one address");
        drop(p);
        // A trusted proxy counts only in the total.
        let _x = caps.admit(a, true).unwrap();
        assert!(caps.admit(b, true).is_none());
    }
}
