//! One TURN client transport (a TCP or TLS stream): authentication, its allocation, permissions,
//! channels, and the relay decisions. No sockets and no clock: the shell feeds messages and the
//! time ([`At`]) in and carries out the [`Action`]s.

use crate::credentials;
use crate::framing::{write_channel_data, CHANNEL_MAX, CHANNEL_MIN};
use crate::quota::{Quota, QuotaRefusal};
use rtc::crypto::{HashAlgorithm, RTCCryptoProvider};
use rtc::stun::attributes::*;
use rtc::stun::error_code::{ErrorCode, ErrorCodeAttribute};
use rtc::stun::fingerprint::FingerprintAttr;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::*;
use rtc::stun::textattrs::TextAttribute;
use rtc::stun::xoraddr::XorMappedAddress;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Permissions last 300 s (RFC 8656 §9).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel bindings last 600 s (RFC 8656 §12).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// SOFTWARE attribute of every response.
const SOFTWARE: &str = "rakor";
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const PROTO_UDP: u8 = 17;

/// The server's TURN settings, shared by every session.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// REALM of the long-term credentials.
    pub realm: String,
    /// Secret the credentials are minted with (`turn.secret`).
    pub secret: Vec<u8>,
    /// The only peers a client may reach: `(as the client names it, where the relay sends)`.
    /// The first is a media address advertised in ICE candidates; the second the media socket's
    /// address as the relay socket reaches it (the same unless the server is behind NAT).
    pub peers: Vec<(SocketAddr, SocketAddr)>,
    /// Allocation lifetime when the client asks for none (and the least it gets).
    pub default_lifetime: Duration,
    /// Longest allocation lifetime granted by one Allocate/Refresh.
    pub max_lifetime: Duration,
    /// A nonce is stale (438) this long after it was issued.
    pub nonce_lifetime: Duration,
    /// Packets per second a client may relay towards the media core (burst: one second's worth).
    pub max_packets_per_second: u32,
    /// Bytes per second a client may relay towards the media core.
    pub max_bytes_per_second: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            realm: "rakor".to_owned(),
            secret: Vec::new(),
            peers: Vec::new(),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            nonce_lifetime: Duration::from_secs(600),
            max_packets_per_second: 2000,
            max_bytes_per_second: 2_500_000,
        }
    }
}

/// The time, twice: monotonic for lifetimes, Unix seconds for the credentials' expiry.
#[derive(Debug, Clone, Copy)]
pub struct At {
    pub now: Instant,
    pub unix: u64,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write this STUN message to the client.
    Reply(Vec<u8>),
    /// Bind a relay socket for this session's allocation, then call
    /// [`Session::relay_opened`] or [`Session::relay_failed`].
    OpenRelay,
    /// Send `data` from the relay socket to `to` (a Send indication).
    SendToPeer { to: SocketAddr, data: Vec<u8> },
    /// The allocation is gone: close the relay socket.
    CloseRelay,
    /// The client sent something that is not a STUN message: close the stream.
    Close,
}

struct Auth {
    username: String,
    user: String,
    key: Vec<u8>,
}

struct Pending {
    request: Message,
    auth: Auth,
    lifetime: Duration,
}

struct Channel {
    number: u16,
    peer: usize,
    expires: Instant,
}

struct Allocation {
    auth: Auth,
    relay: SocketAddr,
    expires: Instant,
    /// (peer IP, expiry)
    permissions: Vec<(IpAddr, Instant)>,
    channels: Vec<Channel>,
    bucket: Bucket,
}

/// Token bucket on packets and bytes, client → peer.
struct Bucket {
    pps: f64,
    bps: f64,
    packets: f64,
    bytes: f64,
    last: Instant,
}

