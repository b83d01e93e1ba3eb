//! [`LoginThrottle`]: failed console logins, counted so that an attacker can neither guess
//! passwords quickly nor lock the real operator out.
//!
//! - **Per client address** (any usernames): after `max_per_address` failures the address is
//!   refused until `lockout` has passed since its last failure. Spraying many usernames from
//!   one address is refused like guessing one. Logins still being checked count as failures
//!   in advance, so a burst of parallel logins from one address cannot slip past the count.
//! - **Per (username, address)**: after `max_per_user` failures that pair is refused. The
//!   same username from another address (the operator at the command room) is not affected.
//!
//! Both checks run before any password is hashed ([`crate::hash_pool`]). IPv6 addresses count
//! per /64. Time is an argument. The table is bounded: when full, the entries that went quiet
//! longest are forgotten first.

use crate::error::{Result, SessionError};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most keys remembered (addresses plus username/address pairs).
const MAX_KEYS: usize = 50_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    in_flight: u32,
    last: Instant,
}

/// The keys of one login attempt, returned by [`LoginThrottle::begin`] and given back to
/// [`LoginThrottle::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    address: String,
    pair: String,
}

/// How a login attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    /// Not checked (the hash pool was busy, the request went away): counts as nothing.
    Abandoned,
}

#[derive(Debug)]
pub struct LoginThrottle {
    max_per_address: u32,
    max_per_user: u32,
    lockout: Duration,
    max_keys: usize,
    entries: HashMap<String, Entry>,
}

/// The counting key of a client address: IPv4 as is, IPv6 by its /64; anything else as given.
pub fn address_key(client: &str) -> String {
    match client.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Ok(ip) => ip.to_string(),
        Err(_) => client.to_owned(),
    }
}

impl LoginThrottle {
    pub fn new(max_per_address: u32, max_per_user: u32, lockout: Duration) -> Self {
        Self {
            max_per_address: max_per_address.max(1),
            max_per_user: max_per_user.max(1),
            lockout,
            max_keys: MAX_KEYS,
            entries: HashMap::new(),
        }
    }

    /// A login for `username` from `client` may go on to the password check, or
    /// `RateLimited`. The returned attempt counts as in flight until [`Self::finish`].
    pub fn begin(&mut self, username: &str, client: &str, now: Instant) -> Result<Attempt> {
        let address = format!("a:{}", address_key(client));
        let pair = format!("u:{username}|{address}");
        for (key, max) in [(&address, self.max_per_address), (&pair, self.max_per_user)] {
            if let Some(e) = self.live(key, now) {
                if e.failures.saturating_add(e.in_flight) >= max {
                    let left = self
                        .lockout
                        .saturating_sub(now.saturating_duration_since(e.last));
                    return Err(SessionError::RateLimited {
                        retry_after_secs: left.as_secs().max(1),
                    });
                }
            }
        }
        for key in [&address, &pair] {
            self.entry(key, now).in_flight += 1;
        }
        Ok(Attempt { address, pair })
    }

    /// Record how `attempt` ended.
    pub fn finish(&mut self, attempt: &Attempt, outcome: Outcome, now: Instant) {
        for key in [&attempt.address, &attempt.pair] {
            if let Some(e) = self.entries.get_mut(key) {
                e.in_flight = e.in_flight.saturating_sub(1);
                if outcome == Outcome::Failed {
                    e.failures = e.failures.saturating_add(1);
                    e.last = now;
                }
            }
        }
        if outcome == Outcome::Succeeded {
            // The pair starts afresh; the address keeps its count (a valid account must not
            // reset the budget for guessing others).
            self.entries.remove(&attempt.pair);
        }
        if outcome != Outcome::Failed {
            for key in [&attempt.address, &attempt.pair] {
                if matches!(self.entries.get(key), Some(e) if e.failures == 0 && e.in_flight == 0) {
                    self.entries.remove(key);
                }
            }
        }
    }

    /// Remembered keys (for tests and metrics).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `key` unless its lockout window has passed (then it is forgotten).
    fn live(&mut self, key: &str, now: Instant) -> Option<Entry> {
        let e = *self.entries.get(key)?;
        if e.in_flight == 0 && now.saturating_duration_since(e.last) >= self.lockout {
            self.entries.remove(key);
            return None;
        }
        Some(e)
    }

