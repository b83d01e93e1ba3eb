//! TURN over TCP for the `webrtc` crate, whose TURN client speaks UDP only (0.21 skips
//! `?transport=tcp` and `turns:` URLs). A bridge per peer connection and TURN server: a local
//! UDP socket the crate's TURN client talks to (`turn:<local>?transport=udp`), and one TCP
//! stream to the real TURN server carrying the same messages with RFC 8656 stream framing
//! (STUN messages as they are; ChannelData padded to four bytes on the stream, unpadded in
//! datagrams). The TURN server sees an ordinary TURN-over-TCP client; the allocation, its
//! permissions and channels belong to that TCP connection.
//!
//! The bridge connects when the first datagram arrives (so an unused TURN server costs one UDP
//! socket and nothing on the network), serves one local client address, and ends when the
//! stream closes or nothing was sent for [`IDLE`] (the peer connection closed; ICE consent
//! checks keep a live one busy every few seconds).
//!
//! TLS (`turns:`): [`TurnConnector::Tls`] wraps the stream in rustls, verifying the server's
//! certificate for the URL's host against the roots the client trusts (the system's, plus
//! `--ca-file`). Inside TLS the bytes are the same as over plain TCP.
//!
//! Every byte the bridges carry from the TURN server is counted in a [`BridgeCounters`] shared
//! with the client's report (`turn_tcp_bytes_in`, `turn_tls_bytes_in`), so a test or an
//! operator can see which relay transport carries the media.

use rakor_turn::framing::{next_frame, Frame};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};

/// Datagrams from the local client gathered into one stream write at most (a burst costs one
/// TLS record run and one system call, not one per datagram), and the most bytes gathered.
const BATCH_DATAGRAMS: usize = 32;
const BATCH_BYTES: usize = 32 * 1024;

/// A bridge whose local client sent nothing for this long ends.
pub const IDLE: Duration = Duration::from_secs(30);
/// Connecting to the TURN server must succeed within this time.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The TLS handshake with the TURN server must finish within this time.
const TLS_TIMEOUT: Duration = Duration::from_secs(10);

/// How the bridge reaches the TURN server.
#[derive(Clone)]
pub enum TurnConnector {
    /// `turn:…?transport=tcp`: plain TCP.
    Tcp,
    /// `turns:`: TLS over TCP, the certificate verified for `name`.
    Tls {
        config: Arc<rustls::ClientConfig>,
        name: rustls_pki_types::ServerName<'static>,
    },
}

impl std::fmt::Debug for TurnConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp => f.write_str("Tcp"),
            Self::Tls { name, .. } => write!(f, "Tls({name:?})"),
        }
    }
}

impl TurnConnector {
    /// The TLS connector for a `turns:` URL's `host`, trusting `roots` (`None`: the system's).
    pub fn tls(
        host: &str,
        roots: Option<&Arc<rustls::RootCertStore>>,
    ) -> Result<TurnConnector, crate::ClientError> {
        let name = rustls_pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| crate::ClientError::InvalidOptions(format!("turns: host {host}: {e}")))?;
        Ok(TurnConnector::Tls {
            config: Arc::new(crate::tls::client_config(roots)?),
            name,
        })
    }
}

/// Bytes received from TURN servers through the bridges, by transport (shared by all the
/// bridges of one client; one relaxed atomic add per stream read).
#[derive(Debug, Default)]
pub struct BridgeCounters {
    pub tcp_bytes_in: AtomicU64,
    pub tls_bytes_in: AtomicU64,
}

/// A `turn:`/`turns:` URL's parts that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnUrl {
    pub secure: bool,
    pub host: String,
    pub port: u16,
    pub tcp: bool,
}

/// Parse `turn:host:port?transport=tcp` (and `turns:`); `None` for anything else.
pub fn parse_turn_url(url: &str) -> Option<TurnUrl> {
    let (secure, rest) = if let Some(r) = url.strip_prefix("turns:") {
        (true, r)
    } else {
        (false, url.strip_prefix("turn:")?)
    };
    let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
    let tcp = secure
        || query
            .split('&')
            .any(|kv| kv.eq_ignore_ascii_case("transport=tcp"));
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, p) = v6.split_once(']')?;
        (h, p.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None if secure => 5349,
        None => 3478,
    };
    if host.is_empty() {
        return None;
    }
    Some(TurnUrl {
        secure,
        host: host.to_owned(),
        port,
        tcp,
    })
}

/// Start a bridge to `server` on `bind_ip`; returns the local UDP address to give the
/// `webrtc` crate as `turn:<addr>?transport=udp`.
pub async fn start_bridge(
    bind_ip: IpAddr,
    server: String,
    connector: TurnConnector,
    counters: Arc<BridgeCounters>,
) -> io::Result<SocketAddr> {
    let udp = UdpSocket::bind(SocketAddr::new(bind_ip, 0)).await?;
    crate::runtime::set_buffers(&udp, crate::runtime::SOCKET_BUFFER);
    let local = udp.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = run(udp, &server, connector, counters).await {
            tracing::debug!(%server, error = %e, "TURN/TCP bridge ended");
        }
    });
    Ok(local)
}

