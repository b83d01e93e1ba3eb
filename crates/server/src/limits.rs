//! Connection-level limits of the signalling service that protect the server from strangers:
//! how many WebSockets may be open without having joined (in total and per client address),
//! the share a joined participant keeps for its resumes, and how many `join` attempts one
//! client address may make per minute. Per-connection limits (frame size, messages per second,
//! the first-frame deadline) are in [`crate::signal`], the lobby's in [`crate::lobby`]; room
//! limits (rooms, participants, tracks) in the media core.
//!
//! Call sites in `signal.rs`: [`SignalLimits::admit`] before a WebSocket is upgraded,
//! [`SignalLimits::join_attempt`] when its `join` arrives, [`SignalLimits::joined`] when its
//! participant is in the media core.
//!
//! **Pre-join slots.** A connection that has not joined holds a [`PreJoinPermit`]: one of
//! `limits.max_unauthenticated_connections` in total and of
//! `limits.max_unauthenticated_connections_per_ip` for its address (IPv6: its /64). A site
//! waiting in the lobby has not joined: it keeps its permit. The permit is returned when the
//! participant is in the media core or the connection ends.
//!
//! **Resume shares.** Every joined participant holds a [`JoinedShare`] on the address it
//! joined from, while its connection lives and for `server.resume_grace` after (as long as the
//! media core keeps it for a resume). When an address is at either pre-join cap, a new
//! connection from it is still admitted as *resume-only* while the address has more shares
//! than resume-only connections open: its first frame must be a `join` with `resume`. So a
//! site that lost its connection comes back even while strangers behind the same address (or
//! everywhere) hold every ordinary slot — and even before the server noticed its old
//! connection died: the share counts live connections, and a resumed participant's new
//! connection adds to it before the old one's end takes from it.

use crate::config::LimitsConfig;
use rakor_proto::ErrorCode;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Addresses remembered by the join counter before idle ones are forgotten.
const PRUNE_ABOVE: usize = 4096;
/// Hard cap of remembered addresses (a flood from many addresses): beyond it, unknown
/// addresses are refused until entries age out.
const MAX_TRACKED: usize = 100_000;
const WINDOW: Duration = Duration::from_secs(60);

/// A refused connection or join: the `error` the client gets before the socket closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitError {
    pub code: ErrorCode,
    pub message: String,
}

/// Per-address bookkeeping shared by the permits and shares (which give back on drop).
#[derive(Debug, Default)]
struct Addresses {
    /// Ordinary pre-join connections per address.
    pending: HashMap<IpAddr, usize>,
    /// Resume-only pre-join connections per address.
    resuming: HashMap<IpAddr, usize>,
    /// Joined participants per address (by participant id).
    shares: HashMap<IpAddr, HashMap<String, Share>>,
}

#[derive(Debug, Clone, Copy)]
struct Share {
    /// Connections of this participant from this address that are still open.
    live: usize,
    /// When `live` is 0: the share lapses at this instant.
    until: Option<Instant>,
}

impl Share {
    fn held(&self, now: Instant) -> bool {
        self.live > 0 || self.until.is_some_and(|t| now < t)
    }
}

impl Addresses {
    fn shares_held(&mut self, key: IpAddr, now: Instant) -> usize {
        let Some(m) = self.shares.get_mut(&key) else {
            return 0;
        };
        m.retain(|_, s| s.held(now));
        let n = m.len();
        if n == 0 {
            self.shares.remove(&key);
        }
        n
    }

    fn prune_all(&mut self, now: Instant) {
        self.shares.retain(|_, m| {
            m.retain(|_, s| s.held(now));
            !m.is_empty()
        });
    }
}

fn decrement(map: &mut HashMap<IpAddr, usize>, key: IpAddr) {
    if let Some(n) = map.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&key);
        }
    }
}

