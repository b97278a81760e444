//! Loopback servers that answer as security vendors' APIs document, for the connector catalogue's
//! tests: each checks its credential the way the vendor does, validates the request's shape, and
//! answers with the documented shapes (errors included). Each module names the API version and
//! the reference it follows.

pub mod intel;
pub mod response;