impl Bucket {
    fn new(cfg: &TurnConfig, now: Instant) -> Self {
        let pps = f64::from(cfg.max_packets_per_second);
        let bps = cfg.max_bytes_per_second as f64;
        Self {
            pps,
            bps,
            packets: pps,
            bytes: bps,
            last: now,
        }
    }
    fn allow(&mut self, len: usize, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.packets = (self.packets + dt * self.pps).min(self.pps);
        self.bytes = (self.bytes + dt * self.bps).min(self.bps);
        let len = len as f64;
        if self.packets >= 1.0 && self.bytes >= len {
            self.packets -= 1.0;
            self.bytes -= len;
            true
        } else {
            false
        }
    }
}

/// One client transport (TCP/TLS stream): at most one allocation (RFC 8656: one per 5-tuple).
pub struct Session {
    cfg: Arc<TurnConfig>,
    crypto: Arc<dyn RTCCryptoProvider>,
    client: SocketAddr,
    /// ChannelData to the client is padded (TCP/TLS).
    stream: bool,
    nonce: String,
    nonce_issued: Option<Instant>,
    pending: Option<Pending>,
    alloc: Option<Allocation>,
    /// Counted in the quota (from Allocate until the allocation ends).
    quota_user: Option<String>,
}

impl Session {
    /// A session for the client at `client`; `stream` for TCP/TLS.
    pub fn new(
        cfg: Arc<TurnConfig>,
        crypto: Arc<dyn RTCCryptoProvider>,
        client: SocketAddr,
        stream: bool,
    ) -> Self {
        Self {
            cfg,
            crypto,
            client,
            stream,
            nonce: String::new(),
            nonce_issued: None,
            pending: None,
            alloc: None,
            quota_user: None,
        }
    }

    /// The relayed address, once allocated.
    pub fn relay_addr(&self) -> Option<SocketAddr> {
        self.alloc.as_ref().map(|a| a.relay)
    }

    /// The full username (`<expiry>:<user>`) the allocation was made with.
    pub fn username(&self) -> Option<&str> {
        self.alloc.as_ref().map(|a| a.auth.username.as_str())
    }

    /// The user the allocation belongs to.
    pub fn user(&self) -> Option<&str> {
        self.alloc.as_ref().map(|a| a.auth.user.as_str())
    }

    /// A STUN message from the client (a whole message, as cut by [`crate::framing`]).
    pub fn handle_stun(&mut self, raw: &[u8], at: At, quota: &Mutex<Quota>) -> Vec<Action> {
        let mut m = Message::new();
        if m.unmarshal_binary(raw).is_err() {
            return vec![Action::Close];
        }
        if m.typ.class == CLASS_INDICATION {
            if m.typ.method == METHOD_SEND {
                return self.send_indication(&m, at.now);
            }
            return Vec::new();
        }
        if m.typ.class != CLASS_REQUEST {
            return Vec::new(); // responses: nothing we asked for
        }
        if let Some(unknown) = unknown_required(&m) {
            let mut r = self.response(&m, CLASS_ERROR_RESPONSE);
            add_error(&mut r, 420, "Unknown Attribute");
            r.add(ATTR_UNKNOWN_ATTRIBUTES, &unknown);
            return vec![Action::Reply(self.finish(r, None))];
        }
        if m.typ.method == METHOD_BINDING {
            let mut r = self.response(&m, CLASS_SUCCESS_RESPONSE);
            let _ = XorMappedAddress {
                ip: self.client.ip(),
                port: self.client.port(),
            }
            .add_to_as(&mut r, ATTR_XORMAPPED_ADDRESS);
            return vec![Action::Reply(self.finish(r, None))];
        }
        if ![
            METHOD_ALLOCATE,
            METHOD_REFRESH,
            METHOD_CREATE_PERMISSION,
            METHOD_CHANNEL_BIND,
        ]
        .contains(&m.typ.method)
        {
            return vec![self.error(&m, 400, "Bad Request: unsupported method", None)];
        }
        let auth = match self.authenticate(&mut m, at) {
            Ok(a) => a,
            Err(reply) => return vec![reply],
        };
        match m.typ.method {
            METHOD_ALLOCATE => self.allocate(m, auth, quota),
            METHOD_REFRESH => self.refresh(&m, &auth, at.now, quota),
            METHOD_CREATE_PERMISSION => self.create_permission(&m, &auth, at.now),
            _ => self.channel_bind(&m, &auth, at.now),
        }
    }

