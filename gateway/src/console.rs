//! The console at `/` (sources in `gateway/console/`): its built page and
//! assets, embedded at compile time, served at `/` and `/console/<file>`.
//! The page routes by the URL's hash, so every other path stays the API's.

use axum::{body::Body, extract::Path, response::Response};
use http::{HeaderValue, StatusCode, header};

/// `(file name, contents)` of `console/dist/`, from the build script.
const ASSETS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

const NOT_BUILT: &str = "<!doctype html><title>Safra console</title>\
    <p>The console is not built into this binary: run <code>scripts/up</code> \
    (or <code>npm ci &amp;&amp; npm run build</code> in <code>gateway/console</code>) \
    and build again. The API is served as usual.</p>";

fn asset(name: &str) -> Option<&'static [u8]> {
    ASSETS
        .iter()
        .find(|(file, _)| *file == name)
        .map(|(_, bytes)| *bytes)
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, extension)| extension) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("map" | "json") => "application/json",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

fn respond(status: StatusCode, kind: &'static str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    // Names carry no content hash: browsers check back on every load.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The console's page.
pub async fn index() -> Response {
    match asset("index.html") {
        Some(page) => respond(StatusCode::OK, content_type("index.html"), Body::from(page)),
        None => respond(
            StatusCode::OK,
            content_type("index.html"),
            Body::from(NOT_BUILT),
        ),
    }
}

/// One of the console's assets.
pub async fn file(Path(name): Path<String>) -> Response {
    match asset(&name) {
        Some(bytes) => respond(StatusCode::OK, content_type(&name), Body::from(bytes)),
        None => respond(
            StatusCode::NOT_FOUND,
            "application/json",
            Body::from(r#"{"code":5,"message":"no such console file","details":[]}"#),
        ),
    }
}
