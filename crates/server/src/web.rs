//! The browser client (`web-client/`), embedded in the binary with `rust-embed` so that one
//! `rakor serve` serves everything a site needs (no CDN, no build step):
//!
//! - `GET /` — the landing page (open an invitation link);
//! - `GET /join?token=…` — the call page; the token stays in the query string and the page reads
//!   it from `location` (this handler never looks at the query, and never logs it);
//! - `GET /static/{*path}` — ES modules, styles, translations, images.
//!
//! Every response carries a strong `ETag` (the file's SHA-256) with `Cache-Control: no-cache`, so
//! browsers revalidate cheaply (`304`) and never run modules from an older binary. `/join` is
//! `no-store` (its URL carries the token). Pages get a strict Content-Security-Policy (scripts,
//! styles and connections from this origin only) and `Referrer-Policy: no-referrer`, so the
//! token in the page URL is never sent to another site. In debug builds rust-embed reads the
//! files from disk, so edits to `web-client/` show up on reload without recompiling.
//!
//! The browser tests' hooks (`js/test-hooks.js`, `window.rakorTest`) are served only when the
//! server runs with the explicit switch `RAKOR_TEST_HOOKS=1` in its environment; otherwise that
//! module is a stub whose functions do nothing, so production pages expose no test surface.

use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rust_embed::RustEmbed;
use std::borrow::Cow;

#[derive(RustEmbed)]
// Relative to this crate's Cargo.toml (rust-embed resolves it against CARGO_MANIFEST_DIR).
#[folder = "../../web-client/"]
struct WebClient;

/// Files in `web-client/` that are documentation, not part of the app (`#[exclude]` would need
/// rust-embed's `include-exclude` feature; filtering here keeps the dependency as it is).
fn is_servable(path: &str) -> bool {
    !path.to_ascii_lowercase().ends_with(".md")
}

/// Content-Security-Policy of the HTML pages. `connect-src 'self'` covers the same-origin
/// `ws(s)://…/rtc` WebSocket (CSP Level 3).
const PAGE_CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
     media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'";

/// How a response may be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caching {
    /// Revalidate every time (ETag → 304).
    Revalidate,
    /// Never store (the URL carries an access token).
    NoStore,
}

/// The web client's routes; merge them into the server's router (`.merge(web::routes())`).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(landing))
        .route("/join", get(join))
        .route("/static/{*path}", get(asset))
}

async fn landing(headers: HeaderMap) -> Response {
    serve_file("index.html", &headers, Caching::Revalidate)
}

async fn join(headers: HeaderMap) -> Response {
    serve_file("join.html", &headers, Caching::NoStore)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    if path == TEST_HOOKS && !test_hooks_enabled() {
        return test_hooks_stub();
    }
    serve_file(&path, &headers, Caching::Revalidate)
}

/// The module with `window.rakorTest`.
const TEST_HOOKS: &str = "js/test-hooks.js";

/// What production pages get instead of the test hooks.
const TEST_HOOKS_STUB: &str =
    "// Test hooks are off (start the server with RAKOR_TEST_HOOKS=1 to enable them).\n\
export function setTestContext() {}\nexport function installTestHooks() {}\n";

/// `RAKOR_TEST_HOOKS=1` (read once).
fn test_hooks_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("RAKOR_TEST_HOOKS").is_ok_and(|v| v.trim() == "1"))
}

fn test_hooks_stub() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::HeaderName::from_static("x-content-type-options"),
                "nosniff",
            ),
        ],
        TEST_HOOKS_STUB,
    )
        .into_response()
}

/// Serve a page of `web-client/` (revalidated, with the page headers); for `crate::console`.
pub(crate) fn serve_page(path: &str, headers: &HeaderMap) -> Response {
    serve_file(path, headers, Caching::Revalidate)
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found\n",
    )
        .into_response()
}

/// The Content-Type for an embedded file: explicit for the types the client uses (module
/// scripts must be served as JavaScript), else what mime-guess says.
fn content_type(path: &str, guessed: &str) -> String {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" => "text/html; charset=utf-8".to_owned(),
        "js" | "mjs" => "text/javascript; charset=utf-8".to_owned(),
        "css" => "text/css; charset=utf-8".to_owned(),
        "svg" => "image/svg+xml".to_owned(),
        "json" => "application/json".to_owned(),
        _ if guessed.starts_with("text/") => format!("{guessed}; charset=utf-8"),
        _ => guessed.to_owned(),
    }
}

fn etag_of(hash: &[u8; 32]) -> String {
    let mut s = String::with_capacity(34);
    s.push('"');
    for b in &hash[..16] {
        s.push_str(&format!("{b:02x}"));
    }
    s.push('"');
    s
}