    /// The relay socket for the pending Allocate is bound at `relay`.
    pub fn relay_opened(&mut self, relay: SocketAddr, at: At) -> Vec<Action> {
        let Some(p) = self.pending.take() else {
            return vec![Action::CloseRelay];
        };
        let mut r = self.response(&p.request, CLASS_SUCCESS_RESPONSE);
        let _ = XorMappedAddress {
            ip: relay.ip(),
            port: relay.port(),
        }
        .add_to_as(&mut r, ATTR_XOR_RELAYED_ADDRESS);
        add_lifetime(&mut r, p.lifetime);
        let _ = XorMappedAddress {
            ip: self.client.ip(),
            port: self.client.port(),
        }
        .add_to_as(&mut r, ATTR_XORMAPPED_ADDRESS);
        let reply = self.finish(r, Some(&p.auth.key));
        self.alloc = Some(Allocation {
            auth: p.auth,
            relay,
            expires: at.now + p.lifetime,
            permissions: Vec::new(),
            channels: Vec::new(),
            bucket: Bucket::new(&self.cfg, at.now),
        });
        vec![Action::Reply(reply)]
    }

    /// No relay socket could be bound: 508.
    pub fn relay_failed(&mut self, quota: &Mutex<Quota>) -> Vec<Action> {
        let Some(p) = self.pending.take() else {
            return Vec::new();
        };
        self.release(quota);
        vec![self.error(&p.request, 508, "Insufficient Capacity", Some(&p.auth.key))]
    }

    /// ChannelData from the client on `channel` with `len` payload bytes: where to send it
    /// (the media socket's address), or `None` to drop it (no such channel, expired, over rate).
    pub fn channel_target(&mut self, channel: u16, len: usize, now: Instant) -> Option<SocketAddr> {
        let a = self.alloc.as_mut()?;
        let ch = a
            .channels
            .iter()
            .find(|c| c.number == channel && c.expires > now)?;
        let (named, local) = *self.cfg.peers.get(ch.peer)?;
        if !has_permission(&a.permissions, named.ip(), now) || !a.bucket.allow(len, now) {
            return None;
        }
        Some(local)
    }

    /// A datagram from `from` reached the relay socket: frame it for the client, appended to
    /// `out` (ChannelData if a channel is bound, else a Data indication), so a stream can
    /// gather several datagrams into one write. `false`: drop it (not a permitted peer; `out`
    /// is unchanged).
    pub fn from_peer(
        &mut self,
        from: SocketAddr,
        payload: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
    ) -> bool {
        let Some(a) = self.alloc.as_ref() else {
            return false;
        };
        let Some(peer) = self.cfg.peers.iter().position(|(_, local)| *local == from) else {
            return false;
        };
        let named = self.cfg.peers[peer].0;
        if !has_permission(&a.permissions, named.ip(), now) {
            return false;
        }
        if let Some(ch) = a
            .channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
        {
            write_channel_data(out, ch.number, payload, self.stream);
            return true;
        }
        let mut m = Message::new();
        m.typ = MessageType::new(METHOD_DATA, CLASS_INDICATION);
        if m.new_transaction_id().is_err() {
            return false;
        }
        m.write_header();
        let _ = XorMappedAddress {
            ip: named.ip(),
            port: named.port(),
        }
        .add_to_as(&mut m, ATTR_XOR_PEER_ADDRESS);
        m.add(ATTR_DATA, payload);
        out.extend_from_slice(&m.raw);
        true
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.alloc.as_ref().map(|a| a.expires)
    }

    /// Let time pass: an allocation whose lifetime ran out is deleted.
    pub fn handle_timeout(&mut self, now: Instant, quota: &Mutex<Quota>) -> Vec<Action> {
        let Some(a) = self.alloc.as_mut() else {
            return Vec::new();
        };
        if a.expires <= now {
            self.alloc = None;
            self.release(quota);
            return vec![Action::CloseRelay];
        }
        a.permissions.retain(|(_, t)| *t > now);
        a.channels.retain(|c| c.expires > now);
        Vec::new()
    }

