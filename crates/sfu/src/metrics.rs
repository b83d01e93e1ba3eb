//! Forwarding latency: how long a packet spends in the server, from the moment its datagram
//! was read from the socket to the end of the `sendto` batch that carried its copies out.
//! A fixed-size log-linear histogram: recording is an index computation and an add, no
//! allocation, so it can see every forwarded packet.

use std::time::Duration;

/// Values below this many µs get a bucket each.
const LINEAR: u64 = 64;
/// Significant bits kept above that (32 buckets per power of two: ≤ 3.2 % error).
const SUB_BITS: u32 = 5;
const BUCKETS: usize = 1024;

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }
}

fn bucket(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let msb = 63 - us.leading_zeros(); // ≥ 6
    let shift = msb - SUB_BITS;
    let mantissa = (us >> shift) as usize; // 32..=63
    let i = LINEAR as usize + (shift as usize - 1) * 32 + (mantissa - 32);
    i.min(BUCKETS - 1)
}

/// The largest value that falls into bucket `i`.
fn upper_bound(i: usize) -> u64 {
    if (i as u64) < LINEAR {
        return i as u64;
    }
    let j = i - LINEAR as usize;
    let shift = (j / 32 + 1) as u32;
    let mantissa = (j % 32 + 32) as u64;
    ((mantissa + 1) << shift) - 1
}

impl LatencyHistogram {
    #[inline]
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket(us)] += 1;
        self.total += 1;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value (µs, rounded up to its bucket) below which `q` of the samples lie.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper_bound(i));
            }
        }
        None
    }

    pub fn reset(&mut self) {
        self.counts.fill(0);
        self.total = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for us in 0..2_000_000u64 {
            let b = bucket(us);
            assert!(b >= last, "{us}");
            last = b;
            let ub = upper_bound(b);
            assert!(ub >= us, "{us} > bound {ub}");
            assert!(ub as f64 <= us as f64 * 1.04 + 1.0, "{us}: bound {ub}");
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5).unwrap_or(0);
        let p99 = h.quantile(0.99).unwrap_or(0);
        assert!((500..=520).contains(&p50), "{p50}");
        assert!((990..=1023).contains(&p99), "{p99}");
        h.reset();
        assert_eq!(h.count(), 0);
    }
}
