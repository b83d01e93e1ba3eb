//! The media worker threads' CPU priority (`media.thread_nice`).
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