    /// The stream closed: give the allocation's place back.
    pub fn close(&mut self, quota: &Mutex<Quota>) {
        self.alloc = None;
        self.pending = None;
        self.release(quota);
    }

    fn release(&mut self, quota: &Mutex<Quota>) {
        if let Some(user) = self.quota_user.take() {
            lock(quota).release(&user);
        }
    }

    // ---- requests ----

    fn authenticate(&mut self, m: &mut Message, at: At) -> Result<Auth, Action> {
        if !m.contains(ATTR_MESSAGE_INTEGRITY) {
            return Err(self.challenge(m, 401, "Unauthorized", at.now));
        }
        let (Ok(username), Ok(realm), Ok(nonce)) = (
            TextAttribute::get_from_as(m, ATTR_USERNAME),
            TextAttribute::get_from_as(m, ATTR_REALM),
            TextAttribute::get_from_as(m, ATTR_NONCE),
        ) else {
            return Err(self.error(
                m,
                400,
                "Bad Request: USERNAME, REALM and NONCE are required",
                None,
            ));
        };
        let username = username.text;
        if !self.nonce_fresh(at.now) || nonce.text != self.nonce {
            return Err(self.challenge(m, 438, "Stale Nonce", at.now));
        }
        if realm.text != self.cfg.realm {
            return Err(self.challenge(m, 401, "Unauthorized: wrong realm", at.now));
        }
        let Some((expiry, user)) = credentials::parse_username(&username) else {
            return Err(self.challenge(m, 401, "Unauthorized: unknown username", at.now));
        };
        // An expired username opens no new allocation; the allocation it opened lives on
        // (Refresh, permissions, channels) for as long as the client refreshes it.
        let own_allocation = self
            .alloc
            .as_ref()
            .is_some_and(|a| a.auth.username == username);
        if expiry < at.unix && !(own_allocation && m.typ.method != METHOD_ALLOCATE) {
            return Err(self.challenge(m, 401, "Unauthorized: credentials expired", at.now));
        }
        let user = user.to_owned();
        let crypto = self.crypto.crypto();
        let key = credentials::password(crypto, &self.cfg.secret, &username)
            .ok()
            .and_then(|password| {
                let text = format!("{username}:{}:{password}", self.cfg.realm);
                crypto.hash(HashAlgorithm::Md5, text.as_bytes()).ok()
            });
        let Some(key) = key else {
            return Err(self.error(m, 500, "Server Error", None));
        };
        if MessageIntegrity::check(m, &key, crypto).is_err() {
            return Err(self.challenge(m, 401, "Unauthorized: wrong credentials", at.now));
        }
        if let Some(a) = &self.alloc {
            if a.auth.username != username {
                return Err(self.error(m, 441, "Wrong Credentials", None));
            }
        }
        Ok(Auth {
            username,
            user,
            key,
        })
    }

    fn allocate(&mut self, m: Message, auth: Auth, quota: &Mutex<Quota>) -> Vec<Action> {
        if self.alloc.is_some() || self.pending.is_some() {
            return vec![self.error(&m, 437, "Allocation Mismatch", Some(&auth.key))];
        }
        match m.get(ATTR_REQUESTED_TRANSPORT) {
            Ok(v) if v.first() == Some(&PROTO_UDP) => {}
            Ok(_) => {
                return vec![self.error(&m, 442, "Unsupported Transport Protocol", Some(&auth.key))]
            }
            Err(_) => {
                return vec![self.error(
                    &m,
                    400,
                    "Bad Request: REQUESTED-TRANSPORT missing",
                    Some(&auth.key),
                )]
            }
        }
        if let Ok(v) = m.get(ATTR_REQUESTED_ADDRESS_FAMILY) {
            let want_v6 = v.first() == Some(&0x02);
            let have_v6 = self.cfg.peers.first().is_some_and(|(_, l)| l.is_ipv6());
            if want_v6 != have_v6 {
                return vec![self.error(&m, 440, "Address Family not Supported", Some(&auth.key))];
            }
        }
        if m.contains(ATTR_RESERVATION_TOKEN) || m.contains(ATTR_EVEN_PORT) {
            return vec![self.error(
                &m,
                508,
                "Insufficient Capacity: no port reservations",
                Some(&auth.key),
            )];
        }
        if let Err(refusal) = lock(quota).acquire_for(&auth.username, &auth.user) {
            let (code, reason) = match refusal {
                QuotaRefusal::PerUser => (486, "Allocation Quota Reached"),
                QuotaRefusal::Total => (508, "Insufficient Capacity"),
                QuotaRefusal::Revoked => (401, "Unauthorized: credential revoked"),
            };
            return vec![self.error(&m, code, reason, Some(&auth.key))];
        }
        self.quota_user = Some(auth.user.clone());
        let lifetime = self.lifetime(&m);
        self.pending = Some(Pending {
            request: m,
            auth,
            lifetime,
        });
        vec![Action::OpenRelay]
    }

