//! The guard in front of every `/api/v1` route:
//!
//! - **CSRF**: a state-changing request (any method but GET, HEAD, OPTIONS) that is not
//!   authenticated by an API token (`Authorization: Bearer …`) — that is, one a browser could
//!   send with the operator's cookie — is refused with `403 cross_origin` when the browser
//!   says it comes from another site: `Sec-Fetch-Site` other than `same-origin`/`none`, or an
//!   `Origin` that is not this server's. The server's origin is `server.public_url`'s, else
//!   the `Host` the request was sent to. Requests with neither header (scripts, curl) pass:
//!   every browser that can carry the cookie sends at least one of them on a cross-site POST.
//! - **Content types**: a state-changing request of a logged-in operator (or a login) that
//!   carries a body or a `Content-Type` must
//!   use the type its route reads — `text/csv` for `POST /sites/import`, `application/json`
//!   everywhere else — or it gets `415 unsupported_media_type`. Form and `text/plain` bodies
//!   (the ones a cross-site form can send without a preflight) are never accepted.
//! - **No caching**: every API response carries `Cache-Control: no-store` (logins, API
//!   tokens and invitation links are secrets; the rest is live data).

use super::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts as _;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The middleware (install with `axum::middleware::from_fn_with_state`).
pub async fn api_guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    if let Err(e) = check(&state, &mut parts).await {
        let mut res = e.into_response();
        no_store(&mut res);
        return res;
    }
    let mut res = next.run(Request::from_parts(parts, body)).await;
    no_store(&mut res);
    res
}

fn no_store(res: &mut Response) {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

async fn check(state: &AppState, parts: &mut Parts) -> Result<(), ApiError> {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    if !bearer {
        check_origin(&state.config.server.public_url, &parts.headers)?;
    }
    // Who is asking comes first (401 before 415); the operator found is kept for the handler.
    if !parts.uri.path().ends_with("/auth/login") {
        match super::Op::from_request_parts(parts, state).await {
            Ok(super::Op(op)) => {
                parts.extensions.insert(super::Authenticated(op));
            }
            Err(_) => return Ok(()), // the handler answers 401
        }
    }
    check_content_type(parts.uri.path(), &parts.headers)
}

fn cross_origin(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "cross_origin",
        format!("refused: {why}; use the console of this server, or an API token"),
    )
}

/// Whether the browser marked the request as coming from another site.
pub fn check_origin(public_url: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let text = |name: header::HeaderName| headers.get(name).map(|v| v.to_str().unwrap_or("?"));
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        if !matches!(site.trim(), "same-origin" | "none") {
            return Err(cross_origin("the request comes from another site"));
        }
    }
    let Some(origin) = text(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.trim().trim_end_matches('/');
    let public = public_url.trim().trim_end_matches('/');
    let same = if public.is_empty() {
        // Compare host[:port] with the Host the request was sent to.
        let host = text(header::HOST).unwrap_or("");
        origin.split_once("://").is_some_and(|(scheme, rest)| {
            matches!(scheme, "http" | "https")
                && !host.is_empty()
                && rest.eq_ignore_ascii_case(host)
        })
    } else {
        origin_of(public).is_some_and(|o| o.eq_ignore_ascii_case(origin))
    };
    if same {
        Ok(())
    } else {
        Err(cross_origin("the Origin is not this server"))
    }
}

/// `scheme://host[:port]` of a base URL.
fn origin_of(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let end = rest
        .find('/')
        .map_or(url.len(), |i| url.len() - rest.len() + i);
    url.get(..end)
}

fn check_content_type(path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let has_body = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() != "0")
        || headers.contains_key(header::TRANSFER_ENCODING);
    let ct = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?"));
    if !has_body && ct.is_none() {
        return Ok(());
    }
    let essence = ct
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let wanted = if path.ends_with("/sites/import") {
        "text/csv"
    } else {
        "application/json"
    };
    if essence == wanted {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("this route reads Content-Type: {wanted}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// (public URL or path, headers, allowed)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn origins() {
        // (public_url, headers, allowed)
        let cases: &[Case] = &[
            ("", &[], true),
            (
                "",
                &[
                    ("host", "10.0.0.5:7880"),
                    ("origin", "http://10.0.0.5:7880"),
                ],
                true,
            ),
            (
                "",
                &[("host", "10.0.0.5:7880"), ("origin", "http://evil.example")],
                false,
            ),
            ("", &[("host", "10.0.0.5:7880"), ("origin", "null")], false),
            ("", &[("sec-fetch-site", "same-origin")], true),
            ("", &[("sec-fetch-site", "none")], true),
            ("", &[("sec-fetch-site", "cross-site")], false),
            ("", &[("sec-fetch-site", "same-site")], false),
            (
                "https://vc.example.go.id/",
                &[("origin", "https://vc.example.go.id")],
                true,
            ),
            (
                "https://vc.example.go.id/rakor",
                &[("origin", "https://vc.example.go.id")],
                true,
            ),
            (
                "https://vc.example.go.id",
                &[("origin", "http://vc.example.go.id")],
                false,
            ),
            (
                "https://vc.example.go.id",
                &[("host", "evil.example"), ("origin", "https://evil.example")],
                false,
            ),
        ];
        for (public, headers, ok) in cases {
            assert_eq!(
                check_origin(public, &h(headers)).is_ok(),
                *ok,
                "{public} {headers:?}"
            );
        }
    }

    #[test]
    fn content_types() {
        let cases: &[Case] = &[
            ("/api/v1/rakor/1/end", &[], true),
            ("/api/v1/rakor/1/end", &[("content-length", "0")], true),
            (
                "/api/v1/rakor/1/end",
                &[("content-type", "text/plain"), ("content-length", "0")],
                false,
            ),
            (
                "/api/v1/sites",
                &[
                    ("content-type", "application/json; charset=utf-8"),
                    ("content-length", "9"),
                ],
                true,
            ),
            (
                "/api/v1/sites",
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("content-length", "9"),
                ],
                false,
            ),
            ("/api/v1/sites", &[("content-length", "9")], false),
            (
                "/api/v1/sites/import",
                &[("content-type", "text/csv"), ("content-length", "9")],
                true,
            ),
            (
                "/api/v1/sites/import",
                &[("content-type", "text/plain"), ("content-length", "9")],
                false,
            ),
            (
                "/api/v1/sites/import",
                &[
                    ("content-type", "multipart/form-data; boundary=x"),
                    ("content-length", "9"),
                ],
                false,
            ),
        ];
        for (path, headers, ok) in cases {
            assert_eq!(
                check_content_type(path, &h(headers)).is_ok(),
                *ok,
                "{path} {headers:?}"
            );
        }
    }
}
