//! Allocations in total and per user (the `<user>` part of the credentials' username).

use std::collections::HashMap;

/// Why an allocation was refused by the quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaRefusal {
    /// The user already holds `max_per_user` allocations (486 Allocation Quota Reached).
    PerUser,
    /// The server holds `max_total` allocations (508 Insufficient Capacity).
    Total,
}

/// Counts of allocations; the shell keeps one behind a mutex, taken only on allocate/free.
#[derive(Debug, Clone)]
pub struct Quota {
    max_total: usize,
    max_per_user: usize,
    total: usize,
    per_user: HashMap<String, usize>,
}

impl Quota {
    pub fn new(max_total: usize, max_per_user: usize) -> Self {
        Self {
            max_total,
            max_per_user,
            total: 0,
            per_user: HashMap::new(),
        }
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