    fn refresh(
        &mut self,
        m: &Message,
        auth: &Auth,
        now: Instant,
        quota: &Mutex<Quota>,
    ) -> Vec<Action> {
        if self.alloc.is_none() {
            return vec![self.error(m, 437, "Allocation Mismatch", Some(&auth.key))];
        }
        let requested = requested_lifetime(m);
        let mut r = self.response(m, CLASS_SUCCESS_RESPONSE);
        if requested == Some(Duration::ZERO) {
            self.alloc = None;
            self.release(quota);
            add_lifetime(&mut r, Duration::ZERO);
            return vec![
                Action::Reply(self.finish(r, Some(&auth.key))),
                Action::CloseRelay,
            ];
        }
        let lifetime = self.lifetime(m);
        if let Some(a) = self.alloc.as_mut() {
            a.expires = now + lifetime;
        }
        add_lifetime(&mut r, lifetime);
        vec![Action::Reply(self.finish(r, Some(&auth.key)))]
    }

    fn create_permission(&mut self, m: &Message, auth: &Auth, now: Instant) -> Vec<Action> {
        if self.alloc.is_none() {
            return vec![self.error(m, 437, "Allocation Mismatch", Some(&auth.key))];
        }
        let peers: Vec<Option<SocketAddr>> = m
            .attributes
            .0
            .iter()
            .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
            .map(|a| xor_addr(&a.value, &m.transaction_id.0))
            .collect();
        if peers.is_empty() || peers.iter().any(Option::is_none) {
            return vec![self.error(m, 400, "Bad Request: XOR-PEER-ADDRESS", Some(&auth.key))];
        }
        let peers: Vec<SocketAddr> = peers.into_iter().flatten().collect();
        if peers.iter().any(|p| self.peer_index(*p).is_none()) {
            return vec![self.error(
                m,
                403,
                "Forbidden: this server relays only to its media addresses",
                Some(&auth.key),
            )];
        }
        if let Some(a) = self.alloc.as_mut() {
            for p in peers {
                permit(&mut a.permissions, p.ip(), now);
            }
        }
        let r = self.response(m, CLASS_SUCCESS_RESPONSE);
        vec![Action::Reply(self.finish(r, Some(&auth.key)))]
    }

