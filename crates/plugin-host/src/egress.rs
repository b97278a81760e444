//! Outbound HTTP on a plugin's behalf, through a policy the plugin cannot bypass.
//!
//! Every `wasi:http` request a plugin makes arrives here. It is allowed only to a host the playbook
//! granted to that plugin; the name is resolved once, every address is checked (every
//! special-purpose range of [`playbook::addresses`] — private, loopback, link-local, CGNAT,
//! unique-local, "this network", documentation, multicast, reserved — and the metadata address
//! are refused, also inside IPv4-mapped and NAT64 addresses, unless the server's configuration
//! allows their range), and the connection goes to exactly the checked
//! addresses, so a DNS answer cannot change between the check and the connect. Timeouts and body
//! sizes are clamped whatever the plugin asks for. Secrets bound to a host are added as headers here,
//! after the plugin has handed over the request, so the plugin never holds them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use ipnet::IpNet;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use crate::state::LogBudget;

/// Limits and exceptions for outbound requests, set by the server's configuration.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    /// Ranges that are normally refused but allowed here (e.g. `127.0.0.0/8` for local setups and
    /// tests, or an internal ticketing system's subnet).
    pub allow_private: Vec<IpNet>,
    pub connect_timeout: Duration,
    /// Deadline for the whole response, headers and body.
    pub response_timeout: Duration,
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
    /// Sent when a plugin sets none, as `name/version`: some APIs (CrowdSec's LAPI among them)
    /// refuse requests without one, or with one of another shape.
    pub user_agent: String,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        EgressPolicy {
            allow_private: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(30),
            max_request_bytes: 1024 * 1024,
            max_response_bytes: 4 * 1024 * 1024,
            user_agent: concat!("riposte-plugin-host/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

/// The request header a plugin sets to the *name* of a granted secret, asking the host to attach
/// that secret as its declared header. The host removes it before the request leaves.
pub(crate) const SECRET_MARKER_HEADER: &str = "riposte-secret";

/// A secret the host attaches to a request when the plugin names it in [`SECRET_MARKER_HEADER`].
#[derive(Clone)]
pub(crate) struct SecretHeader {
    pub(crate) name: String,
    pub(crate) header: http::HeaderName,
    pub(crate) value: http::HeaderValue,
}

/// What one plugin invocation may reach, and the secrets the host adds for it.
#[derive(Clone, Default)]
pub(crate) struct Egress {
    pub(crate) policy: Arc<EgressPolicy>,
    pub(crate) clients: Arc<ClientCache>,
    /// Host patterns granted by the playbook: `api.example.com`, `api.example.com:8443`,
    /// `*.example.com`.
    pub(crate) granted_hosts: Vec<String>,
    pub(crate) secret_headers: Vec<SecretHeader>,
    /// The request carries a secret in its URL or body (a connector's `query`, `body`, `url`
    /// auth, a token request): it too only travels over HTTPS or to allowed ranges.
    pub(crate) secret_outside_headers: bool,
    /// The invocation's log budget: a plugin retrying a refused request in a loop is logged a
    /// few times, then counted.
    pub(crate) logs: Arc<LogBudget>,
}

impl Egress {
    /// Logs why a request was refused, within the invocation's budget.
    fn log_refusal(&self, reason: &str) {
        if self.logs.host_line() {
            tracing::warn!(reason, "Outbound request refused.");
        }
    }

    /// Is `host:port` granted? Default ports are implied: a grant of `api.example.com` covers 80
    /// and 443.
    pub(crate) fn is_granted(&self, host: &str, port: u16, default_port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.granted_hosts.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            let (pattern_host, pattern_port) = match pattern.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse::<u16>().ok()),
                None => (pattern.clone(), None),
            };
            let port_ok = pattern_port.map_or(port == default_port, |p| p == port);
            let host_ok = match pattern_host.strip_prefix("*.") {
                Some(suffix) => host.ends_with(&format!(".{suffix}")),
                None => host == pattern_host,
            };
            host_ok && port_ok
        })
    }

    /// Resolves `host` once and checks every address; returns the addresses to connect to.
    pub(crate) async fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, HttpError> {
        let addresses: Vec<SocketAddr> = match host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::time::timeout(
                self.policy.connect_timeout,
                tokio::net::lookup_host((host, port)),
            )
            .await
            .map_err(|_| HttpError::DnsTimeout)?
            .map_err(|_| HttpError::DnsError {
                rcode: None,
                info_code: None,
            })?
            .collect(),
        };
        if addresses.is_empty() {
            return Err(HttpError::DestinationNotFound);
        }
        for address in &addresses {
            if let Some(reason) = forbidden_reason(address.ip(), &self.policy.allow_private) {
                self.log_refusal(&format!("{host} is {}: {reason}", address.ip()));
                return Err(HttpError::DestinationIpProhibited);
            }
        }
        Ok(addresses)
    }

    /// Sends a plugin's request after the policy allowed it, and reads the response within limits.
    pub(crate) async fn send(
        self,
        request: http::Request<WasiBody>,
    ) -> Result<http::Response<WasiBody>, HttpError> {
        let (parts, body) = request.into_parts();
        let body = Limited::new(body, self.policy.max_request_bytes)
            .collect()
            .await
            .map_err(|_| {
                HttpError::HttpRequestBodySize(Some(self.policy.max_request_bytes as u64))
            })?
            .to_bytes();
        let answer = self
            .exchange(parts.method, &parts.uri, parts.headers, body)
            .await?;
        let mut builder = http::Response::builder().status(answer.status);
        for (name, value) in &answer.headers {
            builder = builder.header(name, value);
        }
        let body = Full::new(Bytes::from(answer.body))
            .map_err(|never| match never {})
            .boxed_unsync();
        builder
            .body(body)
            .map_err(|e| HttpError::InternalError(Some(e.to_string())))
    }

    /// One request under the policy: the host must be granted, every address it resolves to
    /// allowed; secrets named in [`SECRET_MARKER_HEADER`] are attached; the answer is read within
    /// the size and time limits. Plugins' requests and connectors' both go through here.
    pub(crate) async fn exchange(
        &self,
        method: http::Method,
        uri: &http::Uri,
        headers: http::HeaderMap,
        body: Bytes,
    ) -> Result<Answer, HttpError> {
        let scheme = uri.scheme_str().unwrap_or("https");
        let default_port = if scheme == "http" { 80 } else { 443 };
        let host = uri
            .host()
            .ok_or(HttpError::HttpRequestUriInvalid)?
            .to_owned();
        let port = uri.port_u16().unwrap_or(default_port);
        if !self.is_granted(&host, port, default_port) {
            self.log_refusal(&format!(
                "{host}:{port} is not among the hosts granted to this plugin or connector"
            ));
            return Err(HttpError::HttpRequestDenied);
        }
        if body.len() > self.policy.max_request_bytes {
            return Err(HttpError::HttpRequestBodySize(Some(
                self.policy.max_request_bytes as u64,
            )));
        }
        let addresses = self.resolve(&host, port).await?;
        let headers = self.headers_with_secrets(headers, scheme, &addresses)?;
        if self.secret_outside_headers && !self.plain_text_ok(scheme, &addresses) {
            let reason = "refused: a request carrying a secret is only sent over HTTPS";
            self.log_refusal(reason);
            return Err(HttpError::InternalError(Some(reason.into())));
        }

        let pinned = self.clients.get(&host, &addresses, &self.policy)?;
        let outgoing = pinned.request(method, uri.to_string()).headers(headers);
        let (status, headers, body) = tokio::time::timeout(self.policy.response_timeout, async {
            let response = outgoing
                .body(body)
                .send()
                .await
                .map_err(map_reqwest_error)?;
            let status = response.status();
            let headers = response.headers().clone();
            let mut collected = Vec::new();
            let mut stream = response;
            while let Some(chunk) = stream.chunk().await.map_err(map_reqwest_error)? {
                if collected.len() + chunk.len() > self.policy.max_response_bytes {
                    return Err(HttpError::HttpResponseBodySize(Some(
                        self.policy.max_response_bytes as u64,
                    )));
                }
                collected.extend_from_slice(&chunk);
            }
            Ok((status, headers, collected))
        })
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)??;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Whether secrets may travel in plain text to `addresses`: only to ranges the server
    /// explicitly allowed (local services).
    fn plain_text_ok(&self, scheme: &str, addresses: &[SocketAddr]) -> bool {
        scheme.eq_ignore_ascii_case("https")
            || addresses.iter().all(|a| {
                self.policy
                    .allow_private
                    .iter()
                    .any(|net| net.contains(&a.ip()))
            })
    }
}

