//! The media worker's thin shell around the Sans-I/O [`Core`]: it owns the UDP socket (the
//! media port), the ICE-TCP listener on the same port number and its streams
//! ([`crate::shell_tcp`]), the command channel from signalling, `poll(2)` and the only clock
//! reads.
//!
//! The loop: take commands (each handed to the core with `now`), fire the core's timers when
//! due, send what the core queued, wait in `ppoll(2)` for the UDP socket, the listener, the
//! streams and the command channel's wake-up fd ([`crate::wake`]; until the next timer plus
//! the timer slack), read a batch of datagrams and the ready streams' frames into the core,
//! and send again. The forwarding
//! latency (socket read → end of the send batch) is measured here.

use crate::core::Core;
use crate::demux::Transport;
use crate::handle::{Command, SfuStats};
use crate::shell_tcp::TcpSide;
use crate::{SfuConfig, SfuError};
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// The longest wait without a command wake-up fd (commands are then seen within it).
const MAX_WAIT: Duration = Duration::from_millis(10);
/// The longest wait when commands wake the worker ([`crate::wake::CommandTx`]).
const LONG_WAIT: Duration = Duration::from_secs(1);
/// How late a timer may fire so that timers due close together share one wake-up
/// ([`crate::wake::timer_wait`]); `RAKOR_SHELL_TIMER_SLACK_US` overrides it (0: none), an A/B
/// switch for measurements, not a config key.
const TIMER_SLACK: Duration = Duration::from_millis(5);
/// Most datagrams read in one loop turn (then commands and timers get their turn).
const RECV_BATCH: usize = 256;
const RECV_BUF: usize = 2048;
/// A kernel receive stamp older than this (ns) is taken for a clock step, not a wait.
const MAX_RX_AGE_NS: u64 = 10_000_000_000;
/// Datagrams per `recvmmsg(2)` and per `sendmmsg(2)`.
const MMSG: usize = 32;
/// Most datagrams read before what they caused is serviced and sent (a slice of the turn's
/// [`RECV_BATCH`]): a forwarded packet waits for at most this much other input, not for the
/// whole turn's (issue 16; `RAKOR_SHELL_SLICE=N` changes it, an A/B switch for measurements,
/// not a config key: 256 is the loop before slices).
const RECV_SLICE: usize = 4;
/// About how many forwarded copies one servicing step writes before what it queued is sent
/// ([`Core::flush_input_step`]); 0: no bound, a slice is serviced in one step. Off since
/// 2026-12-05: with 4-datagram slices, 64-copy steps cost 20 → 20 about 1 µs per forwarded
/// packet (each step drains every written leg) and 1–4 % of its delivery, and host + 60's
/// forwarding p99 was no better with them (docs/benchmarks.md, "Stepping without scans").
/// `RAKOR_SHELL_STEP_COPIES=N` sets a bound (an A/B switch for measurements, not a config key).
const STEP_COPIES: u64 = 0;
/// With steps on ([`STEP_COPIES`] > 0): the legs the slices wrote to have their timers asked
/// (`poll_timeout`, a sweep of each leg's handler pipeline) after this many slices and after a
/// turn's last ([`SlicedInput::end_turn`]), not after every slice; the bound keeps a timer that
/// a write moved earlier from waiting for a whole turn of 256 datagrams. Without steps a slice
/// is serviced whole, its legs' timers included. `RAKOR_SHELL_TIMER_SLICES=N` changes it (an
/// A/B switch for measurements, not a config key).
const TIMER_SLICES: usize = 8;
/// A loop phase that took longer than this is counted as slow (`media stats`: `slow_*`).
const SLOW_PHASE: Duration = Duration::from_millis(1);
/// How often the worker logs its counters and forwarding latency (`media stats`).
const STATS_LOG: Duration = Duration::from_secs(10);
/// How often ICE-TCP streams are checked for the bind timeout.
const TCP_HOUSEKEEPING: Duration = Duration::from_millis(250);
/// How often a worker forgets, in the rooms-to-workers table, the rooms it no longer has.
const PLACEMENT_PRUNE: Duration = Duration::from_secs(1);
/// Tries at a UDP port (chosen by the OS for port 0) whose number is also free for TCP.
const PORT_PAIR_TRIES: usize = 16;

