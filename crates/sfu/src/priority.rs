//! The media worker threads' CPU priority (`media.thread_nice`, `media.thread_realtime`,
//! `media.thread_slice_us`).
//!
//! On a busy host (a build, a backup, or, in the tests, the load tool's bots on the same
//! cores) every runnable thread gets an equal share under Linux's fair scheduler, and a media
//! thread that falls behind does not just forward late: its socket overflows and ICE and DTLS
//! packets of joining sites are dropped with the media, so joins stall (issue 16). A lower
//! nice value for the media threads only gives them a larger share of a contended CPU; on an
//! idle host it changes nothing.

/// Set the calling thread's nice value to `nice` (Linux: `setpriority(PRIO_PROCESS, tid)`
/// applies to one thread). `Ok(false)` when `nice` is 0 (left as is); an error when the
/// process may not (lowering below the current value needs `CAP_SYS_NICE` or a matching
/// `RLIMIT_NICE`).
pub fn set_thread_nice(nice: i32) -> std::io::Result<bool> {
    if nice == 0 {
        return Ok(false);
    }
    // SAFETY: `gettid` has no preconditions.
    let tid = unsafe { libc::gettid() };
    let who = libc::id_t::try_from(tid).map_err(|_| std::io::Error::other("negative tid"))?;
    // SAFETY: plain syscall on this thread's id; no memory is passed.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, who, nice) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(true)
}

/// Put the calling thread under real-time round-robin scheduling (`SCHED_RR`) at `priority`
/// (1..=99; Linux: `sched_setscheduler(0, ..)` applies to the calling thread only). A
/// real-time thread runs before every thread of the fair scheduler whenever it is runnable,
/// so the load tool's bots or a build on the same cores no longer preempt it mid-turn (issue
/// 16: the forwarding p99); it still sleeps in `ppoll` when idle, and the kernel's real-time
/// throttling (`sched_rt_runtime_us`, 95 % by default) leaves the rest of the host a share.
/// `Ok(false)` when `priority` is 0 (left under the fair scheduler); an error when the process
/// may not (`CAP_SYS_NICE` or `RLIMIT_RTPRIO`) or `priority` is out of range.
pub fn set_thread_realtime(priority: u32) -> std::io::Result<bool> {
    if priority == 0 {
        return Ok(false);
    }
    let prio = libc::c_int::try_from(priority)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let param = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: `param` is a valid `sched_param` that lives across the call; pid 0 is the
    // calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(true)
}

/// `struct sched_attr` of `sched_setattr(2)` (the first published size, 48 bytes, plus the
/// utilisation clamps of size 56; only `size`, `sched_policy`, `sched_nice` and
/// `sched_runtime` are used here).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

/// Shortest and longest slice the kernel takes (it clamps `sched_runtime` to 0.1..=100 ms).
pub const SLICE_RANGE_US: std::ops::RangeInclusive<u32> = 100..=100_000;

/// Ask the scheduler for a time slice of `slice_us` µs for the calling thread, which stays
/// under the fair scheduler (`SCHED_OTHER`, its nice value kept). Since Linux 6.12 (EEVDF)
/// `sched_attr.sched_runtime` is a fair task's requested slice: a shorter one gives it an
/// earlier virtual deadline, so when it wakes (a datagram in `ppoll`) it preempts a running
/// task with a longer slice instead of waiting for that slice to end, without a larger CPU
/// share and without a privilege (only lowering the nice value needs one, and the current
/// value is passed). `Ok(false)` when `slice_us` is 0 (the kernel's default slice); an error
/// when the call fails (a seccomp filter, a kernel before 3.14), when `slice_us` is outside
/// [`SLICE_RANGE_US`], or when the kernel took the call but ignored the slice (before 6.12:
/// read back with `sched_getattr`).
pub fn set_thread_slice(slice_us: u32) -> std::io::Result<bool> {
    if slice_us == 0 {
        return Ok(false);
    }
    if !SLICE_RANGE_US.contains(&slice_us) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a slice is 100..=100000 us",
        ));
    }
    let want = u64::from(slice_us) * 1_000;
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_nice: thread_nice()?,
        sched_runtime: want,
        ..SchedAttr::default()
    };
    // SAFETY: `attr` is a valid, fully initialised `sched_attr` of the size it states that
    // lives across the call; pid 0 is the calling thread; flags 0.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0u32) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    match thread_slice_ns()? {
        Some(got) if got == want => Ok(true),
        got => Err(std::io::Error::other(format!(
            "the kernel ignored the slice (read back {got:?} ns; needs Linux 6.12 or later)"
        ))),
    }
}

