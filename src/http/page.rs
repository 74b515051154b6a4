//! The status page, `GET /`: one HTML page with its script, style sheet and icon, built into the binary
//! from `src/http/page/` (no build step, no CDN). The script draws everything in the browser from the
//! JSON endpoints under `/api/`; a Content-Security-Policy lets the page reach nothing but this server.

use axum::body::Body;
use axum::extract::Query;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// Where the page may load from and connect to: this server only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");
const FAVICON_SVG: &str = include_str!("page/favicon.svg");

/// Every file the page consists of, with its path and content type.
pub const ASSETS: [(&str, &str, &str); 4] = [
    ("/", "text/html; charset=utf-8", INDEX_HTML),
    ("/app.js", "text/javascript; charset=utf-8", APP_JS),
    ("/style.css", "text/css; charset=utf-8", STYLE_CSS),
    ("/favicon.svg", "image/svg+xml", FAVICON_SVG),
];

fn asset(content_type: &'static str, body: impl Into<Body>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The files change with the binary: ask again on each load rather than keep a stale script.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body.into(),
    )
        .into_response()
}

/// `GET /?range=24h|7d`: the page, preloading the timeline of the range it will draw first.
#[derive(Debug, Deserialize)]
pub struct IndexQuery {
    pub range: Option<String>,
}

pub async fn index(Query(query): Query<IndexQuery>) -> Response {
    let range = if query.range.as_deref() == Some("7d") {
        "7d"
    } else {
        "24h"
    };
    asset(ASSETS[0].1, INDEX_HTML.replace("{range}", range))
}

pub async fn app_js() -> Response {
    asset(ASSETS[1].1, ASSETS[1].2)
}

pub async fn style_css() -> Response {
    asset(ASSETS[2].1, ASSETS[2].2)
}

pub async fn favicon() -> Response {
    asset(ASSETS[3].1, ASSETS[3].2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_stays_small_and_names_no_other_host() {
        let total: usize = ASSETS.iter().map(|(_, _, body)| body.len()).sum();
        assert!(total < 200 * 1024, "the page weighs {total} bytes");
        for (path, _, body) in ASSETS {
            // The SVG namespace is an identifier, not a request.
            let body = body.replace("http://www.w3.org/2000/svg", "");
            for pattern in ["http://", "https://", "@import", "url("] {
                assert!(!body.contains(pattern), "{path} has {pattern}");
            }
        }
    }
}