    fn channel_bind(&mut self, m: &Message, auth: &Auth, now: Instant) -> Vec<Action> {
        if self.alloc.is_none() {
            return vec![self.error(m, 437, "Allocation Mismatch", Some(&auth.key))];
        }
        let number = match m.get(ATTR_CHANNEL_NUMBER) {
            Ok(v) if v.len() >= 2 => u16::from_be_bytes([v[0], v[1]]),
            _ => return vec![self.error(m, 400, "Bad Request: CHANNEL-NUMBER", Some(&auth.key))],
        };
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&number) {
            return vec![self.error(
                m,
                400,
                "Bad Request: channel number out of range",
                Some(&auth.key),
            )];
        }
        let Some(peer) = m
            .get(ATTR_XOR_PEER_ADDRESS)
            .ok()
            .and_then(|v| xor_addr(&v, &m.transaction_id.0))
        else {
            return vec![self.error(m, 400, "Bad Request: XOR-PEER-ADDRESS", Some(&auth.key))];
        };
        let Some(index) = self.peer_index(peer) else {
            return vec![self.error(
                m,
                403,
                "Forbidden: this server relays only to its media addresses",
                Some(&auth.key),
            )];
        };
        let Some(a) = self.alloc.as_mut() else {
            return Vec::new();
        };
        // A channel is bound to one peer and a peer to one channel (RFC 8656 §12.2).
        let conflict = a
            .channels
            .iter()
            .any(|c| c.expires > now && ((c.number == number) != (c.peer == index)));
        if conflict {
            return vec![self.error(
                m,
                400,
                "Bad Request: channel or peer already bound",
                Some(&auth.key),
            )];
        }
        a.channels.retain(|c| c.number != number);
        a.channels.push(Channel {
            number,
            peer: index,
            expires: now + CHANNEL_LIFETIME,
        });
        permit(&mut a.permissions, peer.ip(), now);
        let r = self.response(m, CLASS_SUCCESS_RESPONSE);
        vec![Action::Reply(self.finish(r, Some(&auth.key)))]
    }

    fn send_indication(&mut self, m: &Message, now: Instant) -> Vec<Action> {
        let (Ok(peer), Ok(data)) = (m.get(ATTR_XOR_PEER_ADDRESS), m.get(ATTR_DATA)) else {
            return Vec::new();
        };
        let Some(peer) = xor_addr(&peer, &m.transaction_id.0) else {
            return Vec::new();
        };
        let Some(index) = self.peer_index(peer) else {
            return Vec::new();
        };
        let Some(a) = self.alloc.as_mut() else {
            return Vec::new();
        };
        if !has_permission(&a.permissions, peer.ip(), now) || !a.bucket.allow(data.len(), now) {
            return Vec::new();
        }
        vec![Action::SendToPeer {
            to: self.cfg.peers[index].1,
            data,
        }]
    }

    // ---- helpers ----

    fn peer_index(&self, named: SocketAddr) -> Option<usize> {
        self.cfg.peers.iter().position(|(n, _)| *n == named)
    }

    fn lifetime(&self, m: &Message) -> Duration {
        let max = self.cfg.max_lifetime;
        let least = self.cfg.default_lifetime.min(max);
        requested_lifetime(m).unwrap_or(least).clamp(least, max)
    }

    fn nonce_fresh(&self, now: Instant) -> bool {
        self.nonce_issued
            .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.nonce_lifetime)
    }

    /// 401/438 with REALM and a (fresh if needed) NONCE.
    fn challenge(&mut self, req: &Message, code: u16, reason: &str, now: Instant) -> Action {
        if !self.nonce_fresh(now) {
            let mut bytes = [0u8; 12];
            if self.crypto.random().fill(&mut bytes).is_err() {
                return self.error(req, 500, "Server Error", None);
            }
            self.nonce = bytes.iter().map(|b| format!("{b:02x}")).collect();
            self.nonce_issued = Some(now);
        }
        let mut r = self.response(req, CLASS_ERROR_RESPONSE);
        add_error(&mut r, code, reason);
        let _ = TextAttribute::new(ATTR_REALM, self.cfg.realm.clone()).add_to(&mut r);
        let _ = TextAttribute::new(ATTR_NONCE, self.nonce.clone()).add_to(&mut r);
        Action::Reply(self.finish(r, None))
    }

    fn error(&self, req: &Message, code: u16, reason: &str, key: Option<&[u8]>) -> Action {
        let mut r = self.response(req, CLASS_ERROR_RESPONSE);
        add_error(&mut r, code, reason);
        Action::Reply(self.finish(r, key))
    }

    fn response(&self, req: &Message, class: MessageClass) -> Message {
        let mut r = Message::new();
        r.typ = MessageType::new(req.typ.method, class);
        r.transaction_id = req.transaction_id;
        r.write_header();
        r
    }

    /// SOFTWARE, MESSAGE-INTEGRITY (when authenticated) and FINGERPRINT; the bytes.
    fn finish(&self, mut r: Message, key: Option<&[u8]>) -> Vec<u8> {
        let _ = TextAttribute::new(ATTR_SOFTWARE, SOFTWARE.to_owned()).add_to(&mut r);
        if let Some(key) = key {
            let _ = MessageIntegrity::new_raw_integrity_with_provider(
                key.to_vec(),
                self.crypto.crypto(),
            )
            .add_to(&mut r);
        }
        let _ = FingerprintAttr.add_to(&mut r);
        r.raw
    }
}