    fn entry(&mut self, key: &str, now: Instant) -> &mut Entry {
        if !self.entries.contains_key(key) && self.entries.len() >= self.max_keys {
            let lockout = self.lockout;
            self.entries
                .retain(|_, e| e.in_flight > 0 || now.saturating_duration_since(e.last) < lockout);
            if self.entries.len() >= self.max_keys {
                // Forget the tenth that went quiet longest (amortised: not one per insert).
                let mut idle: Vec<(Instant, String)> = self
                    .entries
                    .iter()
                    .filter(|(_, e)| e.in_flight == 0)
                    .map(|(k, e)| (e.last, k.clone()))
                    .collect();
                let n = (self.max_keys / 10).max(1).min(idle.len());
                if n > 0 && n < idle.len() {
                    idle.select_nth_unstable(n);
                }
                for (_, k) in idle.into_iter().take(n) {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.entry(key.to_owned()).or_insert(Entry {
            failures: 0,
            in_flight: 0,
            last: now,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn fail(t: &mut LoginThrottle, user: &str, addr: &str, now: Instant) -> Result<()> {
        let a = t.begin(user, addr, now)?;
        t.finish(&a, Outcome::Failed, now);
        Ok(())
    }

    #[test]
    fn spraying_usernames_from_one_address_is_refused() {
        let mut t = LoginThrottle::new(20, 5, Duration::from_secs(900));
        let t0 = Instant::now();
        let mut refused_at = None;
        for i in 0..60 {
            if fail(&mut t, &format!("user{i}"), "198.51.100.7", t0).is_err() {
                refused_at = Some(i);
                break;
            }
        }
        assert_eq!(refused_at, Some(20), "the 21st username is refused");
        // Another address is unaffected; the window passes.
        assert!(fail(&mut t, "user0", "198.51.100.8", t0).is_ok());
        assert!(t
            .begin("user99", "198.51.100.7", t0 + Duration::from_secs(901))
            .is_ok());
    }

    #[test]
    fn a_locked_username_stays_open_from_another_address() {
        let mut t = LoginThrottle::new(20, 5, Duration::from_secs(900));
        let t0 = Instant::now();
        for _ in 0..5 {
            fail(&mut t, "admin", "203.0.113.66", t0).unwrap();
        }
        let e = t.begin("admin", "203.0.113.66", t0).unwrap_err();
        assert!(matches!(
            e,
            SessionError::RateLimited {
                retry_after_secs: 900
            }
        ));
        // The operator at the command room logs in.
        let a = t.begin("admin", "10.20.0.5", t0).unwrap();
        t.finish(&a, Outcome::Succeeded, t0);
        // IPv6: one /64 is one address.
        for i in 0..5 {
            fail(&mut t, "admin", &format!("2001:db8:5:6::{i}"), t0).unwrap();
        }
        assert!(t.begin("admin", "2001:db8:5:6::ffff", t0).is_err());
        assert!(t.begin("admin", "2001:db8:5:7::1", t0).is_ok());
    }

    #[test]
    fn parallel_attempts_count_before_they_finish() {
        let mut t = LoginThrottle::new(3, 100, Duration::from_secs(60));
        let t0 = Instant::now();
        let held: Vec<Attempt> = (0..3)
            .map(|i| t.begin(&format!("u{i}"), "192.0.2.1", t0).unwrap())
            .collect();
        assert!(t.begin("u9", "192.0.2.1", t0).is_err(), "3 in flight");
        for a in &held {
            t.finish(a, Outcome::Abandoned, t0);
        }
        assert!(t.begin("u9", "192.0.2.1", t0).is_ok());
    }

    #[test]
    fn success_resets_the_pair_but_not_the_address() {
        let mut t = LoginThrottle::new(4, 3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..2 {
            fail(&mut t, "op", "192.0.2.1", t0).unwrap();
        }
        let a = t.begin("op", "192.0.2.1", t0).unwrap();
        t.finish(&a, Outcome::Succeeded, t0);
        fail(&mut t, "op", "192.0.2.1", t0).unwrap();
        fail(&mut t, "op", "192.0.2.1", t0).unwrap();
        // 4 failures from the address in total: refused, although the pair has only 2.
        assert!(t.begin("op", "192.0.2.1", t0).is_err());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = LoginThrottle::new(1000, 1000, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS + 100) {
            let _ = fail(
                &mut t,
                "x",
                &format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                t0,
            );
        }
        assert!(t.len() <= MAX_KEYS, "{}", t.len());
    }
}
