//! `recvmmsg(2)`: many datagrams per syscall into buffers allocated once; `sendmmsg(2)`: many
//! datagrams per syscall from the caller's buffers, with headers allocated once.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// `N` receive slots of `B` bytes each, with their source addresses; allocated once (boxed:
/// the kernel is given pointers into it).
pub(crate) struct RecvBatch<const N: usize, const B: usize> {
    bufs: [[u8; B]; N],
    addrs: [libc::sockaddr_storage; N],
    iovs: [libc::iovec; N],
    msgs: [libc::mmsghdr; N],
    /// Per slot: room for the kernel's receive timestamp (`SCM_TIMESTAMPNS`, when the socket
    /// has `SO_TIMESTAMPNS`; see [`RecvBatch::stamp`]).
    cmsgs: [StampBuf; N],
    /// Slots filled by the last [`RecvBatch::recv`].
    filled: usize,
}

/// Room for one `cmsghdr` with a `timespec` (`CMSG_SPACE(16)` is 32 bytes on 64-bit Linux),
/// aligned for `cmsghdr`.
type StampBuf = [u64; 4];

// SAFETY: the raw pointers in `iovs` and `msgs` point only into the same (boxed) value and
// are rewritten before every use; moving the box to another thread moves all they point to.
unsafe impl<const N: usize, const B: usize> Send for RecvBatch<N, B> {}

impl<const N: usize, const B: usize> RecvBatch<N, B> {
    pub fn new_boxed() -> Box<Self> {
        // SAFETY: every field is plain old data for which all-zero bytes are a valid value
        // (byte arrays, `sockaddr_storage`, and `iovec`/`mmsghdr` whose null pointers are
        // set before each use).
        unsafe {
            let layout = std::alloc::Layout::new::<Self>();
            let p = std::alloc::alloc_zeroed(layout).cast::<Self>();
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            Box::from_raw(p)
        }
    }

    /// Read up to `max` (at most `N`) datagrams from the non-blocking socket `fd`: how many
    /// (≥ 1), or the error (`WouldBlock` when none is waiting).
    pub fn recv(&mut self, fd: i32, max: usize) -> io::Result<usize> {
        self.filled = 0;
        let max = max.clamp(1, N);
        for i in 0..max {
            let (Some(buf), Some(addr), Some(iov), Some(msg), Some(cbuf)) = (
                self.bufs.get_mut(i),
                self.addrs.get_mut(i),
                self.iovs.get_mut(i),
                self.msgs.get_mut(i),
                self.cmsgs.get_mut(i),
            ) else {
                break;
            };
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = B;
            msg.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            msg.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
            msg.msg_hdr.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_hdr.msg_controllen = std::mem::size_of::<StampBuf>() as _;
            msg.msg_hdr.msg_flags = 0;
            msg.msg_len = 0;
        }
        let n = libc::c_uint::try_from(max).unwrap_or(1);
        // SAFETY: `msgs` holds `N` headers, each pointing at its own iovec, buffer and address
        // inside `self`, which stays borrowed mutably for the call.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                n,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.filled = usize::try_from(rc).unwrap_or(0).min(N);
        Ok(self.filled)
    }

    /// Datagram `i` of the last read and its source (None past the end, for a truncated
    /// datagram, or an address that is not IP).
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        if i >= self.filled {
            return None;
        }
        let msg = self.msgs.get(i)?;
        if msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let len = usize::try_from(msg.msg_len).ok()?;
        let data = self.bufs.get(i)?.get(..len)?;
        let src = sockaddr_to_std(self.addrs.get(i)?)?;
        Some((src, data))
    }

    /// The kernel's receive time of datagram `i` of the last read (`CLOCK_REALTIME`, as
    /// nanoseconds since the epoch), when the socket has `SO_TIMESTAMPNS` on
    /// ([`enable_rx_timestamps`]); None otherwise or past the end.
    pub fn stamp(&self, i: usize) -> Option<u64> {
        if i >= self.filled {
            return None;
        }
        let msg = self.msgs.get(i)?;
        let hdr = &msg.msg_hdr;
        // SAFETY: `hdr` is the header the kernel filled for slot `i`: `msg_control` points at
        // that slot's `StampBuf` (alive as long as `self`), `msg_controllen` is what the
        // kernel wrote into it; the CMSG macros only walk within that length.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET
                    && (*c).cmsg_type == libc::SCM_TIMESTAMPNS
                    && (*c).cmsg_len as usize
                        >= libc::CMSG_LEN(std::mem::size_of::<libc::timespec>() as u32) as usize
                {
                    let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                    let secs = u64::try_from(ts.tv_sec).ok()?;
                    let nanos = u64::try_from(ts.tv_nsec).ok()?;
                    return Some(secs.saturating_mul(1_000_000_000).saturating_add(nanos));
                }
                c = libc::CMSG_NXTHDR(hdr, c);
            }
        }
        None
    }
}

