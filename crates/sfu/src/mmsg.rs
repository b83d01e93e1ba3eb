//! `recvmmsg(2)`: many datagrams per syscall into buffers allocated once.

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
}
