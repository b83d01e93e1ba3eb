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
}