struct Shell {
    core: Core,
    sock: UdpSocket,
    /// The ICE-TCP listener and streams (`media.ice_tcp`).
    tcp: Option<TcpSide>,
    /// The poll set: the UDP socket first, then the TCP side's fds.
    pfds: Vec<libc::pollfd>,
    next_tcp_housekeeping: Instant,
    rx: mpsc::Receiver<Command>,
    /// Forwarding latency since the last `media stats` line (socket read → send).
    fwd_latency: crate::metrics::LatencyHistogram,
    /// Kernel receive stamps (`SO_TIMESTAMPNS`, read with `recvmmsg`) on; off when the
    /// socket refused the option, without `recvmmsg`, or with `RAKOR_SHELL_RX_STAMPS=0`.
    rx_stamps: bool,
    /// Since the last `media stats` line: each datagram's wait in the socket (kernel arrival
    /// → read), and the forwarding latency from the kernel's arrival (see [`Self::flush`]).
    rx_wait: crate::metrics::LatencyHistogram,
    fwd_kernel: crate::metrics::LatencyHistogram,
    /// This turn's `recvmmsg` reads: the read time handed to the core and the socket wait of
    /// the read's oldest datagram (ns).
    read_ages: Vec<(Instant, u64)>,
    next_stats_log: Instant,
    /// Which worker this is, and the rooms-to-workers table it prunes of its gone rooms.
    index: usize,
    placement: std::sync::Arc<crate::workers::Placement>,
    next_placement_prune: Instant,
    /// The `recvmmsg(2)` buffers (None: one `recvfrom` per datagram).
    mmsg: Option<Box<crate::mmsg::RecvBatch<MMSG, RECV_BUF>>>,
    /// The `sendmmsg(2)` headers (None: one `sendto` per datagram), and the datagrams of the
    /// batch being sent (their buffers must live until it went).
    send_batch: Option<Box<crate::mmsg::SendBatch<MMSG>>>,
    send_pending: Vec<crate::core::Transmit>,
    /// UDP GSO for the `sendmmsg(2)` batches (`RAKOR_SHELL_GSO=0`: off, an A/B switch for
    /// measurements, not a config key); turned off by the first send the kernel refuses it for.
    gso: bool,
    /// Wait to the nanosecond (`ppoll`) and read the UDP socket only when it is readable
    /// (`RAKOR_SHELL_PRECISE_WAIT=0`: whole-millisecond `poll` and a read attempt on every
    /// turn, as before; an A/B switch for measurements, not a config key).
    precise_wait: bool,
    /// Whether the last [`Self::wait`] saw the UDP socket readable (or did not wait).
    udp_readable: bool,
    /// The command channel's wake-up fd, polled with the sockets (None: no eventfd, or
    /// `RAKOR_SHELL_CMD_WAKE=0`: the wait is at most [`MAX_WAIT`], as before).
    wake: Option<std::sync::Arc<crate::wake::WakeFd>>,
    /// [`TIMER_SLACK`], or `RAKOR_SHELL_TIMER_SLACK_US`.
    timer_slack: Duration,
    /// Datagrams per slice of a turn's reading ([`RECV_SLICE`]).
    recv_slice: usize,
    /// Forwarded copies per servicing step ([`STEP_COPIES`]).
    step_copies: u64,
    /// Slices between asking the written legs' timers ([`TIMER_SLICES`]).
    timer_slices: usize,
    /// The buffer of `recvfrom` when `recvmmsg` is off.
    recv_buf: Vec<u8>,
    /// Slow loop phases since the last `media stats` line.
    phases: PhaseStats,
}

/// The loop's phases, timed for the `media stats` line's slow-phase counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Commands from signalling (joins, SDP offers and answers, moderation).
    Commands,
    /// The core's timers (`handle_timeout`) and the sending of what they queued.
    Timers,
    /// Reading one slice of datagrams into the core (`recvmmsg`, `rtc`'s reading: SRTP).
    Read,
    /// Servicing the connections one slice made dirty (forwarding into the subscriber legs).
    Service,
    /// Sending what one slice (or a command, or the timers) queued.
    Send,
}

const PHASES: usize = 5;

/// Per [`Phase`]: how often it took longer than [`SLOW_PHASE`], and its longest, in a window.
/// Recording is a comparison and two adds (no formatting, no allocation).
#[derive(Debug, Default, Clone)]
struct PhaseStats {
    slow: [u64; PHASES],
    max_us: [u64; PHASES],
}

impl PhaseStats {
    #[inline]
    fn record(&mut self, phase: Phase, took: Duration) {
        let i = phase as usize;
        if let (Some(slow), Some(max)) = (self.slow.get_mut(i), self.max_us.get_mut(i)) {
            let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            *max = (*max).max(us);
            if took > SLOW_PHASE {
                *slow += 1;
            }
        }
    }

    fn get(&self, phase: Phase) -> (u64, u64) {
        let i = phase as usize;
        (
            self.slow.get(i).copied().unwrap_or(0),
            self.max_us.get(i).copied().unwrap_or(0),
        )
    }
}

/// What one [`SlicedInput::read_slice`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Slice {
    /// Datagrams handed to the core.
    handed: usize,
    /// Of the turn's budget: datagrams read and read errors.
    used: usize,
    /// The socket had no more.
    empty: bool,
}

/// The receive side of one loop turn, cut into slices (issue 16).
trait SlicedInput {
    /// Read at most `max` datagrams (≥ 1) and hand them to the core.
    fn read_slice(&mut self, max: usize) -> Slice;
    /// Service the connections the slice made dirty and send what they queued.
    fn service_slice(&mut self);
    /// After every [`TIMER_SLICES`] slices and after the turn's last: what the slices left
    /// (the timers of the legs they wrote to, [`Core::flush_input`]) serviced and sent.
    fn end_turn(&mut self);
}

/// Read until the socket is empty or `budget` datagrams were read, `slice` at a time, servicing
/// and sending after each slice: what was read first goes out first, and no forwarded packet
/// waits for more than one slice of other input. True if any datagram was handed to the core.
fn receive_sliced(
    io: &mut impl SlicedInput,
    slice: usize,
    budget: usize,
    timer_slices: usize,
) -> bool {
    let slice = slice.max(1);
    let mut used = 0;
    let mut any = false;
    let mut since_end = 0;
    while used < budget {
        let s = io.read_slice(slice.min(budget - used));
        used += s.used;
        if s.handed > 0 {
            io.service_slice();
            any = true;
            since_end += 1;
            if since_end >= timer_slices {
                io.end_turn();
                since_end = 0;
            }
        }
        if s.empty || s.used == 0 {
            break;
        }
    }
    if since_end > 0 {
        io.end_turn();
    }
    any
}

