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
    /// Slots filled by the last [`RecvBatch::recv`].
    filled: usize,
}

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

    /// Read up to `N` datagrams from the non-blocking socket `fd`: how many (≥ 1), or the
    /// error (`WouldBlock` when none is waiting).
    pub fn recv(&mut self, fd: i32) -> io::Result<usize> {
        self.filled = 0;
        for i in 0..N {
            let (Some(buf), Some(addr), Some(iov), Some(msg)) = (
                self.bufs.get_mut(i),
                self.addrs.get_mut(i),
                self.iovs.get_mut(i),
                self.msgs.get_mut(i),
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
            msg.msg_hdr.msg_control = std::ptr::null_mut();
            msg.msg_hdr.msg_controllen = 0;
            msg.msg_hdr.msg_flags = 0;
            msg.msg_len = 0;
        }
        let n = libc::c_uint::try_from(N).unwrap_or(1);
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
}

/// `N` send headers (addresses, iovecs, `mmsghdr`s), allocated once (boxed: the kernel is
/// given pointers into it); the datagrams themselves stay in the caller's buffers.
pub(crate) struct SendBatch<const N: usize> {
    addrs: [libc::sockaddr_storage; N],
    iovs: [libc::iovec; N],
    msgs: [libc::mmsghdr; N],
    /// Headers filled since the last [`SendBatch::clear`].
    len: usize,
}

// SAFETY: as for `RecvBatch`: the pointers into `self` are rewritten before every use, and the
// pointers to the callers' buffers are only used inside `send`, while the caller lends them.
unsafe impl<const N: usize> Send for SendBatch<N> {}

impl<const N: usize> SendBatch<N> {
    pub fn new_boxed() -> Box<Self> {
        // SAFETY: all-zero bytes are a valid value of every field (see `RecvBatch::new_boxed`).
        unsafe {
            let layout = std::alloc::Layout::new::<Self>();
            let p = std::alloc::alloc_zeroed(layout).cast::<Self>();
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            Box::from_raw(p)
        }
    }

    /// Forget the queued headers.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Queue `data` to `dst`; false if the batch is full. `data` must stay unchanged and
    /// alive until the next [`SendBatch::send`] (the caller keeps the buffers of one batch).
    pub fn push(&mut self, dst: SocketAddr, data: &[u8]) -> bool {
        let i = self.len;
        let (Some(addr), Some(iov)) = (self.addrs.get_mut(i), self.iovs.get_mut(i)) else {
            return false;
        };
        let namelen = std_to_sockaddr(dst, addr);
        iov.iov_base = data.as_ptr().cast_mut().cast();
        iov.iov_len = data.len();
        let Some(msg) = self.msgs.get_mut(i) else {
            return false;
        };
        msg.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
        msg.msg_hdr.msg_namelen = namelen;
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
        msg.msg_hdr.msg_control = std::ptr::null_mut();
        msg.msg_hdr.msg_controllen = 0;
        msg.msg_hdr.msg_flags = 0;
        msg.msg_len = 0;
        self.len += 1;
        true
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Send the queued datagrams from index `from` on with one `sendmmsg(2)` on the
    /// non-blocking socket `fd`: how many went (≥ 1), or the error of the first one
    /// (`WouldBlock` when the socket buffer is full).
    ///
    /// # Safety
    ///
    /// Every buffer given to [`SendBatch::push`] since the last [`SendBatch::clear`] must
    /// still be alive and unmoved.
    pub unsafe fn send(&mut self, fd: i32, from: usize) -> io::Result<usize> {
        let Some(msgs) = self.msgs.get_mut(from..self.len) else {
            return Ok(0);
        };
        if msgs.is_empty() {
            return Ok(0);
        }
        let n = libc::c_uint::try_from(msgs.len()).unwrap_or(1);
        // SAFETY: each header points at its own address and iovec inside `self`, and the
        // iovecs at the callers' buffers, alive by this function's contract.
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

    #[test]
    fn reads_a_batch_with_sources_and_lengths() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = rx.local_addr().unwrap();
        let mut batch = RecvBatch::<4, 64>::new_boxed();
        assert_eq!(
            batch.recv(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        for i in 0..6u8 {
            let s = if i % 2 == 0 { &a } else { &b };
            s.send_to(&vec![i; usize::from(i) + 1], dst).unwrap();
        }
        // Loopback delivers synchronously: all six are queued.
        let n = batch.recv(rx.as_raw_fd()).unwrap();
        assert_eq!(n, 4);
        for i in 0..4u8 {
            let (src, data) = batch.get(usize::from(i)).unwrap();
            let from = if i % 2 == 0 { &a } else { &b };
            assert_eq!(src, from.local_addr().unwrap());
            assert_eq!(data, vec![i; usize::from(i) + 1].as_slice());
        }
        assert!(batch.get(4).is_none());
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), 2);
        assert_eq!(batch.get(1).unwrap().1, &[5u8; 6][..]);
        assert!(batch.get(2).is_none(), "only this read's datagrams");
        // A datagram longer than a slot is dropped, not cut.
        a.send_to(&[7u8; 100], dst).unwrap();
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), 1);
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
            assert!(batch.push(dsts[i % 2], buf));
        }
        assert_eq!(batch.len(), 4);
        assert!(!batch.push(dsts[0], &bufs[4]), "a full batch takes no more");
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
            assert!(batch.push(c.local_addr().unwrap(), &bufs[2]));
            // SAFETY: as above.
            assert_eq!(unsafe { batch.send(tx6.as_raw_fd(), 0) }.unwrap(), 1);
            let (n, src) = c.recv_from(&mut got).unwrap();
            assert_eq!(&got[..n], bufs[2].as_slice());
            assert_eq!(src, tx6.local_addr().unwrap());
        }
    }
}