/// Ask the kernel to stamp every datagram `fd` receives with its arrival time
/// (`SO_TIMESTAMPNS`, `CLOCK_REALTIME`), read with [`RecvBatch::stamp`].
pub(crate) fn enable_rx_timestamps(fd: i32) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid `c_int` that lives across the call, its size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Now on `CLOCK_REALTIME` in nanoseconds since the epoch (the clock of [`RecvBatch::stamp`]).
pub(crate) fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is writable; `CLOCK_REALTIME` always exists (vDSO, no syscall).
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// `UDP_SEGMENT` (linux/udp.h; not in the `libc` crate for glibc targets): a `SOL_UDP` control
/// message giving the segment size of a UDP GSO send.
const UDP_SEGMENT: libc::c_int = 103;
/// Most datagrams one GSO message carries (the kernel's limit is 64, 128 since 6.x).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes one GSO message carries (a UDP datagram's limit, with room for headers).
const GSO_MAX_BYTES: usize = 60_000;
/// Largest segment put into a GSO message: the kernel refuses (`EINVAL`) a segment that does not
/// fit the path MTU, so only datagrams that fit a 1,500-byte Ethernet frame over IPv6 are merged.
const GSO_MAX_SEGMENT: usize = 1_452;
/// Room for one `cmsghdr` with a `u16` (`CMSG_SPACE(2)` is 24 bytes on 64-bit Linux), aligned.
type CmsgBuf = [u64; 4];

/// `N` send headers (addresses, iovecs, `mmsghdr`s), allocated once (boxed: the kernel is
/// given pointers into it); the datagrams themselves stay in the caller's buffers.
///
/// With GSO (`push(.., gso: true)`), consecutive datagrams to the same destination whose sizes
/// are equal (the last one may be shorter) share one message: one iovec each, and a
/// `UDP_SEGMENT` control message with the segment size, so the kernel's UDP/IP send path runs
/// once for all of them and the receiver still gets the same separate datagrams (UDP GSO,
/// Linux ≥ 4.18).
pub(crate) struct SendBatch<const N: usize> {
    addrs: [libc::sockaddr_storage; N],
    iovs: [libc::iovec; N],
    msgs: [libc::mmsghdr; N],
    /// Per message: its control buffer (`UDP_SEGMENT`), its datagram count, its segment size
    /// (the first datagram's length), and whether a shorter last datagram closed it.
    cmsgs: [CmsgBuf; N],
    segs: [usize; N],
    seg_size: [usize; N],
    closed: [bool; N],
    /// Messages and iovecs (datagrams) filled since the last [`SendBatch::clear`].
    len: usize,
    iov_len: usize,
    /// The destination of the last message (the only one a datagram may join).
    last_dst: Option<SocketAddr>,
}

// SAFETY: as for `RecvBatch`: the pointers into `self` are rewritten before every use, and the
// pointers to the callers' buffers are only used inside `send`, while the caller lends them.
unsafe impl<const N: usize> Send for SendBatch<N> {}

impl<const N: usize> SendBatch<N> {
    pub fn new_boxed() -> Box<Self> {
        // SAFETY: all-zero bytes are a valid value of every field (see `RecvBatch::new_boxed`)
        // but `last_dst`, which is written before the box is made.
        unsafe {
            let layout = std::alloc::Layout::new::<Self>();
            let p = std::alloc::alloc_zeroed(layout).cast::<Self>();
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            std::ptr::addr_of_mut!((*p).last_dst).write(None);
            Box::from_raw(p)
        }
    }

    /// Forget the queued headers.
    pub fn clear(&mut self) {
        self.len = 0;
        self.iov_len = 0;
        self.last_dst = None;
    }

