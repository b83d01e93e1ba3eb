//! The checks beyond the types: ranges, URLs and combinations of keys, each naming the dotted
//! key it refuses.

use super::Config;
use std::time::Duration;

/// Checks beyond the types. Returns the dotted key and what is wrong with it.
pub(super) fn validate(c: &Config) -> Result<(), (&'static str, String)> {
    if c.server.data_dir.as_os_str().is_empty() {
        return Err(("server.data_dir", "must not be empty".into()));
    }
    let url = c.server.public_url.trim();
    if !url.is_empty() {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        match rest {
            None => {
                return Err((
                    "server.public_url",
                    format!("\"{url}\" must start with http:// or https://"),
                ))
            }
            Some(r) if r.is_empty() || r.contains(['?', '#', ' ']) => {
                return Err((
                    "server.public_url",
                    format!("\"{url}\" must be a base URL without query or fragment"),
                ))
            }
            Some(_) => {}
        }
    }
    let db = c.storage.database_url.expose().trim();
    if !(db.is_empty() || db.starts_with("postgres://") || db.starts_with("postgresql://")) {
        return Err((
            "storage.database_url",
            "must start with postgres:// or postgresql:// (empty = the SQLite file session.database)"
                .into(),
        ));
    }
    let redis = c.cluster.redis_url.expose().trim();
    if !redis.is_empty() {
        if !(redis.starts_with("redis://") || redis.starts_with("rediss://")) {
            return Err((
                "cluster.redis_url",
                "must start with redis:// or rediss:// (empty = a single node)".into(),
            ));
        }
        // Every node must verify every other node's tokens and TURN credentials.
        if c.auth.signing_key.is_empty() {
            return Err((
                "auth.signing_key",
                "must be set (the same on every node) when cluster.redis_url is set".into(),
            ));
        }
        if c.turn.enabled && c.turn.secret.is_empty() {
            return Err((
                "turn.secret",
                "must be set (the same on every node) when cluster.redis_url is set".into(),
            ));
        }
    }
    let (cert, key) = (&c.server.tls_cert_file, &c.server.tls_key_file);
    if cert.as_os_str().is_empty() != key.as_os_str().is_empty() {
        let (missing, given) = if cert.as_os_str().is_empty() {
            ("server.tls_cert_file", "server.tls_key_file")
        } else {
            ("server.tls_key_file", "server.tls_cert_file")
        };
        return Err((
            missing,
            format!(
                "must be set too: {given} is set (HTTPS needs both the certificate and its key)"
            ),
        ));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&c.server.log) {
        return Err((
            "server.log",
            format!("invalid filter \"{}\": {e}", c.server.log),
        ));
    }
    if c.server.shutdown_grace > Duration::from_secs(600) {
        return Err(("server.shutdown_grace", "must be at most 10m".into()));
    }
    if c.server.resume_grace > Duration::from_secs(600) {
        return Err(("server.resume_grace", "must be at most 10m".into()));
    }
    if c.server.drain_timeout > Duration::from_secs(24 * 3600) {
        return Err(("server.drain_timeout", "must be at most 24h".into()));
    }
    if c.media.bind_ip.is_multicast() {
        return Err((
            "media.bind_ip",
            format!("{} is a multicast address", c.media.bind_ip),
        ));
    }
    for ip in &c.media.advertise_ips {
        if ip.is_unspecified() || ip.is_multicast() {
            return Err((
                "media.advertise_ips",
                format!("{ip} cannot be advertised; give the address clients reach"),
            ));
        }
        if c.media.bind_ip.is_loopback() && !ip.is_loopback() {
            return Err((
                "media.advertise_ips",
                format!(
                    "{ip} is not reachable while media.bind_ip is {} (loopback); also set media.bind_ip \
                     (e.g. RAKOR_MEDIA_BIND_IP=0.0.0.0 or --media-bind-ip 0.0.0.0)",
                    c.media.bind_ip
                ),
            ));
        }
    }
    if c.media.keyframe_request_interval.is_zero()
        || c.media.keyframe_request_interval > Duration::from_secs(60)
    {
        return Err((
            "media.keyframe_request_interval",
            "must be greater than 0 and at most 60s".into(),
        ));
    }
    if c.media.workers > 256 {
        return Err((
            "media.workers",
            "must be at most 256 (0 = one per available core)".into(),
        ));
    }
    if c.media.port != 0 && usize::from(c.media.port) + c.media_workers() - 1 > 65535 {
        return Err((
            "media.workers",
            "media.port + media.workers - 1 must be at most 65535".into(),
        ));
    }
    if !(1..=1000).contains(&c.media.max_videos_on_demand) {
        return Err((
            "media.max_videos_on_demand",
            "must be between 1 and 1000".into(),
        ));
    }
    if !(1..=64).contains(&c.media.loudest_speakers) {
        return Err(("media.loudest_speakers", "must be between 1 and 64".into()));
    }
    if !(-20..=19).contains(&c.media.thread_nice) {
        return Err(("media.thread_nice", "must be between -20 and 19".into()));
    }
    if c.media.thread_realtime > 99 {
        return Err((
            "media.thread_realtime",
            "must be between 0 (off) and 99".into(),
        ));
    }
    if c.media.thread_slice_us != 0
        && !rakor_sfu::priority::SLICE_RANGE_US.contains(&c.media.thread_slice_us)
    {
        return Err((
            "media.thread_slice_us",
            "must be 0 (the kernel's default) or between 100 and 100000".into(),
        ));
    }
    if !(4096..=1 << 30).contains(&c.media.socket_buffer_bytes) {
        return Err((
            "media.socket_buffer_bytes",
            "must be between 4096 and 1073741824".into(),
        ));
    }
    if !c.auth.signing_key.is_empty() {
        // Never echo the key itself.
        crate::signing_key::decode_key(c.auth.signing_key.expose())
            .map_err(|e| ("auth.signing_key", e))?;
    }
    if c.session.database.as_os_str().is_empty() {
        return Err(("session.database", "must not be empty".into()));
    }
    if !(Duration::from_secs(60)..=Duration::from_secs(30 * 24 * 3600))
        .contains(&c.session.login_ttl)
    {
        return Err(("session.login_ttl", "must be between 1m and 30days".into()));
    }
    if !(1..=1000).contains(&c.session.login_max_failures) {
        return Err((
            "session.login_max_failures",
            "must be between 1 and 1000".into(),
        ));
    }
    if c.session.login_lockout > Duration::from_secs(24 * 3600) {
        return Err(("session.login_lockout", "must be at most 24h".into()));
    }
    super::security::validate(c)?;
    validate_turn(&c.turn)?;
    if c.auth.max_ttl.is_zero() {
        return Err(("auth.max_ttl", "must be greater than 0".into()));
    }
    if c.auth.default_ttl.is_zero() || c.auth.default_ttl > c.auth.max_ttl {
        return Err((
            "auth.default_ttl",
            "must be greater than 0 and at most auth.max_ttl".into(),
        ));
    }
    let limits: [(&'static str, usize, usize); 8] = [
        (
            "limits.max_participants_per_room",
            c.limits.max_participants_per_room,
            10_000,
        ),
        (
            "limits.max_tracks_per_participant",
            c.limits.max_tracks_per_participant,
            64,
        ),
        ("limits.max_frame_bytes", c.limits.max_frame_bytes, 1 << 20),
        (
            "limits.messages_per_second",
            c.limits.messages_per_second as usize,
            10_000,
        ),
        ("limits.max_rooms", c.limits.max_rooms, 100_000),
        (
            "limits.max_unauthenticated_connections",
            c.limits.max_unauthenticated_connections,
            1_000_000,
        ),
        (
            "limits.max_unauthenticated_connections_per_ip",
            c.limits.max_unauthenticated_connections_per_ip,
            1_000_000,
        ),
        (
            "limits.join_attempts_per_ip_per_minute",
            c.limits.join_attempts_per_ip_per_minute as usize,
            1_000_000,
        ),
    ];
    for (key, value, max) in limits {
        let min = match key {
            "limits.max_frame_bytes" => 1024,
            "limits.join_attempts_per_ip_per_minute" => 0,
            _ => 1,
        };
        if value < min || value > max {
            return Err((key, format!("{value} is out of range {min}..={max}")));
        }
    }
    let chat = &c.chat;
    // A message is also one signalling frame: with a small `limits.max_frame_bytes` the frame
    // limit refuses long messages first (`too_large` too), so the two are not tied here.
    if !(1..=16_000).contains(&chat.max_chars) {
        return Err((
            "chat.max_chars",
            format!("{} is out of range 1..=16000", chat.max_chars),
        ));
    }
    if !(1..=1000).contains(&chat.burst) {
        return Err((
            "chat.burst",
            format!("{} is out of range 1..=1000", chat.burst),
        ));
    }
    if !(1..=100).contains(&chat.per_second) {
        return Err((
            "chat.per_second",
            format!("{} is out of range 1..=100", chat.per_second),
        ));
    }
    if chat.history > 1000 {
        return Err((
            "chat.history",
            format!("{} is out of range 0..=1000", chat.history),
        ));
    }
    if !(Duration::from_secs(1)..=Duration::from_secs(120)).contains(&c.limits.join_timeout) {
        return Err(("limits.join_timeout", "must be between 1s and 2m".into()));
    }
    if !(Duration::from_secs(1)..=Duration::from_secs(24 * 3600)).contains(&c.limits.lobby_max_wait)
    {
        return Err(("limits.lobby_max_wait", "must be between 1s and 24h".into()));
    }
    if !(Duration::from_secs(3)..=Duration::from_secs(300)).contains(&c.limits.dead_peer_timeout) {
        return Err((
            "limits.dead_peer_timeout",
            "must be between 3s and 5m".into(),
        ));
    }
    Ok(())
}

/// `[turn]`: lifetimes, caps and the URL pieces.
fn validate_turn(t: &super::TurnConfig) -> Result<(), (&'static str, String)> {
    if !(Duration::from_secs(60)..=Duration::from_secs(24 * 3600)).contains(&t.credential_ttl) {
        return Err(("turn.credential_ttl", "must be between 1m and 24h".into()));
    }
    if !(Duration::from_secs(600)..=Duration::from_secs(24 * 3600)).contains(&t.max_lifetime) {
        return Err(("turn.max_lifetime", "must be between 10m and 24h".into()));
    }
    if !t.secret.is_empty() && t.secret.expose().trim().len() < 16 {
        return Err(("turn.secret", "must be at least 16 characters".into()));
    }
    if t.realm.trim().is_empty() || t.realm.len() > 127 {
        return Err(("turn.realm", "must be 1 to 127 characters".into()));
    }
    if t.public_host.contains(['/', '?', '#', ' ', '@']) {
        return Err((
            "turn.public_host",
            format!(
                "\"{}\" must be a host name or IP, without scheme or port",
                t.public_host
            ),
        ));
    }
    let url = t.tls_url.trim();
    if !url.is_empty() && !url.starts_with("turns:") {
        return Err(("turn.tls_url", format!("\"{url}\" must start with turns:")));
    }
    if t.max_allocations == 0 || t.max_allocations > 1_000_000 {
        return Err((
            "turn.max_allocations",
            "must be between 1 and 1000000".into(),
        ));
    }
    if t.max_allocations_per_identity == 0 || t.max_allocations_per_identity > 1000 {
        return Err((
            "turn.max_allocations_per_identity",
            "must be between 1 and 1000".into(),
        ));
    }
    if t.max_streams_per_ip == 0 || t.max_streams_per_ip > 1_000_000 {
        return Err((
            "turn.max_streams_per_ip",
            "must be between 1 and 1000000".into(),
        ));
    }
    if !(50..=1_000_000).contains(&t.max_packets_per_second) {
        return Err((
            "turn.max_packets_per_second",
            "must be between 50 and 1000000".into(),
        ));
    }
    if !(100..=10_000_000).contains(&t.max_kbps) {
        return Err(("turn.max_kbps", "must be between 100 and 10000000".into()));
    }
    Ok(())
}
