//! The API's description, `openapi.json`, embedded: served at `/openapi.json`, and read for the
//! role each operation needs (`x-riposte-role`), which is what [`super::access`] enforces: one
//! table for both, so the document cannot drift from the authorization.

use std::collections::HashMap;

use axum::http::Method;

use crate::tokens::Role;

/// The API's description, which also declares the role each operation needs.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The role each operation needs, read from the OpenAPI document's `x-riposte-role`.
#[derive(Debug)]
pub struct Permissions(HashMap<(Method, String), Role>);

impl Permissions {
    /// Reads the roles from the OpenAPI document. Operations without `x-riposte-role` are public.
    pub fn from_openapi(document: &serde_json::Value) -> Self {
        let mut required = HashMap::new();
        let paths = document["paths"].as_object().into_iter().flatten();
        for (path, operations) in paths {
            for (method, operation) in operations.as_object().into_iter().flatten() {
                let (Ok(method), Some(role)) = (
                    Method::from_bytes(method.to_ascii_uppercase().as_bytes()),
                    operation["x-riposte-role"].as_str().and_then(Role::parse),
                ) else {
                    continue;
                };
                required.insert((method, path.clone()), role);
            }
        }
        Permissions(required)
    }

    pub fn required(&self, method: &Method, path: &str) -> Option<Role> {
        self.0.get(&(method.clone(), path.to_owned())).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_come_from_the_openapi_document() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI).expect("JSON");
        let permissions = Permissions::from_openapi(&document);
        assert_eq!(
            permissions.required(&Method::GET, "/api/v1/playbooks"),
            Some(Role::Viewer)
        );
        assert_eq!(
            permissions.required(&Method::POST, "/api/v1/playbooks/reload"),
            Some(Role::Admin)
        );
        assert_eq!(permissions.required(&Method::GET, "/healthz"), None);
    }
}