pub(crate) fn spawn(
    config: SfuConfig,
    rx: mpsc::Receiver<Command>,
    wake: Option<std::sync::Arc<crate::wake::WakeFd>>,
    room_events: Option<tokio::sync::mpsc::UnboundedSender<crate::RoomEvent>>,
    recorder: Option<(crate::record::RecorderTap, std::thread::JoinHandle<()>)>,
    placement: std::sync::Arc<crate::workers::Placement>,
) -> Result<(SocketAddr, std::thread::JoinHandle<()>), SfuError> {
    let index = config.worker_index;
    let (sock, listener) = bind_media_port(&config)?;
    sock.set_nonblocking(true)?;
    match crate::sockopt::set_buffers(&sock, config.socket_buffer_bytes) {
        Some(got) if !got.hold(config.socket_buffer_bytes) => tracing::warn!(
            asked = config.socket_buffer_bytes,
            receive = got.receive,
            send = got.send,
            "the media socket's buffers are smaller than media.socket_buffer_bytes: the kernel \
             caps them at net.core.rmem_max / wmem_max; raise those (docs/operations.md, \
             \"Socket buffers\") or bursts are dropped (rakor_media_socket_drops_total)"
        ),
        Some(got) => tracing::debug!(
            receive = got.receive,
            send = got.send,
            "media socket buffers"
        ),
        None => tracing::warn!("cannot read the media socket's buffer sizes"),
    }
    let local_addr = sock.local_addr()?;
    let tcp = match listener {
        Some(l) => {
            l.set_nonblocking(true)?;
            Some(TcpSide::new(
                l,
                config.tcp_streams_per_ip,
                config.tcp_streams_max,
            ))
        }
        None => None,
    };
    let now = Instant::now();
    let thread_nice = config.thread_nice;
    let thread_realtime = config.thread_realtime;
    let thread_slice_us = config.thread_slice_us;
    let rx_stamps = std::env::var("RAKOR_SHELL_RECVMMSG").map_or(true, |v| v != "0")
        && std::env::var("RAKOR_SHELL_RX_STAMPS").map_or(true, |v| v != "0")
        && match crate::mmsg::enable_rx_timestamps(sock.as_raw_fd()) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("no kernel receive stamps on the media socket: {e}");
                false
            }
        };
    let mut core = Core::new(config, local_addr, room_events, now, SystemTime::now());
    let recorder_thread = match recorder {
        Some((tap, thread)) => {
            core.set_recorder(tap);
            Some(thread)
        }
        None => None,
    };
    let shell = Shell {
        core,
        sock,
        tcp,
        pfds: Vec::with_capacity(8),
        next_tcp_housekeeping: now,
        rx,
        fwd_latency: crate::metrics::LatencyHistogram::default(),
        rx_stamps,
        rx_wait: crate::metrics::LatencyHistogram::default(),
        fwd_kernel: crate::metrics::LatencyHistogram::default(),
        read_ages: Vec::with_capacity(RECV_BATCH),
        next_stats_log: now + STATS_LOG,
        index,
        placement,
        next_placement_prune: now + PLACEMENT_PRUNE,
        mmsg: std::env::var("RAKOR_SHELL_RECVMMSG")
            .map_or(true, |v| v != "0")
            .then(crate::mmsg::RecvBatch::new_boxed),
        send_batch: std::env::var("RAKOR_SHELL_SENDMMSG")
            .map_or(true, |v| v != "0")
            .then(crate::mmsg::SendBatch::new_boxed),
        send_pending: Vec::with_capacity(MMSG),
        gso: std::env::var("RAKOR_SHELL_GSO").map_or(true, |v| v != "0"),
        precise_wait: std::env::var("RAKOR_SHELL_PRECISE_WAIT").map_or(true, |v| v != "0"),
        udp_readable: true,
        wake: wake.filter(|_| std::env::var("RAKOR_SHELL_CMD_WAKE").map_or(true, |v| v != "0")),
        timer_slack: std::env::var("RAKOR_SHELL_TIMER_SLACK_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(TIMER_SLACK, Duration::from_micros),
        recv_slice: std::env::var("RAKOR_SHELL_SLICE")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .map_or(RECV_SLICE, |n| n.min(RECV_BATCH)),
        step_copies: std::env::var("RAKOR_SHELL_STEP_COPIES")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(STEP_COPIES),
        timer_slices: std::env::var("RAKOR_SHELL_TIMER_SLICES")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(TIMER_SLICES),
        recv_buf: vec![0u8; RECV_BUF],
        phases: PhaseStats::default(),
    };
    let join = std::thread::Builder::new()
        .name(format!("rakor-media-{index}"))
        .spawn(move || {
            let mut shell = shell;
            let span = tracing::info_span!("media_worker", worker = index, addr = %local_addr);
            let _g = span.enter();
            let realtime = match crate::priority::set_thread_realtime(thread_realtime) {
                Ok(true) => {
                    tracing::info!(
                        priority = thread_realtime,
                        "media worker thread runs under real-time scheduling (SCHED_RR)"
                    );
                    true
                }
                Ok(false) => false,
                Err(e) => {
                    tracing::warn!(
                        priority = thread_realtime,
                        "media worker runs under the fair scheduler: media.thread_realtime not \
                         applied ({e}; needs CAP_SYS_NICE or RLIMIT_RTPRIO, see docs/operations.md)"
                    );
                    false
                }
            };
            match crate::priority::set_thread_nice(thread_nice) {
                Ok(true) => tracing::info!(nice = thread_nice, "media worker thread priority set"),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    nice = thread_nice,
                    "media worker runs at the process's priority: media.thread_nice not applied \
                     ({e}; lowering it needs CAP_SYS_NICE or RLIMIT_NICE, see docs/operations.md)"
                ),
            }
            // After the nice value: the slice call passes the thread's current one. Under
            // real time the fair scheduler's slice does not apply (and the call would undo it).
            if !realtime {
                apply_thread_slice(thread_slice_us);
            }
            tracing::info!("media worker started");
            shell.run();
            // Closing the hand-off lets the recorder finish its files and manifests.
            shell.core.recorder = None;
            if let Some(t) = recorder_thread {
                let _ = t.join();
            }
            tracing::info!("media worker stopped");
        })?;
    Ok((local_addr, join))
}

