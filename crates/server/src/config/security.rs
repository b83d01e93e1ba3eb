//! Validation of the keys that bound what strangers can cost the server: HTTP connection caps
//! and timeouts, login throttling and the password-hash pool, trusted proxies. Called by
//! `config::validate`; each error names its key.

use super::Config;
use std::time::Duration;

pub(super) fn validate(c: &Config) -> Result<(), (&'static str, String)> {
    for entry in &c.server.trusted_proxies {
        crate::client_addr::ProxyNet::parse(entry).map_err(|e| ("server.trusted_proxies", e))?;
    }
    let l = &c.limits;
    if !(16..=1_000_000).contains(&l.max_http_connections) {
        return Err((
            "limits.max_http_connections",
            format!("{} is out of range 16..=1000000", l.max_http_connections),
        ));
    }
    if l.max_http_connections_per_ip == 0 || l.max_http_connections_per_ip > l.max_http_connections
    {
        return Err((
            "limits.max_http_connections_per_ip",
            "must be at least 1 and at most limits.max_http_connections".into(),
        ));
    }
    let secs = |s| Duration::from_secs(s);
    if !(secs(1)..=secs(300)).contains(&l.http_header_read_timeout) {
        return Err((
            "limits.http_header_read_timeout",
            "must be between 1s and 5m".into(),
        ));
    }
    if !(secs(1)..=secs(3600)).contains(&l.http_idle_timeout) {
        return Err((
            "limits.http_idle_timeout",
            "must be between 1s and 1h".into(),
        ));
    }
    let s = &c.session;
    if !(1..=100_000).contains(&s.login_max_failures_per_address) {
        return Err((
            "session.login_max_failures_per_address",
            "must be between 1 and 100000".into(),
        ));
    }
    if s.password_hash_concurrency > 256 {
        return Err((
            "session.password_hash_concurrency",
            "must be at most 256 (0 = one per CPU core)".into(),
        ));
    }
    if s.password_hash_queue > 10_000 {
        return Err((
            "session.password_hash_queue",
            "must be at most 10000".into(),
        ));
    }
    Ok(())
}
