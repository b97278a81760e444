//! `POST /slack/interactions`: Approve and Deny pressed in Slack ([`crate::slack`]).
//!
//! Slack wants an answer within three seconds and shows none of it, so every outcome but a
//! refused signature is a 200; the person who pressed learns the outcome from the updated message
//! or, when nothing was decided, from a message only they see.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tracing::{info, warn};

use super::state::AppState;
use crate::slack::{ButtonValue, Interaction, Slack};
use crate::tokens::Role;

#[derive(Debug, Deserialize)]
struct Form {
    payload: String,
}

pub(super) async fn interactions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(slack) = state.slack.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "Slack is not configured on this server",
        )
            .into_response();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    if let Err(reason) = slack.verify(&headers, &body, now) {
        info!(reason, "Slack interaction refused.");
        return (StatusCode::UNAUTHORIZED, reason).into_response();
    }
    let interaction = serde_urlencoded::from_bytes::<Form>(&body)
        .map_err(|error| error.to_string())
        .and_then(|form| {
            serde_json::from_str::<Interaction>(&form.payload).map_err(|error| error.to_string())
        });
    let interaction = match interaction {
        Ok(interaction) => interaction,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not a Slack interaction: {error}"),
            )
                .into_response();
        }
    };
    decide(&state, &slack, &interaction).await;
    StatusCode::OK.into_response()
}

/// Decides the pressed button's step as the person's mapped identity, records it, and updates
/// the message (or tells the person why not).
async fn decide(state: &AppState, slack: &Slack, interaction: &Interaction) {
    let (Some(action), Some((channel, ts))) = (interaction.actions.first(), interaction.message())
    else {
        return;
    };
    if interaction.kind != "block_actions" {
        return;
    }
    let user = interaction.user.id.as_str();
    let Ok(button) = serde_json::from_str::<ButtonValue>(&action.value) else {
        return;
    };
    let tell = |text: String| async move {
        if let Err(error) = slack.tell(channel, user, &text).await {
            warn!(%error, "Could not answer a Slack user.");
        }
    };
    let caller = slack
        .approver(user)
        .and_then(|name| state.tokens.by_name(name))
        .filter(|caller| caller.role >= Role::Responder)
        .cloned();
    let Some(caller) = caller else {
        info!(
            slack_user = user,
            "A Slack user who is no approver pressed a button."
        );
        tell(format!(
            "You are not mapped to a Riposte approver (responder or admin); nothing was decided. Your Slack id is {user}."
        ))
        .await;
        return;
    };
    let comment = Some(format!("in Slack ({user})"));
    let (decision, word) = match action.action_id.as_str() {
        "approve" => (
            runner::Decision::Approved {
                by: caller.name.clone(),
                comment,
            },
            "Approved",
        ),
        "deny" => (
            runner::Decision::Denied {
                by: caller.name.clone(),
                reason: comment,
            },
            "Denied",
        ),
        _ => return,
    };
    let outcome = super::decide_as(state, &caller, &button.run, &button.step, decision).await;
    let status = match &outcome {
        Ok(()) => StatusCode::OK,
        Err(error) => error.status(),
    };
    let path = format!(
        "/slack/interactions ({} run {} step {})",
        action.action_id, button.run, button.step
    );
    super::access::record_call(state, &caller, "POST", path, status).await;
    match outcome {
        Ok(()) => {
            let text = format!(
                "{word} by {} in Slack: step `{}` of run {}",
                caller.name, button.step, button.run
            );
            if let Err(error) = slack.settle(channel, ts, &text).await {
                warn!(%error, "Could not update the Slack message.");
            }
        }
        Err(error) => tell(format!("Nothing was decided: {}", error.reason())).await,
    }
}
