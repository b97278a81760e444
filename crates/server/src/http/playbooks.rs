//! The playbooks in use (list, validate one, reload them all) and the plugins and connectors
//! loaded.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::error::ApiError;
use super::state::AppState;
use crate::error::Error;

#[derive(Debug, Serialize)]
struct StepRef {
    id: String,
    uses: String,
}

pub(super) async fn list(State(state): State<AppState>) -> Json<serde_json::Value> {
    let catalog = state.playbooks.current();
    let steps = |steps: &[playbook::Step]| -> Vec<StepRef> {
        steps
            .iter()
            .map(|step| StepRef {
                id: step.id.to_string(),
                uses: step.uses.to_string(),
            })
            .collect()
    };
    let playbooks: Vec<serde_json::Value> = catalog
        .playbooks()
        .map(|playbook| {
            json!({
                "name": playbook.name,
                "description": playbook.description,
                "version": playbook.version,
                "tags": playbook.tags,
                "trigger": {
                    "webhook": playbook.trigger.webhook,
                    "auth": playbook.trigger.auth,
                    "public": playbook.trigger.public,
                },
                "secrets": playbook.secrets,
                "steps": steps(&playbook.steps),
                "handlers": steps(&playbook.handlers),
            })
        })
        .collect();
    Json(json!({ "playbooks": playbooks }))
}

pub(super) async fn validate(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if body.len() > playbook::MAX_PLAYBOOK_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "playbooks are limited to {} bytes",
                playbook::MAX_PLAYBOOK_BYTES
            ),
        ));
    }
    let text = String::from_utf8_lossy(&body);
    let (name, problems) = match playbook::compile(&text) {
        Ok(compiled) => {
            let problems: Vec<serde_json::Value> = state
                .installed
                .problems(&compiled)
                .into_iter()
                .map(|message| {
                    json!({
                        "code": "plugin-not-loaded", "message": message,
                        "line": 1, "column": 1, "hint": null,
                    })
                })
                .collect();
            (Some(compiled.name), problems)
        }
        Err(diagnostics) => (
            None,
            diagnostics
                .iter()
                .map(|diagnostic| {
                    json!({
                        "code": diagnostic.code,
                        "message": diagnostic.message,
                        "line": diagnostic.position.line,
                        "column": diagnostic.position.column,
                        "hint": diagnostic.hint,
                    })
                })
                .collect(),
        ),
    };
    Ok(
        Json(json!({ "valid": problems.is_empty(), "name": name, "problems": problems }))
            .into_response(),
    )
}

pub(super) async fn reload(State(state): State<AppState>) -> Response {
    match state.reloader.reload() {
        Ok(count) => Json(json!({ "playbooks": count })).into_response(),
        Err(Error::Playbooks(problems)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": "the playbooks have problems; the ones in use are kept",
                "problems": problems,
            })),
        )
            .into_response(),
        Err(error) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the playbooks could not be reloaded; the ones in use are kept: {error}"),
        )
        .into_response(),
    }
}

pub(super) async fn plugins(State(state): State<AppState>) -> Json<serde_json::Value> {
    let manifests = state
        .installed
        .plugins
        .as_ref()
        .map(|host| host.manifests())
        .unwrap_or_default();
    let connectors = state
        .installed
        .connectors
        .as_ref()
        .map(|connectors| connectors.summaries())
        .unwrap_or_default();
    Json(json!({ "plugins": manifests, "connectors": connectors }))
}
