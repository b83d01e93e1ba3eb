//! One TCP port for everything: what an accepted connection on `server.listen` is, told by its
//! first bytes, and the stream wrapper that puts bytes already read back in front.
//!
//! Before TLS (peeked, nothing consumed):
//! - `0x16 0x03 …` — a TLS ClientHello: HTTPS/WSS, or TURN over TLS (told apart after the
//!   handshake);
//! - a 2-byte RFC 4571 length, then a STUN header (first two bits 0, magic cookie
//!   `0x2112A442` at offset 2+4) — ICE-TCP: the raw stream goes to the media worker;
//! - an upper-case ASCII letter (`GET`, `POST`, …) — plain HTTP;
//! - anything else is garbage.
//!
//! After TLS (read, then replayed with [`PrefixedStream`]): a STUN message (first two bits 0,
//! magic cookie at offset 4) is TURN over TLS; anything else is handed to HTTP.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The STUN magic cookie (RFC 5389).
pub const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// A STUN header is 20 bytes.
const STUN_HEADER: usize = 20;
/// Bytes peeked to classify a plain connection (2-byte frame length + 8 bytes of STUN header).
const PEEK_BYTES: usize = 10;
/// While the first bytes are incomplete, peek again after this (bounded by the caller's
/// deadline). A first segment shorter than 10 bytes is rare; a slow-loris pays its own wait.
const PARTIAL_RETRY: Duration = Duration::from_millis(5);

/// What the first bytes of a plain TCP connection say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    /// A TLS record of type handshake (a ClientHello).
    Tls,
    /// An RFC 4571 frame holding a STUN message: ICE over TCP.
    IceTcp,
    /// Looks like an HTTP request line.
    Http,
    /// None of these.
    Garbage,
    /// The peer closed before sending anything.
    Closed,
}

/// Classify `b` (the bytes seen so far); `None` while more are needed to decide.
pub fn classify(b: &[u8]) -> Option<FirstBytes> {
    let first = *b.first()?;
    if first == 0x16 {
        return Some(match b.get(1)? {
            0x03 => FirstBytes::Tls,
            _ => FirstBytes::Garbage,
        });
    }
    if first.is_ascii_uppercase() {
        return Some(FirstBytes::Http);
    }
    // RFC 4571: length (2 bytes), then the STUN message: type with the two top bits 0.
    if let Some(t) = b.get(2) {
        if t & 0xC0 != 0 {
            return Some(FirstBytes::Garbage);
        }
    }
    if b.len() < PEEK_BYTES {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([first, b.get(1).copied()?]));
    let cookie = b.get(6..10)?;
    if cookie == STUN_MAGIC_COOKIE && len >= STUN_HEADER {
        Some(FirstBytes::IceTcp)
    } else {
        Some(FirstBytes::Garbage)
    }
}

/// Peek at the connection until [`classify`] decides (the caller bounds the wait). Nothing is
/// consumed: the stream can go to TLS, HTTP or the media worker as it is.
pub async fn peek_first_bytes(stream: &TcpStream) -> io::Result<FirstBytes> {
    let mut buf = [0u8; PEEK_BYTES];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(FirstBytes::Closed);
        }
        if let Some(kind) = classify(buf.get(..n).unwrap_or_default()) {
            return Ok(kind);
        }
        tokio::time::sleep(PARTIAL_RETRY).await;
    }
}

/// The largest first ICE-TCP frame peeked whole (the media worker's own frame limit).
const MAX_FIRST_FRAME: usize = 2048;

/// Peek at an ICE-TCP connection (already classified) until its whole first RFC 4571 frame is
/// in, and return that frame's payload (the first STUN message); nothing is consumed. The
/// caller bounds the wait. With several media workers this says which one owns the stream
/// (the tag in the ufrag of its USERNAME). A frame longer than the worker's limit is returned
/// cut (the worker closes the stream on it anyway).
pub async fn peek_first_frame(stream: &TcpStream) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 2 + MAX_FIRST_FRAME];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let len = match buf.get(..2) {
            Some(&[a, b]) if n >= 2 => usize::from(u16::from_be_bytes([a, b])),
            _ => 0,
        };
        let want = 2 + len.min(MAX_FIRST_FRAME);
        if n >= want {
            buf.truncate(want);
            buf.drain(..2);
            return Ok(buf);
        }
        tokio::time::sleep(PARTIAL_RETRY).await;
    }
}

/// What the first decrypted bytes of a TLS connection say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterTls {
    /// A STUN message: TURN over TLS.
    Stun,
    /// Anything that is not STUN (HTTP parses it, or refuses it).
    Http,
    /// Starts like STUN (two top bits 0) but is not; or the peer closed.
    Garbage,
}