    /// Queue `data` to `dst`; false if the batch is full. With `gso`, `data` joins the last
    /// message when it goes to the same destination and fits its segment size. `data` must
    /// stay unchanged and alive until the next [`SendBatch::send`] (the caller keeps the
    /// buffers of one batch).
    pub fn push(&mut self, dst: SocketAddr, data: &[u8], gso: bool) -> bool {
        let Some(iov) = self.iovs.get_mut(self.iov_len) else {
            return false;
        };
        iov.iov_base = data.as_ptr().cast_mut().cast();
        iov.iov_len = data.len();
        let iov: *mut libc::iovec = iov;
        if gso && self.last_dst == Some(dst) && self.join_last(data.len()) {
            self.iov_len += 1;
            return true;
        }
        let i = self.len;
        let (Some(addr), Some(msg)) = (self.addrs.get_mut(i), self.msgs.get_mut(i)) else {
            return false;
        };
        let namelen = std_to_sockaddr(dst, addr);
        msg.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
        msg.msg_hdr.msg_namelen = namelen;
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
        msg.msg_hdr.msg_control = std::ptr::null_mut();
        msg.msg_hdr.msg_controllen = 0;
        msg.msg_hdr.msg_flags = 0;
        msg.msg_len = 0;
        if let (Some(segs), Some(size), Some(closed)) = (
            self.segs.get_mut(i),
            self.seg_size.get_mut(i),
            self.closed.get_mut(i),
        ) {
            *segs = 1;
            *size = data.len();
            *closed = false;
        }
        self.len += 1;
        self.iov_len += 1;
        self.last_dst = Some(dst);
        true
    }

    /// Whether a datagram of `len` bytes may join the last message (same destination checked
    /// by the caller); if so, the message counts it.
    fn join_last(&mut self, len: usize) -> bool {
        let Some(i) = self.len.checked_sub(1) else {
            return false;
        };
        let (Some(segs), Some(&size), Some(closed), Some(msg)) = (
            self.segs.get_mut(i),
            self.seg_size.get(i),
            self.closed.get_mut(i),
            self.msgs.get_mut(i),
        ) else {
            return false;
        };
        if *closed
            || len == 0
            || len > size
            || size > GSO_MAX_SEGMENT
            || *segs >= GSO_MAX_SEGMENTS
            || (*segs + 1) * size > GSO_MAX_BYTES
        {
            return false;
        }
        *segs += 1;
        *closed = len < size;
        msg.msg_hdr.msg_iovlen += 1;
        true
    }

    /// Messages queued (a GSO message carries several datagrams).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Datagrams in message `i`.
    pub fn segments(&self, i: usize) -> usize {
        self.segs.get(i).copied().unwrap_or(0)
    }

    /// Send the queued messages from index `from` on with one `sendmmsg(2)` on the
    /// non-blocking socket `fd`: how many messages went (≥ 1), or the error of the first one
    /// (`WouldBlock` when the socket buffer is full).
    ///
    /// # Safety
    ///
    /// Every buffer given to [`SendBatch::push`] since the last [`SendBatch::clear`] must
    /// still be alive and unmoved.
    pub unsafe fn send(&mut self, fd: i32, from: usize) -> io::Result<usize> {
        for i in from..self.len {
            let (Some(&segs), Some(&size), Some(cbuf), Some(msg)) = (
                self.segs.get(i),
                self.seg_size.get(i),
                self.cmsgs.get_mut(i),
                self.msgs.get_mut(i),
            ) else {
                break;
            };
            if segs < 2 {
                continue;
            }
            // The iovecs of a message are contiguous and were pointed at when it was opened;
            // the control message is written here, where its buffer no longer moves.
            // SAFETY: `CMSG_SPACE` is arithmetic on its argument.
            let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
            msg.msg_hdr.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_hdr.msg_controllen = space.min(std::mem::size_of::<CmsgBuf>()) as _;
            // SAFETY: `msg_control` points at `cbuf` (`CmsgBuf`, aligned for `cmsghdr` and at
            // least `CMSG_SPACE(2)` bytes), so the first header and its data fit.
            unsafe {
                let cm = libc::CMSG_FIRSTHDR(&msg.msg_hdr);
                if cm.is_null() {
                    continue;
                }
                (*cm).cmsg_level = libc::IPPROTO_UDP;
                (*cm).cmsg_type = UDP_SEGMENT;
                (*cm).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
                let gso = u16::try_from(size).unwrap_or(u16::MAX);
                std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<u16>(), gso);
            }
        }
        let Some(msgs) = self.msgs.get_mut(from..self.len) else {
            return Ok(0);
        };
        if msgs.is_empty() {
            return Ok(0);
        }
        let n = libc::c_uint::try_from(msgs.len()).unwrap_or(1);
        // SAFETY: each header points at its own address, iovecs and control buffer inside
        // `self`, and the iovecs at the callers' buffers, alive by this function's contract.
        let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n, libc::MSG_DONTWAIT) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(rc).unwrap_or(0))
    }
}

