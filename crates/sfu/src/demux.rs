//! Datagram routing on the shared media socket: classify by the first byte (RFC 7983), route
//! STUN by the ICE ufrag in its USERNAME, everything else by the learned 5-tuple.

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

/// Maps ufrags and remote addresses to connection slots.
#[derive(Debug, Default)]
pub struct Demux {
    by_ufrag: HashMap<String, ConnKey>,
    by_addr: HashMap<SocketAddr, ConnKey>,
}

impl Demux {
    pub fn add_ufrag(&mut self, ufrag: String, conn: ConnKey) {
        self.by_ufrag.insert(ufrag, conn);
    }

    /// Forget a connection: its ufrag and every address learned for it.
    pub fn remove_conn(&mut self, ufrag: &str, conn: ConnKey) {
        if self.by_ufrag.get(ufrag) == Some(&conn) {
            self.by_ufrag.remove(ufrag);
        }
        self.by_addr.retain(|_, c| *c != conn);
    }

    /// Route one datagram: STUN with a USERNAME by ufrag, all else by source address. Routing
    /// by ufrag learns nothing: anyone can name a ufrag. The address is learned only when the
    /// connection's ICE agent has answered an authenticated binding request from it
    /// ([`Self::learn_from_outgoing`]).
    pub fn route(&self, datagram: &[u8], src: SocketAddr) -> Option<ConnKey> {
        if classify(datagram) == DatagramKind::Stun {
            if let Some(ufrag) = stun_local_ufrag(datagram) {
                return self.by_ufrag.get(ufrag).copied();
            }
        }
        self.by_addr.get(&src).copied()
    }

    /// A datagram connection `conn` sends to `dst`: a STUN Binding success response means its
    /// ICE agent checked the request's MESSAGE-INTEGRITY (the connection's password) and
    /// accepted `dst`, so `dst` now routes to `conn` (DTLS and SRTP from it follow).
    pub fn learn_from_outgoing(&mut self, datagram: &[u8], dst: SocketAddr, conn: ConnKey) {
        if is_binding_success(datagram) && self.by_addr.get(&dst) != Some(&conn) {
            self.by_addr.insert(dst, conn);
        }
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
        assert_eq!(
            d.route(&[0x80, 0, 0, 0], src),
            None,
            "unknown source dropped"
        );
        assert_eq!(
            d.route(&stun_with_username("aaaa:b"), src),
            Some(ConnKey(3))
        );
        assert_eq!(
            d.route(&[0x80, 0, 0, 0], src),
            None,
            "naming a ufrag teaches no address"
        );
        let mut request = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        request.extend_from_slice(&[9; 12]);
        d.learn_from_outgoing(&request, src, ConnKey(3));
        assert_eq!(
            d.route(&[0x80, 0, 0, 0], src),
            None,
            "a request is no proof"
        );
        let mut success = request.clone();
        success[0] = 0x01;
        d.learn_from_outgoing(&success, src, ConnKey(3));
        assert_eq!(d.route(&[0x80, 0, 0, 0], src), Some(ConnKey(3)));
        assert_eq!(d.route(&[22, 0], src), Some(ConnKey(3)));
        assert_eq!(d.route(&[0x80], other), None);
        assert_eq!(d.route(&stun_with_username("zzzz:b"), other), None);
        d.remove_conn("aaaa", ConnKey(3));
        assert_eq!(d.route(&[0x80, 0, 0, 0], src), None);
        assert_eq!(d.connections(), 0);
    }
}
