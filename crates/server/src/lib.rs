//! The server side of Riposte: webhook ingress, workers, configuration (issue 4, in progress).
//!
//! So far this crate holds [`webhook_auth`]: how an incoming delivery proves where it comes from
//! (HMAC signatures in the GitHub and Standard Webhooks schemes, bearer tokens, basic auth), checked
//! in constant time with key rotation; and [`ingress`]: content type, JSON depth and parse errors
//! mapped to 415/400 with a reason. The axum router, the durable queue and the workers are not
//! here yet.

pub mod ingress;
pub mod webhook_auth;