/// Ask for `media.thread_slice_us` for the calling media thread; on failure one warning (the
/// first worker's; the others log at debug) and the kernel's default slice (the thread works
/// as before, only its wake-up latency on a busy host is longer). Whether the slice applies.
fn apply_thread_slice(slice_us: u32) -> bool {
    match crate::priority::set_thread_slice(slice_us) {
        Ok(true) => {
            tracing::info!(slice_us, "media worker thread asks for a short time slice");
            true
        }
        Ok(false) => false,
        Err(e) => {
            // Every worker fails alike (same kernel, same filter): one warning per process.
            static WARNED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::debug!(slice_us, "media.thread_slice_us not applied ({e})");
            } else {
                tracing::warn!(
                    slice_us,
                    "media workers keep the kernel's default time slice: media.thread_slice_us \
                     not applied ({e}; see docs/operations.md)"
                );
            }
            false
        }
    }
}

/// The UDP media socket and, with `ice_tcp`, a TCP listener on the same IP and port number.
/// For port 0 the OS picks the UDP port; if that number is taken for TCP, another is tried.
fn bind_media_port(config: &SfuConfig) -> Result<(UdpSocket, Option<TcpListener>), SfuError> {
    let mut tries = 0;
    loop {
        let sock = UdpSocket::bind(config.bind).map_err(|source| SfuError::Bind {
            addr: config.bind,
            source,
        })?;
        if !config.ice_tcp {
            return Ok((sock, None));
        }
        let addr = sock.local_addr()?;
        match TcpListener::bind(addr) {
            Ok(l) => return Ok((sock, Some(l))),
            Err(_) if config.bind.port() == 0 && tries < PORT_PAIR_TRIES => tries += 1,
            Err(source) => return Err(SfuError::BindTcp { addr, source }),
        }
    }
}

/// Wait for the socket to become readable (or writable), at most `timeout`.
fn poll_fd(fd: i32, events: i16, timeout: Duration) -> bool {
    let mut pfd = [libc::pollfd {
        fd,
        events,
        revents: 0,
    }];
    poll_fds(&mut pfd, timeout) > 0 && (pfd[0].revents & events) != 0
}

/// `poll(2)` on a set of fds, at most `timeout`; the number ready (0 on timeout or error).
fn poll_fds(pfds: &mut [libc::pollfd], timeout: Duration) -> usize {
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(10);
    let n = libc::nfds_t::try_from(pfds.len()).unwrap_or(0);
    // SAFETY: `pfds` is a valid, exclusively borrowed slice of `n` pollfds.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), n, ms) };
    usize::try_from(rc).unwrap_or(0)
}

/// `ppoll(2)` on a set of fds, at most `timeout` to the nanosecond; the number ready (0 on
/// timeout or error). `poll(2)` takes whole milliseconds: a timer due in 0.9 ms became a
/// zero timeout, and the loop spun (a `poll` and a `recvmmsg` per turn) until it was due.
fn ppoll_fds(pfds: &mut [libc::pollfd], timeout: Duration) -> usize {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(0),
        tv_nsec: libc::c_long::from(i32::try_from(timeout.subsec_nanos()).unwrap_or(0)),
    };
    let n = libc::nfds_t::try_from(pfds.len()).unwrap_or(0);
    // SAFETY: `pfds` is a valid, exclusively borrowed slice of `n` pollfds; `ts` lives across
    // the call; a null signal mask leaves the thread's mask as it is.
    let rc = unsafe { libc::ppoll(pfds.as_mut_ptr(), n, &ts, std::ptr::null()) };
    usize::try_from(rc).unwrap_or(0)
}

/// One datagram with `sendto(2)`; a full socket buffer is waited for (5 ms, 3 times). False
/// when it could not be sent.
fn send_one(sock: &UdpSocket, data: &[u8], dst: SocketAddr) -> bool {
    let mut tries = 0;
    loop {
        match sock.send_to(data, dst) {
            Ok(_) => return true,
            Err(e) if e.kind() == ErrorKind::WouldBlock && tries < 3 => {
                tries += 1;
                poll_fd(sock.as_raw_fd(), libc::POLLOUT, Duration::from_millis(5));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!(%dst, "send_to: {e}");
                return false;
            }
        }
    }
}

/// Send `pending` (at most [`MMSG`] UDP datagrams) with `sendmmsg(2)` and empty it: (sent,
/// errors). With `*gso`, consecutive equal-sized datagrams to one destination go as one UDP GSO
/// message ([`crate::mmsg::SendBatch`]); if the kernel refuses GSO (`EIO`: no checksum offload
/// on the route's device; `EINVAL`, `EOPNOTSUPP`), `*gso` is turned off for good and the rest is
/// sent without it. A full socket buffer is waited for (5 ms, 3 times, as for `sendto`); a
/// datagram the kernel refuses is counted and skipped.
fn send_pending_batch(
    sock: &UdpSocket,
    send_batch: &mut Option<Box<crate::mmsg::SendBatch<MMSG>>>,
    pending: &mut Vec<crate::core::Transmit>,
    gso: &mut bool,
) -> (u64, u64) {
    let (mut sent, mut errors) = (0u64, 0u64);
    let fd = sock.as_raw_fd();
    let Some(batch) = send_batch.as_mut() else {
        pending.clear();
        return (0, 0);
    };
    // `done`: datagrams of `pending` sent or given up; the batch holds `pending[done..]`.
    let mut done = 0;
    'refill: while done < pending.len() {
        batch.clear();
        for t in pending.iter().skip(done) {
            if !batch.push(t.dst, &t.data, *gso) {
                break;
            }
        }
        let n = batch.len();
        if n == 0 {
            break;
        }
        let (mut at, mut tries) = (0, 0);
        while at < n {
            // SAFETY: the buffers pushed are `pending`'s, alive and unchanged until it is
            // cleared below.
            match unsafe { batch.send(fd, at) } {
                Ok(0) => break 'refill,
                Ok(k) => {
                    for i in at..at + k {
                        let segs = batch.segments(i);
                        sent += segs as u64;
                        done += segs;
                    }
                    at += k;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock && tries < 3 => {
                    tries += 1;
                    poll_fd(fd, libc::POLLOUT, Duration::from_millis(5));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if *gso
                        && batch.segments(at) > 1
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP)
                        ) =>
                {
                    tracing::info!("UDP GSO refused ({e}); sending one datagram per message");
                    *gso = false;
                    continue 'refill;
                }
                Err(e) => {
                    let segs = batch.segments(at);
                    errors += segs as u64;
                    done += segs;
                    tracing::debug!(dst = ?pending.get(done.saturating_sub(1)).map(|t| t.dst), "sendmmsg: {e}");
                    at += 1;
                }
            }
        }
    }
    batch.clear();
    pending.clear();
    (sent, errors)
}

