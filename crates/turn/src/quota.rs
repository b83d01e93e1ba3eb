//! Allocations in total and per user (the `<user>` part of the credentials' username), and
//! the credentials revoked before their expiry (a participant that left or was removed: its
//! `<expiry>:<user>` usernames open no new allocation).

use std::collections::HashMap;

/// Why an allocation was refused by the quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaRefusal {
    /// The user already holds `max_per_user` allocations (486 Allocation Quota Reached).
    PerUser,
    /// The server holds `max_total` allocations (508 Insufficient Capacity).
    Total,
    /// The credential was revoked (401 Unauthorized).
    Revoked,
}

/// Counts of allocations; the shell keeps one behind a mutex, taken only on allocate/free.
#[derive(Debug, Clone)]
pub struct Quota {
    max_total: usize,
    max_per_user: usize,
    total: usize,
    per_user: HashMap<String, usize>,
    /// Revoked usernames → their expiry (Unix seconds); pruned once expired.
    revoked: HashMap<String, u64>,
}

impl Quota {
    pub fn new(max_total: usize, max_per_user: usize) -> Self {
        Self {
            max_total,
            max_per_user,
            total: 0,
            per_user: HashMap::new(),
            revoked: HashMap::new(),
        }
    }

    /// Revoke `username` (`<expiry>:<user>`, expiring at `expires_at`) as of `now` (Unix
    /// seconds): it opens no new allocation. Expired entries are dropped here, so the set holds
    /// at most the credentials minted in one `credential_ttl`.
    pub fn revoke(&mut self, username: &str, expires_at: u64, now: u64) {
        self.revoked.retain(|_, exp| *exp >= now);
        if expires_at >= now {
            self.revoked.insert(username.to_owned(), expires_at);
        }
    }

    /// Whether `username` was revoked.
    pub fn is_revoked(&self, username: &str) -> bool {
        self.revoked.contains_key(username)
    }

    /// Take a place for one allocation with credentials `username` of `user`.
    pub fn acquire_for(&mut self, username: &str, user: &str) -> Result<(), QuotaRefusal> {
        if self.revoked.contains_key(username) {
            return Err(QuotaRefusal::Revoked);
        }
        self.acquire(user)
    }

    /// Take a place for one allocation of `user`.
    pub fn acquire(&mut self, user: &str) -> Result<(), QuotaRefusal> {
        let held = self.per_user.get(user).copied().unwrap_or(0);
        if held >= self.max_per_user {
            return Err(QuotaRefusal::PerUser);
        }
        if self.total >= self.max_total {
            return Err(QuotaRefusal::Total);
        }
        self.total += 1;
        *self.per_user.entry(user.to_owned()).or_insert(0) += 1;
        Ok(())
    }

    /// Give back the place of one allocation of `user`.
    pub fn release(&mut self, user: &str) {
        if let Some(n) = self.per_user.get_mut(user) {
            *n -= 1;
            self.total = self.total.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(user);
            }
        }
    }

    /// Allocations held now.
    pub fn total(&self) -> usize {
        self.total
    }
}
