//! The console's stylesheet and script, compiled into the binary and served from this origin
//! (the Content-Security-Policy allows nothing else).

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const STYLESHEET: &str = include_str!("static/console.css");
const SCRIPT: &str = include_str!("static/console.js");

pub(super) async fn file(Path(file): Path<String>) -> Response {
    let (kind, body) = match file.as_str() {
        "console.css" => ("text/css; charset=utf-8", STYLESHEET),
        "console.js" => ("text/javascript; charset=utf-8", SCRIPT),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            // Served with the binary: a new release brings new files under the same names.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
