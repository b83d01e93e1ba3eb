//! Connection-level limits of the signalling service that protect the server from strangers:
//! how many WebSockets may be open without having joined, and how many `join` attempts one
//! client address may make per minute. Per-connection limits (frame size, messages per second)
//! are in [`crate::signal`]; room limits (rooms, participants, tracks) in the media core.
//!
//! Each limit has one call site in `signal.rs`: [`SignalLimits::admit`] when a WebSocket opens,
//! [`SignalLimits::join_attempt`] when its `join` arrives.

use crate::config::LimitsConfig;
use rakor_proto::ErrorCode;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
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

/// Held by a connection until it has joined (or ends); counts against
/// `limits.max_unauthenticated_connections`.
#[derive(Debug)]
pub struct UnauthenticatedPermit(#[allow(dead_code)] OwnedSemaphorePermit);

/// Shared by all signalling connections (in [`crate::state::AppState`]).
#[derive(Debug)]
pub struct SignalLimits {
    unauthenticated: Arc<Semaphore>,
    max_unauthenticated: usize,
    joins: Mutex<JoinAttempts>,
}

impl SignalLimits {
    pub fn new(cfg: &LimitsConfig) -> Self {
        Self {
            unauthenticated: Arc::new(Semaphore::new(cfg.max_unauthenticated_connections)),
            max_unauthenticated: cfg.max_unauthenticated_connections,
            joins: Mutex::new(JoinAttempts::new(cfg.join_attempts_per_ip_per_minute)),
        }
    }

    /// A WebSocket opened: admit it while fewer than the limit are waiting to join.
    pub fn admit(&self) -> Result<UnauthenticatedPermit, LimitError> {
        Arc::clone(&self.unauthenticated)
            .try_acquire_owned()
            .map(UnauthenticatedPermit)
            .map_err(|_| LimitError {
                code: ErrorCode::LimitExceeded,
                message: format!(
                    "too many connections waiting to join (limits.max_unauthenticated_connections = {}); try again shortly",
                    self.max_unauthenticated
                ),
            })
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

    #[test]
    fn unauthenticated_permits_are_returned_on_drop() {
        let l = SignalLimits::new(&cfg(2, 0));
        let a = l.admit().unwrap();
        let _b = l.admit().unwrap();
        let e = l.admit().unwrap_err();
        assert_eq!(e.code, ErrorCode::LimitExceeded);
        assert!(e.message.contains("max_unauthenticated_connections = 2"));
        drop(a);
        assert!(l.admit().is_ok());
    }

    #[test]
    fn join_attempts_per_address_refill_over_a_minute() {
        let l = SignalLimits::new(&cfg(1, 3));
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
        let l = SignalLimits::new(&cfg(1, 0));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!((0..1000).all(|_| l.join_attempt(ip, Instant::now()).is_ok()));

        let l = SignalLimits::new(&cfg(1, 1));
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
