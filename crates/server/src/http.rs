//! The HTTP surface: the axum [`Router`] with `/healthz`, the `/rtc` signalling WebSocket and
//! the embedded web client (`/`, `/join`, `/static/…`, see [`crate::web`]),
//! wrapped in request tracing that records the method and **path only** (join links carry the
//! token in the query string, and tokens never go into logs).

use crate::state::AppState;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tower_http::trace::TraceLayer;

/// The server's routes, ready for `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health_routes())
        .merge(crate::web::routes())
        .merge(crate::console::routes())
        .merge(crate::api::routes(state.clone()))
        .route("/rtc", get(crate::signal::ws_handler))
        .route("/metrics", get(metrics))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
        }))
        .with_state(state)
}

/// Routes that need no state (tested without a socket).
pub fn health_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/healthz", get(healthz))
}

/// Body of `GET /healthz`.
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
}

/// `GET /healthz` → 200 `{"status":"ok","version":"<crate version>"}`.
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// `GET /metrics`: the media core's counters in the Prometheus text format (no personal
/// data: counts only).
async fn metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Ok(per_worker) = state.sfu.stats_per_worker().await else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "media core stopped\n",
        )
            .into_response();
    };
    let s = rakor_sfu::workers::sum_stats(&per_worker);
    let rows: [(&str, &str, &str, u64); 21] = [
        (
            "rakor_rooms",
            "gauge",
            "Rooms with at least one participant",
            s.rooms as u64,
        ),
        (
            "rakor_participants",
            "gauge",
            "Joined participants",
            s.participants as u64,
        ),
        (
            "rakor_peer_connections",
            "gauge",
            "WebRTC connections on the media port",
            s.connections as u64,
        ),
        (
            "rakor_rtp_packets_received_total",
            "counter",
            "RTP packets received from publishers",
            s.rtp_in,
        ),
        (
            "rakor_rtp_packets_forwarded_total",
            "counter",
            "RTP packets handed to subscriber legs",
            s.rtp_out,
        ),
        (
            "rakor_datagrams_received_total",
            "counter",
            "UDP datagrams received on the media port",
            s.datagrams_in,
        ),
        (
            "rakor_datagrams_sent_total",
            "counter",
            "UDP datagrams sent from the media port",
            s.datagrams_out,
        ),
        (
            "rakor_datagrams_unknown_source_total",
            "counter",
            "Datagrams dropped: no connection for the source",
            s.datagrams_unknown_source,
        ),
        (
            "rakor_send_errors_total",
            "counter",
            "Datagrams the kernel refused to send",
            s.send_errors,
        ),
        (
            "rakor_media_socket_drops_total",
            "counter",
            "Datagrams the kernel dropped on the media sockets: receive buffer full (the worker fell behind)",
            s.socket_drops,
        ),
        (
            "rakor_ice_tcp_streams",
            "gauge",
            "ICE-TCP streams open on the media port",
            s.tcp_streams as u64,
        ),
        (
            "rakor_ice_tcp_frames_received_total",
            "counter",
            "RFC 4571 frames read from ICE-TCP streams",
            s.tcp_frames_in,
        ),
        (
            "rakor_ice_tcp_frames_unknown_source_total",
            "counter",
            "ICE-TCP frames dropped: no connection for the stream",
            s.tcp_frames_unknown_source,
        ),
        (
            "rakor_ice_tcp_frames_dropped_total",
            "counter",
            "Packets for ICE-TCP streams dropped: write queue full or stream gone",
            s.tcp_frames_dropped,
        ),
        (
            "rakor_ice_tcp_streams_refused_total",
            "counter",
            "ICE-TCP streams refused or closed by a limit (count, malformed frame, unbound in 5 s)",
            s.tcp_streams_refused,
        ),
        (
            "rakor_recording_rooms",
            "gauge",
            "Rooms being recorded now",
            s.recording_rooms as u64,
        ),
        (
            "rakor_recording_packets_total",
            "counter",
            "RTP packets handed from the media thread to the recorder thread",
            s.rec_packets_handed,
        ),
        (
            "rakor_recording_packets_dropped_total",
            "counter",
            "RTP packets of recorded tracks dropped because the recorder's queue was full",
            s.rec_packets_dropped,
        ),
        (
            "rakor_recording_frames_total",
            "counter",
            "Media frames written to recording files",
            s.rec_frames_written,
        ),
        (
            "rakor_recorder_thread_cpu_microseconds_total",
            "counter",
            "CPU time of the recorder thread, microseconds",
            s.rec_thread_cpu_us,
        ),
        (
            "rakor_media_thread_cpu_microseconds_total",
            "counter",
            "CPU time of the media worker threads (all workers), microseconds",
            s.media_thread_cpu_us,
        ),
    ];
    // A cluster member labels every sample with its node id and region.
    let cluster_labels = state.cluster.as_deref().map(|c| {
        format!(
            "node=\"{}\",region=\"{}\"",
            label_value(c.node_id()),
            label_value(c.region())
        )
    });
    let (plain, extra) = match &cluster_labels {
        Some(l) => (format!("{{{l}}}"), format!(",{l}")),
        None => (String::new(), String::new()),
    };
    let mut body = String::with_capacity(1024);
    for (name, kind, help, value) in rows {
        body.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{plain} {value}\n"
        ));
    }
    // The built-in TURN server (only when `turn.enabled`).
    if let Some(turn) = &state.turn_service {
        let t = &turn.stats;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let turn_rows: [(&str, &str, &str, u64); 8] = [
            (
                "rakor_turn_streams",
                "gauge",
                "TURN streams (TCP and TLS) open now",
                load(&t.streams_open),
            ),
            (
                "rakor_turn_allocations",
                "gauge",
                "TURN allocations held now",
                turn.allocations() as u64,
            ),
            (
                "rakor_turn_streams_refused_total",
                "counter",
                "TURN streams refused by a limit (turn.max_allocations, turn.max_streams_per_ip)",
                load(&t.streams_refused),
            ),
            (
                "rakor_turn_packets_to_media_total",
                "counter",
                "Datagrams relayed from TURN clients to the media port",
                load(&t.packets_to_media),
            ),
            (
                "rakor_turn_packets_to_client_total",
                "counter",
                "Datagrams relayed from the media port to TURN clients",
                load(&t.packets_to_client),
            ),
            (
                "rakor_turn_client_writes_total",
                "counter",
                "Stream writes carrying relayed datagrams to TURN clients (bursts share one)",
                load(&t.client_writes),
            ),
            (
                "rakor_turn_relay_datagrams_dropped_total",
                "counter",
                "Datagrams dropped by the kernel on TURN relay sockets (receive buffer full)",
                load(&t.relay_datagrams_dropped),
            ),
            (
                "rakor_turn_client_packets_dropped_total",
                "counter",
                "ChannelData from TURN clients dropped (no channel or permission, over the rate limit)",
                load(&t.client_packets_dropped),
            ),
        ];
        for (name, kind, help, value) in turn_rows {
            body.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        }
    }
    // Per media worker (label `worker`: its index; its port is `media.port + worker`).
    type Getter = fn(&rakor_sfu::SfuStats) -> u64;
    let per_worker_rows: [(&str, &str, Getter); 4] = [
        ("rakor_worker_rooms", "Rooms on this media worker", |w| {
            w.rooms as u64
        }),
        (
            "rakor_worker_participants",
            "Participants on this media worker",
            |w| w.participants as u64,
        ),
        (
            "rakor_worker_rtp_packets_forwarded_total",
            "RTP packets this media worker forwarded to subscribers",
            |w| w.rtp_out,
        ),
        (
            "rakor_worker_thread_cpu_microseconds_total",
            "CPU time of this media worker thread, microseconds",
            |w| w.media_thread_cpu_us,
        ),
    ];
    for (name, help, get) in per_worker_rows {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        body.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (i, w) in per_worker.iter().enumerate() {
            body.push_str(&format!("{name}{{worker=\"{i}\"{extra}}} {}\n", get(w)));
        }
    }
    if let Some(cluster) = &state.cluster {
        let g = cluster.gauges();
        let cluster_rows: [(&str, &str, u64); 4] = [
            (
                "rakor_cluster_node_info",
                "This node as a cluster member (labels: node id, region); always 1",
                1,
            ),
            (
                "rakor_cluster_redis_up",
                "1 if the last heartbeat or placement reached Redis, else 0",
                u64::from(g.redis_up),
            ),
            (
                "rakor_cluster_nodes_alive",
                "Nodes with a live heartbeat in Redis (this one included), at the last heartbeat",
                g.nodes_alive,
            ),
            (
                "rakor_cluster_rooms_owned",
                "Rooms whose lease this node held at the last heartbeat",
                g.rooms_owned,
            ),
        ];
        for (name, help, value) in cluster_rows {
            body.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{plain} {value}\n"
            ));
        }
    }
    if let Some(cascade) = &state.cascade {
        cascade.metrics(&mut body);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use axum::http::StatusCode;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn healthz_reports_ok_and_version() {
        let app: Router = health_routes();
        let res = app
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "application/json");
        let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("node-a"), "node-a");
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[tokio::test]
    async fn unknown_path_is_404() {
        let app: Router = health_routes();
        let res = app
            .oneshot(Request::get("/nope").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
}
