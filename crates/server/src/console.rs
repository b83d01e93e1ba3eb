//! `GET /console`: the operators' console (`web-client/console.html` and its modules under
//! `web-client/js/console/`), served from the embedded web client like the call page. The page
//! is public; everything it shows comes from `/api/v1`, which requires a login.

use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/console", get(console))
}

async fn console(headers: HeaderMap) -> Response {
    crate::web::serve_page("console.html", &headers)
}
