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
//! TLS (`turns:`): the hook is [`TurnConnector`]; only plain TCP is implemented here. A TLS
//! connector would wrap the stream in rustls with the roots loaded by `--ca-file`.

use rakor_turn::framing::{next_frame, Frame};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};

/// A bridge whose local client sent nothing for this long ends.
pub const IDLE: Duration = Duration::from_secs(30);
/// Connecting to the TURN server must succeed within this time.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How the bridge reaches the TURN server. `Tcp` today; `turns:` needs a TLS variant.
#[derive(Debug, Clone)]
pub enum TurnConnector {
    Tcp,
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
) -> io::Result<SocketAddr> {
    let udp = UdpSocket::bind(SocketAddr::new(bind_ip, 0)).await?;
    let local = udp.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = run(udp, &server, connector).await {
            tracing::debug!(%server, error = %e, "TURN/TCP bridge ended");
        }
    });
    Ok(local)
}

async fn run(udp: UdpSocket, server: &str, _connector: TurnConnector) -> io::Result<()> {
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
    let (mut rd, mut wr) = tcp.into_split();
    let mut out = Vec::with_capacity(2048);
    frame_for_stream(&dgram[..n], &mut out);
    wr.write_all(&out).await?;
    let mut inbuf = bytes::BytesMut::with_capacity(16 * 1024);
    loop {
        tokio::select! {
            r = tokio::time::timeout(IDLE, udp.recv_from(&mut dgram)) => {
                let Ok(r) = r else { return Ok(()) };
                let (n, from) = r?;
                if from != client {
                    continue;
                }
                frame_for_stream(&dgram[..n], &mut out);
                wr.write_all(&out).await?;
            }
            r = rd.read_buf(&mut inbuf) => {
                if r? == 0 {
                    return Ok(());
                }
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

/// A datagram from the TURN client as stream bytes: ChannelData padded to four bytes.
fn frame_for_stream(datagram: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(datagram);
    if datagram.first().is_some_and(|b| b >> 6 == 1) && datagram.len() >= 4 {
        let data_len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
        out.truncate(4 + data_len.min(datagram.len() - 4));
        let padded = out.len().next_multiple_of(4);
        out.resize(padded, 0);
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
        frame_for_stream(&[0x40, 0x00, 0x00, 0x03, 1, 2, 3, 0], &mut out);
        assert_eq!(out, [0x40, 0, 0, 3, 1, 2, 3, 0], "already padded");
        let stun = [
            0u8, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        frame_for_stream(&stun, &mut out);
        assert_eq!(out, stun);
    }
}