fn lock(m: &Mutex<Addresses>) -> MutexGuard<'_, Addresses> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
enum Slot {
    /// One of the ordinary slots (total and per address).
    Ordinary(#[allow(dead_code)] OwnedSemaphorePermit),
    /// Admitted beyond a cap on a resume share: only a resume may follow.
    ResumeOnly,
}

/// Held by a connection until its participant is in the media core (or the connection ends);
/// counts against the pre-join caps (see the module documentation).
#[derive(Debug)]
pub struct PreJoinPermit {
    addresses: Arc<Mutex<Addresses>>,
    key: IpAddr,
    slot: Slot,
}

impl PreJoinPermit {
    /// Admitted beyond a cap on a resume share: the first frame must be `join` with `resume`.
    pub fn resume_only(&self) -> bool {
        matches!(self.slot, Slot::ResumeOnly)
    }
}

impl Drop for PreJoinPermit {
    fn drop(&mut self) {
        let mut a = lock(&self.addresses);
        match self.slot {
            Slot::Ordinary(_) => decrement(&mut a.pending, self.key),
            Slot::ResumeOnly => decrement(&mut a.resuming, self.key),
        }
    }
}

/// Held by a joined participant's connection: its share of its address for resumes. When
/// dropped (the connection ended), the share lasts `server.resume_grace` longer.
#[derive(Debug)]
pub struct JoinedShare {
    addresses: Arc<Mutex<Addresses>>,
    key: IpAddr,
    participant: String,
    hold: Duration,
}

impl Drop for JoinedShare {
    fn drop(&mut self) {
        let mut a = lock(&self.addresses);
        if let Some(s) = a
            .shares
            .get_mut(&self.key)
            .and_then(|m| m.get_mut(&self.participant))
        {
            s.live = s.live.saturating_sub(1);
            if s.live == 0 {
                s.until = Some(Instant::now() + self.hold);
            }
        }
    }
}

/// Shared by all signalling connections (in [`crate::state::AppState`]).
#[derive(Debug)]
pub struct SignalLimits {
    unauthenticated: Arc<Semaphore>,
    max_unauthenticated: usize,
    max_per_ip: usize,
    resume_hold: Duration,
    addresses: Arc<Mutex<Addresses>>,
    joins: Mutex<JoinAttempts>,
}

impl SignalLimits {
    /// `resume_hold`: how long a joined participant's share outlives its connection
    /// (`server.resume_grace`).
    pub fn new(cfg: &LimitsConfig, resume_hold: Duration) -> Self {
        Self {
            unauthenticated: Arc::new(Semaphore::new(cfg.max_unauthenticated_connections)),
            max_unauthenticated: cfg.max_unauthenticated_connections,
            max_per_ip: cfg.max_unauthenticated_connections_per_ip,
            resume_hold,
            addresses: Arc::new(Mutex::new(Addresses::default())),
            joins: Mutex::new(JoinAttempts::new(cfg.join_attempts_per_ip_per_minute)),
        }
    }

    /// A WebSocket from `ip` is about to open: admit it to an ordinary slot while its address
    /// and the server are under their caps, else to a resume-only slot while its address holds
    /// more resume shares than resume-only connections, else refuse (`limit_exceeded`).
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<PreJoinPermit, LimitError> {
        let key = address_key(ip);
        let mut a = lock(&self.addresses);
        let pending = a.pending.get(&key).copied().unwrap_or(0);
        let per_ip_full = pending >= self.max_per_ip;
        if !per_ip_full {
            if let Ok(p) = Arc::clone(&self.unauthenticated).try_acquire_owned() {
                *a.pending.entry(key).or_insert(0) += 1;
                return Ok(PreJoinPermit {
                    addresses: Arc::clone(&self.addresses),
                    key,
                    slot: Slot::Ordinary(p),
                });
            }
        }
        let shares = a.shares_held(key, now);
        let resuming = a.resuming.get(&key).copied().unwrap_or(0);
        if resuming < shares {
            *a.resuming.entry(key).or_insert(0) += 1;
            return Ok(PreJoinPermit {
                addresses: Arc::clone(&self.addresses),
                key,
                slot: Slot::ResumeOnly,
            });
        }
        let message = if per_ip_full {
            format!(
                "too many connections from your address waiting to join (limits.max_unauthenticated_connections_per_ip = {}); try again shortly",
                self.max_per_ip
            )
        } else {
            format!(
                "too many connections waiting to join (limits.max_unauthenticated_connections = {}); try again shortly",
                self.max_unauthenticated
            )
        };
        Err(LimitError {
            code: ErrorCode::LimitExceeded,
            message,
        })
    }

    /// The participant `participant` joined (or resumed) from `ip`: its resume share.
    pub fn joined(&self, ip: IpAddr, participant: &str) -> JoinedShare {
        let key = address_key(ip);
        let mut a = lock(&self.addresses);
        if a.shares.len() >= PRUNE_ABOVE && !a.shares.contains_key(&key) {
            a.prune_all(Instant::now());
        }
        let s = a
            .shares
            .entry(key)
            .or_default()
            .entry(participant.to_owned())
            .or_insert(Share {
                live: 0,
                until: None,
            });
        s.live += 1;
        s.until = None;
        JoinedShare {
            addresses: Arc::clone(&self.addresses),
            key,
            participant: participant.to_owned(),
            hold: self.resume_hold,
        }
    }

