//! The shell's ICE-TCP side: the non-blocking TCP listener on the media port number and the
//! streams it accepted, read and written from the media worker's one `poll(2)` loop
//! ([`crate::shell`]). Framing, write queues and admission are the socket-free parts in
//! [`crate::ice_tcp`]; which connection a frame belongs to is decided by the [`Core`].
//!
//! A stream is closed (only that stream) when: its peer closes it or it errors; it sends a
//! malformed frame (length 0 or over [`MAX_FRAME`]); its first frame routes to no connection
//! (not an ICE check naming a live ufrag); no authenticated check has bound it within
//! [`BIND_TIMEOUT`]; or the connection it was bound to closes. A full write queue drops
//! packets (counted), it does not close the stream.

use crate::core::Core;
use crate::ice_tcp::{FrameDecoder, StreamAdmission, WriteQueue, MAX_FRAME};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// A stream must carry an authenticated ICE check (answered by its connection) within this.
pub const BIND_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many bytes read from one stream per loop (fairness between streams).
const READ_PER_LOOP: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;
/// At most this many streams accepted per loop.
const ACCEPT_BATCH: usize = 64;

struct Stream {
    sock: TcpStream,
    /// Our passive candidate's address for this stream (what `rtc` is told it arrived on).
    candidate: SocketAddr,
    decoder: FrameDecoder,
    out: WriteQueue,
    accepted_at: Instant,
    /// An authenticated binding went over it (checked until true).
    bound: bool,
    /// No frame has been read yet: the first one must route by ufrag.
    first: bool,
}

/// The listener and its accepted streams, by peer address (the core's name for a stream).
pub(crate) struct TcpSide {
    listener: TcpListener,
    streams: HashMap<SocketAddr, Stream>,
    admission: StreamAdmission,
    read_buf: Vec<u8>,
    /// The streams in the order of the poll set after the listener (rebuilt per loop).
    polled: Vec<SocketAddr>,
    /// Streams to close after the current pass.
    closing: Vec<SocketAddr>,
}

/// Why a stream was closed (for the debug log and the counters).
#[derive(Debug, Clone, Copy)]
enum Close {
    Eof,
    Error,
    Malformed,
    Unroutable,
    NotBound,
    ConnClosed,
}

impl TcpSide {
    pub(crate) fn new(listener: TcpListener, max_per_ip: usize, max_total: usize) -> Self {
        Self {
            listener,
            streams: HashMap::new(),
            admission: StreamAdmission::new(max_per_ip, max_total),
            read_buf: vec![0u8; READ_CHUNK],
            polled: Vec::new(),
            closing: Vec::new(),
        }
    }

    pub(crate) fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Append the listener's and the streams' pollfds (POLLOUT where bytes wait).
    pub(crate) fn poll_fds(&mut self, pfds: &mut Vec<libc::pollfd>) {
        pfds.push(libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        self.polled.clear();
        for (peer, s) in &self.streams {
            let mut events = libc::POLLIN;
            if !s.out.is_empty() {
                events |= libc::POLLOUT;
            }
            pfds.push(libc::pollfd {
                fd: s.sock.as_raw_fd(),
                events,
                revents: 0,
            });
            self.polled.push(*peer);
        }
    }

    /// Act on what `poll` reported for the fds [`Self::poll_fds`] appended (`pfds` starts at the
    /// listener's). True if any frame went into the core.
    pub(crate) fn handle_ready(&mut self, pfds: &[libc::pollfd], core: &mut Core) -> bool {
        let mut any = false;
        if pfds.first().is_some_and(|p| p.revents & libc::POLLIN != 0) {
            self.accept(core);
        }
        let polled = std::mem::take(&mut self.polled);
        for (peer, pfd) in polled.iter().zip(pfds.iter().skip(1)) {
            if pfd.revents == 0 {
                continue;
            }
            if pfd.revents & libc::POLLOUT != 0 {
                self.write_pending(*peer);
            }
            if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                any |= self.read(*peer, core);
            }
        }
        self.polled = polled;
        self.close_marked(core);
        any
    }

