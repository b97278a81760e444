//! API tokens and their roles. Tokens are 256 random bits ([`new_token`]), so an unsalted
//! SHA-256 is enough to keep a leaked configuration from revealing them (nothing to brute-force),
//! and lets a token be found by its hash in one lookup: the configuration holds only hashes.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do; each role may do everything the roles before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads runs, timelines, playbooks, plugins and metrics.
    Viewer,
    /// Also approves, denies, cancels and resumes runs.
    Responder,
    /// Also reloads playbooks.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Responder, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Responder => "responder",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

/// A configured token: its name (the actor in the audit trail), role and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// Groups its holder belongs to: a step whose `approvers` name one may be decided with it.
    pub groups: Vec<String>,
}

/// A new random token: `rpt_` and 43 base64url characters (256 bits).
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "rpt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The hash a token is configured by (hex SHA-256).
pub fn token_hash(token: &str) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(token.as_bytes()))
}
