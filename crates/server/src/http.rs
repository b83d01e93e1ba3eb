//! The HTTP surface: the axum [`Router`] with `/healthz`, the `/rtc` signalling WebSocket and
//! the embedded web client (`/`, `/join`, `/static/…`, see [`crate::web`]),
//! wrapped in request tracing that records the method and **path only** (join links carry the
//! token in the query string, and tokens never go into logs).

use crate::app::AppState;
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
        .route("/rtc", get(crate::signal::ws_handler))
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