/// An answer read within the policy's limits.
pub(crate) struct Answer {
    pub(crate) status: http::StatusCode,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Egress {
    /// The request's headers with the secrets the plugin named attached (replacing any header of
    /// the same name the plugin set), and the marker removed. Secrets travel only over HTTPS, or
    /// to ranges the server explicitly allowed (local services).
    fn headers_with_secrets(
        &self,
        mut headers: http::HeaderMap,
        scheme: &str,
        addresses: &[SocketAddr],
    ) -> Result<http::HeaderMap, HttpError> {
        let named: Vec<String> = headers
            .get_all(SECRET_MARKER_HEADER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .collect();
        headers.remove(SECRET_MARKER_HEADER);
        let plain_text_ok = self.plain_text_ok(scheme, addresses);
        for name in named {
            let Some(secret) = self.secret_headers.iter().find(|s| s.name == name) else {
                // Not granted, or not bound to a header: the request goes without it.
                tracing::debug!(secret = %name, "A requested secret is not granted as a header; the request goes without it.");
                continue;
            };
            if !plain_text_ok {
                let reason = format!("refused: the secret `{name}` is only sent over HTTPS");
                self.log_refusal(&reason);
                return Err(HttpError::InternalError(Some(reason)));
            }
            headers.insert(secret.header.clone(), secret.value.clone());
        }
        Ok(headers)
    }
}

/// HTTP clients by host and checked addresses, shared by all invocations of a host.
///
/// A client is pinned to the addresses the policy checked (reqwest's `resolve_to_addrs`), so the
/// addresses are part of the key: a host that resolves elsewhere gets a new client, and a cached
/// client never connects anywhere unchecked. Reusing clients keeps their connections (and TLS
/// configuration, costly to build) across steps.
#[derive(Default)]
pub(crate) struct ClientCache {
    clients: std::sync::Mutex<HashMap<(String, Vec<SocketAddr>), reqwest::Client>>,
}

/// Past this many clients the cache starts over (hosts resolving to ever-new addresses).
const MAX_CACHED_CLIENTS: usize = 256;

impl ClientCache {
    fn get(
        &self,
        host: &str,
        addresses: &[SocketAddr],
        policy: &EgressPolicy,
    ) -> Result<reqwest::Client, HttpError> {
        let mut sorted = addresses.to_vec();
        sorted.sort_unstable();
        let key = (host.to_ascii_lowercase(), sorted);
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        if clients.len() >= MAX_CACHED_CLIENTS {
            clients.clear();
        }
        let client = pinned_client(host, addresses, policy)?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}

/// A client that connects to exactly `addresses` for `host`.
fn pinned_client(
    host: &str,
    addresses: &[SocketAddr],
    policy: &EgressPolicy,
) -> Result<reqwest::Client, HttpError> {
    reqwest::Client::builder()
        .resolve_to_addrs(host, addresses)
        .connect_timeout(policy.connect_timeout)
        .timeout(policy.response_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(policy.user_agent.as_str())
        .no_proxy()
        .build()
        .map_err(|e| HttpError::InternalError(Some(e.to_string())))
}

fn map_reqwest_error(error: reqwest::Error) -> HttpError {
    if error.is_timeout() {
        HttpError::ConnectionTimeout
    } else if error.is_connect() {
        HttpError::ConnectionRefused
    } else {
        HttpError::HttpProtocolError
    }
}

/// Why a destination address is refused, or `None` if it may be reached: every special-purpose
/// range ([`playbook::addresses`]) is refused unless the server allows it.
pub fn forbidden_reason(ip: IpAddr, allowed: &[IpNet]) -> Option<&'static str> {
    if allowed.iter().any(|net| net.contains(&ip)) {
        return None;
    }
    if let IpAddr::V6(v6) = ip
        && let Some(v4) = v6.to_ipv4_mapped()
        && allowed.iter().any(|net| net.contains(&IpAddr::V4(v4)))
    {
        return None;
    }
    if ip == IpAddr::from([169, 254, 169, 254]) {
        return Some("the cloud metadata address");
    }
    playbook::addresses::special_range(ip).map(|range| range.name)
}
