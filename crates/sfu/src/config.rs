//! Media-core configuration (filled from the server's config tree).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Settings of the media worker.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// UDP address of the media socket. Port 0 lets the OS pick.
    pub bind: SocketAddr,
    /// IPs written into the server's ICE host candidates. Empty: the bind IP, or 127.0.0.1
    /// when the bind IP is unspecified (0.0.0.0 / ::).
    pub advertise_ips: Vec<IpAddr>,
    /// Minimum gap between two keyframe requests (PLI) for one published video track.
    pub keyframe_request_interval: Duration,
    /// Socket send and receive buffer size asked for (the kernel caps it at net.core.*mem_max).
    pub socket_buffer_bytes: usize,
    /// Nice value the media worker threads ask for at start (0: leave as is); see
    /// [`crate::sockopt::set_thread_nice`].
    pub thread_nice: i32,
    /// Real-time (`SCHED_RR`) priority the media worker threads ask for at start (0: off, the
    /// fair scheduler); see [`crate::priority::set_thread_realtime`].
    pub thread_realtime: u32,
    /// Time slice (µs) the media worker threads ask the fair scheduler for at start (0: the
    /// kernel's default; ignored when `thread_realtime` applies); see
    /// [`crate::priority::set_thread_slice`].
    pub thread_slice_us: u32,
    /// Most participants in one room.
    pub max_participants_per_room: usize,
    /// Most published tracks per participant.
    pub max_tracks_per_participant: usize,
    /// Most rooms at once (a join that would open one more gets [`crate::SfuError::TooManyRooms`]).
    pub max_rooms: usize,
    /// A connection whose ICE consent checks (and media) stopped for this long fails; see
    /// [`crate::liveness`].
    pub dead_peer_timeout: Duration,
    /// How long a participant whose signalling connection dropped is kept for a resume
    /// (0 = remove at once). Its media keeps flowing meanwhile; a media failure still removes
    /// it within `dead_peer_timeout`.
    pub resume_grace: Duration,
    /// Audio of at most this many participants (besides the room's hosts) is forwarded at a
    /// time: the loudest by their RFC 6464 audio level (see [`crate::speakers`]).
    pub loudest_speakers: usize,
    /// Video on demand: how many videos one client may have asked for at a time (shown, or
    /// hidden within [`rakor_proto::VIDEO_ON_DEMAND_GRACE_MS`]); beyond, `limit_exceeded`.
    pub max_videos_on_demand: usize,
    /// Estimate each subscriber's downlink (TWCC feedback, GCC) and fit its video into it
    /// (see [`crate::bwe`]). Off: video follows tile sizes only.
    pub bandwidth_estimation: bool,
    /// ICE over TCP (RFC 6544): a TCP listener on the media port number (same bind IP) and a
    /// passive TCP host candidate beside each UDP one, for sites whose firewall drops UDP.
    pub ice_tcp: bool,
    /// Most ICE-TCP streams open at once from one source IP, and in total; more are refused.
    pub tcp_streams_per_ip: usize,
    pub tcp_streams_max: usize,
    /// With `ice_tcp`: also advertise a passive TCP candidate on this port (the server's one
    /// public HTTPS port, whose listener hands ICE-TCP streams over with
    /// [`crate::SfuHandle::adopt_tcp_stream`]), for sites that may open TCP to that port only.
    pub extra_tcp_port: Option<u16>,
    /// Recording (`crate::record`): None = recording disabled.
    pub recording: Option<crate::record::RecordingSettings>,
    /// Media workers (threads, one per core is the server's default), each owning whole rooms
    /// on its own socket: port `bind.port() + index` ([`crate::workers`]).
    pub workers: usize,
    /// Set by [`crate::Sfu::start`] for each worker: its index (tags its ICE ufrags).
    pub worker_index: usize,
    /// Chat limits (size, rate, history).
    pub chat: ChatLimits,
}

/// The limits of `chat` (server config section `[chat]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatLimits {
    /// Longest message, in Unicode characters (`too_large` above).
    pub max_chars: usize,
    /// Messages a participant may send at once…
    pub burst: u32,
    /// …then one per this interval (`rate_limited` faster).
    pub interval: Duration,
    /// Recent messages a room keeps for late joiners and resumes (`chat_history`).
    pub history: usize,
}

impl Default for ChatLimits {
    fn default() -> Self {
        Self {
            max_chars: rakor_proto::CHAT_MAX_CHARS,
            burst: 5,
            interval: Duration::from_secs(1),
            history: rakor_proto::CHAT_HISTORY_LEN,
        }
    }
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 7882)),
            advertise_ips: Vec::new(),
            keyframe_request_interval: Duration::from_millis(500),
            socket_buffer_bytes: 4 << 20,
            thread_nice: 0,
            thread_realtime: 0,
            thread_slice_us: 0,
            max_participants_per_room: 100,
            max_tracks_per_participant: 4,
            max_rooms: 100,
            dead_peer_timeout: Duration::from_secs(10),
            resume_grace: Duration::from_secs(30),
            loudest_speakers: 3,
            max_videos_on_demand: rakor_proto::VIDEO_ON_DEMAND_MAX,
            bandwidth_estimation: true,
            ice_tcp: true,
            tcp_streams_per_ip: 64,
            tcp_streams_max: 1024,
            extra_tcp_port: None,
            recording: None,
            workers: 1,
            worker_index: 0,
            chat: ChatLimits::default(),
        }
    }
}