impl Shell {
    fn run(&mut self) {
        loop {
            // 1. Commands from signalling.
            let commands_from = Instant::now();
            let mut commands = false;
            loop {
                match self.rx.try_recv() {
                    Ok(Command::Shutdown { reply }) => {
                        self.shutdown();
                        let _ = reply.send(());
                        return;
                    }
                    Ok(cmd) => {
                        commands = true;
                        self.command(cmd);
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        self.shutdown();
                        return;
                    }
                }
            }
            // 2. Timers.
            let now = Instant::now();
            if commands {
                self.phases.record(
                    Phase::Commands,
                    now.saturating_duration_since(commands_from),
                );
            }
            let mut deadline = self.core.poll_timeout();
            if deadline.is_some_and(|d| d <= now) {
                self.core.handle_timeout(now);
                self.flush();
                self.phases.record(Phase::Timers, now.elapsed());
                deadline = self.core.poll_timeout();
            }
            self.placement.set_live(self.index, self.core.rooms.len());
            if now >= self.next_placement_prune {
                self.prune_placement(now);
                self.next_placement_prune = now + PLACEMENT_PRUNE;
            }
            if now >= self.next_stats_log {
                self.log_stats();
                self.next_stats_log = now + STATS_LOG;
            }
            // 3. Wait for datagrams, streams and commands (the timers up to the slack
            //    longer: every wake-up fires all that are due); read the datagrams a
            //    slice at a time, each serviced and sent before the next is read; then
            //    the streams' frames.
            let now = Instant::now();
            let wait = crate::wake::timer_wait(now, deadline, self.timer_slack, self.max_wait(now));
            self.wait(wait);
            if self.udp_readable {
                self.receive();
            }
            if let Some(tcp) = &mut self.tcp {
                if tcp.handle_ready(self.pfds.get(1..).unwrap_or_default(), &mut self.core) {
                    self.service_slice();
                    self.end_turn();
                }
            }
            self.tcp_housekeeping();
        }
    }

    /// The longest the loop may sleep at `now` with no core timer: [`MAX_WAIT`] without a
    /// command wake-up fd; with one, until the shell's own next chore (stats line, placement
    /// prune, ICE-TCP housekeeping), at most [`LONG_WAIT`].
    fn max_wait(&self, now: Instant) -> Duration {
        if self.wake.is_none() {
            return MAX_WAIT;
        }
        let mut next = self.next_stats_log.min(self.next_placement_prune);
        if self.tcp.is_some() {
            next = next.min(self.next_tcp_housekeeping);
        }
        next.saturating_duration_since(now).min(LONG_WAIT)
    }

