//! A small blocking HTTP client over standard `wasi:http`.
//!
//! Requests go through the host, which enforces the playbook's grants (only granted hosts, never
//! private or metadata addresses unless allowed), clamps timeouts and sizes, and adds secrets bound
//! to headers. A refused request is an [`HttpError`] whose message says so.

use serde::de::DeserializeOwned;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

use crate::{Error, Value};

/// An outgoing request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a request did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub message: String,
    /// The host's policy refused it; retrying will not help.
    pub refused: bool,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<HttpError> for Error {
    fn from(error: HttpError) -> Self {
        if error.refused {
            Error::InvalidInput(error.message)
        } else {
            Error::Upstream(error.message)
        }
    }
}

impl Request {
    pub fn new(method: &str, url: &str) -> Self {
        Request {
            method: method.to_ascii_uppercase(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn get(url: &str) -> Self {
        Request::new("GET", url)
    }

    pub fn post(url: &str) -> Self {
        Request::new("POST", url)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Asks the host to attach the header-bound secret `name` (see [`crate::Secret::header`]) to
    /// this request. The plugin never sees the value; if the playbook did not grant the secret,
    /// the request goes without it.
    pub fn with_secret(self, name: &str) -> Self {
        self.header("riposte-secret", name)
    }

    /// A JSON body, with its content type.
    pub fn json(self, body: &Value) -> Self {
        let bytes = body.to_string().into_bytes();
        self.header("content-type", "application/json").body(bytes)
    }

    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self
    }

    pub fn send(self) -> Result<Response, HttpError> {
        send(self)
    }
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::Upstream(format!("the response is not the JSON expected: {e}")))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Retry-After` in milliseconds, when given in seconds.
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| s * 1000)
    }

    /// Turns a non-2xx response into the matching error kind.
    pub fn error_for_status(self) -> Result<Response, Error> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(Error::from_status(
                self.status,
                &self.text(),
                self.retry_after_ms(),
            ))
        }
    }
}

fn failure(message: impl Into<String>) -> HttpError {
    HttpError {
        message: message.into(),
        refused: false,
    }
}

/// A request that cannot be sent as written: retrying it will not help.
fn malformed(message: impl Into<String>) -> HttpError {
    HttpError {
        message: message.into(),
        refused: true,
    }
}

/// Sends a request and reads the whole response.
pub fn send(request: Request) -> Result<Response, HttpError> {
    let (scheme, authority, path) = split_url(&request.url)?;
    let headers = Fields::new();
    for (name, value) in &request.headers {
        headers
            .append(name, value.as_bytes())
            .map_err(|e| failure(format!("header `{name}` is not allowed: {e:?}")))?;
    }
    let outgoing = OutgoingRequest::new(headers);
    let method = match request.method.as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "HEAD" => Method::Head,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    };
    outgoing
        .set_method(&method)
        .map_err(|()| failure(format!("invalid method {}", request.method)))?;
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| failure("invalid scheme"))?;
    outgoing
        .set_authority(Some(&authority))
        .map_err(|()| failure(format!("invalid host `{authority}`")))?;
    outgoing
        .set_path_with_query(Some(&path))
        .map_err(|()| failure(format!("invalid path `{path}`")))?;

    let body = outgoing.body().map_err(|()| failure("no request body"))?;
    if let Some(bytes) = &request.body {
        let stream = body
            .write()
            .map_err(|()| failure("cannot write the request body"))?;
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| failure(format!("cannot send the request body: {e:?}")))?;
        }
    }
    let future = outgoing_handler::handle(outgoing, None).map_err(error_code)?;
    OutgoingBody::finish(body, None).map_err(error_code)?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(error_code(code)),
        Some(Err(())) | None => return Err(failure("the response was lost")),
    };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| failure("no response body"))?;
    let stream = incoming
        .stream()
        .map_err(|()| failure("no response body"))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                // The host cut the body off: a size cap or a timeout.
                return Err(failure(format!(
                    "reading the response failed: {}",
                    e.to_debug_string()
                )));
            }
        }
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn error_code(code: ErrorCode) -> HttpError {
    match code {
        ErrorCode::HttpRequestDenied => HttpError {
            message: "the host refused the request: the playbook does not grant this host to the plugin".into(),
            refused: true,
        },
        ErrorCode::DestinationIpProhibited => HttpError {
            message: "the host refused the request: the address is private, loopback, link-local or a metadata address, or in another range that is not globally reachable".into(),
            refused: true,
        },
        ErrorCode::DnsError(_) => failure("the host name could not be resolved"),
        ErrorCode::DnsTimeout => failure("resolving the host name timed out"),
        ErrorCode::ConnectionRefused => failure("the connection was refused"),
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout => failure("the request timed out"),
        ErrorCode::HttpResponseBodySize(_) => failure("the response is larger than the host allows"),
        // The host's policy explains a refusal this way when no standard code says it.
        ErrorCode::InternalError(Some(reason)) if reason.starts_with("refused:") => HttpError {
            message: format!("the host {reason}"),
            refused: true,
        },
        other => failure(format!("the request failed: {other:?}")),
    }
}

/// `https://host:port/path?query` → (scheme, authority, path-with-query).
fn split_url(url: &str) -> Result<(Scheme, String, String), HttpError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| malformed(format!("`{url}` is not an absolute URL")))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => return Err(malformed(format!("unsupported scheme `{other}`"))),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(index) => (&rest[..index], &rest[index..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(malformed(format!("`{url}` has no usable host")));
    }
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    Ok((scheme, authority.to_owned(), path))
}
