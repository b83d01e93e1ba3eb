//! Who the client is: the TCP peer, or — when the peer is a configured trusted reverse proxy
//! (`server.trusted_proxies`) — the address it forwarded in `X-Forwarded-For`. The serving
//! loop ([`crate::serve`]) resolves it once per request and puts it in the request's
//! `ConnectInfo<SocketAddr>`, so every per-address limit (login throttling, join attempts)
//! sees the real client; the TCP peer stays available as [`PeerAddr`].
//!
//! `X-Forwarded-For` is read right to left, skipping trusted proxies: the first address that
//! is not a trusted proxy is the client (a client cannot forge what our own proxy appended).
//! Headers from untrusted peers are ignored.

use axum::http::HeaderMap;
use std::net::{IpAddr, SocketAddr};

/// The TCP peer of a request (before trusted-proxy resolution), as a request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The local address the request's connection reached (the server's side), as a request
/// extension: the base of invitation links when `server.public_url` is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddr(pub SocketAddr);

/// The request came through a trusted proxy that said the client used HTTPS
/// (`X-Forwarded-Proto: https`), as a request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedHttps(pub bool);

/// One `server.trusted_proxies` entry: an address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNet {
    addr: IpAddr,
    prefix: u8,
}

impl ProxyNet {
    /// `"10.0.0.7"`, `"10.0.0.0/8"`, `"fd00::/8"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("\"{text}\" is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("\"{text}\": the prefix length must be 0..={max}"))?,
        };
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(net)), 32, self.prefix)
                    == masked(u128::from(u32::from(ip)), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128, self.prefix)
                    == masked(u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
    let prefix = u32::from(prefix).min(width);
    if prefix == 0 {
        return 0;
    }
    bits >> (width - prefix)
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The configured trusted proxies.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<ProxyNet>);

impl TrustedProxies {
    /// From `server.trusted_proxies` (validated at start; bad entries are skipped here).
    pub fn new(entries: &[String]) -> Self {
        Self(
            entries
                .iter()
                .filter_map(|e| ProxyNet::parse(e).ok())
                .collect(),
        )
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client address of a request from `peer` with `headers`, and whether a trusted
    /// proxy said the client used HTTPS.
    pub fn resolve(&self, peer: SocketAddr, headers: &HeaderMap) -> (SocketAddr, bool) {
        if !self.is_trusted(peer.ip()) {
            return (peer, false);
        }
        let https = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(parse_hop)
            .collect();
        let client = hops
            .iter()
            .rev()
            .find(|ip| !self.is_trusted(**ip))
            .or(hops.first())
            .copied();
        match client {
            Some(ip) => (SocketAddr::new(canonical(ip), 0), https),
            None => (peer, https),
        }
    }
}

/// One `X-Forwarded-For` element: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:80`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    let t = text.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(ip);
    }
    t.parse::<SocketAddr>().ok().map(|s| s.ip())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use axum::http::HeaderValue;

    fn headers(xff: &[&str], proto: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        if let Some(p) = proto {
            h.insert("x-forwarded-proto", HeaderValue::from_str(p).unwrap());
        }
        h
    }

    #[test]
    fn proxy_nets_parse_and_match() {
        let cases = [
            ("10.0.0.0/8", "10.200.1.1", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.0.0.7", "10.0.0.7", true),
            ("10.0.0.7", "10.0.0.8", false),
            ("10.0.0.7", "::ffff:10.0.0.7", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("0.0.0.0/0", "192.0.2.1", true),
        ];
        for (net, ip, want) in cases {
            let n = ProxyNet::parse(net).unwrap();
            assert_eq!(n.contains(ip.parse().unwrap()), want, "{net} ∋ {ip}");
        }
        for bad in ["", "10.0.0.0/33", "example.org", "::/129", "1.2.3.4/x"] {
            assert!(ProxyNet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let t = TrustedProxies::new(&["127.0.0.1".into(), "10.0.0.0/8".into()]);
        let proxy: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let stranger: SocketAddr = "192.0.2.9:4000".parse().unwrap();
        let ip = |h: &HeaderMap, peer| t.resolve(peer, h).0.ip().to_string();
        // A stranger's header is ignored.
        assert_eq!(ip(&headers(&["203.0.113.5"], None), stranger), "192.0.2.9");
        // Through our proxy: the forwarded client.
        assert_eq!(ip(&headers(&["203.0.113.5"], None), proxy), "203.0.113.5");
        // A forged first hop is skipped: the right-most untrusted address counts.
        assert_eq!(
            ip(&headers(&["6.6.6.6, 203.0.113.5, 10.1.1.1"], None), proxy),
            "203.0.113.5"
        );
        assert_eq!(
            ip(&headers(&["6.6.6.6", "203.0.113.5:555"], None), proxy),
            "203.0.113.5"
        );
        // No (usable) header: the proxy itself.
        assert_eq!(ip(&headers(&["garbage"], None), proxy), "127.0.0.1");
        assert!(t.resolve(proxy, &headers(&[], Some("https"))).1);
        assert!(!t.resolve(stranger, &headers(&[], Some("https"))).1);
    }
}
