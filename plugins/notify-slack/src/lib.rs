//! `notify-slack`: post to Slack with `chat.postMessage` (Block Kit welcome) or an incoming webhook.
//! The bot token is attached by the host as `Authorization: Bearer …`; the webhook URL, itself a
//! secret, is read with `secret()` and never logged.

use riposte_plugin_sdk::http::Request;
use riposte_plugin_sdk::{
    Action, Context, Error, Manifest, Plugin, RateLimit, Secret, Value, json, output, parse, plugin,
};
use serde::{Deserialize, Serialize};

const SLACK: &str = "https://slack.com";

struct NotifySlack;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostMessage {
    channel: String,
    text: String,
    #[serde(default)]
    blocks: Option<Value>,
    #[serde(default)]
    thread_ts: Option<String>,
    #[serde(default)]
    base_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookMessage {
    text: String,
    #[serde(default)]
    blocks: Option<Value>,
}

#[derive(Serialize)]
struct Posted {
    channel: String,
    ts: String,
}

impl Plugin for NotifySlack {
    fn manifest() -> Manifest {
        Manifest::new("notify-slack", env!("CARGO_PKG_VERSION"), "Post messages to Slack.")
            .action(
                Action::new("post-message", "Slack Web API `chat.postMessage`.")
                    .not_idempotent()
                    .input(json!({
                        "type": "object",
                        "required": ["channel", "text"],
                        "properties": {
                            "channel": { "type": "string" },
                            "text": { "type": "string", "description": "Fallback text, and the message if there are no blocks." },
                            "blocks": { "type": "array", "description": "Block Kit blocks." },
                            "thread_ts": { "type": "string" },
                            "base_url": { "type": "string", "default": SLACK }
                        }
                    }))
                    .output(json!({
                        "type": "object",
                        "properties": { "channel": { "type": "string" }, "ts": { "type": "string" } }
                    })),
            )
            .action(
                Action::new("webhook", "Post to an incoming webhook (URL from the `slack_webhook_url` secret).")
                    .not_idempotent()
                    .input(json!({
                        "type": "object",
                        "required": ["text"],
                        "properties": { "text": { "type": "string" }, "blocks": { "type": "array" } }
                    }))
                    .output(json!({ "type": "object", "properties": { "delivered": { "type": "boolean" } } })),
            )
            .host("slack.com")
            .host("hooks.slack.com")
            .secret(Secret::header("slack_bot_token", "Bot token (xoxb-…), sent as `Authorization: Bearer`.", "authorization", "Bearer {secret}"))
            .secret(Secret::readable("slack_webhook_url", "Incoming webhook URL."))
    }

    fn invoke(action: &str, input: Value, _context: &Context) -> Result<Value, Error> {
        match action {
            "post-message" => post_message(parse(input)?),
            "webhook" => webhook(parse(input)?),
            other => Err(Error::unknown_action(other)),
        }
    }
}

fn post_message(message: PostMessage) -> Result<Value, Error> {
    let base = message
        .base_url
        .as_deref()
        .unwrap_or(SLACK)
        .trim_end_matches('/');
    let mut body = json!({ "channel": message.channel, "text": message.text });
    if let Some(blocks) = message.blocks {
        body["blocks"] = blocks;
    }
    if let Some(thread) = message.thread_ts {
        body["thread_ts"] = Value::String(thread);
    }
    let response = Request::post(&format!("{base}/api/chat.postMessage"))
        .with_secret("slack_bot_token")
        .json(&body)
        .send()?
        .error_for_status()?;
    let answer: Value = response.json()?;
    if answer["ok"].as_bool() != Some(true) {
        let code = answer["error"].as_str().unwrap_or("unknown_error");
        return Err(slack_error(code, response.retry_after_ms()));
    }
    output(&Posted {
        channel: answer["channel"].as_str().unwrap_or_default().to_owned(),
        ts: answer["ts"].as_str().unwrap_or_default().to_owned(),
    })
}

fn webhook(message: WebhookMessage) -> Result<Value, Error> {
    let url = riposte_plugin_sdk::secret("slack_webhook_url").ok_or_else(|| {
        Error::Unauthorized(
            "the playbook does not grant the `slack_webhook_url` secret to notify-slack".into(),
        )
    })?;
    let mut body = json!({ "text": message.text });
    if let Some(blocks) = message.blocks {
        body["blocks"] = blocks;
    }
    Request::post(&url).json(&body).send()?.error_for_status()?;
    Ok(json!({ "delivered": true }))
}

/// Slack answers most errors with HTTP 200 and `{"ok": false, "error": "<code>"}`.
fn slack_error(code: &str, retry_after_ms: Option<u64>) -> Error {
    let message = format!("Slack refused the message: {code}");
    match code {
        "invalid_auth" | "not_authed" | "account_inactive" | "token_revoked" | "token_expired"
        | "missing_scope" => Error::Unauthorized(message),
        "channel_not_found" | "not_in_channel" | "is_archived" => Error::NotFound(message),
        "ratelimited" | "rate_limited" => Error::RateLimited(RateLimit {
            message,
            retry_after_ms,
        }),
        "invalid_blocks"
        | "invalid_blocks_format"
        | "msg_too_long"
        | "no_text"
        | "too_many_attachments" => Error::InvalidInput(message),
        _ => Error::Upstream(message),
    }
}

plugin!(NotifySlack);