/// Whether an `If-None-Match` header value matches `etag` (a list, `*`, or weak forms).
fn etag_matches(if_none_match: &HeaderValue, etag: &str) -> bool {
    let Ok(v) = if_none_match.to_str() else {
        return false;
    };
    v.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

fn serve_file(path: &str, req: &HeaderMap, caching: Caching) -> Response {
    if !is_servable(path) {
        return not_found();
    }
    let Some(file) = WebClient::get(path) else {
        return not_found();
    };
    let etag = etag_of(&file.metadata.sha256_hash());
    let is_page = path.ends_with(".html");

    let mut headers = HeaderMap::new();
    let cache = match caching {
        Caching::Revalidate => "no-cache",
        Caching::NoStore => "no-store",
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    if is_page {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            "permissions-policy",
            HeaderValue::from_static(
                "camera=(self), microphone=(self), fullscreen=(self), display-capture=(self)",
            ),
        );
    }

    if caching == Caching::Revalidate
        && req
            .get(header::IF_NONE_MATCH)
            .is_some_and(|v| etag_matches(v, &etag))
    {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }

    if let Ok(v) = HeaderValue::from_str(&content_type(path, file.metadata.mimetype())) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    let body = match file.data {
        Cow::Borrowed(bytes) => Body::from(Bytes::from_static(bytes)),
        Cow::Owned(bytes) => Body::from(bytes),
    };
    (StatusCode::OK, headers, body).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use axum::http::Request;
    use tower::ServiceExt as _;

    async fn get_with(uri: &str, if_none_match: Option<&str>) -> Response {
        let mut req = Request::get(uri);
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        let app: Router = routes();
        app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap()
    }

    async fn body_text(res: Response) -> String {
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn join_serves_the_call_page_without_storing_it() {
        let res = get_with("/join?token=abc.def.ghi", None).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(res.headers()[header::REFERRER_POLICY], "no-referrer");
        assert!(res.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
        let html = body_text(res).await;
        assert!(
            html.contains("/static/js/app.js"),
            "call page loads the app module"
        );
        assert!(
            !html.contains("abc.def.ghi"),
            "the token is never echoed into the page"
        );
    }

    #[tokio::test]
    async fn landing_page_and_assets_have_their_types() {
        let table = [
            ("/", "text/html; charset=utf-8"),
            ("/static/js/app.js", "text/javascript; charset=utf-8"),
            ("/static/i18n/id.js", "text/javascript; charset=utf-8"),
            ("/static/css/app.css", "text/css; charset=utf-8"),
            ("/static/img/favicon.svg", "image/svg+xml"),
        ];
        for (uri, ty) in table {
            let res = get_with(uri, None).await;
            assert_eq!(res.status(), StatusCode::OK, "{uri}");
            assert_eq!(res.headers()[header::CONTENT_TYPE], ty, "{uri}");
            assert_eq!(res.headers()[header::CACHE_CONTROL], "no-cache", "{uri}");
            assert_eq!(
                res.headers()[header::X_CONTENT_TYPE_OPTIONS],
                "nosniff",
                "{uri}"
            );
            assert!(res.headers().contains_key(header::ETAG), "{uri}");
        }
    }

    #[tokio::test]
    async fn etag_revalidation_answers_304() {
        let first = get_with("/static/js/app.js", None).await;
        let tag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
        let again = get_with("/static/js/app.js", Some(&tag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(body_text(again).await.is_empty());
        let other = get_with("/static/js/app.js", Some("\"something-else\"")).await;
        assert_eq!(other.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn missing_files_docs_and_traversal_are_404() {
        for uri in [
            "/static/nope.js",
            "/static/README.md",
            "/static/../Cargo.toml",
            "/static/%2e%2e/Cargo.toml",
        ] {
            assert_eq!(
                get_with(uri, None).await.status(),
                StatusCode::NOT_FOUND,
                "{uri}"
            );
        }
    }

    #[tokio::test]
    async fn test_hooks_are_a_stub_without_the_switch() {
        // The unit tests never set RAKOR_TEST_HOOKS.
        let res = get_with("/static/js/test-hooks.js", None).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body = body_text(res).await;
        assert!(!body.contains("rakorTest ="), "{body}");
        assert!(body.contains("export function installTestHooks() {}"));
    }

    #[test]
    fn every_translation_module_is_embedded() {
        for path in ["i18n/id.js", "i18n/en.js", "join.html", "index.html"] {
            assert!(WebClient::get(path).is_some(), "{path}");
        }
    }
}
