//! Socket facts the kernel keeps that the media worker and the TURN relay report in
//! `/metrics`.

use std::os::fd::AsRawFd;

/// Datagrams the kernel dropped on `sock` so far because its receive buffer was full (the
/// reader did not keep up): `SO_MEMINFO`'s `SK_MEMINFO_DROPS`; `None` if the kernel does not
/// say. A counter since the socket was created.
pub fn receive_drops(sock: &impl AsRawFd) -> Option<u64> {
    /// Index of the drop count in the `SO_MEMINFO` array (`linux/sock_diag.h`).
    const SK_MEMINFO_DROPS: usize = 8;
    let mut info = [0u32; 9];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: a valid socket fd; `info` is writable for `len` bytes, and the kernel writes at
    // most `len` bytes and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let have = usize::try_from(len).unwrap_or(0) / std::mem::size_of::<u32>();
    (rc == 0 && have > SK_MEMINFO_DROPS).then(|| u64::from(info[SK_MEMINFO_DROPS]))
}

/// The receive and send buffer sizes a socket got (as `getsockopt` reports them, halved: the
/// kernel doubles what was asked for its bookkeeping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferSizes {
    pub receive: usize,
    pub send: usize,
}

impl BufferSizes {
    /// Whether both buffers hold at least `bytes` (what was asked).
    pub fn hold(&self, bytes: usize) -> bool {
        self.receive >= bytes && self.send >= bytes
    }
}

/// Ask for `bytes` of receive and send buffer on `sock`. Linux caps `SO_RCVBUF`/`SO_SNDBUF` at
/// `net.core.rmem_max`/`wmem_max` (Debian: 208 KiB) without saying so; where the cap bites, the
/// `…FORCE` variants are tried (they pass the cap for a process with `CAP_NET_ADMIN`, e.g. run
/// as root). Returns what the socket got (`None` if the kernel does not say); the caller warns
/// when it is less than asked.
pub fn set_buffers(sock: &impl AsRawFd, bytes: usize) -> Option<BufferSizes> {
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for (opt, force) in [
        (libc::SO_RCVBUF, libc::SO_RCVBUFFORCE),
        (libc::SO_SNDBUF, libc::SO_SNDBUFFORCE),
    ] {
        let _ = set_int(sock, opt, want);
        // The kernel reports twice what it set; less than asked means the sysctl cap applied.
        if get_int(sock, opt).is_some_and(|got| got / 2 < want) {
            let _ = set_int(sock, force, want);
        }
    }
    let size = |opt| get_int(sock, opt).and_then(|v| usize::try_from(v / 2).ok());
    Some(BufferSizes {
        receive: size(libc::SO_RCVBUF)?,
        send: size(libc::SO_SNDBUF)?,
    })
}

fn set_int(sock: &impl AsRawFd, opt: libc::c_int, v: libc::c_int) -> bool {
    // SAFETY: a valid socket fd; the value is a c_int of the stated size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

fn get_int(sock: &impl AsRawFd, opt: libc::c_int) -> Option<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket fd; `v` is writable for `len` bytes, and the kernel writes at
    // most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn a_full_receive_buffer_counts_the_datagrams_it_dropped() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // The smallest buffer the kernel allows (it rounds up to its minimum).
        let v: libc::c_int = 1024;
        // SAFETY: valid fd, option value is a c_int of the stated size.
        let rc = unsafe {
            libc::setsockopt(
                rx.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(
            receive_drops(&rx),
            Some(0),
            "a new socket has dropped nothing"
        );
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let payload = [0u8; 1000];
        let sent = 200;
        for _ in 0..sent {
            tx.send_to(&payload, to).unwrap();
        }
        // Loopback delivers in the sender's context: every datagram is queued or dropped by
        // the time `send_to` returns. Nobody reads `rx`, so most of them were dropped.
        let drops = receive_drops(&rx).unwrap();
        rx.set_nonblocking(true).unwrap();
        let mut queued = 0u64;
        let mut buf = [0u8; 1500];
        while rx.recv_from(&mut buf).is_ok() {
            queued += 1;
        }
        assert!(drops > 100, "dropped {drops} of {sent}");
        assert_eq!(
            drops + queued,
            sent,
            "every datagram was either queued or counted as dropped"
        );
    }

    /// What `set_buffers` reports is what the socket has, and it gets what it asked for unless
    /// both the sysctl cap and a missing `CAP_NET_ADMIN` stand in the way.
    #[test]
    fn buffers_get_what_was_asked_or_report_the_cap() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        // Above this machine's cap, so the plain option alone cannot give it.
        let ask = (rmem_max + (1 << 20)).max(1 << 20);
        let got = set_buffers(&sock, ask).unwrap();
        let reported = usize::try_from(get_int(&sock, libc::SO_RCVBUF).unwrap() / 2).unwrap();
        assert_eq!(got.receive, reported);
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            assert!(
                got.hold(ask),
                "as root the FORCE options pass the cap: {got:?} < {ask}"
            );
        } else {
            assert!(got.receive >= rmem_max.min(ask) / 2, "{got:?}");
        }
        // A small ask is granted as it is.
        let small = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(set_buffers(&small, 64 * 1024).unwrap().hold(64 * 1024));
    }
}