    fn accept(&mut self, core: &mut Core) {
        for _ in 0..ACCEPT_BATCH {
            let (sock, peer) = match self.listener.accept() {
                Ok(v) => v,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: leave the rest in the backlog for the next loop.
                    tracing::warn!("ICE-TCP accept: {e}");
                    return;
                }
            };
            if let Err(why) = self.admission.admit(peer.ip()) {
                core.stats.tcp_streams_refused += 1;
                tracing::debug!(%peer, ?why, "ICE-TCP stream refused");
                continue; // dropping `sock` closes it
            }
            let local = sock.local_addr().unwrap_or(core.local_addr);
            if sock.set_nonblocking(true).is_err() || sock.set_nodelay(true).is_err() {
                self.admission.release(peer.ip());
                continue;
            }
            tracing::debug!(%peer, "ICE-TCP stream accepted");
            let candidate = core.tcp_candidate_addr(local);
            self.insert(peer, sock, candidate);
        }
    }

    fn insert(&mut self, peer: SocketAddr, sock: TcpStream, candidate: SocketAddr) {
        self.streams.insert(
            peer,
            Stream {
                sock,
                candidate,
                decoder: FrameDecoder::default(),
                out: WriteQueue::default(),
                accepted_at: Instant::now(),
                bound: false,
                first: true,
            },
        );
    }

    /// Take over a stream that another listener accepted (the one-port demux on the HTTPS
    /// port, which saw an RFC 4571-framed STUN message in front of it, unread): from now on it
    /// is served exactly like a stream accepted on the media port, under the same admission
    /// limits and bind timeout. Our passive candidate for it is on `candidate_port` (the
    /// public port the signalling listener advertises). False if it was refused (too many
    /// streams, the peer address already has one, or the socket cannot be made non-blocking);
    /// the stream is then closed.
    pub(crate) fn adopt(
        &mut self,
        sock: TcpStream,
        peer: SocketAddr,
        candidate_port: u16,
        core: &mut Core,
    ) -> bool {
        if self.streams.contains_key(&peer) {
            core.stats.tcp_streams_refused += 1;
            tracing::debug!(%peer, "adopted ICE-TCP stream refused: the peer address has one");
            return false;
        }
        if let Err(why) = self.admission.admit(peer.ip()) {
            core.stats.tcp_streams_refused += 1;
            tracing::debug!(%peer, ?why, "adopted ICE-TCP stream refused");
            return false;
        }
        if sock.set_nonblocking(true).is_err() || sock.set_nodelay(true).is_err() {
            self.admission.release(peer.ip());
            return false;
        }
        let local = sock.local_addr().unwrap_or(core.local_addr);
        let candidate = SocketAddr::new(core.tcp_candidate_addr(local).ip(), candidate_port);
        tracing::debug!(%peer, %candidate, "ICE-TCP stream adopted from the signalling port");
        self.insert(peer, sock, candidate);
        true
    }

    /// Read what the stream has (bounded), frames into the core. True if any frame went in.
    fn read(&mut self, peer: SocketAddr, core: &mut Core) -> bool {
        let Some(s) = self.streams.get_mut(&peer) else {
            return false;
        };
        let mut any = false;
        let mut total = 0usize;
        while total < READ_PER_LOOP {
            let n = match s.sock.read(&mut self.read_buf) {
                Ok(0) => {
                    self.closing.push(peer);
                    log_close(peer, Close::Eof);
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(%peer, "ICE-TCP read: {e}");
                    self.closing.push(peer);
                    log_close(peer, Close::Error);
                    break;
                }
            };
            total += n;
            let Some(data) = self.read_buf.get(..n) else {
                break;
            };
            let now = Instant::now();
            let candidate = s.candidate;
            let mut unroutable_first = false;
            let first = &mut s.first;
            let fed = s.decoder.feed(data, |packet| {
                let routed = core.handle_stream_packet(now, candidate, peer, packet);
                any = true;
                if *first {
                    *first = false;
                    if !routed {
                        unroutable_first = true;
                        return false;
                    }
                }
                true
            });
            let reason = match fed {
                Err(e) => {
                    tracing::debug!(%peer, "ICE-TCP malformed frame: {e}");
                    Some(Close::Malformed)
                }
                Ok(_) if unroutable_first => Some(Close::Unroutable),
                Ok(_) => None,
            };
            if let Some(reason) = reason {
                core.stats.tcp_streams_refused += 1;
                self.closing.push(peer);
                log_close(peer, reason);
                break;
            }
        }
        any
    }

    /// Queue one packet for the stream from `dst` and write what the kernel takes now. A
    /// packet that does not fit the queue is dropped (false); so is one for a stream that is
    /// gone.
    pub(crate) fn send(&mut self, dst: SocketAddr, packet: &[u8]) -> bool {
        let Some(s) = self.streams.get_mut(&dst) else {
            return false;
        };
        if packet.len() > MAX_FRAME * 32 || !s.out.push(packet) {
            return false;
        }
        self.write_pending(dst);
        true
    }

    fn write_pending(&mut self, peer: SocketAddr) {
        let Some(s) = self.streams.get_mut(&peer) else {
            return;
        };
        while !s.out.is_empty() {
            match s.sock.write(s.out.front()) {
                Ok(0) => break,
                Ok(n) => s.out.advance(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(%peer, "ICE-TCP write: {e}");
                    if !self.closing.contains(&peer) {
                        self.closing.push(peer);
                        log_close(peer, Close::Error);
                    }
                    break;
                }
            }
        }
    }

    /// Close the streams whose connection closed (after a last non-blocking write of what
    /// its close queued).
    pub(crate) fn close_conn_streams(&mut self, core: &mut Core) {
        let mut gone = core.drain_closed_streams().peekable();
        if gone.peek().is_none() {
            return;
        }
        let gone: Vec<SocketAddr> = gone.collect();
        for peer in gone {
            self.write_pending(peer);
            if self.streams.contains_key(&peer) && !self.closing.contains(&peer) {
                self.closing.push(peer);
                log_close(peer, Close::ConnClosed);
            }
        }
        self.close_marked(core);
    }

    /// [`Self::close_conn_streams`], and close the streams not bound within
    /// [`BIND_TIMEOUT`] of being accepted.
    pub(crate) fn housekeeping(&mut self, now: Instant, core: &mut Core) {
        self.close_conn_streams(core);
        for (peer, s) in &mut self.streams {
            if s.bound {
                continue;
            }
            if core.stream_bound(*peer) {
                s.bound = true;
            } else if now.saturating_duration_since(s.accepted_at) > BIND_TIMEOUT
                && !self.closing.contains(peer)
            {
                core.stats.tcp_streams_refused += 1;
                self.closing.push(*peer);
                log_close(*peer, Close::NotBound);
            }
        }
        self.close_marked(core);
    }

    fn close_marked(&mut self, core: &mut Core) {
        for peer in self.closing.drain(..) {
            if self.streams.remove(&peer).is_some() {
                self.admission.release(peer.ip());
                core.stream_closed(peer);
            }
        }
    }
}

fn log_close(peer: SocketAddr, why: Close) {
    tracing::debug!(%peer, ?why, "ICE-TCP stream closed");
}