    /// `poll(2)` on the UDP socket, the TCP side (listener, streams) and the command wake-up
    /// fd, at most `wait`; with no TCP side and nothing to wait, no syscall (as before
    /// ICE-TCP). Sets [`Self::udp_readable`]: whether [`Self::receive`] has anything to read.
    fn wait(&mut self, wait: Duration) {
        self.pfds.clear();
        self.pfds.push(libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        self.udp_readable = true;
        match &mut self.tcp {
            Some(tcp) => tcp.poll_fds(&mut self.pfds),
            None if wait.is_zero() => return,
            None => {}
        }
        // Last, after the TCP side's fds (`handle_ready` reads those from index 1).
        if let Some(w) = &self.wake {
            self.pfds.push(libc::pollfd {
                fd: w.raw(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if !self.precise_wait {
            poll_fds(&mut self.pfds, wait);
            self.drain_wake();
            return;
        }
        ppoll_fds(&mut self.pfds, wait);
        self.drain_wake();
        // Readable, or an error/hang-up condition a read reports (POLLERR: a queued ICMP error).
        self.udp_readable = self
            .pfds
            .first()
            .is_some_and(|p| p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0);
    }

    /// Reset the command wake-up fd if `poll` saw it (the loop reads the commands next).
    fn drain_wake(&self) {
        if let Some(w) = &self.wake {
            if self
                .pfds
                .last()
                .is_some_and(|p| p.fd == w.raw() && p.revents != 0)
            {
                w.drain();
            }
        }
    }

    /// Close the streams whose connection closed (every loop: cheap when there are none) and,
    /// every [`TCP_HOUSEKEEPING`], those not bound in time.
    fn tcp_housekeeping(&mut self) {
        let Some(tcp) = &mut self.tcp else {
            return;
        };
        let now = Instant::now();
        if now >= self.next_tcp_housekeeping {
            tcp.housekeeping(now, &mut self.core);
            self.next_tcp_housekeeping = now + TCP_HOUSEKEEPING;
        } else {
            tcp.close_conn_streams(&mut self.core);
        }
    }

    /// Hand one command to the core, reply, and send what it caused.
    fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        let core = &mut self.core;
        match cmd {
            Command::Join { req, reply } => {
                let _ = reply.send(core.join(now, req));
            }
            Command::Client { participant, msg } => core.client_message(now, &participant, msg),
            Command::Disconnect {
                participant,
                reason,
                conn,
            } => core.disconnect(now, &participant, reason, conn.as_ref()),
            Command::Moderate {
                room,
                action,
                reply,
            } => {
                let _ = reply.send(core.moderate(now, &room, action));
            }
            Command::RoomInfo { room, reply } => {
                let _ = reply.send(core.room_info(&room));
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Command::AdoptTcp {
                sock,
                peer,
                candidate_port,
            } => {
                let adopted = match &mut self.tcp {
                    Some(tcp) => tcp.adopt(sock, peer, candidate_port, core),
                    None => false, // `ice_tcp` is off: dropping the socket closes it
                };
                if !adopted {
                    tracing::debug!(%peer, "ICE-TCP stream from the signalling port not taken");
                }
            }
            Command::Recording { room, start, reply } => {
                let r = if start {
                    core.recording_start(&room, now).map(Some)
                } else {
                    core.recording_stop(&room, None, now).map(|()| None)
                };
                let _ = reply.send(r);
            }
            Command::RecordingStatus { room, reply } => {
                let _ = reply.send(core.recording_status(&room));
            }
            Command::Recorder(fb) => core.recorder_feedback(fb, now),
            Command::Shutdown { .. } => {}
        }
        self.flush();
    }

    /// Read datagrams into the core until the socket is empty (at most [`RECV_BATCH`]), a
    /// slice ([`Self::recv_slice`] datagrams) at a time, each serviced and sent before the next
    /// is read ([`receive_sliced`]). True if any. `recvmmsg(2)`: up to [`MMSG`] datagrams per
    /// syscall (`RAKOR_SHELL_RECVMMSG=0` reads one per `recvfrom`, for comparison).
    fn receive(&mut self) -> bool {
        self.read_ages.clear();
        let (slice, timer_slices) = (self.recv_slice, self.timer_slices);
        receive_sliced(self, slice, RECV_BATCH, timer_slices)
    }

    /// Service the connections with input or output and send what they queued.
    fn service_slice(&mut self) {
        let mut from = Instant::now();
        let mut serviced;
        loop {
            let left = self.core.flush_input_step(from, self.step_copies);
            serviced = Instant::now();
            self.flush();
            self.phases
                .record(Phase::Service, serviced.saturating_duration_since(from));
            let sent = Instant::now();
            self.phases
                .record(Phase::Send, sent.saturating_duration_since(serviced));
            if !left {
                break;
            }
            from = sent;
        }
    }

    /// After a turn's slices (at most [`TIMER_SLICES`] of them): the legs they wrote to are
    /// serviced (their timers asked once, not once per slice) and what that queued is sent.
    fn end_turn(&mut self) {
        let from = Instant::now();
        self.core.flush_input(from);
        let serviced = Instant::now();
        self.flush();
        self.phases
            .record(Phase::Service, serviced.saturating_duration_since(from));
        self.phases.record(Phase::Send, serviced.elapsed());
    }

    /// Up to `max` datagrams with `recvmmsg`, [`MMSG`] per syscall.
    fn read_mmsg(&mut self, max: usize) -> Slice {
        let mut s = Slice::default();
        let fd = self.sock.as_raw_fd();
        let Some(m) = self.mmsg.as_mut() else {
            return s;
        };
        while s.used < max {
            let ask = (max - s.used).min(MMSG);
            let n = match m.recv(fd, ask) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    s.empty = true;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!("recvmmsg: {e}");
                    // An ICMP error is reported alone; the next call reads on.
                    s.used += 1;
                    continue;
                }
            };
            let now = Instant::now();
            for i in 0..n {
                if let Some((src, datagram)) = m.get(i) {
                    self.core.handle_datagram(now, src, datagram);
                    s.handed += 1;
                }
            }
            if self.rx_stamps {
                // The kernel stamps arrivals on the wall clock: the age of each datagram is
                // wall time now minus its stamp (a clock step makes an age absurd: skipped).
                let wall = crate::mmsg::realtime_ns();
                let mut oldest = 0;
                for i in 0..n {
                    if let Some(age) = m.stamp(i).and_then(|t| wall.checked_sub(t)) {
                        if age < MAX_RX_AGE_NS {
                            self.rx_wait.record(Duration::from_nanos(age));
                            oldest = oldest.max(age);
                        }
                    }
                }
                if self.read_ages.len() < self.read_ages.capacity() {
                    self.read_ages.push((now, oldest));
                }
            }
            s.used += n;
            if n < ask {
                s.empty = true; // the socket is empty
                break;
            }
        }
        s
    }

    /// Up to `max` datagrams with `recvfrom`, one per syscall.
    fn read_one_by_one(&mut self, max: usize) -> Slice {
        let mut s = Slice::default();
        while s.used < max {
            let (n, src) = match self.sock.recv_from(&mut self.recv_buf) {
                Ok(v) => v,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    s.empty = true;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors (e.g. port unreachable) surface here on Linux; not fatal.
                    tracing::debug!("recv_from: {e}");
                    s.used += 1;
                    continue;
                }
            };
            s.used += 1;
            if let Some(datagram) = self.recv_buf.get(..n) {
                self.core.handle_datagram(Instant::now(), src, datagram);
                s.handed += 1;
            }
        }
        s
    }

    /// Send every datagram the core queued; then record the forwarding latency of the packets
    /// whose copies just went out. UDP datagrams go [`MMSG`] per `sendmmsg(2)`
    /// (`RAKOR_SHELL_SENDMMSG=0`: one `sendto` each, for comparison).
    fn flush(&mut self) {
        let mut sent = 0u64;
        let mut errors = 0u64;
        let mut tcp_dropped = 0u64;
        let mut pending = std::mem::take(&mut self.send_pending);
        for t in self.core.drain_transmits() {
            if t.transport == Transport::Tcp {
                match self.tcp.as_mut().map(|tcp| tcp.send(t.dst, &t.data)) {
                    Some(true) => sent += 1,
                    _ => tcp_dropped += 1,
                }
                continue;
            }
            if self.send_batch.is_none() {
                match send_one(&self.sock, &t.data, t.dst) {
                    true => sent += 1,
                    false => errors += 1,
                }
                continue;
            }
            pending.push(t);
            if pending.len() >= MMSG {
                let (s, e) = send_pending_batch(
                    &self.sock,
                    &mut self.send_batch,
                    &mut pending,
                    &mut self.gso,
                );
                sent += s;
                errors += e;
            }
        }
        if !pending.is_empty() {
            let (s, e) = send_pending_batch(
                &self.sock,
                &mut self.send_batch,
                &mut pending,
                &mut self.gso,
            );
            sent += s;
            errors += e;
        }
        self.send_pending = pending;
        self.core.stats.datagrams_out += sent;
        self.core.stats.send_errors += errors;
        self.core.stats.tcp_frames_dropped += tcp_dropped;
        let mut forwarded = self.core.drain_forwarded().peekable();
        if forwarded.peek().is_some() {
            let done = Instant::now();
            // From the kernel's arrival: the read's wait is that of its oldest datagram (an
            // upper bound for the others of the read, at most a slice of datagrams); a
            // packet of no `recvmmsg` read of this turn (ICE-TCP) counts from its read.
            for read_at in forwarded {
                let fwd = done.saturating_duration_since(read_at);
                self.fwd_latency.record(fwd);
                if self.rx_stamps {
                    // Most copies are of the turn's last read: looked for from the end.
                    let age = self
                        .read_ages
                        .iter()
                        .rev()
                        .find(|(at, _)| *at == read_at)
                        .map_or(0, |&(_, a)| a);
                    self.fwd_kernel.record(fwd + Duration::from_nanos(age));
                }
            }
        }
    }

    fn stats(&self) -> SfuStats {
        let mut s = self.core.stats();
        s.tcp_streams = self.tcp.as_ref().map_or(0, TcpSide::open_streams);
        s.socket_drops = crate::sockopt::receive_drops(&self.sock).unwrap_or(0);
        s.media_thread_cpu_us = crate::record::recorder::thread_cpu_us();
        s
    }

    /// The periodic `media stats` line: counters and the forwarding latency of the window.
    fn log_stats(&mut self) {
        let h = &self.fwd_latency;
        let (p50, p99, n) = (
            h.quantile(0.5).unwrap_or(0),
            h.quantile(0.99).unwrap_or(0),
            h.count(),
        );
        self.core.set_latency(p50, p99, n);
        if n > 0 {
            let s = self.core.stats();
            let p = &self.phases;
            let (commands, commands_max) = p.get(Phase::Commands);
            let (timers, timers_max) = p.get(Phase::Timers);
            let (read, read_max) = p.get(Phase::Read);
            let (service, service_max) = p.get(Phase::Service);
            let (send, send_max) = p.get(Phase::Send);
            tracing::info!(
                rtp_in = s.rtp_in,
                rtp_out = s.rtp_out,
                socket_drops = crate::sockopt::receive_drops(&self.sock).unwrap_or(0),
                fwd_p50_us = p50,
                fwd_p99_us = p99,
                fwd_samples = n,
                fwd_kernel_p50_us = self.fwd_kernel.quantile(0.5).unwrap_or(0),
                fwd_kernel_p99_us = self.fwd_kernel.quantile(0.99).unwrap_or(0),
                rx_wait_p50_us = self.rx_wait.quantile(0.5).unwrap_or(0),
                rx_wait_p99_us = self.rx_wait.quantile(0.99).unwrap_or(0),
                slow_commands = commands,
                slow_timers = timers,
                slow_read = read,
                slow_service = service,
                slow_send = send,
                max_commands_us = commands_max,
                max_timers_us = timers_max,
                max_read_us = read_max,
                max_service_us = service_max,
                max_send_us = send_max,
                "media stats"
            );
        }
        self.fwd_latency.reset();
        self.rx_wait.reset();
        self.fwd_kernel.reset();
        self.phases = PhaseStats::default();
    }

    /// Forget (in the shared table) the rooms of this worker that are gone: no participant,
    /// no chat history, no parked participant waiting for a resume, no recording.
    fn prune_placement(&mut self, now: Instant) {
        let core = &self.core;
        self.placement.retain_for(self.index, now, |room| {
            core.rooms.contains_key(room)
                || core.chat_logs.contains_key(room)
                || core.recording.contains_key(room)
                || core.parked.values().any(|p| p.room == room)
        });
    }

    fn shutdown(&mut self) {
        self.core.shutdown(Instant::now());
        self.flush();
    }
}

impl SlicedInput for Shell {
    fn read_slice(&mut self, max: usize) -> Slice {
        let from = Instant::now();
        let s = if self.mmsg.is_some() {
            self.read_mmsg(max)
        } else {
            self.read_one_by_one(max)
        };
        self.phases.record(Phase::Read, from.elapsed());
        s
    }

    fn service_slice(&mut self) {
        Shell::service_slice(self);
    }

    fn end_turn(&mut self) {
        Shell::end_turn(self);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The slice fallback: a slice the kernel cannot take (out of range here; a seccomp
    /// filter or an old kernel in the field) leaves the media thread with the kernel's
    /// default slice and reports it; 0 asks for nothing; a valid slice applies where the
    /// kernel has custom slices (Linux 6.12+, reported by `sched_getattr`).
    #[test]
    fn a_slice_that_cannot_apply_leaves_the_default() {
        std::thread::spawn(|| {
            let default = crate::priority::thread_slice_ns().unwrap();
            assert!(!apply_thread_slice(0));
            assert!(!apply_thread_slice(50));
            assert_eq!(crate::priority::thread_slice_ns().unwrap(), default);
            let applied = apply_thread_slice(150);
            assert_eq!(
                applied,
                default.is_some(),
                "kernel reports slices: {default:?}"
            );
            if applied {
                assert_eq!(crate::priority::thread_slice_ns().unwrap(), Some(150_000));
            }
        })
        .join()
        .unwrap();
    }

    /// A socket queue and a core, faked: `read_slice` moves datagrams from the queue into the
    /// core, `service_slice` "sends" what the core holds.
    #[derive(Default)]
    struct FakeInput {
        queue: std::collections::VecDeque<Result<u32, ()>>,
        core: Vec<u32>,
        sent: Vec<u32>,
        /// Per service: how many datagrams it sent.
        services: Vec<usize>,
        /// Turns ended (after their last slice).
        turns: usize,
    }

    impl FakeInput {
        fn with(n: u32) -> Self {
            Self {
                queue: (0..n).map(Ok).collect(),
                ..Self::default()
            }
        }
    }

    impl SlicedInput for FakeInput {
        fn read_slice(&mut self, max: usize) -> Slice {
            let mut s = Slice::default();
            while s.used < max {
                match self.queue.pop_front() {
                    Some(Ok(d)) => {
                        self.core.push(d);
                        s.handed += 1;
                    }
                    Some(Err(())) => {} // a read error (a queued ICMP error)
                    None => {
                        s.empty = true;
                        break;
                    }
                }
                s.used += 1;
            }
            s
        }

        fn service_slice(&mut self) {
            self.services.push(self.core.len());
            self.sent.append(&mut self.core);
        }

        fn end_turn(&mut self) {
            self.turns += 1;
        }
    }

    /// A turn with more waiting than a slice is serviced and sent slice by slice, in the order
    /// read, and stops at the turn's budget (the rest waits for the next turn).
    #[test]
    fn a_turn_larger_than_a_slice_is_sent_in_slices_in_order() {
        let mut io = FakeInput::with(300);
        assert!(receive_sliced(&mut io, 32, 256, 64));
        assert_eq!(io.services, vec![32; 8]);
        assert_eq!(io.sent, (0..256).collect::<Vec<_>>());
        assert!(io.core.is_empty(), "nothing read is left unserviced");
        assert_eq!(io.queue.len(), 44);

        // The next turn reads the rest: a full slice, then a short one that ends it.
        assert!(receive_sliced(&mut io, 32, 256, 64));
        assert_eq!(&io.services[8..], &[32, 12]);
        assert_eq!(io.sent, (0..300).collect::<Vec<_>>());
        assert!(io.queue.is_empty());

        // An empty socket: nothing serviced.
        assert!(!receive_sliced(&mut io, 32, 256, 64));
        assert_eq!(io.services.len(), 10);
        assert_eq!(
            io.turns, 2,
            "each turn with input ended once, after its slices"
        );
    }

    /// The written legs' timers are asked after every `timer_slices` slices and after the
    /// turn's last slice, never after a turn that read nothing.
    #[test]
    fn a_turn_ends_every_few_slices_and_after_its_last() {
        let mut io = FakeInput::with(300);
        assert!(receive_sliced(&mut io, 32, 256, 3));
        assert_eq!(io.services.len(), 8);
        assert_eq!(io.turns, 3, "after slices 3 and 6, and after the last (8)");
        assert!(receive_sliced(&mut io, 32, 256, 2));
        assert_eq!(
            io.turns, 4,
            "after slice 2 of 2: once, not again at the end"
        );
        assert!(!receive_sliced(&mut io, 32, 256, 2));
        assert_eq!(io.turns, 4);
    }

    /// A slice as large as the budget is the loop before slices: one service per turn.
    #[test]
    fn a_slice_as_large_as_the_budget_services_once() {
        let mut io = FakeInput::with(100);
        assert!(receive_sliced(&mut io, 256, 256, 64));
        assert_eq!(io.services, vec![100]);
        let mut io = FakeInput::with(5);
        assert!(
            receive_sliced(&mut io, 0, 256, 64),
            "a zero slice reads one at a time"
        );
        assert_eq!(io.services, vec![1; 5]);
    }

    /// Read errors use the budget but are not serviced; reading goes on after them.
    #[test]
    fn read_errors_count_against_the_budget_and_reading_goes_on() {
        let mut io = FakeInput::default();
        io.queue.push_back(Err(()));
        io.queue.extend((0..40).map(Ok));
        assert!(receive_sliced(&mut io, 32, 256, 64));
        assert_eq!(io.services, vec![31, 9]);
        assert_eq!(io.sent, (0..40).collect::<Vec<_>>());

        let mut io = FakeInput::default();
        io.queue.extend((0..300).map(|_| Err(())));
        assert!(
            !receive_sliced(&mut io, 32, 256, 64),
            "only errors: nothing to service"
        );
        assert_eq!(io.queue.len(), 44, "bounded by the budget");
    }

    /// A sub-millisecond wait is waited (`poll(2)`'s whole milliseconds made it zero, and the
    /// loop spun until the timer was due), and a datagram ends the wait at once.
    #[test]
    fn ppoll_waits_sub_millisecond_timeouts_and_wakes_on_a_datagram() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let mut pfds = [libc::pollfd {
            fd: rx.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let wait = Duration::from_micros(800);
        let t0 = Instant::now();
        assert_eq!(ppoll_fds(&mut pfds, wait), 0, "nothing to read");
        assert!(t0.elapsed() >= wait, "waited {:?}", t0.elapsed());

        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        assert_eq!(ppoll_fds(&mut pfds, Duration::from_secs(5)), 1);
        assert_ne!(pfds[0].revents & libc::POLLIN, 0);
    }
}