    /// A `join` arrived from `ip`.
    pub fn join_attempt(&self, ip: IpAddr, now: Instant) -> Result<(), LimitError> {
        let mut joins = match self.joins.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        joins.attempt(ip, now)
    }
}
/// Join attempts per client address: a token bucket per address holding a minute's worth,
/// refilled continuously. IPv6 addresses count per /64 (one site's network).
#[derive(Debug)]
struct JoinAttempts {
    per_minute: u32,
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl JoinAttempts {
    fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: HashMap::new(),
        }
    }

    fn attempt(&mut self, ip: IpAddr, now: Instant) -> Result<(), LimitError> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let key = address_key(ip);
        let cap = f64::from(self.per_minute);
        let rate = cap / WINDOW.as_secs_f64();
        if !self.buckets.contains_key(&key) && self.buckets.len() >= PRUNE_ABOVE {
            // Forget addresses whose bucket has refilled: they are as if never seen.
            self.buckets
                .retain(|_, b| now.saturating_duration_since(b.last) < WINDOW);
            if self.buckets.len() >= MAX_TRACKED {
                return Err(self.refusal());
            }
        }
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: cap,
            last: now,
        });
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + dt * rate).min(cap);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.refusal())
        }
    }

    fn refusal(&self) -> LimitError {
        LimitError {
            code: ErrorCode::RateLimited,
            message: format!(
                "too many join attempts from your address (limits.join_attempts_per_ip_per_minute = {}); wait a minute",
                self.per_minute
            ),
        }
    }
}