/// The calling thread's time slice in ns as `sched_getattr` reports it (`sched_runtime`; for
/// a fair task the slice since Linux 6.12, the kernel's default unless one was asked for).
/// `None` when the kernel reports 0 (before 6.12).
pub fn thread_slice_ns() -> std::io::Result<Option<u64>> {
    let mut attr = SchedAttr::default();
    // SAFETY: `attr` is writable memory of the size passed; pid 0 is the calling thread.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut SchedAttr,
            std::mem::size_of::<SchedAttr>() as u32,
            0u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((attr.sched_runtime != 0).then_some(attr.sched_runtime))
}

/// The calling thread's nice value.
pub fn thread_nice() -> std::io::Result<i32> {
    // SAFETY: as above.
    let tid = unsafe { libc::gettid() };
    let who = libc::id_t::try_from(tid).map_err(|_| std::io::Error::other("negative tid"))?;
    // `getpriority` may return -1 legitimately: clear errno first and check it after.
    // SAFETY: errno is thread-local; the syscall reads no memory of ours.
    unsafe { *libc::__errno_location() = 0 };
    let v = unsafe { libc::getpriority(libc::PRIO_PROCESS, who) };
    let err = std::io::Error::last_os_error();
    if v == -1 && err.raw_os_error().is_some_and(|e| e != 0) {
        return Err(err);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// 0 leaves the thread alone; an out-of-range priority is refused; where the process may
    /// (root or `CAP_SYS_NICE`), a thread switches itself to `SCHED_RR` and the spawning thread
    /// stays under the fair scheduler.
    #[test]
    fn a_thread_switches_itself_to_real_time_only() {
        assert!(!set_thread_realtime(0).unwrap());
        assert!(set_thread_realtime(100).is_err(), "priorities are 1..=99");
        let (ok, policy) = std::thread::spawn(|| {
            let ok = set_thread_realtime(1);
            // SAFETY: plain syscall about the calling thread.
            (ok, unsafe { libc::sched_getscheduler(0) })
        })
        .join()
        .unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
        match ok {
            Ok(applied) => {
                assert!(applied);
                assert_eq!(policy, libc::SCHED_RR);
            }
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
        }
    }

    /// A thread asks for a 300 µs slice and gets it, keeping its nice value (raised first, so
    /// no privilege is involved) and its policy; the spawning thread keeps the kernel's
    /// default slice. 0 leaves the slice alone; out-of-range slices are refused before any
    /// call. On a kernel without custom slices (before 6.12, where `sched_getattr` reports no
    /// slice) the call must fail, not pretend.
    #[test]
    fn a_thread_sets_its_own_slice_only_and_keeps_its_nice_value() {
        assert!(!set_thread_slice(0).unwrap());
        for bad in [1, 99, 100_001] {
            let e = set_thread_slice(bad).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{bad}: {e}");
        }
        let before_slice = thread_slice_ns().unwrap();
        let before_nice = thread_nice().unwrap();
        let (res, slice, nice, policy) = std::thread::spawn(move || {
            let target = (before_nice + 3).min(19);
            assert!(set_thread_nice(target).unwrap());
            let res = set_thread_slice(300);
            // SAFETY: plain syscall about the calling thread.
            let policy = unsafe { libc::sched_getscheduler(0) };
            (
                res,
                thread_slice_ns().unwrap(),
                thread_nice().unwrap(),
                policy,
            )
        })
        .join()
        .unwrap();
        assert_eq!(
            nice,
            (before_nice + 3).min(19),
            "the slice call reset the nice value"
        );
        assert_eq!(policy, libc::SCHED_OTHER);
        match res {
            Ok(applied) => {
                assert!(applied);
                assert_eq!(slice, Some(300_000));
            }
            Err(e) => {
                assert_eq!(before_slice, None, "slices are reported, yet: {e}");
                assert_eq!(slice, None);
            }
        }
        assert_eq!(thread_slice_ns().unwrap(), before_slice, "the slice leaked");
    }

    /// A thread raises its own nice value (always allowed), and only its own: the spawning
    /// thread keeps its value. Lowering it is tried too and, where the process may (root or
    /// `CAP_SYS_NICE`), must take effect.
    #[test]
    fn a_thread_sets_its_own_nice_value_only() {
        let before = thread_nice().unwrap();
        let (raised, lowered) = std::thread::spawn(move || {
            let target = (before + 5).min(19);
            assert!(set_thread_nice(target).unwrap());
            let raised = thread_nice().unwrap();
            // Back down below where we started: needs the capability.
            let lowered = set_thread_nice(before - 1).map(|_| thread_nice().unwrap());
            (raised, lowered)
        })
        .join()
        .unwrap();
        assert_eq!(raised, (before + 5).min(19));
        assert_eq!(
            thread_nice().unwrap(),
            before,
            "the other thread's nice leaked"
        );
        match lowered {
            Ok(v) => assert_eq!(v, before - 1),
            Err(e) => assert!(
                matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)),
                "{e}"
            ),
        }
        assert!(!set_thread_nice(0).unwrap());
    }
}
