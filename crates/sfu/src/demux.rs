//! Packet routing on the shared media port: classify by the first byte (RFC 7983), route STUN by
//! the ICE ufrag in its USERNAME, everything else by what was learned from an authenticated
//! binding — the source 5-tuple for UDP datagrams, the stream (its peer address) for ICE-TCP
//! frames (RFC 6544). A stream's first frame must route by ufrag (the shell closes it otherwise).

pub use crate::slab::ConnKey;
use std::collections::HashMap;
use std::net::SocketAddr;

/// What a datagram is, by its first byte (RFC 7983).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    Stun,
    Dtls,
    RtpRtcp,
    Unknown,
}

/// Classify a datagram by its first byte.
pub fn classify(datagram: &[u8]) -> DatagramKind {
    match datagram.first() {
        Some(0..=3) => DatagramKind::Stun,
        Some(20..=63) => DatagramKind::Dtls,
        Some(128..=191) => DatagramKind::RtpRtcp,
        _ => DatagramKind::Unknown,
    }
}

/// The local (our) ufrag out of a STUN message's USERNAME (`ours:theirs`), if any. Parses only
/// the attribute walk it needs; never panics on malformed input.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    const HEADER: usize = 20;
    const ATTR_USERNAME: u16 = 0x0006;
    const MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    if datagram.len() < HEADER || datagram.get(4..8)? != MAGIC {
        return None;
    }
    let body_len = u16::from_be_bytes([*datagram.get(2)?, *datagram.get(3)?]) as usize;
    let body = datagram.get(HEADER..HEADER.checked_add(body_len)?)?;
    let mut at = 0usize;
    while at + 4 <= body.len() {
        let ty = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let value = body.get(at + 4..at + 4 + len)?;
        if ty == ATTR_USERNAME {
            let user = std::str::from_utf8(value).ok()?;
            return user.split(':').next().filter(|u| !u.is_empty());
        }
        // Attributes are padded to 4 bytes.
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// A STUN Binding success response (type 0x0101, with the magic cookie).
pub fn is_binding_success(datagram: &[u8]) -> bool {
    datagram.len() >= 20
        && datagram.get(..2) == Some(&[0x01, 0x01][..])
        && datagram.get(4..8) == Some(&[0x21, 0x12, 0xa4, 0x42][..])
}

/// The transport a packet came in on or leaves by: a UDP datagram on the media socket, or an
/// RFC 4571 frame on an accepted ICE-TCP stream (named by its peer address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Maps ufrags and remote addresses (UDP) or streams (TCP) to connection slots.
#[derive(Debug, Default)]
pub struct Demux {
    by_ufrag: HashMap<String, ConnKey>,
    by_addr: HashMap<SocketAddr, ConnKey>,
    /// Accepted TCP streams, by peer address, bound by an authenticated binding over them.
    by_stream: HashMap<SocketAddr, ConnKey>,
}

impl Demux {
    pub fn add_ufrag(&mut self, ufrag: String, conn: ConnKey) {
        self.by_ufrag.insert(ufrag, conn);
    }

    /// Forget a connection: its ufrag and every address learned for it. The peer addresses of
    /// the TCP streams that were bound to it are appended to `streams` (the shell closes them).
    pub fn remove_conn(&mut self, ufrag: &str, conn: ConnKey, streams: &mut Vec<SocketAddr>) {
        if self.by_ufrag.get(ufrag) == Some(&conn) {
            self.by_ufrag.remove(ufrag);
        }
        self.by_addr.retain(|_, c| *c != conn);
        self.by_stream.retain(|peer, c| {
            let keep = *c != conn;
            if !keep {
                streams.push(*peer);
            }
            keep
        });
    }

    /// Route one packet: STUN with a USERNAME by ufrag, all else by its source (a UDP address,
    /// or a TCP stream's peer address). Routing by ufrag learns nothing: anyone can name a
    /// ufrag. A source is learned only when the connection's ICE agent has answered an
    /// authenticated binding request from it ([`Self::learn_from_outgoing`]).
    pub fn route(&self, packet: &[u8], src: SocketAddr, transport: Transport) -> Option<ConnKey> {
        if classify(packet) == DatagramKind::Stun {
            if let Some(ufrag) = stun_local_ufrag(packet) {
                return self.by_ufrag.get(ufrag).copied();
            }
        }
        match transport {
            Transport::Udp => self.by_addr.get(&src).copied(),
            Transport::Tcp => self.by_stream.get(&src).copied(),
        }
    }

    /// A packet connection `conn` sends to `dst` over `transport`: a STUN Binding success
    /// response means its ICE agent checked the request's MESSAGE-INTEGRITY (the connection's
    /// password) and accepted `dst`, so `dst` (that address, or that stream) now routes to
    /// `conn` (DTLS and SRTP from it follow).
    pub fn learn_from_outgoing(
        &mut self,
        packet: &[u8],
        dst: SocketAddr,
        transport: Transport,
        conn: ConnKey,
    ) {
        if !is_binding_success(packet) {
            return;
        }
        let map = match transport {
            Transport::Udp => &mut self.by_addr,
            Transport::Tcp => &mut self.by_stream,
        };
        if map.get(&dst) != Some(&conn) {
            map.insert(dst, conn);
        }
    }

    /// Whether the TCP stream from `peer` is bound to a connection (it carried an
    /// authenticated binding).
    pub fn stream_bound(&self, peer: SocketAddr) -> bool {
        self.by_stream.contains_key(&peer)
    }

    /// The shell closed the TCP stream from `peer`: forget it.
    pub fn stream_closed(&mut self, peer: SocketAddr) {
        self.by_stream.remove(&peer);
    }

    pub fn connections(&self) -> usize {
        self.by_ufrag.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stun_with_username(user: &str) -> Vec<u8> {
        let mut attr = vec![0x00, 0x06];
        attr.extend_from_slice(&(user.len() as u16).to_be_bytes());
        attr.extend_from_slice(user.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        // A preceding unrelated attribute (PRIORITY) to exercise the walk.
        let mut body = vec![0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4];
        body.extend_from_slice(&attr);
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(body.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn classifies_by_first_byte() {
        for (b, k) in [
            (&[0u8][..], DatagramKind::Stun),
            (&[22], DatagramKind::Dtls),
            (&[0x80], DatagramKind::RtpRtcp),
            (&[0xff], DatagramKind::Unknown),
            (&[], DatagramKind::Unknown),
        ] {
            assert_eq!(classify(b), k);
        }
    }

    #[test]
    fn extracts_local_ufrag() {
        assert_eq!(
            stun_local_ufrag(&stun_with_username("srvufrag:cli")),
            Some("srvufrag")
        );
    }

    #[test]
    fn malformed_stun_yields_none() {
        let good = stun_with_username("abcd:efgh");
        // Every truncation and a wrong magic cookie.
        for n in 0..good.len() {
            let _ = stun_local_ufrag(&good[..n]);
        }
        let mut bad = good.clone();
        bad[4] = 0;
        assert_eq!(stun_local_ufrag(&bad), None);
        let mut huge_len = good.clone();
        huge_len[2] = 0xff;
        assert_eq!(stun_local_ufrag(&huge_len), None);
        assert_eq!(stun_local_ufrag(&stun_with_username(":x")), None);
    }

    #[test]
    fn routes_stun_by_ufrag_then_learns_address() {
        let mut d = Demux::default();
        d.add_ufrag("aaaa".into(), ConnKey(3));
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let udp = Transport::Udp;
        assert_eq!(
            d.route(&[0x80, 0, 0, 0], src, udp),
            None,
            "unknown source dropped"
        );
        assert_eq!(
            d.route(&stun_with_username("aaaa:b"), src, udp),
            Some(ConnKey(3))
        );
        assert_eq!(
            d.route(&[0x80, 0, 0, 0], src, udp),
            None,
            "naming a ufrag teaches no address"
        );
        d.learn_from_outgoing(&binding_request(), src, udp, ConnKey(3));
        assert_eq!(
            d.route(&[0x80, 0, 0, 0], src, udp),
            None,
            "a request is no proof"
        );
        d.learn_from_outgoing(&binding_success(), src, udp, ConnKey(3));
        assert_eq!(d.route(&[0x80, 0, 0, 0], src, udp), Some(ConnKey(3)));
        assert_eq!(d.route(&[22, 0], src, udp), Some(ConnKey(3)));
        assert_eq!(d.route(&[0x80], other, udp), None);
        assert_eq!(d.route(&stun_with_username("zzzz:b"), other, udp), None);
        let mut closed = Vec::new();
        d.remove_conn("aaaa", ConnKey(3), &mut closed);
        assert_eq!(d.route(&[0x80, 0, 0, 0], src, udp), None);
        assert_eq!(d.connections(), 0);
        assert!(closed.is_empty(), "no TCP stream was bound");
    }

    fn binding_request() -> Vec<u8> {
        let mut m = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&[9; 12]);
        m
    }

    fn binding_success() -> Vec<u8> {
        let mut m = binding_request();
        m[0] = 0x01;
        m
    }

    #[test]
    fn tcp_streams_route_by_ufrag_then_by_stream() {
        let mut d = Demux::default();
        d.add_ufrag("aaaa".into(), ConnKey(1));
        d.add_ufrag("bbbb".into(), ConnKey(2));
        let s1: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let s2: SocketAddr = "10.0.0.2:40001".parse().unwrap();
        let (tcp, udp) = (Transport::Tcp, Transport::Udp);
        // The first frame of a stream: STUN naming our ufrag.
        assert_eq!(
            d.route(&stun_with_username("aaaa:x"), s1, tcp),
            Some(ConnKey(1))
        );
        assert_eq!(d.route(&stun_with_username("nope:x"), s2, tcp), None);
        assert!(!d.stream_bound(s1), "naming a ufrag binds no stream");
        assert_eq!(d.route(&[22, 0], s1, tcp), None, "DTLS before the binding");
        // Our ICE agent answers over the stream: it is bound.
        d.learn_from_outgoing(&binding_request(), s1, tcp, ConnKey(1));
        assert!(!d.stream_bound(s1), "our own request is no proof");
        d.learn_from_outgoing(&binding_success(), s1, tcp, ConnKey(1));
        assert!(d.stream_bound(s1));
        assert_eq!(d.route(&[22, 0], s1, tcp), Some(ConnKey(1)));
        assert_eq!(d.route(&[0x80, 0], s1, tcp), Some(ConnKey(1)));
        // The same address over UDP is another source, and the reverse.
        assert_eq!(d.route(&[0x80, 0], s1, udp), None);
        d.learn_from_outgoing(&binding_success(), s2, udp, ConnKey(2));
        assert_eq!(d.route(&[0x80, 0], s2, tcp), None);
        assert_eq!(d.route(&[0x80, 0], s2, udp), Some(ConnKey(2)));
        // STUN still routes by ufrag on a bound stream (and an ICE restart's new ufrag too).
        assert_eq!(
            d.route(&stun_with_username("bbbb:x"), s1, tcp),
            Some(ConnKey(2))
        );
        // Closing the connection names its streams for the shell to close.
        let mut closed = Vec::new();
        d.remove_conn("aaaa", ConnKey(1), &mut closed);
        assert_eq!(closed, vec![s1]);
        assert_eq!(d.route(&[22, 0], s1, tcp), None);
        // A stream the shell closed is forgotten.
        d.learn_from_outgoing(&binding_success(), s1, tcp, ConnKey(2));
        d.stream_closed(s1);
        assert!(!d.stream_bound(s1));
    }
}