/// IPv4 (and IPv4-mapped IPv6) as is; other IPv6 by its /64 prefix.
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn cfg(unauth: usize, joins: u32) -> LimitsConfig {
        LimitsConfig {
            max_unauthenticated_connections: unauth,
            join_attempts_per_ip_per_minute: joins,
            ..LimitsConfig::default()
        }
    }

    const GRACE: Duration = Duration::from_secs(30);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn per_ip(total: usize, per_ip: usize) -> SignalLimits {
        let c = LimitsConfig {
            max_unauthenticated_connections: total,
            max_unauthenticated_connections_per_ip: per_ip,
            ..LimitsConfig::default()
        };
        SignalLimits::new(&c, GRACE)
    }

    #[test]
    fn unauthenticated_permits_are_returned_on_drop() {
        let l = SignalLimits::new(&cfg(2, 0), GRACE);
        let now = Instant::now();
        let a = l.admit(ip("10.0.0.1"), now).unwrap();
        let _b = l.admit(ip("10.0.0.2"), now).unwrap();
        let e = l.admit(ip("10.0.0.3"), now).unwrap_err();
        assert_eq!(e.code, ErrorCode::LimitExceeded);
        assert!(e.message.contains("max_unauthenticated_connections = 2"));
        drop(a);
        assert!(l.admit(ip("10.0.0.3"), now).is_ok());
    }

    #[test]
    fn one_address_is_capped_while_others_are_admitted() {
        let l = per_ip(10, 3);
        let now = Instant::now();
        let held: Vec<_> = (0..3)
            .map(|_| l.admit(ip("10.0.0.1"), now).unwrap())
            .collect();
        assert!(held.iter().all(|p| !p.resume_only()));
        let e = l.admit(ip("10.0.0.1"), now).unwrap_err();
        assert_eq!(e.code, ErrorCode::LimitExceeded);
        assert!(
            e.message
                .contains("max_unauthenticated_connections_per_ip = 3"),
            "{}",
            e.message
        );
        // IPv6 counts per /64.
        let _v6: Vec<_> = (0..3)
            .map(|i| l.admit(ip(&format!("2001:db8::{i}")), now).unwrap())
            .collect();
        assert!(l.admit(ip("2001:db8::99"), now).is_err());
        assert!(l.admit(ip("2001:db8:0:1::1"), now).is_ok());
        assert!(l.admit(ip("10.0.0.2"), now).is_ok());
        drop(held);
        assert!(l.admit(ip("10.0.0.1"), now).is_ok());
        assert!(
            l.addresses.lock().unwrap().pending.len() <= 3,
            "emptied entries are removed"
        );
    }

    #[test]
    fn a_joined_participant_keeps_a_share_for_its_resume() {
        let l = per_ip(100, 2);
        let t0 = Instant::now();
        let site = ip("10.0.0.1");
        // The site joins: its permit goes, its share comes.
        let p = l.admit(site, t0).unwrap();
        let share = l.joined(site, "p1");
        drop(p);
        // Strangers behind the same address hold both ordinary slots.
        let _s1 = l.admit(site, t0).unwrap();
        let _s2 = l.admit(site, t0).unwrap();
        // The site's connection died but the server has not noticed yet: its resume is
        // admitted (resume-only), one at a time per share.
        let r = l.admit(site, t0).unwrap();
        assert!(r.resume_only());
        assert!(
            l.admit(site, t0).is_err(),
            "one share, one resume at a time"
        );
        // The resume succeeds: the new connection's share first, then the old one ends.
        let share2 = l.joined(site, "p1");
        drop(r);
        drop(share);
        // Its connection drops again; the share outlives it by the grace.
        drop(share2);
        let r = l.admit(site, t0 + Duration::from_secs(29)).unwrap();
        assert!(r.resume_only());
        drop(r);
        assert!(
            l.admit(site, t0 + GRACE + Duration::from_secs(1)).is_err(),
            "the share lapses after the grace"
        );
        assert!(l.addresses.lock().unwrap().shares.is_empty());
    }

    #[test]
    fn the_total_cap_leaves_resume_shares_usable() {
        let l = per_ip(2, 10);
        let now = Instant::now();
        let site = ip("10.0.0.9");
        let _share = l.joined(site, "p1");
        let _a = l.admit(ip("10.0.0.1"), now).unwrap();
        let _b = l.admit(ip("10.0.0.2"), now).unwrap();
        let e = l.admit(ip("10.0.0.3"), now).unwrap_err();
        assert!(e.message.contains("max_unauthenticated_connections = 2"));
        assert!(l.admit(site, now).unwrap().resume_only());
    }

    #[test]
    fn join_attempts_per_address_refill_over_a_minute() {
        let l = SignalLimits::new(&cfg(1, 3), GRACE);
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        // (address, seconds after t0, allowed)
        let table = [
            (a, 0, true),
            (a, 0, true),
            (a, 0, true),
            (a, 0, false),
            (b, 0, true),
            (a, 19, false),
            (a, 21, true),
            (a, 22, false),
            (a, 200, true),
        ];
        for (i, (ip, s, ok)) in table.into_iter().enumerate() {
            let r = l.join_attempt(ip, t0 + Duration::from_secs(s));
            assert_eq!(r.is_ok(), ok, "row {i}: {r:?}");
            if let Err(e) = r {
                assert_eq!(e.code, ErrorCode::RateLimited);
            }
        }
    }

    #[test]
    fn zero_means_no_join_limit_and_ipv6_counts_per_64() {
        let l = SignalLimits::new(&cfg(1, 0), GRACE);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!((0..1000).all(|_| l.join_attempt(ip, Instant::now()).is_ok()));

        let l = SignalLimits::new(&cfg(1, 1), GRACE);
        let now = Instant::now();
        assert!(l
            .join_attempt("2001:db8:1:2::1".parse().unwrap(), now)
            .is_ok());
        assert!(l
            .join_attempt("2001:db8:1:2::99".parse().unwrap(), now)
            .is_err());
        assert!(l
            .join_attempt("2001:db8:1:3::1".parse().unwrap(), now)
            .is_ok());
        assert!(l
            .join_attempt("::ffff:10.1.1.1".parse().unwrap(), now)
            .is_ok());
        assert!(l.join_attempt("10.1.1.1".parse().unwrap(), now).is_err());
    }

    #[test]
    fn many_addresses_are_pruned_not_kept_forever() {
        let mut j = JoinAttempts::new(5);
        let t0 = Instant::now();
        for i in 0..(PRUNE_ABOVE as u32 + 10) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(j.attempt(ip, t0).is_ok());
        }
        let later = t0 + Duration::from_secs(61);
        assert!(j
            .attempt(IpAddr::from(std::net::Ipv4Addr::new(192, 168, 0, 1)), later)
            .is_ok());
        assert!(j.buckets.len() < 10, "{}", j.buckets.len());
    }
}
