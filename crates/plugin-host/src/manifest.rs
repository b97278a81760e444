//! What a plugin declares about itself, in host types that serialize (for `riposte plugin inspect`
//! and the API).

use serde::Serialize;

use crate::bindings::riposte::plugin::types;

/// The version of `plugins/wit/plugin.wit` this host implements.
pub const ABI_VERSION: &str = "0.1.0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    pub abi_version: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub actions: Vec<Action>,
    pub hosts: Vec<String>,
    pub secrets: Vec<SecretRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    pub name: String,
    pub description: String,
    pub input_schema: serde_json::Value,
    pub output_schema: serde_json::Value,
    pub idempotent: bool,
    pub destructive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretRequest {
    pub name: String,
    pub description: String,
    pub header: Option<String>,
    pub header_format: Option<String>,
}

impl Manifest {
    /// Stands in while a plugin describes itself, before its name is known.
    pub(crate) fn placeholder() -> Self {
        Manifest {
            abi_version: ABI_VERSION.into(),
            name: "(loading)".into(),
            version: String::new(),
            description: String::new(),
            actions: Vec::new(),
            hosts: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// Refuses a plugin built against an incompatible contract: another major version, or (while
    /// the contract is 0.x) another minor version.
    pub(crate) fn check_abi(&self) -> Result<(), String> {
        let theirs = parse_version(&self.abi_version)
            .ok_or_else(|| format!("its abi-version `{}` is not a version", self.abi_version))?;
        let ours = parse_version(ABI_VERSION).unwrap_or((0, 0, 0));
        let compatible = if ours.0 == 0 {
            theirs.0 == 0 && theirs.1 == ours.1
        } else {
            theirs.0 == ours.0 && theirs.1 <= ours.1
        };
        if compatible {
            Ok(())
        } else {
            Err(format!(
                "it was built for plugin contract {}, but this Riposte implements {ABI_VERSION}; rebuild it with a matching riposte-plugin-sdk",
                self.abi_version
            ))
        }
    }
}

fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.trim().split('.').map(|p| p.parse::<u64>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().unwrap_or(Some(0))?,
    ))
}

impl From<types::Manifest> for Manifest {
    fn from(manifest: types::Manifest) -> Self {
        let schema = |text: &str| {
            serde_json::from_str(text)
                .unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
        };
        Manifest {
            abi_version: manifest.abi_version,
            name: manifest.name,
            version: manifest.version,
            description: manifest.description,
            actions: manifest
                .actions
                .into_iter()
                .map(|a| Action {
                    input_schema: schema(&a.input_schema),
                    output_schema: schema(&a.output_schema),
                    name: a.name,
                    description: a.description,
                    idempotent: a.idempotent,
                    destructive: a.destructive,
                })
                .collect(),
            hosts: manifest.hosts,
            secrets: manifest
                .secrets
                .into_iter()
                .map(|s| SecretRequest {
                    name: s.name,
                    description: s.description,
                    header: s.header,
                    header_format: s.header_format,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_abi(abi: &str) -> Manifest {
        Manifest {
            abi_version: abi.into(),
            ..Manifest::placeholder()
        }
    }

    #[test]
    fn plugins_built_for_another_contract_are_refused_with_a_reason() {
        assert!(with_abi(ABI_VERSION).check_abi().is_ok());
        assert!(
            with_abi("0.1.7").check_abi().is_ok(),
            "patch versions are compatible"
        );
        for incompatible in ["0.2.0", "0.0.9", "1.0.0", "banana", ""] {
            let refusal = with_abi(incompatible).check_abi().expect_err(incompatible);
            assert!(
                refusal.contains("riposte-plugin-sdk") || refusal.contains("not a version"),
                "{refusal}"
            );
        }
    }
}