/// Read the first decrypted bytes (at most 8: enough to see the STUN cookie) and say what they
/// are. The bytes must be replayed ([`PrefixedStream`]) to whoever gets the stream.
pub async fn read_after_tls<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<(AfterTls, Vec<u8>)> {
    let mut buf = vec![0u8; 8];
    let mut n = 0;
    while n < buf.len() {
        let m = s.read(buf.get_mut(n..).unwrap_or_default()).await?;
        if m == 0 {
            break;
        }
        n += m;
        if buf.first().is_some_and(|b| b & 0xC0 != 0) {
            break; // not STUN: HTTP's parser takes it from here
        }
    }
    buf.truncate(n);
    let kind = match buf.first() {
        None => AfterTls::Garbage,
        Some(b) if b & 0xC0 != 0 => AfterTls::Http,
        Some(_) if buf.get(4..8) == Some(&STUN_MAGIC_COOKIE[..]) => AfterTls::Stun,
        Some(_) => AfterTls::Garbage,
    };
    Ok((kind, buf))
}

/// A stream with bytes already read from it put back in front: reads return `prefix` first,
/// then the inner stream's bytes; writes go straight to the inner stream.
pub struct PrefixedStream<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> PrefixedStream<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }

    /// The inner stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PrefixedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.prefix.get(this.pos..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(rest.get(..n).unwrap_or_default());
            this.pos += n;
            if this.pos >= this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrefixedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    /// An RFC 4571 frame with a STUN Binding request header (and a 0-byte body).
    fn framed_binding() -> Vec<u8> {
        let mut v = vec![0x00, 20, 0x00, 0x01, 0x00, 0x00];
        v.extend_from_slice(&STUN_MAGIC_COOKIE);
        v.extend_from_slice(&[7u8; 12]);
        v
    }

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(
            classify(&[0x16, 0x03, 0x01, 0x02, 0x00]),
            Some(FirstBytes::Tls)
        );
        assert_eq!(classify(&[0x16, 0x03]), Some(FirstBytes::Tls));
        assert_eq!(classify(&[0x16]), None);
        assert_eq!(classify(&[0x16, 0x99]), Some(FirstBytes::Garbage));
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(FirstBytes::Http));
        assert_eq!(classify(b"P"), Some(FirstBytes::Http));
        assert_eq!(classify(&framed_binding()), Some(FirstBytes::IceTcp));
        // Partial STUN frame: wait for more.
        assert_eq!(classify(&framed_binding()[..5]), None);
        assert_eq!(classify(&[]), None);
        // Wrong cookie, too short a frame for a STUN header, a non-STUN type, binary junk.
        let mut bad = framed_binding();
        bad[7] ^= 0xff;
        assert_eq!(classify(&bad), Some(FirstBytes::Garbage));
        let mut short = framed_binding();
        short[1] = 4;
        assert_eq!(classify(&short), Some(FirstBytes::Garbage));
        assert_eq!(classify(&[0x00, 0x20, 0x80]), Some(FirstBytes::Garbage));
        assert_eq!(classify(&[0xff; 16]), Some(FirstBytes::Garbage));
        assert_eq!(classify(b"\r\n\r\n"), None);
        assert_eq!(classify(b"\r\n\r\n\r\n\r\n\r\n"), Some(FirstBytes::Garbage));
    }

    #[tokio::test]
    async fn after_tls_tells_stun_from_http_and_replays_the_bytes() {
        let stun = framed_binding()[2..].to_vec();
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&stun).await.unwrap();
        let (kind, prefix) = read_after_tls(&mut b).await.unwrap();
        assert_eq!(kind, AfterTls::Stun);
        let mut replay = PrefixedStream::new(prefix, b);
        let mut got = vec![0u8; stun.len()];
        replay.read_exact(&mut got).await.unwrap();
        assert_eq!(got, stun, "the replayed stream carries every byte in order");

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        let (kind, prefix) = read_after_tls(&mut b).await.unwrap();
        assert_eq!(kind, AfterTls::Http);
        assert!(!prefix.is_empty() && b"GET /healthz".starts_with(&prefix));

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0u8; 8]).await.unwrap();
        assert_eq!(read_after_tls(&mut b).await.unwrap().0, AfterTls::Garbage);
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        assert_eq!(read_after_tls(&mut b).await.unwrap().0, AfterTls::Garbage);
    }

    #[tokio::test]
    async fn peeks_a_whole_first_frame_sent_in_parts_and_consumes_nothing() {
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let frame = framed_binding();
        client.write_all(&frame[..7]).await.unwrap();
        let peek = tokio::spawn(async move {
            let payload = peek_first_frame(&server).await.unwrap();
            (payload, server)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(&frame[7..]).await.unwrap();
        let (payload, mut server) = tokio::time::timeout(Duration::from_secs(5), peek)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(payload, frame[2..], "the STUN message, without the length");
        let mut all = vec![0u8; frame.len()];
        server.read_exact(&mut all).await.unwrap();
        assert_eq!(all, frame, "nothing was consumed");
        // An incomplete frame is waited for; the caller's deadline bounds the wait.
        let mut client2 = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server2, _) = listener.accept().await.unwrap();
        client2.write_all(&frame[..5]).await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(100), peek_first_frame(&server2)).await;
        assert!(r.is_err(), "returned before the frame was whole: {r:?}");
    }
}
