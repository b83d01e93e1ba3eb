//! Waking a media worker without a periodic wake-up: the command channel's sender writes to an
//! `eventfd(2)` in the worker's poll set after each command ([`CommandTx`]), so an idle worker
//! can sleep until its next timer instead of every 10 ms (issue 16: at 1 → 10 the second,
//! idle worker and the 10 ms command checks of the busy one were ~10 % of the server's CPU).
//!
//! And the timer slack ([`timer_wait`]): the worker sleeps until its earliest timer plus a
//! few milliseconds, and every wake-up (a datagram, a command, the slack's end) fires every
//! timer due by then, so timers that fall due within the slack of each other share one wake-up.

use crate::handle::Command;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// A non-blocking `eventfd(2)`: [`Self::wake`] makes it readable, [`Self::drain`] resets it.
#[derive(Debug)]
pub(crate) struct WakeFd(OwnedFd);

impl WakeFd {
    /// None if the kernel refuses an eventfd (the worker then checks its commands every 10 ms).
    pub(crate) fn new() -> Option<Self> {
        // SAFETY: plain syscall; the returned fd (if >= 0) is owned by nobody else.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        // SAFETY: `fd` is a fresh, valid fd that we own from here on.
        (fd >= 0).then(|| WakeFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Make the fd readable (a full counter — 2^64 − 2 unread wakes — is still readable).
    pub(crate) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own fd.
        let _ = unsafe {
            libc::write(
                self.0.as_raw_fd(),
                std::ptr::addr_of!(one).cast::<libc::c_void>(),
                8,
            )
        };
    }

    /// Reset the counter (after `poll` saw the fd readable).
    pub(crate) fn drain(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our own fd (non-blocking).
        let _ = unsafe {
            libc::read(
                self.0.as_raw_fd(),
                std::ptr::addr_of_mut!(n).cast::<libc::c_void>(),
                8,
            )
        };
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The sending side of a media worker's command channel: each command (and dropping a
/// sender, so the worker sees a closed channel at once) also wakes the worker's `poll`.
#[derive(Debug)]
pub(crate) struct CommandTx {
    tx: mpsc::Sender<Command>,
    wake: Option<Arc<WakeFd>>,
}

impl CommandTx {
    /// A command channel, and the fd the worker adds to its poll set (None: no eventfd).
    pub(crate) fn channel() -> (CommandTx, mpsc::Receiver<Command>, Option<Arc<WakeFd>>) {
        let (tx, rx) = mpsc::channel();
        let wake = WakeFd::new().map(Arc::new);
        (
            CommandTx {
                tx,
                wake: wake.clone(),
            },
            rx,
            wake,
        )
    }

    /// Queue `cmd` and wake the worker; [`crate::SfuError::WorkerGone`] if it stopped.
    pub(crate) fn send(&self, cmd: Command) -> Result<(), crate::SfuError> {
        self.tx.send(cmd).map_err(|_| crate::SfuError::WorkerGone)?;
        if let Some(w) = &self.wake {
            w.wake();
        }
        Ok(())
    }
}

impl Clone for CommandTx {
    fn clone(&self) -> Self {
        CommandTx {
            tx: self.tx.clone(),
            wake: self.wake.clone(),
        }
    }
}

impl Drop for CommandTx {
    fn drop(&mut self) {
        if let Some(w) = &self.wake {
            w.wake();
        }
    }
}

/// How long the worker may sleep for its timers at `now`: until `earliest` (its earliest
/// timer) plus `slack`, at most `max_wait` (None: no timer). The loop fires every timer due by
/// the time it wakes, whatever woke it, so a timer fires at most `slack` after it was due
/// (plus the scheduler's latency), and the timers due within `slack` after the earliest fire in
/// the same wake-up.
pub(crate) fn timer_wait(
    now: Instant,
    earliest: Option<Instant>,
    slack: Duration,
    max_wait: Duration,
) -> Duration {
    earliest
        .and_then(|d| d.checked_add(slack))
        .map_or(max_wait, |w| w.saturating_duration_since(now).min(max_wait))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Periodic timers driven the way the shell drives the core: sleep for [`timer_wait`],
    /// then fire every timer due at the wake-up instant and re-arm it one period later.
    /// Returns (wake-ups, the latest any timer fired after it was due).
    fn drive(
        timers: &mut [(Instant, Duration)],
        slack: Duration,
        until: Instant,
        start: Instant,
    ) -> (usize, Duration) {
        let mut now = start;
        let (mut wakeups, mut worst) = (0, Duration::ZERO);
        loop {
            let earliest = timers.iter().map(|t| t.0).min();
            now += timer_wait(now, earliest, slack, Duration::from_secs(1));
            if now > until {
                return (wakeups, worst);
            }
            wakeups += 1;
            for (due, period) in timers.iter_mut() {
                if *due <= now {
                    worst = worst.max(now - *due);
                    *due = now + *period;
                }
            }
        }
    }

    #[test]
    fn timers_due_within_the_slack_share_one_wakeup_and_none_fires_later_than_the_slack() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let slack = ms(5);
        // Three timers due 0, 2 and 4.5 ms apart: one wake-up, at the first + 5 ms.
        assert_eq!(timer_wait(t0, Some(t0), slack, ms(250)), slack);
        let mut timers = [
            (t0, ms(1000)),
            (t0 + ms(2), ms(1000)),
            (t0 + ms(4) + Duration::from_micros(500), ms(1000)),
        ];
        let (wakeups, worst) = drive(&mut timers, slack, t0 + ms(100), t0);
        assert_eq!(wakeups, 1, "all three within the slack of the first");
        assert!(worst <= slack, "fired {worst:?} late");
        // A timer 6 ms after the first is outside the slack: its own wake-up.
        let mut timers = [(t0, ms(1000)), (t0 + ms(6), ms(1000))];
        assert_eq!(drive(&mut timers, slack, t0 + ms(100), t0).0, 2);

        // The per-connection timers of a 1 -> 10 room: 100 ms (TWCC feedback, NACK, the
        // allocator tick) and 1 s (reports) periods at scattered phases. With the slack the
        // 100 ms timers align after their first shared wake-up and stay aligned.
        let mk = || -> Vec<(Instant, Duration)> {
            let mut v = Vec::new();
            for i in 0..3u32 {
                v.push((t0 + Duration::from_micros(u64::from(i) * 1_700), ms(100)));
            }
            for i in 0..11u32 {
                v.push((
                    t0 + Duration::from_micros(u64::from(i) * 37_000 % 1_000_000),
                    ms(1000),
                ));
            }
            v
        };
        let (exact, worst0) = drive(&mut mk(), Duration::ZERO, t0 + ms(10_000), t0);
        let (slacked, worst5) = drive(&mut mk(), slack, t0 + ms(10_000), t0);
        assert_eq!(worst0, Duration::ZERO, "no slack: every timer on time");
        assert!(worst5 <= slack, "fired {worst5:?} late");
        assert!(exact >= 400, "{exact} wake-ups without slack");
        assert!(
            slacked * 2 <= exact,
            "{slacked} wake-ups with a 5 ms slack against {exact}"
        );
        // No timer was skipped: 10 s of 100 ms timers fire ~100 times each, never fewer than
        // the slack allows (period + slack).
        assert!(slacked >= (10_000 / 105));
        // A slack too large for the clock: the longest sleep, no overflow.
        assert_eq!(timer_wait(t0, Some(t0), Duration::MAX, ms(250)), ms(250));
        // No timer: sleep the longest.
        assert_eq!(timer_wait(t0, None, slack, ms(250)), ms(250));
        // Long overdue: no sleep.
        assert_eq!(
            timer_wait(t0 + ms(50), Some(t0), slack, ms(250)),
            Duration::ZERO
        );
    }

    /// A command sent while the worker waits in `poll` ends the wait at once (the eventfd), and
    /// dropping the last sender does too (the worker sees the closed channel).
    #[test]
    fn a_command_or_a_dropped_sender_ends_the_wait() {
        let (tx, rx, wake) = CommandTx::channel();
        let wake = wake.unwrap();
        let poll = |timeout_ms: i32| {
            let mut pfd = [libc::pollfd {
                fd: wake.raw(),
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(pfd.as_mut_ptr(), 1, timeout_ms) }
        };
        assert_eq!(poll(0), 0, "nothing sent");
        let sender = std::thread::spawn({
            let tx = tx.clone();
            move || {
                std::thread::sleep(Duration::from_millis(20));
                tx.send(Command::Shutdown {
                    reply: tokio::sync::oneshot::channel().0,
                })
                .unwrap();
            }
        });
        let t = Instant::now();
        assert_eq!(poll(5_000), 1, "woken by the command");
        assert!(t.elapsed() < Duration::from_secs(4));
        assert!(matches!(rx.try_recv(), Ok(Command::Shutdown { .. })));
        sender.join().unwrap();
        wake.drain();
        assert_eq!(poll(0), 0, "drained");
        drop(tx);
        assert_eq!(poll(0), 1, "the last sender's drop wakes the worker");
        assert!(matches!(
            rx.try_recv(),
            Err(mpsc::TryRecvError::Disconnected)
        ));
    }
}