/// Write `addr` into `ss`; the length to pass as `msg_namelen`.
fn std_to_sockaddr(addr: SocketAddr, ss: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: `sockaddr_storage` is large and aligned enough for a `sockaddr_in`.
            let sin =
                unsafe { &mut *(ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for `sockaddr_in6`.
            let sin6 =
                unsafe { &mut *(ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, which it can contain.
            let a: &libc::sockaddr_in =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for `sockaddr_in6`.
            let a: &libc::sockaddr_in6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    /// Without `SO_TIMESTAMPNS` no stamp; with it every datagram of a read carries its
    /// arrival time on the wall clock: not after the read, not before it was sent, and in
    /// arrival order. The datagrams themselves are read as before.
    #[test]
    fn kernel_stamps_the_arrival_of_each_datagram_once_asked() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = rx.local_addr().unwrap();
        let mut batch = RecvBatch::<4, 64>::new_boxed();
        tx.send_to(b"plain", dst).unwrap();
        assert_eq!(batch.recv(rx.as_raw_fd(), 4).unwrap(), 1);
        assert_eq!(batch.get(0).unwrap().1, b"plain");
        assert_eq!(batch.stamp(0), None);

        enable_rx_timestamps(rx.as_raw_fd()).unwrap();
        let sent_from = realtime_ns();
        for i in 0..3u8 {
            tx.send_to(&[i; 8], dst).unwrap();
        }
        assert_eq!(batch.recv(rx.as_raw_fd(), 4).unwrap(), 3);
        let read_at = realtime_ns();
        let stamps: Vec<u64> = (0..3).map(|i| batch.stamp(i).unwrap()).collect();
        for (i, &t) in stamps.iter().enumerate() {
            assert!(
                t >= sent_from && t <= read_at,
                "{i}: {t} not in {sent_from}..={read_at}"
            );
            assert_eq!(batch.get(i).unwrap().1, &[i as u8; 8][..]);
        }
        assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");
        assert_eq!(batch.stamp(3), None, "past this read's datagrams");
    }

    #[test]
    fn reads_a_batch_with_sources_and_lengths() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = rx.local_addr().unwrap();
        let mut batch = RecvBatch::<4, 64>::new_boxed();
        assert_eq!(
            batch.recv(rx.as_raw_fd(), 4).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        for i in 0..10u8 {
            let s = if i % 2 == 0 { &a } else { &b };
            s.send_to(&vec![i; usize::from(i) + 1], dst).unwrap();
        }
        // Loopback delivers synchronously: all ten are queued.
        let n = batch.recv(rx.as_raw_fd(), 4).unwrap();
        assert_eq!(n, 4);
        for i in 0..4u8 {
            let (src, data) = batch.get(usize::from(i)).unwrap();
            let from = if i % 2 == 0 { &a } else { &b };
            assert_eq!(src, from.local_addr().unwrap());
            assert_eq!(data, vec![i; usize::from(i) + 1].as_slice());
        }
        assert!(batch.get(4).is_none());
        // A smaller `max` reads fewer (the shell's slices); more than `N` reads `N`.
        assert_eq!(batch.recv(rx.as_raw_fd(), 2).unwrap(), 2);
        assert_eq!(batch.get(1).unwrap().1, &[5u8; 6][..]);
        assert!(batch.get(2).is_none(), "only this read's datagrams");
        assert_eq!(batch.recv(rx.as_raw_fd(), 100).unwrap(), 4);
        assert_eq!(batch.get(0).unwrap().1, &[6u8; 7][..]);
        assert_eq!(batch.get(3).unwrap().1, &[9u8; 10][..]);
        // A datagram longer than a slot is dropped, not cut.
        a.send_to(&[7u8; 100], dst).unwrap();
        assert_eq!(batch.recv(rx.as_raw_fd(), 4).unwrap(), 1);
        assert!(batch.get(0).is_none());
    }

    #[test]
    fn sends_a_batch_to_several_addresses() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let c = UdpSocket::bind("[::1]:0").ok();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.set_nonblocking(true).unwrap();
        let tx6 = UdpSocket::bind("[::1]:0").ok();
        let mut batch = SendBatch::<4>::new_boxed();
        let bufs: Vec<Vec<u8>> = (0..5u8)
            .map(|i| vec![i; usize::from(i) * 100 + 1])
            .collect();
        let dsts = [a.local_addr().unwrap(), b.local_addr().unwrap()];
        for (i, buf) in bufs.iter().take(4).enumerate() {
            assert!(batch.push(dsts[i % 2], buf, false));
        }
        assert_eq!(batch.len(), 4);
        assert!(
            !batch.push(dsts[0], &bufs[4], false),
            "a full batch takes no more"
        );
        // SAFETY: `bufs` outlives the call.
        assert_eq!(unsafe { batch.send(tx.as_raw_fd(), 0) }.unwrap(), 4);
        // SAFETY: as above; from the end: nothing left.
        assert_eq!(unsafe { batch.send(tx.as_raw_fd(), 4) }.unwrap(), 0);
        let mut got = [0u8; 2048];
        for (i, buf) in bufs.iter().take(4).enumerate() {
            let rx = if i % 2 == 0 { &a } else { &b };
            let (n, src) = rx.recv_from(&mut got).unwrap();
            assert_eq!(&got[..n], buf.as_slice());
            assert_eq!(src, tx.local_addr().unwrap());
        }
        batch.clear();
        assert_eq!(batch.len(), 0);
        if let (Some(c), Some(tx6)) = (c, tx6) {
            assert!(batch.push(c.local_addr().unwrap(), &bufs[2], false));
            // SAFETY: as above.
            assert_eq!(unsafe { batch.send(tx6.as_raw_fd(), 0) }.unwrap(), 1);
            let (n, src) = c.recv_from(&mut got).unwrap();
            assert_eq!(&got[..n], bufs[2].as_slice());
            assert_eq!(src, tx6.local_addr().unwrap());
        }
    }

    #[test]
    fn gso_merges_equal_datagrams_to_one_destination_and_the_receiver_sees_each() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.set_nonblocking(true).unwrap();
        let (da, db) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        // To a: three of 1,200 bytes and a shorter last one (one message); then one to b; then
        // two more to a (a new message: the shorter datagram closed the first), the second one
        // longer than the first (a third message).
        let plan: [(SocketAddr, usize, u8); 7] = [
            (da, 1200, 1),
            (da, 1200, 2),
            (da, 1200, 3),
            (da, 700, 4),
            (db, 1200, 5),
            (da, 500, 6),
            (da, 900, 7),
        ];
        let bufs: Vec<Vec<u8>> = plan.iter().map(|&(_, n, v)| vec![v; n]).collect();
        let mut batch = SendBatch::<8>::new_boxed();
        for (&(dst, _, _), buf) in plan.iter().zip(&bufs) {
            assert!(batch.push(dst, buf, true));
        }
        assert_eq!(batch.len(), 4, "messages");
        let segs: Vec<usize> = (0..4).map(|i| batch.segments(i)).collect();
        assert_eq!(segs, [4, 1, 1, 1]);
        // SAFETY: `bufs` outlives the call.
        assert_eq!(unsafe { batch.send(tx.as_raw_fd(), 0) }.unwrap(), 4);
        let mut got = [0u8; 2048];
        for (dst, _, v) in plan {
            let rx = if dst == da { &a } else { &b };
            let (n, src) = rx.recv_from(&mut got).unwrap();
            let want = plan.iter().find(|p| p.2 == v).unwrap().1;
            assert_eq!(n, want, "datagram {v} arrives whole and alone");
            assert!(got[..n].iter().all(|&x| x == v));
            assert_eq!(src, tx.local_addr().unwrap());
        }
        // Without GSO every datagram is its own message.
        batch.clear();
        for (&(dst, _, _), buf) in plan.iter().zip(&bufs).take(3) {
            assert!(batch.push(dst, buf, false));
        }
        assert_eq!(batch.len(), 3);
    }
}