fn lock(q: &Mutex<Quota>) -> std::sync::MutexGuard<'_, Quota> {
    q.lock().unwrap_or_else(|e| e.into_inner())
}

fn has_permission(perms: &[(IpAddr, Instant)], ip: IpAddr, now: Instant) -> bool {
    perms.iter().any(|(p, t)| *p == ip && *t > now)
}

fn permit(perms: &mut Vec<(IpAddr, Instant)>, ip: IpAddr, now: Instant) {
    let until = now + PERMISSION_LIFETIME;
    match perms.iter_mut().find(|(p, _)| *p == ip) {
        Some(p) => p.1 = until,
        None => perms.push((ip, until)),
    }
}

fn requested_lifetime(m: &Message) -> Option<Duration> {
    let v = m.get(ATTR_LIFETIME).ok()?;
    let b: [u8; 4] = v.get(..4)?.try_into().ok()?;
    Some(Duration::from_secs(u64::from(u32::from_be_bytes(b))))
}

fn add_lifetime(m: &mut Message, d: Duration) {
    let secs = u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    m.add(ATTR_LIFETIME, &secs.to_be_bytes());
}

fn add_error(m: &mut Message, code: u16, reason: &str) {
    let _ = ErrorCodeAttribute {
        code: ErrorCode(code),
        reason: reason.as_bytes().to_vec(),
    }
    .add_to(m);
}

/// Comprehension-required attributes (type < 0x8000) this server does not know, as the value
/// of UNKNOWN-ATTRIBUTES; `None` if there are none.
fn unknown_required(m: &Message) -> Option<Vec<u8>> {
    const KNOWN: [AttrType; 15] = [
        ATTR_USERNAME,
        ATTR_MESSAGE_INTEGRITY,
        ATTR_ERROR_CODE,
        ATTR_REALM,
        ATTR_NONCE,
        ATTR_XORMAPPED_ADDRESS,
        ATTR_CHANNEL_NUMBER,
        ATTR_LIFETIME,
        ATTR_XOR_PEER_ADDRESS,
        ATTR_DATA,
        ATTR_EVEN_PORT,
        ATTR_REQUESTED_TRANSPORT,
        ATTR_DONT_FRAGMENT,
        ATTR_RESERVATION_TOKEN,
        ATTR_REQUESTED_ADDRESS_FAMILY,
    ];
    let unknown: Vec<u8> = m
        .attributes
        .0
        .iter()
        .filter(|a| a.typ.0 < 0x8000 && !KNOWN.contains(&a.typ))
        .flat_map(|a| a.typ.0.to_be_bytes())
        .collect();
    (!unknown.is_empty()).then_some(unknown)
}

/// Decode an XOR-…-ADDRESS value.
fn xor_addr(v: &[u8], tid: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 8 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ 0x2112;
    match (v[1], v.len()) {
        (0x01, 8) => {
            let mut ip = [0u8; 4];
            for i in 0..4 {
                ip[i] = v[4 + i] ^ MAGIC_COOKIE[i];
            }
            Some(SocketAddr::from((ip, port)))
        }
        (0x02, 20) => {
            let mut ip = [0u8; 16];
            for i in 0..16 {
                let k = if i < 4 { MAGIC_COOKIE[i] } else { tid[i - 4] };
                ip[i] = v[4 + i] ^ k;
            }
            Some(SocketAddr::from((ip, port)))
        }
        _ => None,
    }
}