async fn run(
    udp: UdpSocket,
    server: &str,
    connector: TurnConnector,
    counters: Arc<BridgeCounters>,
) -> io::Result<()> {
    let mut dgram = vec![0u8; 65_536];
    // Wait for the TURN client's first message.
    let (n, client) = match tokio::time::timeout(IDLE, udp.recv_from(&mut dgram)).await {
        Ok(r) => r?,
        Err(_) => return Ok(()),
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(server))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting to the TURN server"))??;
    let _ = tcp.set_nodelay(true);
    match connector {
        TurnConnector::Tcp => {
            let (rd, wr) = tcp.into_split();
            pump(udp, client, &dgram[..n], rd, wr, &counters.tcp_bytes_in).await
        }
        TurnConnector::Tls { config, name } => {
            let tls = tokio::time::timeout(
                TLS_TIMEOUT,
                tokio_rustls::TlsConnector::from(config).connect(name, tcp),
            )
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS to the TURN server"))??;
            let (rd, wr) = tokio::io::split(tls);
            pump(udp, client, &dgram[..n], rd, wr, &counters.tls_bytes_in).await
        }
    }
}

/// Carry datagrams from `client` to the stream and frames from the stream back, until either
/// side ends or the client is idle for [`IDLE`]. `first` is the datagram that opened the bridge.
async fn pump(
    udp: UdpSocket,
    client: SocketAddr,
    first: &[u8],
    mut rd: impl AsyncRead + Unpin,
    mut wr: impl AsyncWrite + Unpin,
    bytes_in: &AtomicU64,
) -> io::Result<()> {
    let mut dgram = vec![0u8; 65_536];
    let mut out = Vec::with_capacity(BATCH_BYTES + 2048);
    frame_for_stream(first, &mut out);
    wr.write_all(&out).await?;
    wr.flush().await?;
    let mut inbuf = bytes::BytesMut::with_capacity(16 * 1024);
    loop {
        tokio::select! {
            r = tokio::time::timeout(IDLE, udp.recv_from(&mut dgram)) => {
                let Ok(r) = r else { return Ok(()) };
                let (n, from) = r?;
                if from != client {
                    continue;
                }
                out.clear();
                frame_for_stream(&dgram[..n], &mut out);
                // And whatever else is already queued on the socket, in the same write.
                for _ in 1..BATCH_DATAGRAMS {
                    if out.len() >= BATCH_BYTES {
                        break;
                    }
                    match udp.try_recv_from(&mut dgram) {
                        Ok((n, from)) if from == client => frame_for_stream(&dgram[..n], &mut out),
                        Ok(_) => {}
                        Err(_) => break, // WouldBlock: drained
                    }
                }
                wr.write_all(&out).await?;
                wr.flush().await?;
            }
            r = rd.read_buf(&mut inbuf) => {
                let got = r?;
                if got == 0 {
                    return Ok(());
                }
                bytes_in.fetch_add(got as u64, Ordering::Relaxed);
                loop {
                    let frame = match next_frame(&inbuf) {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
                    };
                    let datagram_len = match frame {
                        Frame::Stun { len } => len,
                        Frame::ChannelData { data_len, .. } => 4 + data_len,
                    };
                    udp.send_to(&inbuf[..datagram_len], client).await?;
                    bytes::Buf::advance(&mut inbuf, frame.len());
                }
            }
        }
    }
}

/// A datagram from the TURN client as stream bytes, appended to `out`: ChannelData padded to
/// four bytes.
fn frame_for_stream(datagram: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(datagram);
    if datagram.first().is_some_and(|b| b >> 6 == 1) && datagram.len() >= 4 {
        let data_len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
        out.truncate(start + 4 + data_len.min(datagram.len() - 4));
        let padded = (out.len() - start).next_multiple_of(4);
        out.resize(start + padded, 0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn turn_urls_parse() {
        let u = parse_turn_url("turn:10.0.0.1:3478?transport=tcp").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.tcp, u.secure),
            ("10.0.0.1", 3478, true, false)
        );
        let u = parse_turn_url("turn:example.org?transport=udp").unwrap();
        assert_eq!((u.port, u.tcp), (3478, false));
        let u = parse_turn_url("turns:[2001:db8::1]:443?transport=tcp").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.secure),
            ("2001:db8::1", 443, true)
        );
        assert_eq!(parse_turn_url("stun:example.org"), None);
        assert_eq!(parse_turn_url("turn::3478"), None);
    }

    #[test]
    fn channel_data_is_padded_on_the_stream() {
        let mut out = Vec::new();
        frame_for_stream(&[0x40, 0x00, 0x00, 0x03, 1, 2, 3], &mut out);
        assert_eq!(out, [0x40, 0, 0, 3, 1, 2, 3, 0]);
        out.clear();
        frame_for_stream(&[0x40, 0x00, 0x00, 0x03, 1, 2, 3, 0], &mut out);
        assert_eq!(out, [0x40, 0, 0, 3, 1, 2, 3, 0], "already padded");
        // Appended after what is there (a burst gathered into one write).
        frame_for_stream(&[0x40, 0x01, 0x00, 0x01, 9], &mut out);
        assert_eq!(out, [0x40, 0, 0, 3, 1, 2, 3, 0, 0x40, 1, 0, 1, 9, 0, 0, 0]);
        out.clear();
        let stun = [
            0u8, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        frame_for_stream(&stun, &mut out);
        assert_eq!(out, stun);
    }
}
